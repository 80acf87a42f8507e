//! `triggerd test` and `triggerd eval`, run as a user runs them: the repository's examples
//! pass their own test files, a wrong expectation fails with a diff and exit code 1, a
//! malformed test file is reported with FILE:LINE:COLUMN, and `eval` explains one event.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{line_of, run_cli, workspace_root, CliOutput};

const TIMEOUT: Duration = Duration::from_secs(60);

fn examples() -> PathBuf {
    workspace_root().join("manifests").join("examples")
}

/// A temp dir holding a copy of the promotion example and the shipped policies.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let sensor = std::fs::read_to_string(examples().join("promotion.yaml"))
            .expect("the promotion example exists");
        std::fs::write(dir.path().join("promotion.yaml"), sensor).expect("write sensor");
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).expect("policies dir");
        let policy = workspace_root().join("policies").join("retry-on-5xx.rhai");
        std::fs::copy(policy, policies.join("retry-on-5xx.rhai")).expect("copy policy");
        Fixture { dir }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("write fixture");
    }

    fn triggerd(&self, args: &[&str]) -> CliOutput {
        run_cli(args, self.dir.path(), TIMEOUT)
    }
}

fn closing_line(output: &CliOutput) -> &str {
    output.stdout.lines().last().unwrap_or("")
}

#[test]
fn the_examples_pass_their_own_tests() {
    let root = workspace_root();
    let output = run_cli(&["test", "manifests/examples"], &root, TIMEOUT);
    assert_eq!(output.code, Some(0), "{output}");
    assert!(!output.stdout.contains("FAIL"), "{output}");
    // Every example with a test file ran, including the promotion/rollback one.
    for name in [
        "promotion",
        "alerts",
        "release-gate",
        "github-push",
        "quickstart",
        "lambda",
    ] {
        assert!(
            output
                .stdout
                .contains(&format!("== manifests/examples/{name}.test.yaml")),
            "{name}.test.yaml did not run\n{output}"
        );
    }
    for case in [
        "PASS a green report promotes the release",
        "PASS a red report rolls the release back",
        "PASS a flaky promotion service succeeds on the third attempt",
        "PASS a 4xx from the promotion service goes to the dead letter at once",
        "PASS a function error goes to the dead letter at once",
        "PASS a throttled invocation succeeds on retry",
    ] {
        assert!(output.stdout.contains(case), "missing {case:?}\n{output}");
    }
    let closing = closing_line(&output);
    let passed: usize = closing
        .strip_suffix(" passed, 0 failed")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("closing line {closing:?}\n{output}"));
    assert!(passed >= 20, "{output}");
}

#[test]
fn every_example_sensor_has_a_test_file_or_is_listed_here() {
    // Examples without a test file yet; add one rather than growing this list.
    const UNTESTED: &[&str] = &[];
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(examples()).expect("examples dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".yaml") || name.ends_with(".test.yaml") || UNTESTED.contains(&name) {
            continue;
        }
        let test = path.with_file_name(name.replace(".yaml", ".test.yaml"));
        if !test.is_file() {
            missing.push(name.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "examples without a test file: {missing:?}"
    );
}

const WRONG: &str = r#"sensors: [promotion.yaml]
lib: [policies]
cases:
  - name: promotes on green
    events:
      - dependency: report-passed
        data: {body: {app: shop, revision: v1, status: passed, total: 3, failed: 0}}
    expect:
      fired:
        promote:
          payload: {action: abort}
  - name: rolls back on red
    events:
      - dependency: report-failed
        data: {body: {app: shop, revision: v2, status: failed, total: 3, failed: 1}}
    expect:
      fired:
        rollback: {outcome: success}
"#;

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff() {
    let fixture = Fixture::new();
    fixture.write("wrong.test.yaml", WRONG);
    let output = fixture.triggerd(&["test", "wrong.test.yaml", "--junit", "report.xml"]);
    assert_eq!(output.code, Some(1), "a failed case must exit 1\n{output}");
    let line = line_of(WRONG, "payload: {action: abort}");
    let expected = [
        "FAIL promotes on green (wrong.test.yaml:4:".to_owned(),
        format!("  wrong.test.yaml:{line}:20: fired.promote.payload differs at $.action"),
        "    expected: \"abort\"".to_owned(),
        "    actual:   \"promote\"".to_owned(),
        "    expected payload (subset): {\"action\":\"abort\"}".to_owned(),
        "    actual payload:            {\"rollout\":\"shop\",\"revision\":\"v1\",\"action\":\"promote\"}".to_owned(),
    ];
    for text in &expected {
        assert!(
            output.stdout.contains(text.as_str()),
            "missing {text:?}\n{output}"
        );
    }
    assert!(
        output.stdout.contains("\nPASS rolls back on red\n"),
        "{output}"
    );
    assert_eq!(closing_line(&output), "1 passed, 1 failed", "{output}");

    let xml = std::fs::read_to_string(fixture.dir.path().join("report.xml")).expect("junit");
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains("<testsuites name=\"triggerd test\" tests=\"2\" failures=\"1\" errors=\"0\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"fired.promote.payload differs at $.action\""),
        "{xml}"
    );
    assert!(xml.contains("name=\"rolls back on red\""), "{xml}");
}

#[test]
fn a_malformed_test_file_names_file_line_and_field() {
    let fixture = Fixture::new();
    let bad = "sensors: [promotion.yaml]\nlib: [policies]\ncases:\n  - name: typo\n    events:\n      - dependency: report-passed\n        dat: {body: {}}\n";
    fixture.write("bad.test.yaml", bad);
    let unknown = "sensors: [promotion.yaml]\nlib: [policies]\ncases:\n  - name: unknown names\n    events:\n      - {dependency: report-pased, data: {}}\n    expect:\n      notFired: [promte]\n";
    fixture.write("unknown.test.yaml", unknown);
    let output = fixture.triggerd(&["test", "."]);
    assert_eq!(output.code, Some(1), "{output}");
    let line = line_of(bad, "dat:");
    assert!(
        output.stdout.contains(&format!(
            "bad.test.yaml:{line}:9: cases[0].events[0].dat: unknown field `dat`"
        )),
        "{output}"
    );
    let dep = line_of(unknown, "report-pased");
    assert!(
        output.stdout.contains(&format!(
            "unknown.test.yaml:{dep}:22: cases[0].events[0].dependency: unknown dependency \"report-pased\""
        )),
        "{output}"
    );
    assert!(
        output
            .stdout
            .contains("hint: dependencies: report-passed, report-failed"),
        "{output}"
    );
    let trigger = line_of(unknown, "promte");
    assert!(
        output.stdout.contains(&format!(
            "unknown.test.yaml:{trigger}:18: cases[0].expect.notFired[0]: unknown trigger \"promte\""
        )),
        "{output}"
    );
    assert_eq!(closing_line(&output), "0 passed, 2 failed", "{output}");
}

#[test]
fn no_test_files_is_an_error() {
    let fixture = Fixture::new();
    let output = fixture.triggerd(&["test", "."]);
    assert_eq!(output.code, Some(1), "{output}");
    assert!(output.stderr.contains("no *.test.yaml files"), "{output}");
}

fn eval(fixture: &Fixture, args: &[&str], event: &str) -> CliOutput {
    fixture.write("event.yaml", event);
    let mut all = vec!["eval", "--lib", "policies", "--event", "event.yaml"];
    all.extend_from_slice(args);
    fixture.triggerd(&all)
}

#[test]
fn eval_explains_one_dependency() {
    let fixture = Fixture::new();
    let passed = "data: {body: {app: shop, revision: v9, status: passed, total: 3, failed: 0}}\ncontext: {id: e-1}\n";
    let output = eval(
        &fixture,
        &["-f", "promotion.yaml", "--dependency", "report-passed"],
        passed,
    );
    assert_eq!(output.code, Some(0), "{output}");
    for text in [
        "sensor promotion, dependency report-passed (ci/test-report)",
        "filters (and): pass",
        "  promote: fires",
        "    request: PATCH http://127.0.0.1:18080/rollouts/shop/promote",
        "{\"rollout\":\"shop\",\"revision\":\"v9\",\"action\":\"promote\"}",
        "  rollback: does not fire",
    ] {
        assert!(output.stdout.contains(text), "missing {text:?}\n{output}");
    }

    let output = eval(
        &fixture,
        &[
            "-f",
            "promotion.yaml",
            "--dependency",
            "report-failed",
            "--json",
        ],
        passed,
    );
    assert_eq!(output.code, Some(0), "{output}");
    let report: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
    assert_eq!(report["accepted"], false, "{output}");
    assert_eq!(report["filters"]["kinds"][0]["kind"], "data", "{output}");
    assert_eq!(report["filters"]["kinds"][0]["pass"], false, "{output}");
    assert_eq!(report["triggers"][1]["name"], "rollback", "{output}");
    assert_eq!(report["triggers"][1]["fires"], false, "{output}");
}

#[test]
fn eval_runs_a_bare_script_and_a_policy() {
    let fixture = Fixture::new();
    fixture.write("check.rhai", "event.body.failed == 0 && ctx.id == \"e-2\"");
    let output = eval(
        &fixture,
        &["--script", "check.rhai", "--kind", "filter"],
        "data: {body: {failed: 0}}\ncontext: {id: e-2}\n",
    );
    assert_eq!(output.code, Some(0), "{output}");
    assert_eq!(output.stdout.trim(), "true", "{output}");

    fixture.write("typo.rhai", "evnt.body");
    let output = eval(&fixture, &["--script", "typo.rhai"], "{}");
    assert_eq!(output.code, Some(1), "{output}");
    assert!(output.stderr.contains("typo.rhai:1:1: Rhai:"), "{output}");

    fixture.write("response.json", r#"{"status": 404}"#);
    let output = fixture.triggerd(&[
        "eval",
        "--script",
        Path::new("policies")
            .join("retry-on-5xx.rhai")
            .to_str()
            .expect("utf-8"),
        "--kind",
        "policy",
        "--response",
        "response.json",
    ]);
    assert_eq!(output.code, Some(0), "{output}");
    let result: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
    // The policy returns the outcome map itself: printed once, not as result and outcome.
    assert_eq!(
        result,
        serde_json::json!({"outcome": "fail", "reason": "status 404"}),
        "{output}"
    );

    // A result written another way is shown beside the outcome it means.
    fixture.write("yes.rhai", "true");
    let output = fixture.triggerd(&[
        "eval",
        "--script",
        "yes.rhai",
        "--kind",
        "policy",
        "--response",
        "response.json",
    ]);
    assert_eq!(output.code, Some(0), "{output}");
    let result: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
    assert_eq!(result["result"], true, "{output}");
    assert_eq!(result["outcome"]["outcome"], "success", "{output}");
}

#[test]
fn every_command_takes_paths_with_and_without_f() {
    let fixture = Fixture::new();
    for args in [
        &["validate", "promotion.yaml", "--lib", "policies"][..],
        &["validate", "-f", "promotion.yaml", "--lib", "policies"],
    ] {
        let output = fixture.triggerd(args);
        assert_eq!(output.code, Some(0), "{args:?}: {output}");
    }
    let test_file = "manifests/examples/quickstart.test.yaml";
    for args in [&["test", test_file][..], &["test", "-f", test_file]] {
        let output = run_cli(args, &workspace_root(), TIMEOUT);
        assert_eq!(output.code, Some(0), "{args:?}: {output}");
        assert!(output.stdout.contains("0 failed"), "{args:?}: {output}");
    }
    let passed = "data: {body: {app: shop, revision: v9, status: passed, total: 3, failed: 0}}\n";
    let output = eval(
        &fixture,
        &["promotion.yaml", "--dependency", "report-passed"],
        passed,
    );
    assert_eq!(output.code, Some(0), "{output}");
    assert!(output.stdout.contains("promote: fires"), "{output}");
    // `run` takes a positional path too (here one that does not exist: the error names it).
    let output = fixture.triggerd(&["run", "missing.yaml"]);
    assert_eq!(output.code, Some(1), "{output}");
    assert!(output.stderr.contains("missing.yaml"), "{output}");
    // `--log-format` is under its own heading, not the bus's.
    let help = fixture.triggerd(&["run", "--help"]).stdout;
    let logging = help.find("Logging:").expect("a Logging heading");
    assert!(help[logging..].contains("--log-format"), "{help}");
    let bus = help.find("Event bus:").expect("an Event bus heading");
    assert!(
        !help[bus..logging.max(bus)].contains("--log-format"),
        "{help}"
    );
}
