//! The hardened Rhai engine and compiled scripts.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
// The module cache is locked only inside synchronous compilation, never across an await.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;
use std::time::Duration;

use rhai::module_resolvers::ModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, Module, Position, Scope, Shared, AST};

use super::view::{self, Reads};
use super::ScriptError;
use crate::telemetry::{ScriptTimer, ScriptTimings};

/// Safety limits applied to every evaluation. Rhai's defaults differ between debug and
/// release builds, so every limit is set explicitly.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Operations per evaluation.
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_levels: usize,
    /// Expression nesting at global level.
    pub max_expr_depth: usize,
    /// Expression nesting inside functions.
    pub max_function_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Items in one array.
    pub max_array_size: usize,
    /// Entries in one map.
    pub max_map_size: usize,
    /// Modules one script may import.
    pub max_modules: usize,
    /// Wall-clock time per evaluation.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 1_000_000,
            max_call_levels: 48,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 4 * 1024 * 1024,
            max_array_size: 100_000,
            max_map_size: 100_000,
            max_modules: 16,
            deadline: Duration::from_millis(250),
        }
    }
}

/// What a script is for; decides which variables are in scope (DESIGN section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// `filters.script`: `event`, `ctx` → bool.
    Filter,
    /// `transform.script`: `event`, `ctx` → new data.
    Transform,
    /// `src.script`: `event`, `ctx`, `events` → value.
    Parameter,
    /// `payloadScript`: `events` → payload.
    Payload,
    /// `policy.script`: `response`, `attempt`, `max_attempts`, `events` → outcome.
    Policy,
    /// `filters.exprs[].expr`: the named fields → bool.
    Expr,
}

impl ScriptKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [ScriptKind; 6] = [
        ScriptKind::Filter,
        ScriptKind::Transform,
        ScriptKind::Parameter,
        ScriptKind::Payload,
        ScriptKind::Policy,
        ScriptKind::Expr,
    ];

    /// Lower-case name, for metrics.
    pub fn name(self) -> &'static str {
        match self {
            ScriptKind::Filter => "filter",
            ScriptKind::Transform => "transform",
            ScriptKind::Parameter => "parameter",
            ScriptKind::Payload => "payload",
            ScriptKind::Policy => "policy",
            ScriptKind::Expr => "expr",
        }
    }

    /// Variables the script may use.
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            ScriptKind::Filter | ScriptKind::Transform => &["event", "ctx"],
            ScriptKind::Parameter => &["event", "ctx", "events"],
            ScriptKind::Payload => &["events"],
            ScriptKind::Policy => &["response", "attempt", "max_attempts", "events"],
            ScriptKind::Expr => &[],
        }
    }
}

/// A script compiled once at load time, with its imports resolved and embedded.
#[derive(Debug, Clone)]
pub struct CompiledScript {
    ast: Arc<AST>,
    kind: ScriptKind,
    /// What the script reads of each of its kind's variables: callers build only that (an
    /// event's Rhai view is a deep copy, too dear to make whole for a script that reads one
    /// field of it, on every evaluation).
    reads: Vec<(&'static str, Reads)>,
    /// Whether an evaluation has been slow: later ones then run off the async worker.
    slow: super::SlowWork,
}

impl CompiledScript {
    /// What the script is for.
    pub fn kind(&self) -> ScriptKind {
        self.kind
    }

    /// Whether the script reads the variable `name` of its kind; an unused one may be given
    /// as `()`.
    pub fn uses(&self, name: &str) -> bool {
        !matches!(self.reads(name), Reads::Nothing)
    }

    /// What the script reads of its variable `name` (the whole of it when `name` is not one
    /// of its kind's variables).
    pub fn reads(&self, name: &str) -> &Reads {
        self.reads
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&Reads::Whole, |(_, r)| r)
    }
}

thread_local! {
    // Deadline of the evaluation running on this thread; scripts run synchronously, so a
    // thread-local lets one shared engine enforce a per-evaluation wall clock.
    #[allow(clippy::disallowed_types)] // real CPU time is what the deadline bounds
    static DEADLINE: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
}

/// One shared, hardened engine.
pub struct ScriptHost {
    engine: Engine,
    limits: Limits,
    /// One timer per [`ScriptKind`], in [`ScriptKind::ALL`] order.
    timings: Option<Vec<ScriptTimer>>,
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHost")
            .field("limits", &self.limits)
            .finish()
    }
}

impl ScriptHost {
    /// Builds the engine; `import "name"` resolves to `name.rhai` in `library_dirs` only.
    pub fn new(limits: Limits, library_dirs: Vec<PathBuf>) -> Self {
        let mut engine = Engine::new();
        engine.set_strict_variables(true);
        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(limits.max_call_levels);
        engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
        engine.set_max_string_size(limits.max_string_size);
        engine.set_max_array_size(limits.max_array_size);
        engine.set_max_map_size(limits.max_map_size);
        engine.set_max_modules(limits.max_modules);
        engine.set_max_variables(1024);
        engine.set_max_functions(1024);
        engine.disable_symbol("eval");
        // govaluate's regular-expression operators, for `exprs` and any script:
        // `text matches "re"` and `text not_matches "re"` (exprs may write `=~` and `!~`).
        register_regex_operators(&mut engine);
        super::sandbox::restrict(&mut engine, limits.max_array_size);
        engine.on_print(|text| {
            if super::sandbox::may_print(text) {
                tracing::info!(target: "triggerd::script", "{text}")
            }
        });
        engine.on_debug(|text, source, pos| {
            if super::sandbox::may_print(text) {
                tracing::debug!(target: "triggerd::script", ?source, %pos, "{text}")
            }
        });
        // The clock is read every 16 operations: cheap, and a script overshoots its
        // deadline by at most 16 bounded operations.
        engine.on_progress(|ops| {
            if ops % 16 != 0 {
                return None;
            }
            #[allow(clippy::disallowed_types)]
            let expired =
                DEADLINE.with(|d| d.get().is_some_and(|t| std::time::Instant::now() >= t));
            expired.then(|| Dynamic::from("deadline"))
        });
        engine.set_module_resolver(LibraryResolver {
            dirs: library_dirs,
            cache: ModuleCache::default(),
        });
        Self {
            engine,
            limits,
            timings: None,
        }
    }

    /// Records every evaluation's duration in `timings`, by script kind.
    pub fn with_timings(mut self, timings: ScriptTimings) -> Self {
        self.timings = Some(
            ScriptKind::ALL
                .iter()
                .map(|kind| ScriptTimer::new(&timings, kind.name()))
                .collect(),
        );
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles a script with strict variables, resolving its imports now.
    pub fn compile(&self, kind: ScriptKind, source: &str) -> Result<CompiledScript, ScriptError> {
        self.compile_with(kind, source, &[])
    }

    /// Compiles a script whose variables are the kind's plus `extra` (expression fields).
    pub fn compile_with(
        &self,
        kind: ScriptKind,
        source: &str,
        extra: &[&str],
    ) -> Result<CompiledScript, ScriptError> {
        let mut scope = Scope::new();
        for var in kind.variables().iter().chain(extra) {
            scope.push_dynamic(*var, Dynamic::UNIT);
        }
        let ast = self
            .engine
            .compile_into_self_contained(&scope, source)
            .map_err(|e| compile_error(&e))?;
        // Strict variables: a script that compiles without a variable never reads it. That
        // proof stands on its own; the AST walk then narrows what a used variable needs.
        let vars = kind.variables();
        let walked = view::analyse(&ast, vars);
        let reads = vars
            .iter()
            .zip(walked)
            .map(|(v, walked)| {
                let mut probe = Scope::new();
                for other in vars.iter().chain(extra).filter(|o| *o != v) {
                    probe.push_dynamic(*other, Dynamic::UNIT);
                }
                let unused =
                    vars.len() > 1 && self.engine.compile_with_scope(&probe, source).is_ok();
                let reads = match walked {
                    _ if unused => Reads::Nothing,
                    // Used, yet the walk saw no read: assume the worst.
                    Reads::Nothing => Reads::Whole,
                    r => r,
                };
                (*v, reads)
            })
            .collect();
        Ok(CompiledScript {
            ast: Arc::new(ast),
            kind,
            reads,
            slow: super::SlowWork::default(),
        })
    }

    /// Evaluates a compiled script with the given variables in scope, under the limits. The
    /// values are the script's own (moved into its scope, not copied again).
    pub fn eval<'a>(
        &self,
        script: &CompiledScript,
        vars: impl IntoIterator<Item = (&'a str, Dynamic)>,
    ) -> Result<Dynamic, ScriptError> {
        // Only transforms may change what they are given (their own copy); everything else
        // sees constants. Either way each evaluation has values of its own (views hold no
        // Rhai shared values), so no script can alter what another script sees.
        let vars = vars.into_iter();
        let mut scope = Scope::with_capacity(vars.size_hint().0);
        for (name, value) in vars {
            if script.kind == ScriptKind::Transform {
                scope.push_dynamic(name, value);
            } else {
                scope.push_constant_dynamic(name, value);
            }
        }
        #[allow(clippy::disallowed_types)]
        let deadline = std::time::Instant::now() + self.limits.deadline;
        DEADLINE.with(|d| d.set(Some(deadline)));
        super::sandbox::reset_print_budget();
        let (result, took) = script.slow.run(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &script.ast)
        });
        DEADLINE.with(|d| d.set(None));
        if let Some(timer) = self
            .timings
            .as_ref()
            .and_then(|t| t.get(script.kind as usize))
        {
            timer.evaluated(took);
        }
        result.map_err(|e| runtime_error(*e, &self.limits))
    }
}

fn register_regex_operators(engine: &mut Engine) {
    use super::sandbox::regex_matches as matches;
    // Same precedence as `==` and `!=`.
    if engine.register_custom_operator("matches", 90).is_ok() {
        engine.register_fn("matches", |t: &str, p: &str| matches(t, p));
    }
    if engine.register_custom_operator("not_matches", 90).is_ok() {
        engine.register_fn("not_matches", |t: &str, p: &str| matches(t, p).map(|m| !m));
    }
}

fn compile_error(e: &EvalAltResult) -> ScriptError {
    let (line, column) = position(e.position());
    let message = match e {
        EvalAltResult::ErrorParsing(kind, _) => kind.to_string(),
        EvalAltResult::ErrorModuleNotFound(name, _) => {
            format!("module {name:?} not found in the script library (scripts/, policies/)")
        }
        other => {
            let mut text = other.to_string();
            if let Some(i) = text.rfind(" (line ") {
                text.truncate(i);
            }
            text
        }
    };
    ScriptError::Compile {
        message,
        line,
        column,
    }
}

fn runtime_error(e: EvalAltResult, limits: &Limits) -> ScriptError {
    match e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            ScriptError::Limit(format!("more than {} operations", limits.max_operations))
        }
        EvalAltResult::ErrorTerminated(..) => {
            ScriptError::Limit(format!("deadline of {:?} exceeded", limits.deadline))
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            ScriptError::Limit(format!("more than {} nested calls", limits.max_call_levels))
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            ScriptError::Limit(format!("{what} exceeds its size limit"))
        }
        EvalAltResult::ErrorTooManyModules(_) => {
            ScriptError::Limit(format!("more than {} modules", limits.max_modules))
        }
        EvalAltResult::ErrorTooManyVariables(_) => ScriptError::Limit("too many variables".into()),
        other => {
            let (line, column) = position(other.position());
            let mut message = other.to_string();
            if let Some(i) = message.rfind(" (line ") {
                message.truncate(i);
            }
            ScriptError::Runtime {
                message,
                line,
                column,
            }
        }
    }
}

fn position(pos: Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

/// Resolves `import "name"` to `name.rhai` inside the library directories only: no paths,
/// no parent directories, no other files. Imports are resolved when a script is compiled.
struct LibraryResolver {
    dirs: Vec<PathBuf>,
    cache: ModuleCache,
}

#[allow(clippy::disallowed_types)] // see the import: never held across an await
type ModuleCache = Mutex<HashMap<String, Shared<Module>>>;

impl ModuleResolver for LibraryResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let name = path.strip_suffix(".rhai").unwrap_or(path);
        let not_found = || Box::new(EvalAltResult::ErrorModuleNotFound(path.to_owned(), pos));
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(not_found());
        }
        if let Some(module) = self.cache.lock().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(module);
        }
        let file = self
            .dirs
            .iter()
            .map(|d| d.join(format!("{name}.rhai")))
            .find(|p| p.is_file())
            .ok_or_else(not_found)?;
        let source = std::fs::read_to_string(&file).map_err(|_| not_found())?;
        let mut ast = engine.compile(&source).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_owned(),
                Box::new(EvalAltResult::ErrorParsing(*e.0, e.1)),
                pos,
            ))
        })?;
        ast.set_source(file.display().to_string());
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_owned(), e, pos)))?;
        let module: Shared<Module> = module.into();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(name.to_owned(), module.clone());
        }
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_sits_at_its_own_index_of_all() {
        for (index, kind) in ScriptKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "{}", kind.name());
        }
    }

    fn host() -> ScriptHost {
        ScriptHost::new(Limits::default(), vec![])
    }

    #[test]
    fn strict_variables_reject_typos_at_compile_time() {
        let err = host()
            .compile(ScriptKind::Filter, "evnt.body == 1")
            .unwrap_err();
        assert!(
            matches!(
                err,
                ScriptError::Compile {
                    line: 1,
                    column: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = host()
            .compile(ScriptKind::Filter, "let x = 1;\nx +* 2")
            .unwrap_err();
        assert!(
            matches!(err, ScriptError::Compile { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn infinite_loop_is_stopped() {
        let h = host();
        let s = h.compile(ScriptKind::Filter, "loop { }").unwrap();
        let err = h
            .eval(&s, [("event", Dynamic::UNIT), ("ctx", Dynamic::UNIT)])
            .unwrap_err();
        assert!(matches!(err, ScriptError::Limit(_)), "{err:?}");
    }

    #[test]
    fn deadline_stops_slow_scripts() {
        let limits = Limits {
            max_operations: u64::MAX,
            deadline: Duration::from_millis(20),
            ..Limits::default()
        };
        let h = ScriptHost::new(limits, vec![]);
        let s = h.compile(ScriptKind::Filter, "loop { }").unwrap();
        let err = h
            .eval(&s, [("event", Dynamic::UNIT), ("ctx", Dynamic::UNIT)])
            .unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }

    #[test]
    fn event_values_cannot_be_changed_by_scripts() {
        let h = host();
        let shared = crate::script::to_dynamic(&serde_json::json!({"a": {"b": 1}}));
        for src in [
            "event.a.b = 2; true",
            "event.a = 3; true",
            "event.a.b += 1; true",
            "let x = event.a; x.b = 5; event.a.b == 1",
            "event.a.clear(); true",
        ] {
            let s = h.compile(ScriptKind::Filter, src).unwrap();
            let r = h.eval(&s, [("event", shared.clone()), ("ctx", Dynamic::UNIT)]);
            assert!(
                r.is_err() || r.unwrap().as_bool() == Ok(true),
                "{src} must not modify its event"
            );
        }
        let read = h.compile(ScriptKind::Filter, "event.a.b == 1").unwrap();
        let still = h
            .eval(&read, [("event", shared), ("ctx", Dynamic::UNIT)])
            .unwrap();
        assert!(still.as_bool().unwrap(), "the shared value changed");
    }

    /// Every ordinary way of reading an event works. (Rhai's own limit applies as for any
    /// captured variable: a closure that reads `event` cannot be passed to a method called
    /// on `event` itself — "Data race detected"; bind the needed value first.)
    #[test]
    fn event_views_can_be_read_every_way() {
        let h = host();
        let event = crate::script::to_dynamic(
            &serde_json::json!({"a": {"b": 1}, "list": [1, 2, 3], "s": "x"}),
        );
        for src in [
            "event.a.b == event.a.b",
            "event.list.contains(event.list[0])",
            "event.a.keys().len() + event.a.b == 2",
            "let b = event.a.b; event.list.map(|x| x + b).len() == 3",
            "`${event.s}${event.a.b}` == \"x1\"",
            "#{ whole: event, list: event.list }.whole.a.b == 1",
            "let e = event; let b = e.a.b; b == 1 && event.list.filter(|x| x > b).len() == 2",
            "event.s.len() == 1 && \"b\" in event.a",
        ] {
            let s = h.compile(ScriptKind::Filter, src).unwrap();
            let r = h.eval(&s, [("event", event.clone()), ("ctx", Dynamic::UNIT)]);
            assert_eq!(
                r.as_ref().map(|v| v.as_bool()).ok(),
                Some(Ok(true)),
                "{src}: {r:?}"
            );
        }
    }

    #[test]
    fn knows_which_variables_a_script_reads() {
        let h = host();
        let s = h
            .compile(ScriptKind::Parameter, "event.body.commits.len()")
            .unwrap();
        assert!(s.uses("event"));
        assert!(!s.uses("ctx") && !s.uses("events"));
        let s = h
            .compile(
                ScriptKind::Parameter,
                "let e = events; e.len() + ctx.id.len()",
            )
            .unwrap();
        assert!(s.uses("events") && s.uses("ctx") && !s.uses("event"));
        // An unread variable may be given as `()`: the result is the same.
        let r = h
            .eval(
                &h.compile(ScriptKind::Parameter, "event.n + 1").unwrap(),
                [
                    (
                        "event",
                        crate::script::to_dynamic(&serde_json::json!({"n": 1})),
                    ),
                    ("ctx", Dynamic::UNIT),
                    ("events", Dynamic::UNIT),
                ],
            )
            .unwrap();
        assert_eq!(r.as_int(), Ok(2));
    }

    #[test]
    fn eval_is_disabled() {
        assert!(host().compile(ScriptKind::Payload, "eval(\"1\")").is_err());
    }

    #[test]
    fn imports_resolve_only_inside_library_dirs() {
        let dir = std::env::temp_dir().join(format!("triggerd-lib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("helpers.rhai"), "fn double(x) { x * 2 }").unwrap();
        let h = ScriptHost::new(Limits::default(), vec![dir.clone()]);
        let s = h
            .compile(
                ScriptKind::Payload,
                "import \"helpers\" as h; h::double(21)",
            )
            .unwrap();
        assert_eq!(
            h.eval(&s, [("events", Dynamic::UNIT)])
                .unwrap()
                .as_int()
                .unwrap(),
            42
        );
        assert!(h
            .compile(ScriptKind::Payload, "import \"../etc/passwd\" as p; 1")
            .is_err());
        assert!(h
            .compile(ScriptKind::Payload, "import \"missing\" as p; 1")
            .is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A script that ran slow once hands its worker's other tasks on before it runs again:
    /// with one worker thread, a task spawned before the slow evaluation still runs while
    /// it is going on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_slow_script_does_not_hold_up_the_other_tasks_of_its_worker() {
        let host = ScriptHost::new(
            Limits {
                deadline: Duration::from_millis(300),
                max_operations: u64::MAX,
                ..Limits::default()
            },
            vec![],
        );
        let script = host.compile(ScriptKind::Payload, "loop { }").unwrap();
        // Everything runs in a task on the runtime's only worker thread.
        let (ran, ended) = tokio::spawn(async move {
            let vars = || [("events", Dynamic::UNIT)];
            // The first evaluation runs inline and marks the script slow.
            assert!(matches!(
                host.eval(&script, vars()),
                Err(ScriptError::Limit(_))
            ));
            let (tx, rx) = std::sync::mpsc::channel();
            tokio::spawn(async move {
                let _ = tx.send(tokio::time::Instant::now());
            });
            assert!(matches!(
                host.eval(&script, vars()),
                Err(ScriptError::Limit(_))
            ));
            let ended = tokio::time::Instant::now();
            (rx, ended)
        })
        .await
        .unwrap();
        let ran = tokio::task::spawn_blocking(move || ran.recv().expect("the other task ran"))
            .await
            .unwrap();
        assert!(ran < ended, "the other task had to wait for the script");
    }
}
