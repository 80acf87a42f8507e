//! The Rhai files shipped in `scripts/` and `policies/` compile under the hardened engine and
//! decide as documented.

use std::path::PathBuf;

use rhai::Dynamic;
use serde_json::json;
use triggerd::script::{to_dynamic, Limits, ScriptHost, ScriptKind};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn host() -> ScriptHost {
    ScriptHost::new(
        Limits::default(),
        vec![repo().join("scripts"), repo().join("policies")],
    )
}

fn policy(name: &str, response: serde_json::Value) -> Dynamic {
    let h = host();
    let src = std::fs::read_to_string(repo().join("policies").join(name)).unwrap();
    let script = h.compile(ScriptKind::Policy, &src).unwrap();
    let vars = [
        ("response", to_dynamic(&response)),
        ("attempt", Dynamic::from(1_i64)),
        ("max_attempts", Dynamic::from(3_i64)),
        ("events", Dynamic::UNIT),
    ];
    h.eval(&script, vars).unwrap()
}

fn outcome(d: &Dynamic) -> String {
    if let Some(m) = d.clone().try_cast::<rhai::Map>() {
        return m["outcome"].to_string();
    }
    d.to_string()
}

#[test]
fn every_policy_compiles() {
    let h = host();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        h.compile(ScriptKind::Policy, &src)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn every_script_module_imports() {
    let h = host();
    for entry in std::fs::read_dir(repo().join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        h.compile(ScriptKind::Payload, &format!("import \"{name}\" as m; 1"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn allow_2xx_fails_everything_else() {
    assert_eq!(
        outcome(&policy("allow-2xx.rhai", json!({"status": 204}))),
        "success"
    );
    assert_eq!(
        outcome(&policy("allow-2xx.rhai", json!({"status": 503}))),
        "fail"
    );
    assert_eq!(
        outcome(&policy("allow-2xx.rhai", json!({"error": "refused"}))),
        "fail"
    );
}

#[test]
fn retry_on_5xx_retries_server_errors_only() {
    let p = |r| outcome(&policy("retry-on-5xx.rhai", r));
    assert_eq!(p(json!({"status": 200, "headers": {}})), "success");
    assert_eq!(p(json!({"status": 503, "headers": {}})), "retry");
    assert_eq!(
        p(json!({"status": 429, "headers": {"retry-after": "2"}})),
        "retry"
    );
    assert_eq!(p(json!({"status": 404, "headers": {}})), "fail");
    assert_eq!(p(json!({"error": "connection refused"})), "retry");
}

#[test]
fn workflow_succeeded_waits_for_the_phase() {
    let p = |phase: &str| {
        outcome(&policy(
            "workflow-succeeded.rhai",
            json!({"operation": "create", "status": 201, "object": {"status": {"phase": phase}}}),
        ))
    };
    assert_eq!(p("Running"), "wait");
    assert_eq!(p("Succeeded"), "success");
    assert_eq!(p("Failed"), "fail");
    let no_status = policy(
        "workflow-succeeded.rhai",
        json!({"operation": "create", "status": 201, "object": {}}),
    );
    assert_eq!(outcome(&no_status), "wait");
    let refused = |status: i64| {
        outcome(&policy(
            "workflow-succeeded.rhai",
            json!({"operation": "create", "status": status, "reason": "r", "message": "m", "object": null}),
        ))
    };
    assert_eq!(refused(409), "fail");
    assert_eq!(refused(403), "fail");
    assert_eq!(refused(500), "retry");
    assert_eq!(refused(429), "retry");
    assert_eq!(
        outcome(&policy(
            "workflow-succeeded.rhai",
            json!({"error": "connection refused"})
        )),
        "retry"
    );
}

#[test]
fn github_helpers_work() {
    let h = host();
    let s = h
        .compile(
            ScriptKind::Filter,
            "import \"github\" as gh; gh::pushed_to(event, [\"main\"]) && gh::short_sha(event) == \"abcdef1\"",
        )
        .unwrap();
    let event = to_dynamic(&json!({"body": {"ref": "refs/heads/main", "after": "abcdef1234"}}));
    let r = h
        .eval(&s, [("event", event), ("ctx", Dynamic::UNIT)])
        .unwrap();
    assert!(r.as_bool().unwrap());
}
