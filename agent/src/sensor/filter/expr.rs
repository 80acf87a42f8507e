//! The `exprs` filter: boolean expressions over fields taken from the data (Argo's
//! `filterExpr`). Expressions are Rhai; govaluate's forms used in Argo manifests are
//! accepted too: `'single quoted'` strings, `=~`/`!~` regex operators and `x in (a, b)`.

use rhai::Dynamic;
use serde_saphyr::Spanned;

use super::{Logic, Verdict};
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::ExprFilter;
use crate::script::{to_dynamic, translate_govaluate, CompiledScript, ScriptHost, ScriptKind};

/// One compiled expression with its fields.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    script: CompiledScript,
    fields: Vec<(String, String)>,
}

impl CompiledExpr {
    /// Translates and compiles one expression; variables other than its fields are errors.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        e: &Spanned<ExprFilter>,
    ) -> Option<Self> {
        let loc = Some(&e.referenced);
        let names: Vec<&str> = e.value.fields.iter().map(|f| f.name.as_str()).collect();
        let source = translate_govaluate(&e.value.expr);
        match ctx.host.compile_with(ScriptKind::Expr, &source, &names) {
            Ok(script) => Some(Self {
                script,
                fields: e
                    .value
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), f.path.clone()))
                    .collect(),
            }),
            Err(err) => {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.expr"),
                    format!("expression {:?}: {err}", e.value.expr),
                    format!("variables are the fields: {}", names.join(", ")),
                );
                None
            }
        }
    }
}

/// Argo's `filterExpr` over the event data.
pub fn evaluate(
    host: &ScriptHost,
    exprs: &[CompiledExpr],
    logic: Logic,
    event: Option<&Event>,
) -> Verdict {
    let Some(event) = event else {
        return Verdict::error("expr filter error (nil event)");
    };
    let Some(text) = event.data_text() else {
        return Verdict::of(true);
    };
    if !gjson::valid(&text) {
        return Verdict::error("expr filter error (event data not valid JSON)");
    }
    let mut errors = Vec::new();
    'exprs: for e in exprs {
        let mut vars: Vec<(&str, Dynamic)> = Vec::with_capacity(e.fields.len());
        for (name, path) in &e.fields {
            let found = gjson::get(&text, path);
            if !found.exists() {
                let msg = format!("path '{path}' does not exist");
                match logic {
                    Logic::And => return Verdict::error(format!("expr filter error ({msg})")),
                    Logic::Or => {
                        errors.push(msg);
                        continue 'exprs;
                    }
                }
            }
            let value = serde_json::from_str(found.json()).unwrap_or(serde_json::Value::Null);
            vars.push((name.as_str(), to_dynamic(&value)));
        }
        let result = host
            .eval(&e.script, vars)
            .map(|v| v.as_bool().unwrap_or(false));
        match (result, logic) {
            (Ok(true), Logic::Or) => return Verdict::of(true),
            (Ok(false), Logic::And) => return Verdict::of(false),
            (Err(err), Logic::And) => {
                return Verdict {
                    pass: false,
                    error: Some(format!("expr filter error ({err})")),
                    script_failed: true,
                }
            }
            (Err(err), Logic::Or) => errors.push(err.to_string()),
            _ => {}
        }
    }
    match logic {
        Logic::And => Verdict::of(true),
        Logic::Or if errors.is_empty() => Verdict::of(false),
        Logic::Or => Verdict::error(format!("expr filter errors [{}]", errors.join(", "))),
    }
}

#[cfg(test)]
mod eval_tests {
    use super::*;
    use crate::compile::compile_standalone;
    use crate::manifest::Filters;
    use crate::script::Limits;
    use crate::sensor::CompiledFilters;
    use bytes::Bytes;
    use serde_json::json;

    fn passes(expr: &str, data: serde_json::Value) -> bool {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let yaml = format!(
            "exprs:\n  - expr: {}\n    fields: [{{name: kind, path: kind}}, {{name: n, path: n}}]\n",
            serde_json::to_string(expr).unwrap()
        );
        let filters = compile_standalone(&host, &[], &yaml, |ctx, f: &Filters| {
            Some(CompiledFilters::compile(ctx, "filters", f, Logic::And))
        })
        .unwrap();
        let event = Event::new("s", "e", "t", data, Bytes::new());
        filters.evaluate(&host, Some(&event), None).pass
    }

    #[test]
    fn govaluate_in_regex_and_quotes_work() {
        let data = json!({"kind": "push", "n": 3});
        assert!(passes("kind in ('push', 'tag')", data.clone()));
        assert!(!passes("kind in ('tag')", data.clone()));
        assert!(passes("n in (1, 2, 3) && kind =~ '^pu'", data.clone()));
        assert!(passes("kind !~ 'tag' || n > 10", data.clone()));
        assert!(!passes("n >= 4", data));
    }
}
