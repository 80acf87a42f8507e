//! Reports of test runs: text for people and CI logs, JUnit XML for CI systems.

use std::fmt::Write as _;

use super::{CaseResult, FileResult};
use crate::manifest::Position;

fn position(p: &Position) -> String {
    format!("{}:{}:{}", p.file.display(), p.line, p.column)
}

/// The text report of one file: a header, `PASS name` / `FAIL name` per case, and under each
/// failure every failed expectation with what differs and what happened. `verbose` adds what
/// happened for passing cases too.
pub fn text(file: &FileResult, verbose: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== {}", file.file.display());
    if !file.errors.is_empty() {
        let _ = writeln!(out, "FAIL {} (not loaded)", file.file.display());
        for e in &file.errors {
            for line in e.to_string().lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        return out;
    }
    if file.cases.is_empty() {
        let _ = writeln!(out, "(no cases)");
    }
    for case in &file.cases {
        case_text(&mut out, case, verbose);
    }
    out
}

fn case_text(out: &mut String, case: &CaseResult, verbose: bool) {
    if case.passed() {
        let _ = writeln!(out, "PASS {}", case.name);
        if verbose {
            trace_text(out, case);
        }
        return;
    }
    let _ = writeln!(out, "FAIL {} ({})", case.name, position(&case.position));
    for f in &case.failures {
        let mut lines = f.detail.lines();
        let first = lines.next().unwrap_or("");
        let _ = writeln!(out, "  {}: {} {first}", position(&f.position), f.what);
        for line in lines {
            let _ = writeln!(out, "  {line}");
        }
    }
    trace_text(out, case);
}

fn trace_text(out: &mut String, case: &CaseResult) {
    if case.trace.is_empty() {
        return;
    }
    let _ = writeln!(out, "  what happened:");
    for line in &case.trace {
        for l in line.lines() {
            let _ = writeln!(out, "    {l}");
        }
    }
}

/// The closing line: `N passed, M failed`.
pub fn summary(files: &[FileResult]) -> String {
    let passed: usize = files.iter().map(FileResult::passed).sum();
    let failed: usize = files.iter().map(FileResult::failed).sum();
    format!("{passed} passed, {failed} failed")
}

/// JUnit XML: one `testsuite` per file, one `testcase` per case; a file that did not load is
/// one `testcase` with an `error`.
pub fn junit(files: &[FileResult]) -> String {
    let tests: usize = files
        .iter()
        .map(|f| f.cases.len() + usize::from(!f.errors.is_empty()))
        .sum();
    let failures: usize = files
        .iter()
        .map(|f| f.cases.iter().filter(|c| !c.passed()).count())
        .sum();
    let errors = files.iter().filter(|f| !f.errors.is_empty()).count();
    let time: f64 = files.iter().map(|f| f.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"triggerd test\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">"
    );
    for f in files {
        let name = escape(&f.file.display().to_string());
        let failed = f.cases.iter().filter(|c| !c.passed()).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failed}\" errors=\"{}\" time=\"{:.3}\">",
            f.cases.len() + usize::from(!f.errors.is_empty()),
            usize::from(!f.errors.is_empty()),
            f.duration.as_secs_f64()
        );
        if !f.errors.is_empty() {
            let text: Vec<String> = f.errors.iter().map(ToString::to_string).collect();
            let first = f.errors[0].to_string();
            let first = first.lines().next().unwrap_or("");
            let _ = writeln!(
                out,
                "    <testcase classname=\"{name}\" name=\"(load)\" file=\"{name}\">\n      <error message=\"{}\" type=\"load\">{}</error>\n    </testcase>",
                escape(first),
                escape(&text.join("\n"))
            );
        }
        for c in &f.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{name}\" name=\"{}\" file=\"{name}\" line=\"{}\" time=\"{:.3}\"",
                escape(&c.name),
                c.position.line,
                c.duration.as_secs_f64()
            );
            if c.passed() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            let mut body = String::new();
            case_text(&mut body, c, false);
            let first = &c.failures[0];
            let message = format!(
                "{} {}",
                first.what,
                first.detail.lines().next().unwrap_or("")
            );
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"expectation\">{}</failure>\n    </testcase>",
                escape(&message),
                escape(&body)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot hold.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Failure;
    use std::path::PathBuf;
    use std::time::Duration;

    fn case(name: &str, failures: Vec<Failure>) -> CaseResult {
        CaseResult {
            name: name.into(),
            position: Position {
                file: "a.test.yaml".into(),
                line: 3,
                column: 11,
            },
            failures,
            trace: vec!["event #1 s/e: d accepted".into()],
            duration: Duration::from_millis(2),
        }
    }

    fn results() -> Vec<FileResult> {
        let failure = Failure {
            position: Position {
                file: "a.test.yaml".into(),
                line: 9,
                column: 13,
            },
            what: "fired.t.payload".into(),
            detail: "differs at $.a\n  expected: \"<x>\"\n  actual:   \"y\"".into(),
        };
        vec![FileResult {
            file: PathBuf::from("a.test.yaml"),
            errors: vec![],
            cases: vec![case("ok", vec![]), case("bad & ugly", vec![failure])],
            duration: Duration::from_millis(5),
        }]
    }

    #[test]
    fn text_report_names_cases_and_diffs() {
        let files = results();
        let text = text(&files[0], false);
        assert!(text.contains("PASS ok\n"), "{text}");
        assert!(
            text.contains("FAIL bad & ugly (a.test.yaml:3:11)\n  a.test.yaml:9:13: fired.t.payload differs at $.a\n    expected: \"<x>\""),
            "{text}"
        );
        assert!(text.contains("what happened:"), "{text}");
        assert_eq!(summary(&files), "1 passed, 1 failed");
    }

    #[test]
    fn junit_is_escaped_xml() {
        let xml = junit(&results());
        assert!(xml.starts_with("<?xml"));
        assert!(
            xml.contains("tests=\"2\" failures=\"1\" errors=\"0\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"bad &amp; ugly\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"fired.t.payload differs at $.a\""),
            "{xml}"
        );
        assert!(xml.contains("&quot;&lt;x&gt;&quot;"), "{xml}");
        assert!(!xml.contains("<x>"));
        assert_eq!(escape("a\u{1}b"), "ab");
    }
}
