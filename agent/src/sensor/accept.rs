//! Acceptance of one event by one dependency: the transform, then the filters. The live
//! sensor, `triggerd eval` and `triggerd test` all call [`CompiledDependency::accept`]; the
//! tools ask it for an [`Explanation`] of each step, the live path does not.

use std::sync::Arc;

use serde_json::Value;

use super::{CompiledDependency, Verdict};
use crate::event::Event;
use crate::script::ScriptHost;

/// What one dependency made of one event, step by step, for tools that say why.
#[derive(Debug, Clone, Default)]
pub struct Explanation {
    /// The transform's new data, or its error; `None` when the dependency has no transform.
    pub transform: Option<Result<Value, String>>,
    /// Each filter kind's own verdict on the (transformed) event, in Argo's order (exprs,
    /// data, context, time, script); empty when the transform failed or there are no filters.
    pub kinds: Vec<(&'static str, Verdict)>,
}

impl Explanation {
    /// Why the dependency rejected the event with `verdict`: the transform's error, or the
    /// filter kinds that did not pass.
    pub fn rejection(&self, verdict: &Verdict) -> String {
        if let Some(Err(e)) = &self.transform {
            return e.clone();
        }
        let failing: Vec<String> = self
            .kinds
            .iter()
            .filter(|(_, v)| !v.pass || v.error.is_some())
            .map(|(kind, v)| match &v.error {
                Some(e) => format!("{kind}: {e}"),
                None => format!("{kind} filter does not match"),
            })
            .collect();
        if failing.is_empty() {
            verdict
                .error
                .clone()
                .unwrap_or_else(|| "filters do not match".into())
        } else {
            failing.join("; ")
        }
    }
}

impl CompiledDependency {
    /// Transforms and filters `event`: `Ok` with the event to record, or `Err` with the
    /// verdict that rejected it. With `explain`, each step's result is also recorded there
    /// (each filter kind is then evaluated on its own as well); the decision is the same.
    pub fn accept(
        &self,
        host: &ScriptHost,
        event: &Arc<Event>,
        mut explain: Option<&mut Explanation>,
    ) -> Result<Arc<Event>, Verdict> {
        // A transformed event is a new event with the same context: filters are given the
        // original's context view (untransformed events have it cached already).
        let (event, ctx) = match &self.transform {
            None => (event.clone(), None),
            Some(t) => {
                let ctx = event.context_view();
                let applied = t.apply(host, event, ctx.clone());
                if let Some(explain) = explain.as_deref_mut() {
                    explain.transform = Some(applied.clone());
                }
                let data = applied.map_err(|e| Verdict {
                    pass: false,
                    error: Some(e),
                    script_failed: true,
                })?;
                let mut changed = (**event).clone();
                changed.data = data;
                changed.raw_is_data = false;
                (Arc::new(changed), Some(ctx))
            }
        };
        if self.filters.is_empty() {
            return Ok(event);
        }
        if let Some(explain) = explain {
            explain.kinds = self.filters.evaluate_each(host, Some(&event), ctx.clone());
        }
        let verdict = self.filters.evaluate(host, Some(&event), ctx);
        if verdict.pass {
            Ok(event)
        } else {
            Err(verdict)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::compile::compile_standalone;
    use crate::manifest::{Filters, Transform};
    use crate::script::Limits;
    use crate::sensor::{CompiledFilters, CompiledTransform, Logic};

    fn dependency(
        host: &ScriptHost,
        transform: Option<&str>,
        filters: &str,
        logic: Logic,
    ) -> CompiledDependency {
        let transform = transform.map(|yaml| {
            compile_standalone(host, &[], yaml, |ctx, t: &Transform| {
                CompiledTransform::compile(ctx, "transform", t)
            })
            .expect("transform compiles")
        });
        let filters = compile_standalone(host, &[], filters, |ctx, f: &Filters| {
            Some(CompiledFilters::compile(ctx, "filters", f, logic))
        })
        .expect("filters compile");
        CompiledDependency {
            name: "d".into(),
            event_source: "s".into(),
            event_name: "e".into(),
            transform,
            filters,
            telemetry: std::sync::OnceLock::new(),
        }
    }

    const FILTERS: &str =
        "data: [{path: kind, type: string, value: [push]}]\nscript: 'event.n > 1'\n";

    /// Accepts `data` live and explained, checks both decide alike, and returns the
    /// explained decision with its explanation.
    fn both(
        dep: &CompiledDependency,
        host: &ScriptHost,
        data: Value,
    ) -> (Result<Value, Verdict>, Explanation) {
        let event = Arc::new(Event::new("s", "e", "test", data, Bytes::new()));
        let live = dep.accept(host, &event, None).map(|e| e.data.clone());
        let mut explained = Explanation::default();
        let told = dep
            .accept(host, &event, Some(&mut explained))
            .map(|e| e.data.clone());
        assert_eq!(
            live, told,
            "the explained decision differs from the live one"
        );
        (told, explained)
    }

    fn kinds(explained: &Explanation) -> Vec<(&'static str, bool)> {
        explained.kinds.iter().map(|(k, v)| (*k, v.pass)).collect()
    }

    #[test]
    fn a_passing_event_is_explained_kind_by_kind() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let dep = dependency(&host, None, FILTERS, Logic::And);
        let (decision, explained) = both(&dep, &host, json!({"kind": "push", "n": 2}));
        assert_eq!(decision, Ok(json!({"kind": "push", "n": 2})));
        assert!(explained.transform.is_none());
        assert_eq!(kinds(&explained), [("data", true), ("script", true)]);
    }

    #[test]
    fn a_failing_filter_is_named_in_the_rejection() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let dep = dependency(&host, None, FILTERS, Logic::And);
        let (decision, explained) = both(&dep, &host, json!({"kind": "tag", "n": 2}));
        let verdict = decision.expect_err("rejected");
        assert_eq!(kinds(&explained), [("data", false), ("script", true)]);
        assert_eq!(explained.rejection(&verdict), "data filter does not match");
    }

    #[test]
    fn a_failing_transform_rejects_before_any_filter() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let dep = dependency(&host, Some("script: 'throw \"boom\"'"), FILTERS, Logic::And);
        let (decision, explained) = both(&dep, &host, json!({"kind": "push", "n": 2}));
        let verdict = decision.expect_err("rejected");
        assert!(verdict.script_failed);
        let error = verdict.error.clone().expect("the transform's error");
        assert!(error.contains("boom"), "{error}");
        assert_eq!(explained.transform, Some(Err(error.clone())));
        assert!(explained.kinds.is_empty());
        assert_eq!(explained.rejection(&verdict), error);
    }

    #[test]
    fn under_or_one_passing_kind_accepts_and_the_other_is_still_shown() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let dep = dependency(
            &host,
            Some("script: 'event.n += 1; event'"),
            FILTERS,
            Logic::Or,
        );
        let (decision, explained) = both(&dep, &host, json!({"kind": "tag", "n": 1}));
        assert_eq!(decision, Ok(json!({"kind": "tag", "n": 2})));
        assert_eq!(
            explained.transform,
            Some(Ok(json!({"kind": "tag", "n": 2})))
        );
        assert_eq!(kinds(&explained), [("data", false), ("script", true)]);
    }
}
