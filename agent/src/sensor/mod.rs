//! Sensors: match events to dependencies, transform and filter them, and fire each trigger
//! when its condition over the arrived dependencies holds.

mod accept;
mod condition;
mod filter;
mod jq;
mod transform;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use accept::Explanation;
pub use condition::Condition;
pub use filter::{CompiledFilters, Logic, Verdict};
pub use jq::CompiledJq;
pub use transform::CompiledTransform;

use crate::bus::jetstream::{DeadLetterRecord, Durable};
use crate::bus::{Item, Pending, Received, Replay, Subscription};
use crate::clock::Clock;
use crate::compile::CompileContext;
use crate::delivery::{compile_delivery, deliver, DeliveryContext, DeliveryPlan, Final};
use crate::event::{Event, FiredEvents};
use crate::manifest::{ConditionsReset, SensorSpec};
use crate::telemetry::{DependencyTelemetry, Dropped, Metrics};

/// A compiled dependency.
#[derive(Debug)]
pub struct CompiledDependency {
    /// Name used by parameters and conditions.
    pub name: String,
    /// EventSource name to match.
    pub event_source: String,
    /// Event name to match.
    pub event_name: String,
    /// Rewrites the data before filtering.
    pub transform: Option<CompiledTransform>,
    /// Filters the (transformed) event must pass.
    pub filters: CompiledFilters,
    /// Its counters and log lines, resolved on its first event.
    telemetry: OnceLock<DependencyTelemetry>,
}

impl CompiledDependency {
    /// The dependency's telemetry (its label sets are built once, on first use).
    fn telemetry(&self, sensor: &str, metrics: &Metrics) -> &DependencyTelemetry {
        self.telemetry
            .get_or_init(|| DependencyTelemetry::new(metrics, sensor, &self.name))
    }
}

/// A trigger with the condition that fires it.
#[derive(Debug)]
pub struct GuardedTrigger {
    /// The trigger with its delivery.
    pub delivery: Arc<DeliveryPlan>,
    /// When it fires.
    pub condition: Condition,
    /// Dependencies the condition mentions (indexes into the sensor's dependencies).
    pub mentions: Vec<usize>,
    /// Cron schedules (in their zones) at which partial state is forgotten.
    pub resets: Vec<(Cron, Tz)>,
}

/// A compiled sensor.
#[derive(Debug)]
pub struct CompiledSensor {
    /// Sensor name.
    pub name: String,
    /// Dependencies in manifest order.
    pub dependencies: Vec<CompiledDependency>,
    /// Triggers in manifest order.
    pub triggers: Vec<GuardedTrigger>,
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
            .and_then(|t| CompiledTransform::compile(ctx, &format!("{field}.transform"), t));
        dependencies.push(CompiledDependency {
            name: d.name.clone(),
            event_source: d.event_source_name.clone(),
            event_name: d.event_name.clone(),
            transform,
            filters,
            telemetry: OnceLock::new(),
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
        let condition = match &t.template.conditions {
            Some(c) => Condition::parse(&c.value, &names)
                .map_err(|e| {
                    ctx.error(
                        Some(&c.referenced),
                        format!("{field}.template.conditions"),
                        format!("invalid condition {:?}: {e}", c.value),
                    )
                })
                .ok(),
            None => Condition::all(names.len()),
        };
        let resets = compile_resets(
            ctx,
            &format!("{field}.template.conditionsReset"),
            &t.template.conditions_reset,
        );
        let tjson = json
            .pointer(&format!("/spec/triggers/{i}"))
            .cloned()
            .unwrap_or(Value::Null);
        let trigger = compile_delivery(ctx, name, &field, t, tjson, &names);
        if let (Some(trigger), Some(condition)) = (trigger, condition) {
            let mut mentions = Vec::new();
            condition.dependencies(&mut mentions);
            triggers.push(GuardedTrigger {
                delivery: Arc::new(trigger),
                condition,
                mentions,
                resets,
            });
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

fn compile_resets(
    ctx: &mut CompileContext<'_>,
    field: &str,
    resets: &[ConditionsReset],
) -> Vec<(Cron, Tz)> {
    let mut out = Vec::new();
    for (i, r) in resets.iter().enumerate() {
        let t = &r.by_time;
        let f = format!("{field}[{i}].byTime");
        let cron = if t.value.cron.split_whitespace().count() == 5 {
            Cron::from_str(&t.value.cron).ok()
        } else {
            None
        };
        let Some(cron) = cron else {
            ctx.error_with_hint(
                Some(&t.referenced),
                format!("{f}.cron"),
                format!("invalid cron {:?}", t.value.cron),
                "standard 5 fields, e.g. \"0 0 * * *\" for midnight",
            );
            continue;
        };
        let zone = match t.value.timezone.as_deref().filter(|z| !z.is_empty()) {
            None => Tz::UTC,
            Some(z) => match z.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    ctx.error(
                        Some(&t.referenced),
                        format!("{f}.timezone"),
                        format!("invalid timezone {z:?}"),
                    );
                    continue;
                }
            },
        };
        out.push((cron, zone));
    }
    out
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
    /// Wall clock for condition resets.
    pub clock: Clock,
    /// Condition state and dead letters on the JetStream bus; `None` on the embedded bus,
    /// where partial state lives in memory and dead letters only in logs and metrics.
    pub durable: Option<Durable>,
}

/// How long a message whose handling could not finish (the condition store unreachable)
/// waits before it is delivered again.
const REDELIVER_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Partial state of one trigger: the latest accepted event of each mentioned dependency.
/// Linear in the number of dependencies.
struct TriggerState {
    events: Vec<Option<Arc<Event>>>,
    next_reset: Option<DateTime<Utc>>,
}

impl CompiledSensor {
    /// The (event source, event name) pairs this sensor listens to.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.dependencies
            .iter()
            .map(|d| (d.event_source.as_str(), d.event_name.as_str()))
    }

    /// Transforms and filters an event for one dependency: `Ok` with the event to record, or
    /// `Err` with the verdict that rejected it (see [`CompiledDependency::accept`]).
    pub fn accept(
        &self,
        host: &crate::script::ScriptHost,
        dep: &CompiledDependency,
        event: &Arc<Event>,
    ) -> Result<Arc<Event>, Verdict> {
        dep.accept(host, event, None)
    }

    fn next_reset(t: &GuardedTrigger, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        t.resets
            .iter()
            .filter_map(|(cron, tz)| {
                cron.find_next_occurrence(&after.with_timezone(tz), false)
                    .ok()
            })
            .map(|d| d.with_timezone(&Utc))
            .min()
    }

    /// Runs the sensor until its queue closes (the bus shut down) and is drained.
    pub async fn run(self: Arc<Self>, ctx: SensorContext, mut queue: Subscription) {
        let permits = Arc::new(Semaphore::new(ctx.max_inflight.max(1)));
        let now = ctx.clock.now();
        let mut states: Vec<TriggerState> = self
            .triggers
            .iter()
            .map(|t| TriggerState {
                events: vec![None; self.dependencies.len()],
                next_reset: Self::next_reset(t, now),
            })
            .collect();
        loop {
            let reset_at = states.iter().filter_map(|s| s.next_reset).min();
            // Take a permit before taking an event, so a busy sensor leaves events on the
            // bus, where they push back on the sources.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p,
                () = sleep_until_opt(&ctx.clock, reset_at) => {
                    self.reset_due(&ctx, &mut states).await;
                    continue;
                }
            };
            let Ok(permit) = permit else { break };
            let event = tokio::select! {
                e = queue.recv() => e,
                () = ctx.abort.cancelled() => None,
                () = sleep_until_opt(&ctx.clock, reset_at) => {
                    self.reset_due(&ctx, &mut states).await;
                    continue;
                }
            };
            let Some(Received { item, ack }) = event else {
                break;
            };
            let permit = Arc::new(permit);
            match item {
                Item::Replay(replay) => self.replay(&ctx, replay, ack, permit).await,
                Item::Event(event) => {
                    match self.handle(&ctx, &mut states, &event, &ack, &permit).await {
                        Ok(()) => ack.done().await,
                        Err(e) => {
                            tracing::warn!(sensor = %self.name, event_id = %event.id, error = %e, retry_in = ?REDELIVER_AFTER, "event not handled; it will be delivered again");
                            ack.retry_later(REDELIVER_AFTER).await;
                        }
                    }
                }
            }
        }
        tracing::debug!(sensor = %self.name, "sensor stopped");
    }

    /// Matches one event against the dependencies and fires every trigger whose condition
    /// then holds. `Err` when the durable condition state could not be read or written.
    async fn handle(
        &self,
        ctx: &SensorContext,
        states: &mut [TriggerState],
        event: &Arc<Event>,
        ack: &Pending,
        permit: &Arc<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), crate::bus::jetstream::BusError> {
        for (index, dep) in self.dependencies.iter().enumerate() {
            if dep.event_source != event.source || dep.event_name != event.subject {
                continue;
            }
            let telemetry = dep.telemetry(&self.name, &ctx.delivery.metrics);
            let accepted = match dep.accept(&ctx.delivery.host, event, None) {
                Ok(e) => {
                    telemetry.accepted();
                    e
                }
                Err(v) => {
                    let why = match &v.error {
                        Some(e) if v.script_failed => Dropped::ScriptFailed(e),
                        Some(e) => Dropped::Unevaluable(e),
                        None if v.script_failed => Dropped::ScriptFailed(&"the script failed"),
                        None => Dropped::Filtered,
                    };
                    telemetry.dropped(&event.id, why);
                    continue;
                }
            };
            for (t, state) in self.triggers.iter().zip(states.iter_mut()) {
                if !t.mentions.contains(&index) {
                    continue;
                }
                let fired: Vec<(usize, Arc<Event>)> = match &ctx.durable {
                    Some(d) if t.mentions.len() > 1 => {
                        let advanced = d
                            .conditions
                            .advance(
                                &self.name,
                                &t.delivery.trigger.name,
                                self.dependencies.len(),
                                index,
                                &accepted,
                                |present| t.condition.holds(present),
                            )
                            .await?;
                        match advanced {
                            Some(fired) => fired,
                            None => continue,
                        }
                    }
                    _ => {
                        state.events[index] = Some(accepted.clone());
                        let present: Vec<bool> = state.events.iter().map(Option::is_some).collect();
                        if !t.condition.holds(&present) {
                            continue;
                        }
                        state
                            .events
                            .iter_mut()
                            .enumerate()
                            .filter_map(|(i, e)| e.take().map(|e| (i, e)))
                            .collect()
                    }
                };
                let fired = fired
                    .into_iter()
                    .filter_map(|(i, e)| self.dependencies.get(i).map(|d| (d.name.clone(), e)))
                    .collect();
                self.fire(
                    ctx,
                    t.delivery.clone(),
                    Arc::new(FiredEvents::new(fired)),
                    ack.share(),
                    permit.clone(),
                );
            }
        }
        Ok(())
    }

    /// Runs one trigger in the background; the message is acknowledged (through `ack`) once
    /// it succeeded or its failure was recorded as a dead letter.
    fn fire(
        &self,
        ctx: &SensorContext,
        trigger: Arc<DeliveryPlan>,
        fired: Arc<FiredEvents>,
        ack: Pending,
        permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let (delivery, durable) = (ctx.delivery.clone(), ctx.durable.clone());
        ctx.tasks.spawn(async move {
            let outcome = deliver(&delivery, &trigger, &fired).await;
            match (outcome, durable) {
                (Final::DeadLettered(failure), Some(d)) => {
                    let events = fired.by_dependency.clone();
                    store_dead_letter(
                        &d,
                        &trigger.trigger.sensor,
                        &trigger.trigger.name,
                        failure.reason,
                        events,
                        ack,
                    )
                    .await;
                }
                _ => ack.done().await,
            }
            drop(permit);
        });
    }

    /// Runs a replayed dead letter's trigger again with its events.
    async fn replay(
        &self,
        ctx: &SensorContext,
        replay: Replay,
        ack: Pending,
        permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let Some(t) = self
            .triggers
            .iter()
            .find(|t| t.delivery.trigger.name == replay.trigger)
        else {
            tracing::error!(sensor = %self.name, trigger = %replay.trigger, "replayed dead letter names a trigger this sensor no longer has; keeping it as a dead letter");
            let error = format!(
                "replay: sensor {:?} has no trigger {:?}",
                self.name, replay.trigger
            );
            match &ctx.durable {
                Some(d) => {
                    store_dead_letter(d, &self.name, &replay.trigger, error, replay.events, ack)
                        .await
                }
                None => ack.done().await,
            }
            return;
        };
        tracing::info!(sensor = %self.name, trigger = %replay.trigger, "replaying a dead letter");
        let fired = Arc::new(FiredEvents::new(replay.events));
        self.fire(ctx, t.delivery.clone(), fired, ack, permit);
    }

    async fn reset_due(&self, ctx: &SensorContext, states: &mut [TriggerState]) {
        let now = ctx.clock.now();
        for (t, state) in self.triggers.iter().zip(states.iter_mut()) {
            if state.next_reset.is_none_or(|at| at > now) {
                continue;
            }
            let forgot = match &ctx.durable {
                Some(d) if t.mentions.len() > 1 => d
                    .conditions
                    .reset(&self.name, &t.delivery.trigger.name, self.dependencies.len())
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(sensor = %self.name, trigger = %t.delivery.trigger.name, error = %e, "conditions reset failed; the partial state stays");
                        false
                    }),
                _ => state.events.iter().any(Option::is_some),
            };
            if forgot {
                t.delivery
                    .telemetry(&ctx.delivery.metrics)
                    .conditions_reset();
            }
            state.events.iter_mut().for_each(|e| *e = None);
            state.next_reset = Self::next_reset(t, now);
        }
    }
}

/// Stores a dead letter, then finishes `ack`; a dead letter that cannot be stored hands the
/// message back for redelivery instead, so the failure is not lost.
async fn store_dead_letter(
    durable: &Durable,
    sensor: &str,
    trigger: &str,
    error: String,
    events: BTreeMap<String, Arc<Event>>,
    ack: Pending,
) {
    let record = DeadLetterRecord {
        sensor: sensor.to_owned(),
        trigger: trigger.to_owned(),
        error,
        time: chrono::Utc::now(),
        replica: durable.replica.clone(),
        events,
    };
    match durable.dead_letters.record(&record).await {
        Ok(()) => ack.done().await,
        Err(e) => {
            tracing::error!(sensor, trigger, error = %e, "dead letter not stored; the event will be delivered again");
            ack.retry_later(REDELIVER_AFTER).await;
        }
    }
}

async fn sleep_until_opt(clock: &Clock, at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}
