//! Dependency transforms: rewrite the event data before filtering, with Rhai or jq.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::jq::CompiledJq;
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{ScriptSource, Transform};
use crate::script::{from_dynamic, to_dynamic, CompiledScript, ScriptHost, ScriptKind, SlowWork};

/// A compiled transform.
#[derive(Debug, Clone)]
pub enum CompiledTransform {
    /// Rhai: `event` and `ctx` in scope, returns the new data.
    Script(CompiledScript),
    /// jq (Argo's `transform.jq`): the first output is the new data.
    Jq(JqTransform),
}

/// A jq transform. jaq has no operation or time limits, so each run happens on its own
/// thread under the script deadline; a program that overruns it is disabled until the next
/// reload, so a runaway program costs at most one thread instead of one per event.
#[derive(Debug, Clone)]
pub struct JqTransform {
    program: CompiledJq,
    disabled: Arc<AtomicBool>,
    /// Whether a run has been slow: later ones then wait for their thread off the async
    /// worker, as slow scripts do.
    slow: SlowWork,
}

impl JqTransform {
    fn run(&self, input: &Value, deadline: Duration) -> Result<Value, String> {
        if self.disabled.load(Ordering::Relaxed) {
            return Err(
                "jq transform disabled after it overran its deadline; fix it and reload".into(),
            );
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let (program, input) = (self.program.clone(), input.clone());
        std::thread::Builder::new()
            .name("jq-transform".into())
            .stack_size(super::jq::JQ_STACK)
            .spawn(move || {
                let _ = tx.send(program.run(&input));
            })
            .map_err(|e| format!("cannot start jq: {e}"))?;
        let (received, _) = self.slow.run(|| rx.recv_timeout(deadline));
        match received {
            Ok(result) => result,
            Err(_) => {
                self.disabled.store(true, Ordering::Relaxed);
                tracing::error!(?deadline, program = ?self.program, "jq transform overran its deadline; disabled until reload");
                Err(format!("jq transform overran its deadline of {deadline:?}"))
            }
        }
    }
}

impl CompiledTransform {
    /// Compiles `transform`; `field` is its path.
    pub fn compile(ctx: &mut CompileContext<'_>, field: &str, t: &Transform) -> Option<Self> {
        let script = ScriptSource::from_fields(&t.script, &t.script_file);
        match (script, &t.jq) {
            (Some(_), Some(jq)) => {
                ctx.error(
                    Some(&jq.referenced),
                    field,
                    "set either script or jq, not both",
                );
                None
            }
            (Some(s), None) => ctx
                .script(&format!("{field}.script"), ScriptKind::Transform, &s)
                .map(CompiledTransform::Script),
            (None, Some(jq)) => match CompiledJq::compile(&jq.value) {
                Ok(program) => Some(CompiledTransform::Jq(JqTransform {
                    program,
                    disabled: Arc::new(AtomicBool::new(false)),
                    slow: SlowWork::default(),
                })),
                Err(e) => {
                    ctx.error(Some(&jq.referenced), format!("{field}.jq"), e);
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// The new data for `event`.
    pub fn apply(
        &self,
        host: &ScriptHost,
        event: &Event,
        ctx: rhai::Dynamic,
    ) -> Result<Value, String> {
        match self {
            CompiledTransform::Script(s) => host
                .eval(s, [("event", to_dynamic(&event.data)), ("ctx", ctx)])
                .and_then(|v| from_dynamic(&v))
                .map_err(|e| format!("transform script: {e}")),
            CompiledTransform::Jq(jq) => jq.run(&event.data, host.limits().deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_standalone;
    use crate::manifest::Transform;
    use crate::script::Limits;
    use bytes::Bytes;
    use serde_json::json;

    fn transform(host: &ScriptHost, yaml: &str) -> CompiledTransform {
        compile_standalone(host, &[], yaml, |ctx, t: &Transform| {
            CompiledTransform::compile(ctx, "transform", t)
        })
        .unwrap()
    }

    fn event(data: Value) -> Event {
        Event::new("s", "e", "test", data, Bytes::new())
    }

    #[test]
    fn rhai_and_jq_rewrite_the_data() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let rhai = transform(&host, "script: 'event.a += 1; event'");
        let jq = transform(&host, "jq: '.a += 1 | .b *= 2'");
        let e = event(json!({"a": 1, "b": "2"}));
        assert_eq!(
            rhai.apply(&host, &e, rhai::Dynamic::UNIT).unwrap(),
            json!({"a": 2, "b": "2"})
        );
        assert_eq!(
            jq.apply(&host, &e, rhai::Dynamic::UNIT).unwrap(),
            json!({"a": 2, "b": "22"})
        );
    }

    #[test]
    fn a_runaway_jq_program_is_stopped_and_disabled() {
        let limits = Limits {
            deadline: Duration::from_millis(50),
            ..Limits::default()
        };
        let host = ScriptHost::new(limits, vec![]);
        let jq = transform(&host, "jq: 'def f: f; f'");
        let e = event(json!({}));
        assert!(jq
            .apply(&host, &e, rhai::Dynamic::UNIT)
            .unwrap_err()
            .contains("deadline"));
        assert!(jq
            .apply(&host, &e, rhai::Dynamic::UNIT)
            .unwrap_err()
            .contains("disabled"));
    }

    #[test]
    fn jq_syntax_errors_are_load_errors() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let errors = compile_standalone(&host, &[], "jq: '.a |'", |ctx, t: &Transform| {
            CompiledTransform::compile(ctx, "transform", t)
        })
        .unwrap_err();
        assert_eq!(errors[0].field, "transform.jq");
    }

    /// As for slow scripts: with one worker thread, a task spawned before a slow jq run
    /// still runs while it is going on, once the program has been slow before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_slow_jq_program_does_not_hold_up_the_other_tasks_of_its_worker() {
        let jq = JqTransform {
            program: CompiledJq::compile("[range(0; 3000000)] | length").unwrap(),
            disabled: Arc::default(),
            slow: SlowWork::default(),
        };
        let (ran, ended) = tokio::spawn(async move {
            let deadline = Duration::from_secs(30);
            jq.run(&Value::Null, deadline).unwrap();
            assert!(jq.slow.is_slow(), "the first run was not slow");
            let (tx, rx) = std::sync::mpsc::channel();
            tokio::spawn(async move {
                let _ = tx.send(tokio::time::Instant::now());
            });
            jq.run(&Value::Null, deadline).unwrap();
            (rx, tokio::time::Instant::now())
        })
        .await
        .unwrap();
        let ran = tokio::task::spawn_blocking(move || ran.recv().expect("the other task ran"))
            .await
            .unwrap();
        assert!(ran < ended, "the other task had to wait for the jq run");
    }
}
