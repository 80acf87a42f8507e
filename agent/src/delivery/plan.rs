//! The delivery plan of a trigger: how its executions are judged, retried, paced and
//! dead-lettered (`policy`, `retryStrategy`, `rateLimit`, `dlqTrigger`), compiled beside the
//! trigger itself so the trigger layer knows nothing of policies.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::Limiter;
use crate::backoff::Backoff;
use crate::compile::CompileContext;
use crate::manifest::Trigger;
use crate::policy::CompiledPolicy;
use crate::telemetry::{Metrics, TriggerTelemetry};
use crate::trigger::{compile_trigger, CompiledTrigger, PrepareContext, PrepareError};

/// A trigger and how it is delivered.
#[derive(Debug)]
pub struct DeliveryPlan {
    /// What one attempt does.
    pub trigger: CompiledTrigger,
    /// How responses are judged.
    pub policy: CompiledPolicy,
    /// Attempts and delays.
    pub backoff: Backoff,
    /// Spacing of executions (attempts included), when `rateLimit` is set.
    pub rate_limit: Option<Limiter>,
    /// Run with the failed events after the last failed attempt.
    pub dlq: Option<Arc<DeliveryPlan>>,
    /// The trigger's counters and log lines, resolved on its first execution.
    telemetry: OnceLock<TriggerTelemetry>,
}

impl DeliveryPlan {
    /// Whether the trigger (or its dead-letter trigger) talks to the Kubernetes API.
    pub fn needs_cluster(&self) -> bool {
        self.trigger.needs_cluster() || self.dlq.as_ref().is_some_and(|d| d.needs_cluster())
    }

    /// Readies the trigger's client before the first event, and its dead-letter trigger's.
    pub async fn prepare(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareError> {
        self.trigger.prepare(ctx).await?;
        if let Some(dlq) = &self.dlq {
            Box::pin(dlq.prepare(ctx)).await?;
        }
        Ok(())
    }

    /// The trigger's telemetry (its label sets are built once, on first use).
    pub fn telemetry(&self, metrics: &Metrics) -> &TriggerTelemetry {
        self.telemetry.get_or_init(|| {
            TriggerTelemetry::new(metrics, &self.trigger.sensor, &self.trigger.name)
        })
    }

    /// The trigger and, when it has one, its dead-letter trigger.
    pub fn triggers(&self) -> impl Iterator<Item = &CompiledTrigger> {
        std::iter::once(&self.trigger).chain(self.dlq.as_ref().map(|d| &d.trigger))
    }
}

/// Compiles one trigger of a sensor with its delivery; `field` is its path (e.g.
/// `spec.triggers[0]`) and `template_json` the trigger as JSON.
pub fn compile_delivery(
    ctx: &mut CompileContext<'_>,
    sensor: &str,
    field: &str,
    trigger: &Trigger,
    template_json: Value,
    dependencies: &[String],
) -> Option<DeliveryPlan> {
    let tfield = format!("{field}.template");
    let policy = match (&trigger.policy, &trigger.template.policy) {
        (Some(_), Some(_)) => {
            ctx.error(
                None,
                format!("{tfield}.policy"),
                "policy is set both on the trigger and in its template; keep one",
            );
            None
        }
        (Some(p), None) => CompiledPolicy::compile(ctx, &format!("{field}.policy"), Some(p)),
        (None, p) => CompiledPolicy::compile(ctx, &format!("{tfield}.policy"), p.as_ref()),
    };
    let backoff = Backoff::compile(
        ctx,
        &format!("{field}.retryStrategy"),
        trigger.retry_strategy.as_ref(),
    );
    let rate_limit = match &trigger.rate_limit {
        Some(r) => Limiter::compile(ctx, &format!("{field}.rateLimit"), r).map(Some),
        None => Some(None),
    };
    let dlq = trigger.dlq_trigger.as_ref().and_then(|d| {
        let json = template_json
            .get("dlqTrigger")
            .cloned()
            .unwrap_or(Value::Null);
        compile_delivery(
            ctx,
            sensor,
            &format!("{field}.dlqTrigger"),
            d,
            json,
            dependencies,
        )
        .map(Arc::new)
    });
    let compiled = compile_trigger(ctx, sensor, field, trigger, &template_json, dependencies);
    Some(DeliveryPlan {
        trigger: compiled?,
        policy: policy?,
        backoff: backoff?,
        rate_limit: rate_limit?,
        dlq,
        telemetry: OnceLock::new(),
    })
}
