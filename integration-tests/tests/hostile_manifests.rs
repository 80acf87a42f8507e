//! Manifests a hostile or careless author could write, each of which once passed `validate`
//! and then crashed `run` (or crashed `validate` itself): every one is now refused by
//! `validate` with exit code 1 and the field path, never a panic or an abort.

use std::time::Duration;

use integration_tests::run_cli;

const TIMEOUT: Duration = Duration::from_secs(60);

fn webhook(endpoint: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: hooks\nspec:\n  webhook:\n    push:\n      port: \"12000\"\n      endpoint: {endpoint:?}\n"
    )
}

fn calendar(interval: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: ticks\nspec:\n  calendar:\n    tick:\n      interval: {interval:?}\n"
    )
}

/// A webhook source and a sensor on it whose trigger has `trigger_tail` (indented 6
/// spaces, beside `template`) and whose template has `template_tail` (indented 8).
fn sensor(dependency_tail: &str, template_tail: &str, trigger_tail: &str) -> String {
    format!(
        "{}---\napiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: s\nspec:\n  dependencies:\n    - name: push\n      eventSourceName: hooks\n      eventName: push\n{dependency_tail}  triggers:\n    - template:\n        name: t\n        log: {{}}\n{template_tail}{trigger_tail}",
        webhook("/push")
    )
}

/// `validate` exits 1 (not a panic's 101 or a signal) and names `field`.
fn assert_refused(name: &str, manifest: &str, field: &str, words: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).expect("write manifest");
    let out = run_cli(
        &["validate".as_ref(), "-f".as_ref(), path.as_os_str()],
        dir.path(),
        TIMEOUT,
    );
    assert_eq!(out.code, Some(1), "{name}: validate must refuse it\n{out}");
    assert!(
        out.stderr.contains(field) && words.iter().all(|w| out.stderr.contains(w)),
        "{name}: expected {field} and {words:?} in the errors\n{out}"
    );
    assert!(!out.stderr.contains("panicked"), "{name}\n{out}");
}

#[test]
fn webhook_endpoints_in_router_syntax_are_refused() {
    for endpoint in ["/:id", "/x/*rest", "/x/{", "/x/{id}", "/a b"] {
        assert_refused(
            "endpoint",
            &webhook(endpoint),
            "spec.webhook.push.endpoint",
            &[],
        );
    }
}

#[test]
fn durations_beyond_range_are_refused() {
    assert_refused(
        "interval",
        &calendar("8760000000h"),
        "spec.calendar.tick.interval",
        &[],
    );
    assert_refused(
        "retry-duration",
        &sensor(
            "",
            "",
            "      retryStrategy:\n        duration: 99999999999999999999h\n",
        ),
        "spec.triggers[0].retryStrategy.duration",
        &["out of range"],
    );
    assert_refused(
        "policy-timeout",
        &sensor(
            "",
            "",
            "      policy:\n        timeout: 99999999999999999999h\n",
        ),
        "spec.triggers[0].policy.timeout",
        &[],
    );
}

#[test]
fn jitter_outside_zero_to_one_is_refused() {
    assert_refused(
        "jitter",
        &sensor("", "", "      retryStrategy:\n        jitter: 1e300\n"),
        "spec.triggers[0].retryStrategy.jitter",
        &["out of range"],
    );
}

#[test]
fn deep_nesting_is_refused() {
    let parens = format!("{}push{}", "(".repeat(20_000), ")".repeat(20_000));
    assert_refused(
        "conditions",
        &sensor("", &format!("        conditions: \"{parens}\"\n"), ""),
        "spec.triggers[0].template.conditions",
        &["deeper than 32"],
    );
    let jq = format!("{}.{}", "(".repeat(5_000), ")".repeat(5_000));
    assert_refused(
        "jq",
        &sensor(&format!("      transform:\n        jq: \"{jq}\"\n"), "", ""),
        "spec.dependencies[0].transform",
        &["nests brackets"],
    );
}

#[test]
fn too_many_documents_are_refused() {
    let many = vec![webhook("/push"); 1_001].join("---\n");
    assert_refused("documents", &many, "", &["YAML documents"]);
}
