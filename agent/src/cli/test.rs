//! `triggerd test`: run sensor test files offline and report like a CI test runner.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::testing::{find_test_files, report, run_file};

const LONG_ABOUT: &str = "\
Runs sensor test files offline: nothing leaves the process.

Each test file names the manifests under test and a list of cases. A case sends events to
the sensors, which run exactly as in the agent (transform, filters, conditions, parameters,
payload, policy, retries with backoff, dead letter); only the trigger attempts are answered
by stubbed responses instead of the network. Retry delays pass on a paused clock, so a case
with backoff still runs in milliseconds.

Prints `PASS name` or `FAIL name` per case, with a diff for every failed expectation, then
`N passed, M failed`. Exits 1 when any case fails or a test file does not load (errors name
FILE:LINE:COLUMN).";

const AFTER_LONG_HELP: &str = "\
TEST FILE FORMAT (promote.test.yaml, next to promote.yaml):

  sensors: [promote.yaml]          # manifests under test (files or directories), relative
                                   # to this file; EventSources are optional
  lib: [../scripts, ../policies]   # optional Rhai library dirs (default: --lib)
  cases:
    - name: promotes on a green report
      clock: \"2026-11-23T10:00:00Z\"  # optional start time (time filters, event times)
      events:                        # sent in order
        - dependency: report         # a dependency name, or eventSource: + eventName:
          data: {body: {status: passed, app: shop}}   # the event data (webhook: {header, body})
          context: {id: r-1}         # optional CloudEvent attributes and extensions
          after: 30s                 # optional: arrives 30s after the previous event
      responses:                     # optional stubs per trigger (default: status 200);
        promote:                     # attempt n gets item n, the last one repeats
          - {status: 503}
          - {error: connection refused}  # a transport error (retryable: false to fail)
          - {status: 200, body: {ok: true}, headers: {X-Id: \"1\"}}
        invoke-lambda:               # an awsLambda trigger: status, functionError, payload
          - {status: 429, payload: {message: Rate exceeded}}   # throttled: retried
          - {status: 200, functionError: Unhandled, payload: {errorMessage: boom}}
      expect:
        fired:                       # triggers that must fire (a mapping: exactly once, or
          promote:                   # `times: N`; a list: one item per firing, in order)
            payload: {action: promote}   # subset of the payload (payloadExact: exact match)
            request: {method: PATCH}     # subset of {type, url, method, headers, timeout}
            outcome: success             # success | dead-letter
            attempts: 3
            # reason: \"status 404\"      # text in the dead-letter reason
            # deadLetter: {trigger: promote-dlq, payload: {...}, outcome: success}
        notFired: [rollback]         # triggers that must not fire
        deadLetters: []              # exactly the triggers that end in the dead letter

Stubs take the reply shape of their trigger: http and log triggers {status, headers, body};
awsLambda triggers {status, functionError, payload} (a function error is a 200 with
functionError set; the default policy fails it at once); nats triggers {} (published);
kafka triggers {} (acknowledged; policies see partition 0, offset 0); any trigger
{error, retryable}. An awsLambda request is {type: awsLambda, functionName,
invocationType}, a nats request {type: nats, subject}, a kafka request {type: kafka, topic,
partitioningKey}.
A trigger is named `name`, or `sensor/name` when several sensors have one of that name.
Subset match: every key given must match, other keys are ignored; arrays match item by
item. A failed case also prints what happened: each event with the verdict of every
dependency (and which filter rejected it), and each firing with its attempts.

EXAMPLES:
  triggerd test manifests/examples
  triggerd test sensors/promote.test.yaml --junit report.xml
  triggerd test sensors --case rollback --verbose";

/// Arguments of `test`.
#[derive(Debug, Args)]
#[command(long_about = LONG_ABOUT, after_long_help = AFTER_LONG_HELP)]
pub struct TestArgs {
    /// Test files, or directories searched for *.test.yaml / *.test.yml.
    #[arg(value_name = "PATH", required_unless_present = "files")]
    paths: Vec<PathBuf>,
    /// The same as the positional paths, for those used to `-f` (repeatable).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Rhai library directory for test files without `lib:`; repeatable.
    /// Default: ./scripts and ./policies when they exist.
    #[arg(long = "lib", value_name = "DIR")]
    lib: Vec<PathBuf>,
    /// Also write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Only run cases whose name contains TEXT.
    #[arg(long = "case", value_name = "TEXT")]
    case: Option<String>,
    /// Also show what happened in passing cases.
    #[arg(short, long)]
    verbose: bool,
}

/// Runs every test file; exit 1 on any failure.
pub fn test(args: TestArgs) -> ExitCode {
    let paths: Vec<PathBuf> = args.paths.iter().chain(&args.files).cloned().collect();
    let files = match find_test_files(&paths) {
        Ok(f) if f.is_empty() => {
            eprintln!("error: no *.test.yaml files under the given paths");
            return ExitCode::FAILURE;
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lib = super::SourceArgs {
        files: Vec::new(),
        paths: Vec::new(),
        lib: args.lib.clone(),
    }
    .library_dirs();
    let mut results = Vec::new();
    for file in &files {
        let result = run_file(file, &lib, args.case.as_deref());
        out!("{}", report::text(&result, args.verbose));
        results.push(result);
    }
    let summary = report::summary(&results);
    outln!();
    outln!("{summary}");
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, report::junit(&results)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if results.iter().any(|r| r.failed() > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
