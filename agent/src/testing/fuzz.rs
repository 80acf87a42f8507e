//! The bodies of the fuzz targets in `agent/fuzz` (cargo-fuzz, libFuzzer): each takes
//! arbitrary bytes and must return, whatever they hold, without a panic, an abort or a hang.
//! They live here so the fuzz crate stays one line per target and the normal test suite runs
//! the same code over the seed corpus (`tests/fuzz_corpus.rs`).

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::json;

use crate::manifest::load_text;
use crate::plan::build_plan;
use crate::script::{Limits, ScriptHost};
use crate::sensor::{CompiledJq, Condition};

/// The names of the fuzz targets, as `agent/fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: [&str; 5] = [
    "manifest",
    "webhook_request",
    "conditions",
    "jq",
    "duration",
];

/// Runs target `name` on `data`; `false` when there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "manifest" => manifest(data),
        "webhook_request" => webhook_request(data),
        "conditions" => conditions(data),
        "jq" => jq(data),
        "duration" => duration(data),
        _ => return false,
    }
    true
}

/// Loads `data` as a manifest file and, when it loads, compiles it as `validate` does.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (mut docs, mut errors) = (Vec::new(), Vec::new());
    load_text(Path::new("fuzz.yaml"), &text, &mut docs, &mut errors);
    if errors.is_empty() && !docs.is_empty() {
        let host = ScriptHost::new(Limits::default(), Vec::new());
        let _ = build_plan(&docs, &host, &[]);
    }
}

/// Reads `data` as a request: a first line `METHOD query`, header lines `name: value` up to
/// an empty line, then the body; builds the event a webhook would from it.
pub fn webhook_request(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.splitn(2, ' ');
    let method =
        Method::from_bytes(parts.next().unwrap_or("POST").as_bytes()).unwrap_or(Method::POST);
    let query = parts.next();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let event = crate::source::request_event(
        "hooks",
        "push",
        &method,
        query,
        &headers,
        Bytes::copy_from_slice(body),
    );
    let _ = event.identity();
    let _ = event.to_json();
    let _ = event.data_text();
}

/// Parses `data` as a trigger's `conditions` over dependencies `a`, `b`, `c` and `dep-1`,
/// and evaluates what parses for every combination of present dependencies.
pub fn conditions(data: &[u8]) {
    let names: Vec<String> = ["a", "b", "c", "dep-1"].map(str::to_owned).to_vec();
    if let Ok(condition) = Condition::parse(&String::from_utf8_lossy(data), &names) {
        for bits in 0..16u8 {
            let present: Vec<bool> = (0..4).map(|i| bits & (1 << i) != 0).collect();
            let _ = condition.holds(&present);
        }
    }
}

/// Compiles `data` as a `transform.jq` program and runs what compiles on a small event.
pub fn jq(data: &[u8]) {
    if let Ok(program) = CompiledJq::compile(&String::from_utf8_lossy(data)) {
        let _ = program.run(&json!({"body": {"a": [1, 2.5, "x", null, {"b": true}]}}));
    }
}

/// Parses `data` as a Go duration (`retryStrategy.duration`, `policy.timeout`, …).
pub fn duration(data: &[u8]) {
    let _ = crate::backoff::parse_duration(&String::from_utf8_lossy(data));
}
