//! Offline tests of sensors and trigger policies (`triggerd test`) and the event files of
//! `triggerd eval`.
//!
//! A test file names the manifests under test and a list of cases. Each case publishes its
//! events on an embedded bus to the compiled sensors, which run exactly as in the agent:
//! transform, filters, conditions, parameters, payload, policy, retries with backoff and the
//! dead letter. Only the trigger attempts differ: a stub executor answers them from the
//! case's canned responses and records what would have been sent (see
//! [`crate::delivery::Executor`]). Backoff delays pass on a paused tokio clock, so retries
//! cost no real time.

pub mod file;
pub mod fuzz;
pub mod input;
pub mod matcher;
pub mod report;
pub mod runner;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use input::{parse_document, read_document, EventInput};
pub use runner::{CaseResult, Failure};

use crate::manifest::{load_paths, ManifestError, Position};
use crate::plan::build_plan;
use crate::script::{Limits, ScriptHost};

/// The results of one test file.
#[derive(Debug)]
pub struct FileResult {
    /// The test file.
    pub file: PathBuf,
    /// Why the file or its manifests could not be loaded (then no case ran).
    pub errors: Vec<ManifestError>,
    /// One result per case that ran.
    pub cases: Vec<CaseResult>,
    /// Real time the file took.
    pub duration: Duration,
}

impl FileResult {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    /// Cases that failed, a file that did not load counting as one.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed()).count() + usize::from(!self.errors.is_empty())
    }
}

/// Whether a file name is a test file (`*.test.yaml` or `*.test.yml`).
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

/// The test files under `paths`: files as given, directories searched recursively for
/// `*.test.yaml` / `*.test.yml` (skipping hidden directories and `target`), sorted.
pub fn find_test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            collect(path, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if entry.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect(&entry, out)?;
            }
        } else if is_test_file(&entry) {
            // `triggerd test .` reports `a.test.yaml`, not `./a.test.yaml`.
            let shown = entry
                .strip_prefix(".")
                .map_or(entry.clone(), Path::to_path_buf);
            out.push(shown);
        }
    }
    Ok(())
}

/// Loads a test file and its manifests and runs its cases whose name contains `only` (all
/// when `None`). `default_lib` holds the library directories used when the file names none.
pub fn run_file(file: &Path, default_lib: &[PathBuf], only: Option<&str>) -> FileResult {
    let started = tokio::time::Instant::now();
    let mut result = FileResult {
        file: file.to_path_buf(),
        errors: Vec::new(),
        cases: Vec::new(),
        duration: Duration::ZERO,
    };
    match load(file, default_lib) {
        Err(errors) => result.errors = errors,
        Ok((plan, host, cases)) => {
            for case in cases
                .iter()
                .filter(|c| only.is_none_or(|o| c.name.contains(o)))
            {
                result.cases.push(runner::run_case(&plan, &host, case));
            }
        }
    }
    result.duration = started.elapsed();
    result
}

type Loaded = (crate::plan::Plan, Arc<ScriptHost>, Vec<file::ResolvedCase>);

fn load(path: &Path, default_lib: &[PathBuf]) -> Result<Loaded, Vec<ManifestError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ManifestError::new(
            Position {
                file: path.to_path_buf(),
                ..Position::default()
            },
            "",
            format!("cannot read: {e}"),
        )]
    })?;
    let (test, origin) = file::parse(path, &text).map_err(|e| vec![e])?;
    let lib = file::library_dirs(&test, &origin).unwrap_or_else(|| default_lib.to_vec());
    let (docs, mut errors) = load_paths(&file::sensor_paths(&test, &origin));
    let host = Arc::new(ScriptHost::new(Limits::default(), lib.clone()));
    let plan = match build_plan(&docs, &host, &lib) {
        Ok(plan) if errors.is_empty() => plan,
        Ok(_) => return Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            return Err(errors);
        }
    };
    let cases = file::resolve(test, &origin, &plan)?;
    Ok((plan, host, cases))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_text;

    const SENSOR: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
  dependencies:
    - name: d
      eventSourceName: es
      eventName: e
      filters:
        script: 'event.ok'
  triggers:
    - template:
        name: t
        http:
          url: http://127.0.0.1:9/t
          payload:
            - src: {dependencyName: d, dataKey: n}
              dest: n
      retryStrategy: {steps: 4, duration: 1h, factor: 2}
      policy:
        script: 'if response.status == 200 { "success" } else if attempt < 3 { "retry" } else { "fail" }'
      dlqTrigger:
        template: {name: dlq, log: {}}
"#;

    fn run(test: &str) -> Vec<CaseResult> {
        let (mut docs, mut errors) = (Vec::new(), Vec::new());
        load_text(Path::new("s.yaml"), SENSOR, &mut docs, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let host = Arc::new(ScriptHost::new(Limits::default(), vec![]));
        let plan = build_plan(&docs, &host, &[]).expect("valid sensor");
        let (file, origin) = file::parse(Path::new("s.test.yaml"), test).expect("parses");
        let cases = file::resolve(file, &origin, &plan).expect("resolves");
        cases
            .iter()
            .map(|c| runner::run_case(&plan, &host, c))
            .collect()
    }

    #[test]
    fn the_agents_policy_retries_and_dead_letter_run_on_a_paused_clock() {
        let results = run(r#"
sensors: [s.yaml]
cases:
  - name: hours of backoff pass instantly
    events:
      - {dependency: d, data: {ok: true, n: 1}}
      - {dependency: d, data: {ok: false, n: 2}}
    responses:
      t: [{status: 500}, {status: 503}, {status: 500}]
    expect:
      fired:
        t:
          payloadExact: {n: "1"}
          request: {method: POST, url: "http://127.0.0.1:9/t"}
          outcome: dead-letter
          attempts: 3
          reason: policy
          deadLetter: {trigger: dlq, payload: {trigger: t, attempts: 3}, outcome: success}
      deadLetters: [t]
"#);
        assert!(results[0].passed(), "{:#?}", results[0]);
        // Two retries an hour and two hours apart: paused time, so no real wait.
        assert!(results[0].duration < Duration::from_secs(10));
    }

    #[test]
    fn wrong_expectations_fail_with_a_diff() {
        let results = run(r#"
sensors: [s.yaml]
cases:
  - name: wrong
    events:
      - {dependency: d, data: {ok: true, n: 1}}
    expect:
      fired:
        t: {payload: {n: "2"}, attempts: 2}
      notFired: [t]
"#);
        let failures = &results[0].failures;
        assert_eq!(failures.len(), 3, "{failures:#?}");
        assert_eq!(failures[0].what, "fired.t.payload");
        assert!(
            failures[0].detail.starts_with("differs at $.n"),
            "{}",
            failures[0].detail
        );
        assert!(failures[0]
            .detail
            .contains("expected: \"2\"\n  actual:   \"1\""));
        assert_eq!(failures[0].position.line, 9);
        assert_eq!(failures[1].what, "fired.t.attempts");
        assert_eq!(failures[2].what, "notFired.t");
        assert!(results[0].trace.iter().any(|l| l.contains("s/d accepted")));
    }

    #[test]
    fn rejected_events_say_which_filter() {
        let results = run(r#"
sensors: [s.yaml]
cases:
  - name: filtered
    events:
      - {dependency: d, data: {ok: false}}
    expect:
      fired:
        t: {}
"#);
        assert!(!results[0].passed());
        assert_eq!(
            results[0].failures[0].detail,
            "expected to fire once, fired 0 times"
        );
        assert!(
            results[0].trace[0].contains("rejected (script filter does not match)"),
            "{:?}",
            results[0].trace
        );
    }
}
