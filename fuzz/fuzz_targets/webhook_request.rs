//! A webhook request: its first line is the timestamp header, its second the signature header, the rest the body.
//! The request is authenticated as a signed hook's would be, and its body (valid signature or not, so the fuzzer
//! reaches the parsing) is taken as a `read_webhook` step takes it: records at a JSONPath, or Debezium events.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use weir_fuzz::{Harness, pipeline};
use weir_spec::{Pipeline, Webhook};

static HOOK: LazyLock<Webhook> = LazyLock::new(|| {
    let signed = pipeline(
        "name: signed\ntriggers:\n  - webhook: { name: h, hmac: { secret: s3cret, header: X-Signature, timestamp_header: X-Timestamp } }\n\
         steps:\n  a:\n    read_csv: { path: a.csv }\n  b:\n    write_csv: { input: a, path: b.csv }\n",
    );
    signed.triggers[0].webhook.clone().expect("the trigger is a webhook")
});

static PIPELINES: LazyLock<[Pipeline; 2]> = LazyLock::new(|| {
    let out = "  out:\n    write_csv: { input: events, path: out.csv }\n";
    [
        pipeline(&format!(
            "name: records\nsteps:\n  events:\n    on_error: dead_letter\n    read_webhook: {{ records: $.records, schema: {{ id: bigint, email: text, amount: double }} }}\n{out}"
        )),
        pipeline(&format!(
            "name: changes\nsteps:\n  events:\n    on_error: dead_letter\n    read_webhook: {{ format: debezium, schema: {{ id: bigint, name: text }} }}\n{out}"
        )),
    ]
});

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::default);

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(stamp), Some(signature)) = (parts.next(), parts.next()) else { return };
    let body = parts.next().unwrap_or_default();
    let header = |name: &str| {
        let value = match name {
            "x-timestamp" => stamp,
            "x-signature" => signature,
            _ => return None,
        };
        std::str::from_utf8(value).ok().map(str::to_string)
    };
    let _ = weir_server::authenticate(&HOOK, header, body, chrono::Utc::now());
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) {
        let pipeline = &PIPELINES[usize::from(stamp.first().is_some_and(|b| b % 2 == 1))];
        HARNESS.run(pipeline, Some(payload));
    }
});
