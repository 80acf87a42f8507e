//! Delivery: runs a trigger to a final outcome — attempts, policy verdicts, backoff, and the
//! dead letter after the last failed attempt — and reports it in logs and metrics.

mod backoff;

use std::sync::Arc;

pub use backoff::{parse_duration, Backoff};

use crate::policy::Outcome;
use crate::script::ScriptHost;
use crate::sensor::FiredEvents;
use crate::telemetry::{trigger_labels, Metrics, OutcomeLabels, ScriptLabels};
use crate::trigger::{CompiledTrigger, DeadLetter};

/// What every execution needs.
#[derive(Debug, Clone)]
pub struct DeliveryContext {
    /// The shared script engine.
    pub host: Arc<ScriptHost>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The final result of one execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// The trigger succeeded.
    Succeeded,
    /// It failed and was handed to the dead letter.
    DeadLettered {
        /// Why it failed.
        reason: String,
    },
}

/// Executes `trigger` for `events` until it succeeds or fails for good; a failure goes to the
/// trigger's `dlqTrigger` (or is recorded as dead-lettered in the log and metrics).
pub async fn deliver(
    ctx: &DeliveryContext,
    trigger: &CompiledTrigger,
    events: &FiredEvents,
) -> Final {
    let final_outcome = attempt_all(ctx, trigger, events, None).await;
    let labels = trigger_labels(&trigger.sensor, &trigger.name);
    let outcome_labels = |outcome: &str| OutcomeLabels {
        sensor: trigger.sensor.clone(),
        trigger: trigger.name.clone(),
        outcome: outcome.to_owned(),
    };
    if let Some(first) = events.by_dependency.values().map(|e| e.time).min() {
        let age = (chrono::Utc::now() - first).to_std().unwrap_or_default();
        ctx.metrics
            .trigger_execution_seconds
            .get_or_create(&labels)
            .observe(age.as_secs_f64());
    }
    match final_outcome {
        Ok(()) => {
            ctx.metrics
                .trigger_executions
                .get_or_create(&outcome_labels("success"))
                .inc();
            Final::Succeeded
        }
        Err((reason, attempts)) => {
            ctx.metrics
                .trigger_executions
                .get_or_create(&outcome_labels("failed"))
                .inc();
            ctx.metrics.dead_letters.get_or_create(&labels).inc();
            tracing::warn!(
                sensor = %trigger.sensor,
                trigger = %trigger.name,
                events = %events.ids(),
                attempts,
                reason = %reason,
                "trigger failed; dead-lettering"
            );
            if let Some(dlq) = &trigger.dlq {
                let dead = DeadLetter {
                    trigger: trigger.name.clone(),
                    error: reason.clone(),
                    attempts,
                };
                if let Err((dlq_reason, _)) =
                    Box::pin(attempt_all(ctx, dlq, events, Some(&dead))).await
                {
                    tracing::error!(
                        sensor = %trigger.sensor,
                        trigger = %trigger.name,
                        dlq_trigger = %dlq.name,
                        events = %events.ids(),
                        reason = %dlq_reason,
                        "dead-letter trigger failed too; the events are recorded here only"
                    );
                }
            }
            Final::DeadLettered { reason }
        }
    }
}

/// Runs the attempts of one trigger; `Err((reason, attempts))` when it failed for good.
async fn attempt_all(
    ctx: &DeliveryContext,
    trigger: &CompiledTrigger,
    events: &FiredEvents,
    dead_letter: Option<&DeadLetter>,
) -> Result<(), (String, u32)> {
    let labels = trigger_labels(&trigger.sensor, &trigger.name);
    let built = trigger.invocation(&ctx.host, events).and_then(|inv| {
        trigger
            .build_payload(&ctx.host, events, dead_letter)
            .map(|p| (inv, p))
    });
    let (invocation, payload) = match built {
        Ok(b) => b,
        Err(e) => {
            if e.is_script_error() {
                count_script_error(ctx, trigger, "payload");
            }
            return Err((e.to_string(), 0));
        }
    };
    let max = trigger.backoff.steps.max(1);
    let mut attempt = 1;
    loop {
        if let Some(limiter) = &trigger.rate_limit {
            limiter.until_ready().await;
        }
        ctx.metrics.trigger_attempts.get_or_create(&labels).inc();
        if attempt > 1 {
            ctx.metrics.trigger_retries.get_or_create(&labels).inc();
        }
        let response = trigger.execute(&invocation, &payload).await;
        ctx.metrics
            .trigger_attempt_seconds
            .get_or_create(&labels)
            .observe(response.duration.as_secs_f64());
        let outcome = trigger
            .policy
            .judge(&ctx.host, &response, attempt, max, &events.script_view)
            .unwrap_or_else(|e| {
                count_script_error(ctx, trigger, "policy");
                Outcome::Fail {
                    reason: format!("policy script: {e}"),
                }
            });
        match outcome {
            Outcome::Success => {
                tracing::info!(
                    sensor = %trigger.sensor,
                    trigger = %trigger.name,
                    events = %events.ids(),
                    attempt,
                    response = %response.summary(),
                    "trigger succeeded"
                );
                return Ok(());
            }
            Outcome::Retry { reason, after } if attempt < max => {
                let delay = after.unwrap_or_else(|| trigger.backoff.delay(attempt + 1));
                tracing::info!(
                    sensor = %trigger.sensor,
                    trigger = %trigger.name,
                    events = %events.ids(),
                    attempt,
                    max_attempts = max,
                    reason = %reason,
                    retry_in_ms = delay.as_millis() as u64,
                    "trigger attempt failed; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Outcome::Retry { reason, .. } => {
                return Err((format!("{reason} (after {attempt} attempts)"), attempt));
            }
            Outcome::Fail { reason } => return Err((reason, attempt)),
        }
    }
}

fn count_script_error(ctx: &DeliveryContext, trigger: &CompiledTrigger, which: &str) {
    ctx.metrics
        .script_errors
        .get_or_create(&ScriptLabels {
            sensor: trigger.sensor.clone(),
            script: format!("trigger/{}/{which}", trigger.name),
        })
        .inc();
}
