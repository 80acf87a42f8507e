//! What the engine takes away or bounds so that no script can block a thread, outlive its
//! deadline by more than one bounded operation, amplify memory or flood the log: `sleep` is
//! refused, splitting checks the size of its result before building it, regular
//! expressions have bounded pattern and input sizes, and `print`/`debug` output is capped
//! per evaluation.

use std::cell::Cell;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, INT};

/// Bytes of `print`/`debug` output one evaluation may write; the rest is dropped with one
/// notice.
pub const MAX_PRINT_BYTES: usize = 4 * 1024;

/// The largest compiled regular expression (bytes of its program), which bounds its cost
/// per input byte.
const MAX_REGEX_SIZE: usize = 256 * 1024;

/// The longest text a regular expression is run over.
pub const MAX_REGEX_INPUT: usize = 1024 * 1024;

thread_local! {
    /// `print`/`debug` bytes written by the evaluation running on this thread.
    static PRINTED: Cell<usize> = const { Cell::new(0) };
}

/// Starts a new evaluation's print budget.
pub(super) fn reset_print_budget() {
    PRINTED.with(|p| p.set(0));
}

/// Whether `text` may still be written by this evaluation; the first refusal writes a
/// notice instead.
pub(super) fn may_print(text: &str) -> bool {
    PRINTED.with(|p| {
        let used = p.get();
        p.set(used.saturating_add(text.len()));
        if used + text.len() <= MAX_PRINT_BYTES {
            true
        } else {
            if used <= MAX_PRINT_BYTES {
                tracing::warn!(target: "triggerd::script", limit = MAX_PRINT_BYTES, "script output over its limit; the rest of this evaluation's output is dropped");
            }
            false
        }
    })
}

fn refused(what: &str) -> Box<EvalAltResult> {
    format!("{what} is not available in triggerd scripts").into()
}

/// Refuses `sleep` (which would block the thread) and bounds `split` and the regex
/// operators; `max_array` is the engine's array size limit.
pub(super) fn restrict(engine: &mut Engine, max_array: usize) {
    engine.register_fn("sleep", |_: INT| -> Result<(), Box<EvalAltResult>> {
        Err(refused("sleep"))
    });
    engine.register_fn(
        "sleep",
        |_: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> { Err(refused("sleep")) },
    );
    engine.register_fn(
        "split",
        move |text: ImmutableString, sep: ImmutableString| -> Result<Array, Box<EvalAltResult>> {
            // As Rhai's own `split`, with the number of parts checked before any is built.
            if text.is_empty() || (!sep.is_empty() && !text.contains(sep.as_str())) {
                return Ok(vec![Dynamic::from(text)]);
            }
            let parts = text.split(sep.as_str()).count();
            if parts > max_array {
                return Err(too_many_parts(parts, max_array));
            }
            Ok(text
                .split(sep.as_str())
                .map(|s| Dynamic::from(ImmutableString::from(s)))
                .collect())
        },
    );
    engine.register_fn(
        "split",
        move |text: ImmutableString, sep: char| -> Result<Array, Box<EvalAltResult>> {
            let parts = text.matches(sep).count() + 1;
            if parts > max_array {
                return Err(too_many_parts(parts, max_array));
            }
            Ok(text
                .split(sep)
                .map(|s| Dynamic::from(ImmutableString::from(s)))
                .collect())
        },
    );
}

fn too_many_parts(parts: usize, max: usize) -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge(
        format!("split into {parts} parts (at most {max})"),
        rhai::Position::NONE,
    )
    .into()
}

/// `text =~ pattern`, with the pattern's compiled size and the text's length bounded.
pub(super) fn regex_matches(text: &str, pattern: &str) -> Result<bool, Box<EvalAltResult>> {
    if text.len() > MAX_REGEX_INPUT {
        return Err(EvalAltResult::ErrorDataTooLarge(
            format!(
                "text of {} bytes for a regular expression (at most {MAX_REGEX_INPUT})",
                text.len()
            ),
            rhai::Position::NONE,
        )
        .into());
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map(|re| re.is_match(text))
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}").into())
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, ScriptError, ScriptHost, ScriptKind};
    use rhai::Dynamic;

    fn eval(source: &str) -> Result<Dynamic, ScriptError> {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let script = host.compile(ScriptKind::Payload, source).unwrap();
        host.eval(&script, [("events", Dynamic::from_map(rhai::Map::new()))])
    }

    #[test]
    fn sleep_is_refused() {
        for source in ["sleep(15); true", "sleep(0.5); true"] {
            let err = eval(source).unwrap_err().to_string();
            assert!(err.contains("sleep is not available"), "{source}: {err}");
        }
    }

    #[test]
    fn split_refuses_results_over_the_array_limit_before_building_them() {
        let err = eval(r#"let s = "ab"; s.pad(400000, 'x'); s.split("")"#).unwrap_err();
        assert!(matches!(err, ScriptError::Limit(_)), "{err:?}");
        assert!(err.to_string().contains("split into"), "{err}");
        let parts = eval(r#""a,b,,c".split(",")"#)
            .unwrap()
            .into_array()
            .unwrap();
        assert_eq!(parts.len(), 4);
        // As Rhai's own split: empty parts at both ends.
        let chars = eval(r#""ab".split("")"#).unwrap().into_array().unwrap();
        assert_eq!(chars.len(), 4);
    }

    #[test]
    fn regex_input_and_pattern_sizes_are_bounded() {
        let err = eval(r#"let s = "a"; s.pad(2000000, 'a'); s matches "a+""#).unwrap_err();
        assert!(err.to_string().contains("regular expression"), "{err}");
        let err = eval(r#""a" matches "(a|b|c|d){1000}{1000}""#).unwrap_err();
        assert!(
            err.to_string().contains("invalid regular expression"),
            "{err}"
        );
        assert!(eval(r#""abc" matches "^a.c$""#).unwrap().as_bool().unwrap());
    }

    #[test]
    fn print_output_is_capped_per_evaluation() {
        super::reset_print_budget();
        let line = "x".repeat(1000);
        let written = (0..10).filter(|_| super::may_print(&line)).count();
        assert_eq!(written, 4);
        super::reset_print_budget();
        assert!(super::may_print(&line));
    }
}
