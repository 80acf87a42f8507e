//! Argo Events' `transform.jq`: a jq program that rewrites an event's data before the
//! trigger sees it.
//!
//! Programs are compiled once, when the sensor is loaded, with [jaq](https://github.com/01mf02/jaq)
//! (jaq-core + jaq-std + jaq-json), and then run once per event. Argo's semantics apply: the
//! first value the program outputs becomes the new event data; a program that outputs nothing
//! or fails at run time is an error. Numbers keep their kind across the round trip: integers
//! that fit i64 / u64 stay exact integers, floats stay floats.
//!
//! # Sandbox
//!
//! The program sees nothing but its input:
//! - `env` and `$ENV` are the empty object `{}` (the process environment never leaks);
//! - `input` / `inputs` read from an empty stream, so they yield nothing;
//! - `include` / `import` fail to compile (no module or data file is ever read);
//! - `localtime` / `strflocaltime` use UTC instead of reading `TZ` or `/etc/localtime`;
//! - `debug` / `stderr` pass their input through without logging anything;
//! - `halt` / `halt_error` become an ordinary run-time error instead of exiting the process.
//!
//! # Limitation: runaway programs
//!
//! jaq has no fuel, step or time limit, and its evaluation cannot be interrupted from
//! outside. [`CompiledJq::run`] therefore only pulls the **first** output (Argo ignores the
//! rest anyway), so generators that never end but produce values early are harmless:
//! `repeat(1)`, `range(infinite)` and `limit(1; repeat(.))` all return at once. What this
//! cannot stop is a program that runs forever *before* its first output: `def f: f; f` is a
//! tail call, which jaq turns into a loop, so `run` spins on the calling thread and never
//! returns; `last(repeat(1))` or `[repeat(1)]` loop (the latter also growing memory) in the
//! same way; and an unbounded non-tail recursion such as `def f: 1 + f; f` overflows the
//! stack, which aborts the process (so does dropping a value nested tens of thousands of
//! levels deep, built by e.g. `reduce range(100000) as $i (0; [.])`). Transforms come from
//! the operator's own sensor manifests, i.e. they are trusted configuration, not event data.

use std::fmt;
use std::sync::Arc;

use jaq_core::data::HasLut;
use jaq_core::load::{lex, parse, Arena, File, Loader};
use jaq_core::{compile, native, Ctx, DataT, Exn, Vars};
use jaq_json::{Num, Val};
use jaq_std::input::{HasInputs, Inputs, RcIter};
use serde_json::{Map, Number, Value};

/// Deepest nesting of an output value that is converted back to JSON; deeper values are an
/// error rather than a risk of overflowing the stack in the recursive conversion.
const MAX_OUTPUT_DEPTH: usize = 512;

/// Longest run-time error text kept (in characters) before it is cut with `…`.
const MAX_ERROR_CHARS: usize = 240;

/// Native filters of jaq's standard library that would read the environment or the file
/// system, or write to the log; they are replaced by [`SANDBOX_DEFS`].
const DENIED_NATIVES: &[&str] = &[
    "env",
    "localtime",
    "strflocaltime",
    "debug_empty",
    "stderr_empty",
];

/// Harmless replacements for [`DENIED_NATIVES`], loaded before jaq-std's definitions (which
/// call `debug_empty` / `stderr_empty`).
const SANDBOX_DEFS: &str = r#"
def env: {};
def localtime: gmtime;
def strflocaltime($fmt): strftime($fmt);
def debug_empty: empty;
def stderr_empty: empty;
"#;

/// The global variable standing in for jq's `$ENV`; always bound to `{}`.
const ENV_VAR: &str = "$ENV";

/// Marker type telling jaq which values (JSON) and global data ([`RunData`]) filters use.
struct JqData;

impl DataT for JqData {
    type V<'a> = Val;
    type Data<'a> = RunData<'a>;
}

/// Global data of one run: the compiled program's lookup table and the (empty) inputs.
#[derive(Clone)]
struct RunData<'a> {
    lut: &'a jaq_core::Lut<JqData>,
    inputs: Inputs<'a, Val>,
}

impl<'a> HasLut<'a, JqData> for RunData<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<JqData> {
        self.lut
    }
}

impl<'a> HasInputs<'a, Val> for RunData<'a> {
    fn inputs(&self) -> Inputs<'a, Val> {
        self.inputs
    }
}

/// A jq program compiled once at load time.
///
/// Cloning is cheap (the compiled filter is shared), so every trigger holding the transform
/// can keep its own copy.
#[derive(Clone)]
pub struct CompiledJq {
    source: Arc<str>,
    filter: Arc<jaq_core::Filter<JqData>>,
}

impl fmt::Debug for CompiledJq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CompiledJq").field(&&*self.source).finish()
    }
}

impl CompiledJq {
    /// Compiles `source`; the error is one human-readable line (with position if jaq gives one).
    pub fn compile(source: &str) -> Result<Self, String> {
        check_size(source)?;
        // jaq parses and compiles recursively; within the limits above a generous stack of
        // its own holds any program, so none can overflow the caller's.
        let source = source.to_owned();
        std::thread::Builder::new()
            .name("jq-compile".into())
            .stack_size(JQ_STACK)
            .spawn(move || Self::compile_here(&source))
            .map_err(|e| format!("cannot start jq: {e}"))?
            .join()
            .map_err(|_| "jq compile failed unexpectedly".to_string())?
    }

    fn compile_here(source: &str) -> Result<Self, String> {
        let sandbox = jaq_core::load::parse(SANDBOX_DEFS, |p| p.defs())
            .ok_or_else(|| "internal error: jq sandbox definitions do not parse".to_string())?;
        let defs = jaq_core::defs()
            .chain(sandbox)
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let inputs = jaq_std::input::funs::<JqData>()
            .into_vec()
            .into_iter()
            .map(native::run::<JqData>);
        let funs = jaq_core::funs::<JqData>()
            .chain(jaq_std::funs::<JqData>())
            .chain(inputs)
            .chain(jaq_json::funs::<JqData>())
            .filter(|(name, _, _)| !DENIED_NATIVES.contains(name));

        let arena = Arena::default();
        // `Loader::new` refuses every `include` / module `import`: no file is ever read.
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errs| load_error(source, errs))?;
        // A data import (`import "x" as $x;`) is not read by the loader but left for the
        // caller to bind, which would shift `$ENV`; a program that parses as a module but
        // not as a plain term has such directives, so refuse it.
        if jaq_core::load::parse(source, |p| p.term()).is_none() {
            return Err(
                "jq compile error: `module`, `import` and `include` are not supported".to_string(),
            );
        }
        let filter = jaq_core::Compiler::default()
            .with_funs(funs)
            .with_global_vars([ENV_VAR])
            .compile(modules)
            .map_err(|errs| compile_error(source, errs))?;
        Ok(Self {
            source: Arc::from(source),
            filter: Arc::new(filter),
        })
    }

    /// Runs the program on `input`; Argo semantics: the FIRST output value is the new data;
    /// no output is an error; a runtime error is an error (one line).
    pub fn run(&self, input: &serde_json::Value) -> Result<serde_json::Value, String> {
        let filter = &*self.filter;
        let no_inputs = RcIter::new(std::iter::empty::<Result<Val, String>>());
        let data = RunData {
            lut: &filter.lut,
            inputs: &no_inputs,
        };
        let ctx = Ctx::<JqData>::new(data, Vars::new([empty_object()]));
        // Only the first output is ever pulled, so endless generators stop here.
        let first = filter.id.run((ctx, json_to_val(input))).next();
        match first {
            None => Err("jq program produced no output".to_string()),
            Some(Ok(value)) => val_to_json(&value, 0),
            Some(Err(exn)) => Err(exception_message(exn)),
        }
    }
}

/// The value bound to `$ENV`.
/// The largest jq program accepted, in bytes.
pub const MAX_JQ_LEN: usize = 16 * 1024;
/// How deeply brackets may nest in a jq program.
pub const MAX_JQ_NESTING: usize = 64;
/// How many operators and keywords a jq program may have: with the nesting limit, this
/// bounds how deeply jaq recurses over it.
pub const MAX_JQ_OPERATORS: usize = 1000;
/// The stack of the threads that compile and run jq programs (reserved, used as needed).
pub const JQ_STACK: usize = 64 * 1024 * 1024;

/// Refuses programs whose size or nesting could make jaq recurse without bound.
fn check_size(source: &str) -> Result<(), String> {
    if source.len() > MAX_JQ_LEN {
        return Err(format!(
            "jq program is {} bytes; at most {MAX_JQ_LEN} are accepted",
            source.len()
        ));
    }
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    for word in source.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if matches!(
            word,
            "and" | "or" | "if" | "elif" | "reduce" | "foreach" | "try" | "def" | "label" | "as"
        ) {
            operators += 1;
        }
    }
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '|' | ',' | '+' | '-' | '*' | '/' | '%' | '=' | '<' | '>' | '?' | ';' | ':' => {
                operators += 1
            }
            _ => {}
        }
    }
    if deepest > MAX_JQ_NESTING {
        return Err(format!(
            "jq program nests brackets {deepest} deep; at most {MAX_JQ_NESTING} levels are accepted"
        ));
    }
    if operators > MAX_JQ_OPERATORS {
        return Err(format!(
            "jq program has {operators} operators; at most {MAX_JQ_OPERATORS} are accepted"
        ));
    }
    Ok(())
}

fn empty_object() -> Val {
    Val::obj(jaq_json::Map::default())
}

/// One line describing a lexer or parser error of the program.
fn load_error<P>(source: &str, errs: jaq_core::load::Errors<&str, P>) -> String {
    let mut lines = Vec::new();
    for (file, err) in errs {
        // Errors inside the built-in library would be a bug here; still report them.
        let code = file.code;
        match err {
            jaq_core::load::Error::Io(items) => {
                for (path, msg) in items {
                    lines.push(format!("cannot load module {path:?}: {msg}"));
                }
            }
            jaq_core::load::Error::Lex(items) => {
                for (expect, found) in items {
                    lines.push(format!(
                        "{}expected {}",
                        position(source, code, found),
                        lex_expect(&expect)
                    ));
                }
            }
            jaq_core::load::Error::Parse(items) => {
                for (expect, found) in items {
                    let what = if found.is_empty() {
                        "end of program".to_string()
                    } else {
                        format!("`{found}`")
                    };
                    lines.push(format!(
                        "{}expected {}, found {what}",
                        position(source, code, found),
                        parse_expect(&expect)
                    ));
                }
            }
        }
    }
    format!(
        "jq syntax error: {}",
        join_or(lines, "cannot parse program")
    )
}

/// One line describing the undefined names in the program.
fn compile_error<P>(source: &str, errs: compile::Errors<&str, P>) -> String {
    let mut lines = Vec::new();
    for (file, items) in errs {
        for (name, undefined) in items {
            let what = match undefined {
                compile::Undefined::Filter(arity) => format!("filter `{name}/{arity}`"),
                other => format!("{} `{name}`", other.as_str()),
            };
            lines.push(format!(
                "{}undefined {what}",
                position(source, file.code, name)
            ));
        }
    }
    format!(
        "jq compile error: {}",
        join_or(lines, "cannot compile program")
    )
}

/// What the lexer expected, without jaq's `as_str`, which panics on unknown delimiters.
fn lex_expect(expect: &lex::Expect<&str>) -> String {
    match expect {
        lex::Expect::Delim(delim) => match *delim {
            "(" => "closing parenthesis".to_string(),
            "[" => "closing bracket".to_string(),
            "{" => "closing brace".to_string(),
            "\"" => "closing quote".to_string(),
            other => format!("closing delimiter for `{other}`"),
        },
        other => other.as_str().to_string(),
    }
}

/// What the parser expected.
fn parse_expect(expect: &parse::Expect<&str>) -> String {
    match expect {
        parse::Expect::Just(token) => format!("`{token}`"),
        other => other.as_str().to_string(),
    }
}

/// `"line L, column C: "` of `part` in the program, or `""` when `part` is not a slice of
/// the program itself (e.g. an error in a built-in module).
fn position(source: &str, code: &str, part: &str) -> String {
    if !std::ptr::eq(source, code) {
        return String::new();
    }
    let start = source.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at < start || at + part.len() > start + source.len() {
        return String::new();
    }
    let offset = at - start;
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: ")
}

/// Joins error lines with `"; "`, or gives `fallback` when there are none.
fn join_or(lines: Vec<String>, fallback: &str) -> String {
    if lines.is_empty() {
        fallback.to_string()
    } else {
        lines.join("; ")
    }
}

/// One line for a run-time exception: jq's error message, or the `halt` exit code.
fn exception_message(exn: Exn<'_, Val>) -> String {
    match exn.get_err() {
        Ok(err) => match err.into_val() {
            Val::TStr(bytes) | Val::BStr(bytes) => {
                format!("jq error: {}", one_line(&String::from_utf8_lossy(&bytes)))
            }
            other => format!("jq error (not a string): {}", one_line(&other.to_string())),
        },
        Err(exn) => match exn.get_halt() {
            Ok(code) => format!("jq program halted with exit code {code}"),
            Err(_) => "jq program ended with an unexpected control-flow exception".to_string(),
        },
    }
}

/// Collapses line breaks so an error stays one line, and shortens it: jaq's messages embed
/// the offending value, which may be a whole event payload.
fn one_line(s: &str) -> String {
    let line = s
        .split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match line.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Converts event data into jaq's value type, keeping integers integers.
fn json_to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(json_number(n)),
        Value::String(s) => Val::from(s.clone()),
        Value::Array(items) => items.iter().map(json_to_val).collect(),
        Value::Object(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (Val::from(k.clone()), json_to_val(v)))
                .collect(),
        ),
    }
}

/// A JSON number as a jaq number: i64 / u64 as integers, everything else as a float.
fn json_number(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::from_integral(i)
    } else if let Some(u) = n.as_u64() {
        Num::from_integral(u)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Converts a program output back to JSON.
fn val_to_json(value: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(format!(
            "jq output is nested deeper than {MAX_OUTPUT_DEPTH} levels"
        ));
    }
    Ok(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(bytes) | Val::BStr(bytes) => {
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Val::Arr(items) => Value::Array(
            items
                .iter()
                .map(|item| val_to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = match k {
                    Val::TStr(bytes) | Val::BStr(bytes) => {
                        String::from_utf8_lossy(bytes).into_owned()
                    }
                    other => {
                        return Err(format!(
                            "jq output has a non-string object key: {}",
                            one_line(&other.to_string())
                        ))
                    }
                };
                out.insert(key, val_to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
    })
}

/// A jaq number as JSON, as jq prints it: integers exact where they fit in i64 / u64,
/// NaN as `null`, infinities as the largest finite floats.
fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i as i64),
        Num::BigInt(big) => integer_text_to_json(&big.to_string()),
        Num::Float(f) => float_to_json(*f),
        Num::Dec(text) => float_to_json(text.parse().unwrap_or(f64::NAN)),
    }
}

/// An integer given as decimal text: exact if it fits i64 / u64, else the nearest float.
fn integer_text_to_json(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        Value::from(i)
    } else if let Ok(u) = text.parse::<u64>() {
        Value::from(u)
    } else {
        float_to_json(text.parse().unwrap_or(f64::NAN))
    }
}

/// A float as JSON (which has no NaN or infinity).
fn float_to_json(f: f64) -> Value {
    let f = if f.is_infinite() {
        f.signum() * f64::MAX
    } else {
        f
    };
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(program: &str, input: Value) -> Result<Value, String> {
        CompiledJq::compile(program)?.run(&input)
    }

    #[test]
    fn arithmetic_updates_follow_jq() {
        let out = run(".a += 1 | .b *= 2", json!({"a": 1, "b": "2"}));
        assert_eq!(out, Ok(json!({"a": 2, "b": "22"})));
    }

    #[test]
    fn update_with_std_function() {
        let out = run(
            ".body.message |= ascii_upcase",
            json!({"body": {"message": "hi there", "n": 1}}),
        );
        assert_eq!(out, Ok(json!({"body": {"message": "HI THERE", "n": 1}})));
    }

    #[test]
    fn common_filters() {
        assert_eq!(run("{x: .a}", json!({"a": 1, "b": 2})), Ok(json!({"x": 1})));
        assert_eq!(run("map(.+1)", json!([1, 2, 3])), Ok(json!([2, 3, 4])));
        assert_eq!(run("select(.a > 0)", json!({"a": 1})), Ok(json!({"a": 1})));
        assert_eq!(
            run("to_entries", json!({"a": 1, "b": "x"})),
            Ok(json!([{"key": "a", "value": 1}, {"key": "b", "value": "x"}]))
        );
        assert_eq!(run(".a | tostring", json!({"a": 12})), Ok(json!("12")));
        assert_eq!(
            run(".a | tostring", json!({"a": {"b": [1]}})),
            Ok(json!("{\"b\":[1]}"))
        );
        assert_eq!(
            run(".s | test(\"^a.c$\")", json!({"s": "abc"})),
            Ok(json!(true))
        );
        assert_eq!(
            run(".s | @base64 | @base64d", json!({"s": "xyz"})),
            Ok(json!("xyz"))
        );
    }

    #[test]
    fn select_without_match_is_no_output() {
        let err = run("select(.a > 0)", json!({"a": 0})).unwrap_err();
        assert!(err.contains("no output"), "{err}");
    }

    #[test]
    fn numbers_keep_their_kind() {
        assert_eq!(run(".a", json!({"a": 1})), Ok(json!(1)));
        assert!(run(".a", json!({"a": 1})).unwrap().is_i64());
        assert_eq!(run(".a", json!({"a": 1.5})), Ok(json!(1.5)));
        assert!(run(".a", json!({"a": 2.0})).unwrap().is_f64());
        assert_eq!(run(".a", json!({"a": i64::MIN})), Ok(json!(i64::MIN)));
        assert_eq!(run(".a", json!({"a": i64::MAX})), Ok(json!(i64::MAX)));
        assert_eq!(run(".a", json!({"a": u64::MAX})), Ok(json!(u64::MAX)));
        assert_eq!(run(".a + 1", json!({"a": 41})), Ok(json!(42)));
        assert_eq!(run(".a * 1.5", json!({"a": 2})), Ok(json!(3.0)));
        assert_eq!(run("1.25", json!(null)), Ok(json!(1.25)));
        assert_eq!(run("nan", json!(null)), Ok(json!(null)));
        assert_eq!(run("infinite", json!(null)), Ok(json!(f64::MAX)));
    }

    #[test]
    fn first_output_wins() {
        assert_eq!(run(".[]", json!([3, 4, 5])), Ok(json!(3)));
        assert_eq!(run("repeat(1)", json!(null)), Ok(json!(1)));
        assert_eq!(run("range(infinite)", json!(null)), Ok(json!(0)));
    }

    #[test]
    fn compile_error_is_one_line_with_position() {
        let err = CompiledJq::compile(".a |").unwrap_err();
        assert!(err.starts_with("jq syntax error"), "{err}");
        assert!(err.contains("line 1, column 5"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let err = CompiledJq::compile("{a: 1").unwrap_err();
        assert!(err.starts_with("jq syntax error"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let err = CompiledJq::compile(".a |\n nosuchfn(1)").unwrap_err();
        assert!(err.starts_with("jq compile error"), "{err}");
        assert!(err.contains("line 2, column 2"), "{err}");
        assert!(err.contains("nosuchfn/1"), "{err}");
    }

    #[test]
    fn runtime_error_is_an_error() {
        let err = run(".a.b", json!({"a": 1})).unwrap_err();
        assert!(err.starts_with("jq error"), "{err}");
        assert!(err.contains("cannot index"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let err = run("error(\"boom\\nbang\")", json!(null)).unwrap_err();
        assert_eq!(err, "jq error: boom bang");

        let err = run("error({\"code\": 7})", json!(null)).unwrap_err();
        assert!(err.contains("not a string") && err.contains("7"), "{err}");

        let big = "x".repeat(10_000);
        let err = run(".a | ascii_upcase", json!({"a": {"big": big}})).unwrap_err();
        assert!(err.chars().count() < 300 && err.ends_with('…'), "{err}");
    }

    #[test]
    fn no_output_is_an_error() {
        let err = run("empty", json!({"a": 1})).unwrap_err();
        assert_eq!(err, "jq program produced no output");
    }

    #[test]
    fn environment_does_not_leak() {
        // `PATH` is set for every test process; setting a variable here would race with
        // other tests reading the environment.
        let path = std::env::var("PATH").unwrap_or_default();
        assert!(!path.is_empty());
        assert_eq!(run("$ENV", json!(null)), Ok(json!({})));
        assert_eq!(run("env", json!(null)), Ok(json!({})));
        assert_eq!(run("$ENV.PATH", json!(null)), Ok(json!(null)));
        assert_eq!(run("env.PATH", json!(null)), Ok(json!(null)));
        let out = run("[env, $ENV, (env | keys)] | tostring", json!(null)).unwrap();
        assert!(!out.to_string().contains(&path), "{out}");
    }

    #[test]
    fn no_inputs_no_files_no_halt() {
        assert!(run("input", json!(1)).unwrap_err().contains("no output"));
        assert_eq!(run("[inputs]", json!(1)), Ok(json!([])));
        assert!(CompiledJq::compile("include \"x\"; .").is_err());
        assert!(CompiledJq::compile("import \"x\" as $x; .").is_err());
        let err = run("halt_error(1)", json!("bye")).unwrap_err();
        assert!(err.contains("halted with exit code 1"), "{err}");
        assert_eq!(run("debug | stderr | .", json!(3)), Ok(json!(3)));
        assert_eq!(run("0 | localtime | mktime", json!(null)), Ok(json!(0)));
    }

    #[test]
    fn deep_output_is_an_error_not_a_crash() {
        let err = run("reduce range(1000) as $i (0; [.])", json!(null)).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn clone_and_debug() {
        let jq = CompiledJq::compile(".a").unwrap();
        let copy = jq.clone();
        assert_eq!(copy.run(&json!({"a": true})), Ok(json!(true)));
        assert_eq!(format!("{jq:?}"), "CompiledJq(\".a\")");
    }

    #[test]
    fn compiled_program_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompiledJq>();
    }

    #[test]
    fn oversized_or_deeply_nested_programs_are_refused_not_overflowed() {
        let nested = format!("{}.{}", "(".repeat(5000), ")".repeat(5000));
        assert!(CompiledJq::compile(&nested)
            .unwrap_err()
            .contains("nests brackets 5000 deep"));
        let long = vec!["."; 5000].join("|");
        assert!(CompiledJq::compile(&long)
            .unwrap_err()
            .contains("operators"));
        assert!(CompiledJq::compile(&" ".repeat(MAX_JQ_LEN + 1))
            .unwrap_err()
            .contains("bytes"));
        // At the limits, a program compiles and runs (on a stack as large as the
        // transform's threads have).
        let pipes = vec!["."; MAX_JQ_OPERATORS + 1].join("|");
        let program = CompiledJq::compile(&pipes).unwrap();
        let out = std::thread::Builder::new()
            .stack_size(JQ_STACK)
            .spawn(move || program.run(&serde_json::json!({"a": 1})))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(out.unwrap(), serde_json::json!({"a": 1}));
    }
}
