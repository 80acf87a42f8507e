//! Dependency filters, with Argo's semantics: `data` (gjson comparisons), `exprs`
//! (expressions over fields), `context`, `time`, and `script` (Rhai), combined by
//! `filtersLogicalOperator`.

mod context;
mod data;
mod expr;
mod time;

use rhai::Dynamic;
use serde_saphyr::Spanned;

pub use context::CompiledContextFilter;
pub use data::CompiledDataFilter;
pub use expr::CompiledExpr;
pub use time::CompiledTimeFilter;

use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{Filters, ScriptSource};
use crate::script::{CompiledScript, Reads, ScriptError, ScriptHost, ScriptKind};

/// How several results combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    /// Every result must pass.
    And,
    /// One passing result is enough.
    Or,
}

impl Logic {
    /// Parses Argo's operator names (`and`, `or`; empty means `and`).
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        op: &Option<Spanned<String>>,
    ) -> Logic {
        match op.as_ref().map(|s| (s.value.to_ascii_lowercase(), s)) {
            None => Logic::And,
            Some((v, _)) if v.is_empty() || v == "and" => Logic::And,
            Some((v, _)) if v == "or" => Logic::Or,
            Some((v, s)) => {
                ctx.error_with_hint(
                    Some(&s.referenced),
                    field,
                    format!("unknown logical operator {v:?}"),
                    "use `and` or `or`",
                );
                Logic::And
            }
        }
    }
}

/// The result of a filter group: Argo returns a verdict and, under `or`, possibly errors
/// from the groups that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the event passes.
    pub pass: bool,
    /// What could not be evaluated (a missing path, invalid data, a failing script).
    pub error: Option<String>,
    /// Whether the error came from a script (counted as a script error).
    pub script_failed: bool,
}

impl Verdict {
    /// Passed or not, no error.
    pub fn of(pass: bool) -> Self {
        Self {
            pass,
            error: None,
            script_failed: false,
        }
    }

    /// Failed with an error.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            pass: false,
            error: Some(message.into()),
            script_failed: false,
        }
    }
}

/// All filters of one dependency.
#[derive(Debug, Clone)]
pub struct CompiledFilters {
    data: Option<Vec<CompiledDataFilter>>,
    data_logic: Logic,
    exprs: Option<Vec<CompiledExpr>>,
    expr_logic: Logic,
    context: Option<CompiledContextFilter>,
    time: Option<CompiledTimeFilter>,
    script: Option<CompiledScript>,
    logic: Logic,
}

impl CompiledFilters {
    /// Compiles a dependency's filters; `field` is the path of `filters`.
    pub fn compile(ctx: &mut CompileContext<'_>, field: &str, f: &Filters, logic: Logic) -> Self {
        let data = (!f.data.is_empty()).then(|| {
            f.data
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    CompiledDataFilter::compile(ctx, &format!("{field}.data[{i}]"), d)
                })
                .collect()
        });
        let data_logic = Logic::compile(
            ctx,
            &format!("{field}.dataLogicalOperator"),
            &f.data_logical_operator,
        );
        let exprs = (!f.exprs.is_empty()).then(|| {
            f.exprs
                .iter()
                .enumerate()
                .filter_map(|(i, e)| CompiledExpr::compile(ctx, &format!("{field}.exprs[{i}]"), e))
                .collect()
        });
        let expr_logic = Logic::compile(
            ctx,
            &format!("{field}.exprLogicalOperator"),
            &f.expr_logical_operator,
        );
        let context = f
            .context
            .as_ref()
            .map(|c| CompiledContextFilter::new(&c.value));
        let time = f
            .time
            .as_ref()
            .and_then(|t| CompiledTimeFilter::compile(ctx, &format!("{field}.time"), t));
        let source = ScriptSource::from_fields(&f.script, &f.script_file);
        let script =
            source.and_then(|s| ctx.script(&format!("{field}.script"), ScriptKind::Filter, &s));
        Self {
            data,
            data_logic,
            exprs,
            expr_logic,
            context,
            time,
            script,
            logic,
        }
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.data.is_none()
            && self.exprs.is_none()
            && self.context.is_none()
            && self.time.is_none()
            && self.script.is_none()
    }

    /// How the filter kinds combine (`filtersLogicalOperator`).
    pub fn logic(&self) -> Logic {
        self.logic
    }

    /// Evaluates every filter kind on `event` (`None` stands for Argo's nil event). `ctx` is
    /// the event's context as a script value, when the caller has it already.
    pub fn evaluate(
        &self,
        host: &ScriptHost,
        event: Option<&Event>,
        ctx: Option<Dynamic>,
    ) -> Verdict {
        let groups = self
            .groups(host, event, ctx)
            .into_iter()
            .map(|(_, g)| g)
            .collect();
        combine(self.logic, groups)
    }

    /// Evaluates each filter kind on its own, in Argo's order (exprs, data, context, time,
    /// script), for tools that explain a verdict (`triggerd eval`). [`Self::evaluate`] gives
    /// the combined verdict, which under `and` stops at the first failing kind.
    pub fn evaluate_each(
        &self,
        host: &ScriptHost,
        event: Option<&Event>,
        ctx: Option<Dynamic>,
    ) -> Vec<(&'static str, Verdict)> {
        self.groups(host, event, ctx)
            .into_iter()
            .map(|(kind, g)| (kind, g()))
            .collect()
    }

    /// The filter kinds that are set, by name, each ready to evaluate.
    fn groups<'a>(
        &'a self,
        host: &'a ScriptHost,
        event: Option<&'a Event>,
        ctx: Option<Dynamic>,
    ) -> Vec<(&'static str, Group<'a>)> {
        let mut groups: Vec<(&'static str, Group<'a>)> = Vec::new();
        if let Some(exprs) = &self.exprs {
            groups.push((
                "exprs",
                Box::new(move || expr::evaluate(host, exprs, self.expr_logic, event)),
            ));
        }
        if let Some(data) = &self.data {
            groups.push((
                "data",
                Box::new(move || data::evaluate(data, self.data_logic, event)),
            ));
        }
        if let Some(c) = &self.context {
            groups.push((
                "context",
                Box::new(move || Verdict::of(event.is_some_and(|e| c.matches(e)))),
            ));
        }
        if let Some(t) = &self.time {
            groups.push((
                "time",
                Box::new(move || {
                    event.map_or_else(|| Verdict::error("nil event"), |e| t.evaluate(e.time))
                }),
            ));
        }
        if let Some(s) = &self.script {
            groups.push((
                "script",
                Box::new(move || script_verdict(host, s, event, ctx)),
            ));
        }
        groups
    }
}

/// One filter kind, ready to evaluate.
type Group<'a> = Box<dyn FnOnce() -> Verdict + 'a>;

/// Argo's `filterEvent`: under `and` the first failing or erroring group decides; under
/// `or` every group runs, any pass passes, and errors are reported alongside.
fn combine(logic: Logic, groups: Vec<Group<'_>>) -> Verdict {
    match logic {
        Logic::And => {
            for g in groups {
                let v = g();
                if !v.pass || v.error.is_some() {
                    return Verdict { pass: false, ..v };
                }
            }
            Verdict::of(true)
        }
        Logic::Or => {
            let mut pass = false;
            let mut errors = Vec::new();
            let mut script_failed = false;
            for g in groups {
                let v = g();
                pass |= v.pass;
                script_failed |= v.script_failed;
                errors.extend(v.error);
            }
            Verdict {
                pass,
                error: (!errors.is_empty()).then(|| errors.join("; ")),
                script_failed,
            }
        }
    }
}

fn script_verdict(
    host: &ScriptHost,
    script: &CompiledScript,
    event: Option<&Event>,
    ctx: Option<Dynamic>,
) -> Verdict {
    let Some(event) = event else {
        return Verdict::error("nil event");
    };
    let ctx = match (script.reads("ctx"), ctx) {
        (Reads::Nothing, _) => Dynamic::UNIT,
        (Reads::Whole, Some(ctx)) => ctx,
        (reads, Some(ctx)) => reads.project(&ctx),
        (_, None) => event.context_for(script),
    };
    let result = host
        .eval(script, [("event", event.data_for(script)), ("ctx", ctx)])
        .and_then(|v| {
            v.as_bool().map_err(|t| ScriptError::Type {
                expected: "bool",
                got: t.to_owned(),
            })
        });
    match result {
        Ok(pass) => Verdict::of(pass),
        Err(e) => Verdict {
            pass: false,
            error: Some(format!("filter script: {e}")),
            script_failed: true,
        },
    }
}
