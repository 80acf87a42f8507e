//! Sensors: match events to dependencies, transform and filter them, and fire triggers when
//! every dependency has arrived.

mod filter;
mod fired;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use filter::{CompiledFilters, FilterError, Logic};
pub use fired::FiredEvents;

use crate::bus::Subscription;
use crate::delivery::{deliver, DeliveryContext};
use crate::event::Event;
use crate::manifest::{ScriptSource, SensorSpec};
use crate::plan::CompileContext;
use crate::script::{from_dynamic, to_dynamic, CompiledScript, ScriptError, ScriptKind};
use crate::telemetry::{DependencyLabels, ScriptLabels};
use crate::trigger::{compile_trigger, CompiledTrigger};

/// A compiled dependency.
#[derive(Debug)]
pub struct CompiledDependency {
    /// Name used by parameters.
    pub name: String,
    /// EventSource name to match.
    pub event_source: String,
    /// Event name to match.
    pub event_name: String,
    transform: Option<CompiledScript>,
    filters: CompiledFilters,
}

/// A compiled sensor.
#[derive(Debug)]
pub struct CompiledSensor {
    /// Sensor name.
    pub name: String,
    /// Dependencies in manifest order.
    pub dependencies: Vec<CompiledDependency>,
    /// Triggers in manifest order.
    pub triggers: Vec<Arc<CompiledTrigger>>,
}

/// Compiles a sensor; errors go to `ctx`.
pub fn compile_sensor(
    ctx: &mut CompileContext<'_>,
    name: &str,
    spec: &SensorSpec,
    json: &Value,
) -> Option<CompiledSensor> {
    let before = ctx.errors.len();
    if spec.dependencies.is_empty() {
        ctx.error(
            None,
            "spec.dependencies",
            "a sensor needs at least one dependency",
        );
    }
    let names: Vec<String> = spec.dependencies.iter().map(|d| d.name.clone()).collect();
    let mut dependencies = Vec::new();
    for (i, d) in spec.dependencies.iter().enumerate() {
        let field = format!("spec.dependencies[{i}]");
        if names[..i].contains(&d.name) {
            ctx.error(
                None,
                format!("{field}.name"),
                format!("duplicate dependency name {:?}", d.name),
            );
        }
        let logic = Logic::compile(
            ctx,
            &format!("{field}.filtersLogicalOperator"),
            &d.filters_logical_operator,
        );
        let filters = CompiledFilters::compile(
            ctx,
            &format!("{field}.filters"),
            d.filters.as_ref().unwrap_or(&Default::default()),
            logic,
        );
        let transform = d
            .transform
            .as_ref()
            .and_then(|t| ScriptSource::from_fields(&t.script, &t.script_file))
            .and_then(|s| {
                ctx.script(
                    &format!("{field}.transform.script"),
                    ScriptKind::Transform,
                    &s,
                )
            });
        dependencies.push(CompiledDependency {
            name: d.name.clone(),
            event_source: d.event_source_name.clone(),
            event_name: d.event_name.clone(),
            transform,
            filters,
        });
    }
    let mut triggers = Vec::new();
    let mut trigger_names = Vec::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        let field = format!("spec.triggers[{i}]");
        if trigger_names.contains(&t.template.name) {
            ctx.error(
                None,
                format!("{field}.template.name"),
                format!("duplicate trigger name {:?}", t.template.name),
            );
        }
        trigger_names.push(t.template.name.clone());
        let tjson = json
            .pointer(&format!("/spec/triggers/{i}"))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(c) = compile_trigger(ctx, name, &field, t, tjson, &names) {
            triggers.push(Arc::new(c));
        }
    }
    if spec.triggers.is_empty() {
        ctx.error(None, "spec.triggers", "a sensor needs at least one trigger");
    }
    (ctx.errors.len() == before).then(|| CompiledSensor {
        name: name.to_owned(),
        dependencies,
        triggers,
    })
}

/// What a running sensor needs.
#[derive(Debug, Clone)]
pub struct SensorContext {
    /// Delivery (engine, metrics).
    pub delivery: DeliveryContext,
    /// Events processed at once by this sensor; further events wait on the bus.
    pub max_inflight: usize,
    /// Tracks trigger executions so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled on hard shutdown (after the drain timeout).
    pub abort: CancellationToken,
}

/// Why a dependency did not accept an event.
#[derive(Debug)]
enum Rejection {
    Filtered,
    Script(&'static str, ScriptError),
    Filter(FilterError),
}

impl CompiledSensor {
    /// The (event source, event name) pairs this sensor listens to.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.dependencies
            .iter()
            .map(|d| (d.event_source.as_str(), d.event_name.as_str()))
    }

    /// Runs the sensor until its queue closes (the bus shut down) and is drained.
    pub async fn run(self: Arc<Self>, ctx: SensorContext, mut queue: Subscription) {
        let permits = Arc::new(Semaphore::new(ctx.max_inflight.max(1)));
        let mut state: BTreeMap<String, Arc<Event>> = BTreeMap::new();
        loop {
            // Take a permit before taking an event, so a busy sensor leaves events on the
            // bus, where they push back on the sources.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let event = tokio::select! {
                e = queue.recv() => e,
                () = ctx.abort.cancelled() => None,
            };
            let Some(event) = event else { break };
            for dep in self
                .dependencies
                .iter()
                .filter(|d| d.event_source == event.source && d.event_name == event.subject)
            {
                match self.accept(&ctx, dep, &event) {
                    Ok(e) => {
                        state.insert(dep.name.clone(), e);
                    }
                    Err(r) => self.report_rejection(&ctx, dep, &event, r),
                }
            }
            if state.len() < self.dependencies.len() {
                continue;
            }
            let fired = Arc::new(FiredEvents::new(std::mem::take(&mut state)));
            let permit = Arc::new(permit);
            for trigger in &self.triggers {
                let (trigger, fired, permit, delivery) = (
                    trigger.clone(),
                    fired.clone(),
                    permit.clone(),
                    ctx.delivery.clone(),
                );
                ctx.tasks.spawn(async move {
                    deliver(&delivery, &trigger, &fired).await;
                    drop(permit);
                });
            }
        }
        tracing::debug!(sensor = %self.name, "sensor stopped");
    }

    /// Applies the dependency's transform and filters to an event.
    fn accept(
        &self,
        ctx: &SensorContext,
        dep: &CompiledDependency,
        event: &Arc<Event>,
    ) -> Result<Arc<Event>, Rejection> {
        let host = &ctx.delivery.host;
        let mut event = event.clone();
        let needs_ctx = dep.transform.is_some() || dep.filters.script.is_some();
        let ctx_dyn = if needs_ctx {
            to_dynamic(&event.context_json())
        } else {
            rhai::Dynamic::UNIT
        };
        if let Some(t) = &dep.transform {
            let out = host
                .eval(
                    t,
                    &[("event", to_dynamic(&event.data)), ("ctx", ctx_dyn.clone())],
                )
                .and_then(|v| from_dynamic(&v))
                .map_err(|e| Rejection::Script("transform", e))?;
            let mut changed = (*event).clone();
            changed.data = out;
            event = Arc::new(changed);
        }
        let f = &dep.filters;
        if f.is_empty() {
            return Ok(event);
        }
        let data_result = f.data_group(&event.data.to_string());
        let script_result = f.script.as_ref().map(|s| {
            host.eval(s, &[("event", to_dynamic(&event.data)), ("ctx", ctx_dyn)])
                .and_then(|v| {
                    v.as_bool().map_err(|t| ScriptError::Type {
                        expected: "bool",
                        got: t.to_owned(),
                    })
                })
                .map_err(|e| Rejection::Script("filter", e))
        });
        let data_result = data_result.map(|r| r.map_err(Rejection::Filter));
        let results: Vec<Result<bool, Rejection>> =
            [data_result, script_result].into_iter().flatten().collect();
        let passed = match f.filters_logic {
            Logic::And => {
                let mut ok = true;
                for r in results {
                    if !r? {
                        ok = false;
                    }
                }
                ok
            }
            Logic::Or => {
                let mut ok = false;
                let mut first_err = None;
                for r in results {
                    match r {
                        Ok(true) => ok = true,
                        Ok(false) => {}
                        Err(e) => first_err = first_err.or(Some(e)),
                    }
                }
                match (ok, first_err) {
                    (false, Some(e)) => return Err(e),
                    _ => ok,
                }
            }
        };
        if passed {
            Ok(event)
        } else {
            Err(Rejection::Filtered)
        }
    }

    fn report_rejection(
        &self,
        ctx: &SensorContext,
        dep: &CompiledDependency,
        event: &Event,
        r: Rejection,
    ) {
        let metrics = &ctx.delivery.metrics;
        metrics
            .events_filtered
            .get_or_create(&DependencyLabels {
                sensor: self.name.clone(),
                dependency: dep.name.clone(),
            })
            .inc();
        match r {
            Rejection::Filtered => {
                tracing::debug!(sensor = %self.name, dependency = %dep.name, event_id = %event.id, "event filtered out")
            }
            Rejection::Filter(e) => {
                tracing::info!(sensor = %self.name, dependency = %dep.name, event_id = %event.id, error = %e, "event filtered out: filter could not be evaluated")
            }
            Rejection::Script(which, e) => {
                metrics
                    .script_errors
                    .get_or_create(&ScriptLabels {
                        sensor: self.name.clone(),
                        script: format!("dependency/{}/{which}", dep.name),
                    })
                    .inc();
                tracing::warn!(sensor = %self.name, dependency = %dep.name, event_id = %event.id, error = %e, "{which} script failed; event dropped for this dependency")
            }
        }
    }
}
