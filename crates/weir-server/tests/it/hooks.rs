//! Webhook authentication: bearer tokens, HMAC signatures with a signed timestamp, replays and oversized bodies.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use weir_server::{Refused, authenticate};
use weir_spec::{Pipeline, Webhook};

fn hook(yaml: &str) -> Webhook {
    let text = format!("name: p\ntriggers:\n  - webhook: {yaml}\nsteps:\n  a:\n    read_csv: {{ path: a.csv }}\n");
    let pipeline = Pipeline::from_yaml_str(&text).unwrap();
    assert!(weir_spec::check(&pipeline, &weir_spec::Environment::empty()).is_empty());
    pipeline.triggers[0].webhook.clone().unwrap()
}

fn headers<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
}

fn sign(secret: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

const NOW: &str = "2026-11-25T12:00:00Z";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(NOW).unwrap().to_utc()
}

#[test]
fn a_bearer_token_must_match() {
    let hook = hook("{ name: orders, token: s3cret }");
    let good = [("Authorization", "Bearer s3cret".to_string())];
    assert_eq!(authenticate(&hook, headers(&good), b"{}", now()), Ok(()));
    let bad = [("Authorization", "Bearer s3cre".to_string())];
    assert!(matches!(authenticate(&hook, headers(&bad), b"{}", now()), Err(Refused::Unauthorized(_))));
    assert!(matches!(authenticate(&hook, headers(&[]), b"{}", now()), Err(Refused::Unauthorized(_))));
}

#[test]
fn an_hmac_signature_covers_the_timestamp_and_the_body() {
    let hook = hook(
        "{ name: orders, hmac: { secret: k3y, header: X-Hub-Signature-256, timestamp_header: X-Timestamp, tolerance: 5m } }",
    );
    let body = r#"{"day":"2026-11-25"}"#;
    let stamp = now().timestamp().to_string();
    let signed = [("X-Timestamp", stamp.clone()), ("X-Hub-Signature-256", sign("k3y", &format!("{stamp}.{body}")))];
    assert_eq!(authenticate(&hook, headers(&signed), body.as_bytes(), now()), Ok(()));

    // The same signature over another body, or from another key, fails.
    let tampered = authenticate(&hook, headers(&signed), br#"{"day":"2026-11-26"}"#, now());
    assert_eq!(tampered, Err(Refused::Unauthorized("bad signature".into())));
    let wrong_key =
        [("X-Timestamp", stamp.clone()), ("X-Hub-Signature-256", sign("other", &format!("{stamp}.{body}")))];
    assert!(authenticate(&hook, headers(&wrong_key), body.as_bytes(), now()).is_err());

    // A request captured and replayed ten minutes later is refused, though its signature is valid.
    let later = now() + chrono::Duration::minutes(10);
    let replayed = authenticate(&hook, headers(&signed), body.as_bytes(), later);
    assert!(matches!(&replayed, Err(Refused::Unauthorized(m)) if m.contains("tolerance")), "{replayed:?}");
}

#[test]
fn an_oversized_body_is_refused_before_anything_else() {
    let hook = hook("{ name: orders, token: s3cret, max_body: 16 }");
    let good = [("Authorization", "Bearer s3cret".to_string())];
    assert_eq!(authenticate(&hook, headers(&good), &[b'x'; 17], now()), Err(Refused::TooLarge { size: 17, limit: 16 }));
}
