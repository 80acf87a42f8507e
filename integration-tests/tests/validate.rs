//! `triggerd validate`: every error with its file, line, column and field path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{line_of, run_cli, workspace_root, CliOutput};

const TIMEOUT: Duration = Duration::from_secs(60);

const SOURCE: &str = r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    push:
      port: "12000"
      endpoint: /push
      method: POST
"#;

/// A sensor on `hooks/push`; `dependency_tail` is inserted after `eventSourceName`
/// (indented 6 spaces) and must supply the event name.
fn sensor(name: &str, dependency_tail: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: {name}
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
{dependency_tail}  triggers:
    - template:
        name: notify
        http:
          url: http://127.0.0.1:9/hook
          method: POST
          payload:
            - src:
                dependencyName: push
                script: 'event.body.commits.len()'
              dest: commits
"#
    )
}

/// `SOURCE` and `sensor` as one two-document file.
fn with_source(sensor: &str) -> String {
    format!("{SOURCE}---\n{sensor}")
}

struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn new() -> Fixtures {
        Fixtures {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Write `name` and return its canonical path (as the agent should print it).
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
        std::fs::write(&path, text).expect("write fixture");
        path.canonicalize().expect("canonical fixture path")
    }

    /// `triggerd validate -f PATH...`, run inside the fixture dir.
    fn validate(&self, paths: &[&Path]) -> CliOutput {
        let mut args = vec!["validate".as_ref()];
        for path in paths {
            args.push("-f".as_ref());
            args.push(path.as_os_str());
        }
        run_cli(&args, self.dir.path(), TIMEOUT)
    }
}

/// stderr has a line `FILE:LINE:COLUMN: ...` for `file` and `line` whose text
/// contains every one of `words`.
fn assert_reported(output: &CliOutput, file: &Path, line: usize, words: &[&str]) {
    let prefix = format!("{}:{line}:", file.display());
    let found = output.stderr.lines().any(|text| {
        let Some(at) = text.find(&prefix) else {
            return false;
        };
        let rest = &text[at + prefix.len()..];
        let column_digits = rest.chars().take_while(char::is_ascii_digit).count();
        column_digits > 0
            && rest[column_digits..].starts_with(':')
            && words.iter().all(|word| rest.contains(word))
    });
    assert!(
        found,
        "expected an error `{prefix}COLUMN: ...` mentioning {words:?}\n{output}"
    );
}

fn assert_failed(output: &CliOutput) {
    assert_eq!(
        output.code,
        Some(1),
        "validate must exit 1 on errors\n{output}"
    );
}

#[test]
fn malformed_yaml_reports_its_line() {
    let fixtures = Fixtures::new();
    let unclosed = "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: broken\n  foo: [unclosed\n";
    let unclosed_path = fixtures.write("unclosed.yaml", unclosed);
    let output = fixtures.validate(&[&unclosed_path]);
    assert_failed(&output);
    assert_reported(
        &output,
        &unclosed_path,
        line_of(unclosed, "foo: [unclosed"),
        &[],
    );

    let nested = "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: broken\n  labels: a: b\nspec: {}\n";
    let nested_path = fixtures.write("nested.yaml", nested);
    let output = fixtures.validate(&[&nested_path]);
    assert_failed(&output);
    assert_reported(&output, &nested_path, line_of(nested, "labels: a: b"), &[]);
}

#[test]
fn unknown_field_reports_line_and_field_path() {
    let fixtures = Fixtures::new();
    let text = with_source(&sensor("typo", "      evntName: push\n"));
    let path = fixtures.write("typo.yaml", &text);
    let output = fixtures.validate(&[&path]);
    assert_failed(&output);
    assert_reported(
        &output,
        &path,
        line_of(&text, "evntName"),
        &["spec.dependencies[0].evntName"],
    );
}

#[test]
fn rhai_syntax_error_in_block_script_maps_to_the_file_line() {
    let fixtures = Fixtures::new();
    let filter = "      eventName: push\n      filters:\n        script: |\n          let r = event.body.ref;\n          r == == \"refs/heads/main\"\n";
    let text = with_source(&sensor("syntax", filter));
    let path = fixtures.write("syntax.yaml", &text);
    let output = fixtures.validate(&[&path]);
    assert_failed(&output);
    // Line 2 of the script is the file line holding `r == ==`.
    assert_reported(
        &output,
        &path,
        line_of(&text, "r == =="),
        &["spec.dependencies[0].filters.script"],
    );
}

#[test]
fn undefined_variable_in_script_is_a_load_error() {
    let fixtures = Fixtures::new();
    let filter = "      eventName: push\n      filters:\n        script: 'evnt.body.ref == \"refs/heads/main\"'\n";
    let text = with_source(&sensor("strict", filter));
    let path = fixtures.write("strict.yaml", &text);
    let output = fixtures.validate(&[&path]);
    assert_failed(&output);
    assert_reported(
        &output,
        &path,
        line_of(&text, "evnt.body.ref"),
        &["spec.dependencies[0].filters.script", "evnt"],
    );
}

#[test]
fn every_bad_document_of_a_file_is_reported() {
    let fixtures = Fixtures::new();
    let source = SOURCE.replace("endpoint: /push", "endpont: /push");
    let text = format!("{source}---\n{}", sensor("typo", "      evntName: push\n"));
    let path = fixtures.write("two.yaml", &text);
    let output = fixtures.validate(&[&path]);
    assert_failed(&output);
    assert_reported(
        &output,
        &path,
        line_of(&text, "endpont"),
        &["spec.webhook.push.endpont"],
    );
    assert_reported(
        &output,
        &path,
        line_of(&text, "evntName"),
        &["spec.dependencies[0].evntName"],
    );
}

#[test]
fn every_bad_file_of_a_directory_is_reported() {
    let fixtures = Fixtures::new();
    let typo = with_source(&sensor("typo", "      evntName: push\n"));
    let typo_path = fixtures.write("dir/a.yaml", &typo);
    let script = with_source(&sensor(
        "strict",
        "      eventName: push\n      filters:\n        script: 'evnt.body.ref == \"main\"'\n",
    ))
    .replace("name: hooks", "name: hooks2")
    .replace("eventSourceName: hooks", "eventSourceName: hooks2")
    .replace("port: \"12000\"", "port: \"12001\"");
    let script_path = fixtures.write("dir/b.yml", &script);
    let dir = script_path.parent().expect("fixture dir").to_path_buf();
    let output = fixtures.validate(&[&dir]);
    assert_failed(&output);
    assert_reported(
        &output,
        &typo_path,
        line_of(&typo, "evntName"),
        &["spec.dependencies[0].evntName"],
    );
    assert_reported(
        &output,
        &script_path,
        line_of(&script, "evnt.body"),
        &["spec.dependencies[0].filters.script"],
    );
}

#[test]
fn valid_manifests_pass() {
    let fixtures = Fixtures::new();
    let filter = "      eventName: push\n      filters:\n        script: |\n          let r = event.body.ref;\n          r == \"refs/heads/main\"\n";
    let path = fixtures.write("ok.yaml", &with_source(&sensor("fine", filter)));
    let output = fixtures.validate(&[&path]);
    assert_eq!(output.code, Some(0), "{output}");
}

#[test]
fn repository_examples_validate() {
    let root = workspace_root();
    let examples = root.join("manifests").join("examples");
    assert!(
        examples.is_dir(),
        "{} is missing: the examples are validated here",
        examples.display()
    );
    let mut args = vec!["validate".into(), "-f".into(), examples.into_os_string()];
    for lib in ["scripts", "policies"] {
        let dir = root.join(lib);
        if dir.is_dir() {
            args.push("--lib".into());
            args.push(dir.into_os_string());
        }
    }
    let output = run_cli(&args, &root, TIMEOUT);
    assert_eq!(output.code, Some(0), "{output}");
}
