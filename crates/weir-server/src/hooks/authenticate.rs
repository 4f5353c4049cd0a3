//! Webhook authentication: a bearer token, or an HMAC signature of the body (with an optional signed timestamp
//! against replays). Every comparison of a secret is constant-time.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use weir_spec::{HmacAlgorithm, Webhook, interpolate_env};

/// Why a request was refused; each maps to an HTTP status.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("missing or wrong credentials: {0}")]
    Unauthorized(String),
    #[error("body of {size} bytes is over this hook's limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the hook's secret cannot be read: {0}")]
    Misconfigured(String),
}

/// Checks that a request to `hook` may start a run. `header` looks a request header up by name.
pub fn authenticate(
    hook: &Webhook,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Refused> {
    if body.len() > hook.max_body {
        return Err(Refused::TooLarge { size: body.len(), limit: hook.max_body });
    }
    let secret = |text: &str| {
        interpolate_env(text, |var| std::env::var(var).ok())
            .map_err(|var| Refused::Misconfigured(format!("`{var}` is not set")))
    };
    if let Some(token) = &hook.token {
        let expected = secret(&token.value)?;
        let given =
            header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_string)).unwrap_or_default();
        return match bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            true => Ok(()),
            false => Err(Refused::Unauthorized("bearer token".into())),
        };
    }
    let Some(auth) = &hook.hmac else { return Err(Refused::Misconfigured("the hook has no token or hmac".into())) };
    let key = secret(&auth.secret.value)?;
    let mut signed = Vec::new();
    if let Some(name) = &auth.timestamp_header {
        let stamp =
            header(&name.to_ascii_lowercase()).ok_or_else(|| Refused::Unauthorized(format!("no `{name}` header")))?;
        let seconds: i64 =
            stamp.trim().parse().map_err(|_| Refused::Unauthorized(format!("`{name}` is not a Unix time")))?;
        let age = (now.timestamp() - seconds).unsigned_abs();
        if age > auth.tolerance.0.as_secs() {
            return Err(Refused::Unauthorized(format!("timestamp is {age} s away from now, beyond the tolerance")));
        }
        signed.extend_from_slice(stamp.trim().as_bytes());
        signed.push(b'.');
    }
    signed.extend_from_slice(body);
    let given = header(&auth.header.to_ascii_lowercase())
        .ok_or_else(|| Refused::Unauthorized(format!("no `{}` header", auth.header)))?;
    let hex_part = given.trim().split_once('=').map_or(given.trim(), |(_, h)| h);
    let signature = hex::decode(hex_part).map_err(|_| Refused::Unauthorized("the signature is not hex".into()))?;
    let valid = match auth.algorithm {
        HmacAlgorithm::Sha256 => verify::<Hmac<Sha256>>(key.as_bytes(), &signed, &signature),
        HmacAlgorithm::Sha512 => verify::<Hmac<Sha512>>(key.as_bytes(), &signed, &signature),
    };
    if valid { Ok(()) } else { Err(Refused::Unauthorized("bad signature".into())) }
}

fn verify<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(signature).is_ok()
}
