//! Dependency transforms: rewrite the event data before filtering, with Rhai or jq.

use serde_json::Value;

use crate::event::Event;
use crate::manifest::{ScriptSource, Transform};
use crate::plan::CompileContext;
use crate::script::{from_dynamic, to_dynamic, CompiledScript, ScriptHost, ScriptKind};

/// A compiled transform.
#[derive(Debug, Clone)]
pub enum CompiledTransform {
    /// Rhai: `event` and `ctx` in scope, returns the new data.
    Script(CompiledScript),
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
            (None, Some(jq)) => {
                ctx.error_with_hint(
                    Some(&jq.referenced),
                    format!("{field}.jq"),
                    "jq transforms are not supported yet",
                    "use `transform.script` (Rhai) returning the new data",
                );
                None
            }
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
                .eval(s, &[("event", to_dynamic(&event.data)), ("ctx", ctx)])
                .and_then(|v| from_dynamic(&v))
                .map_err(|e| format!("transform script: {e}")),
        }
    }
}
