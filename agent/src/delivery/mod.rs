//! Delivery: runs a trigger to a final outcome — attempts, policy verdicts, backoff, and the
//! dead letter after the last failed attempt — and reports it in logs and metrics.
//!
//! Attempts go through an [`Executor`]: the live one calls the trigger's target; the stub one
//! (`triggerd test`) answers from canned responses and records what would have been sent,
//! so offline tests run this very loop — policy, retries, backoff and dead letter included.

mod plan;
mod rate_limit;
pub mod stub;

use std::sync::Arc;

pub use plan::{compile_delivery, DeliveryPlan};
pub use rate_limit::Limiter;
pub use stub::Stubs;

use crate::event::FiredEvents;
use crate::script::ScriptHost;
use crate::telemetry::{Metrics, TriggerScript};
use crate::trigger::Outcome;
use futures::StreamExt;

use crate::trigger::{
    CompiledTrigger, DeadLetter, Invocation, ObjectChanges, Response, TriggerError,
};

/// What every execution needs.
#[derive(Debug, Clone)]
pub struct DeliveryContext {
    /// The shared script engine.
    pub host: Arc<ScriptHost>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Who carries out attempts: the real targets, or stubs in offline tests.
    pub executor: Executor,
}

/// How attempts are carried out.
#[derive(Debug, Clone, Default)]
pub enum Executor {
    /// Call the trigger's target (HTTP, log, ...), honouring its rate limit.
    #[default]
    Live,
    /// Answer from canned responses and record every attempt; nothing leaves the process
    /// and rate limits are not applied (they only space attempts in time).
    Stub(Arc<Stubs>),
}

/// One delivery as its executor sees it: live, or a stub record to fill in.
enum Run {
    Live,
    Stub(stub::Recording),
}

impl Executor {
    fn start(&self, trigger: &CompiledTrigger, events: &FiredEvents) -> Run {
        match self {
            Executor::Live => Run::Live,
            Executor::Stub(stubs) => Run::Stub(stubs.start(trigger, events)),
        }
    }
}

impl Run {
    async fn execute(
        &self,
        trigger: &CompiledTrigger,
        invocation: &Invocation,
        payload: &serde_json::Value,
        attempt: u32,
        dead_letter: bool,
    ) -> Response {
        match self {
            Run::Live => invocation.attempt(payload).await,
            Run::Stub(r) => r.execute(trigger, invocation, payload, attempt, dead_letter),
        }
    }

    /// Waits for the trigger's rate limit (live runs only).
    async fn pace(&self, plan: &DeliveryPlan) {
        if let (Run::Live, Some(limiter)) = (self, &plan.rate_limit) {
            limiter.until_ready().await;
        }
    }

    /// The object's later states for a policy that answered "wait": a watch (live), or the
    /// stub's `objects`. `None` when the trigger has no object to watch.
    fn changes(
        &self,
        trigger: &CompiledTrigger,
        response: &Response,
        attempt: u32,
    ) -> Option<ObjectChanges> {
        let reply = response.reply.as_ref().ok()?;
        match self {
            Run::Live => reply.shape().changes(),
            // Replies about an object (Kubernetes) change as the stub's `objects` say.
            Run::Stub(r) => reply.shape().object().map(|_| r.changes(trigger, attempt)),
        }
    }

    fn judged(&self, outcome: &Outcome, dead_letter: bool) {
        if let Run::Stub(r) = self {
            r.judged(outcome, dead_letter);
        }
    }

    fn build_failed(&self, trigger: &CompiledTrigger, dead_letter: bool) {
        if let Run::Stub(r) = self {
            r.build_failed(trigger, dead_letter);
        }
    }

    fn finish(&self, result: &Result<(), Failure>, dead_letter: bool) {
        if let Run::Stub(r) = self {
            r.finish(
                result.as_ref().err().map(|f| f.reason.as_str()),
                dead_letter,
            );
        }
    }
}

/// The final result of one execution.
#[derive(Debug, Clone)]
pub enum Final {
    /// The trigger succeeded.
    Succeeded,
    /// It failed and was handed to the dead letter.
    DeadLettered(Failure),
}

/// Why an execution failed for good.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What logs, the dead letter and test reports say.
    pub reason: String,
    /// Attempts made (0 when the request could not be built).
    pub attempts: u32,
    /// The last attempt's error when no reply came back, with its typed cause and whether
    /// trying again could have helped.
    pub error: Option<TriggerError>,
}

impl Failure {
    /// A failure that no attempt's error explains (a verdict, a build error).
    fn new(reason: impl Into<String>, attempts: u32) -> Self {
        Self {
            reason: reason.into(),
            attempts,
            error: None,
        }
    }

    /// The failure after `response`, keeping its error when it had no reply.
    fn after(reason: impl Into<String>, attempts: u32, response: &Response) -> Self {
        Self {
            reason: reason.into(),
            attempts,
            error: response.reply.as_ref().err().cloned(),
        }
    }
}

/// Executes `trigger` for `events` until it succeeds or fails for good; a failure goes to the
/// trigger's `dlqTrigger` (or is recorded as dead-lettered in the log and metrics).
pub async fn deliver(ctx: &DeliveryContext, plan: &DeliveryPlan, events: &FiredEvents) -> Final {
    let trigger = &plan.trigger;
    let run = ctx.executor.start(trigger, events);
    let final_outcome = attempt_all(ctx, &run, plan, events, None).await;
    run.finish(&final_outcome, false);
    let telemetry = plan.telemetry(&ctx.metrics);
    if let Some(first) = events.by_dependency.values().map(|e| e.time).min() {
        telemetry.execution_ended((chrono::Utc::now() - first).to_std().unwrap_or_default());
    }
    match final_outcome {
        Ok(()) => {
            telemetry.execution_succeeded();
            Final::Succeeded
        }
        Err(failure) => {
            let ids = events.ids();
            telemetry.execution_dead_lettered(&ids, failure.attempts, &failure.reason);
            if let Some(dlq) = &plan.dlq {
                let dead = DeadLetter {
                    trigger: trigger.name.clone(),
                    error: failure.reason.clone(),
                    attempts: failure.attempts,
                };
                let dlq_outcome = Box::pin(attempt_all(ctx, &run, dlq, events, Some(&dead))).await;
                run.finish(&dlq_outcome, true);
                if let Err(dlq_failure) = dlq_outcome {
                    telemetry.dead_letter_failed(&dlq.trigger.name, &ids, &dlq_failure.reason);
                }
            }
            Final::DeadLettered(failure)
        }
    }
}

/// Runs the attempts of one trigger; `Err` when it failed for good.
async fn attempt_all(
    ctx: &DeliveryContext,
    run: &Run,
    plan: &DeliveryPlan,
    events: &FiredEvents,
    dead_letter: Option<&DeadLetter>,
) -> Result<(), Failure> {
    let trigger = &plan.trigger;
    let telemetry = plan.telemetry(&ctx.metrics);
    let built = trigger.invocation(&ctx.host, events).and_then(|inv| {
        trigger
            .build_payload(&ctx.host, events, dead_letter)
            .map(|p| (inv, p))
    });
    let (invocation, payload) = match built {
        Ok(b) => b,
        Err(e) => {
            if e.is_script_error() {
                telemetry.script_failed(TriggerScript::Payload);
            }
            run.build_failed(trigger, dead_letter.is_some());
            return Err(Failure::new(e.to_string(), 0));
        }
    };
    let max = plan.backoff.steps.max(1);
    let mut attempt = 1;
    loop {
        run.pace(plan).await;
        telemetry.attempt(attempt);
        let response = run
            .execute(
                trigger,
                &invocation,
                &payload,
                attempt,
                dead_letter.is_some(),
            )
            .await;
        telemetry.attempt_took(response.duration);
        let judge = |response: &Response| {
            plan.policy
                .judge(&ctx.host, response, attempt, max, events)
                .unwrap_or_else(|e| {
                    telemetry.script_failed(TriggerScript::Policy);
                    Outcome::Fail {
                        reason: format!("policy script: {e}"),
                    }
                })
        };
        let mut outcome = judge(&response);
        let mut response = response;
        if outcome == Outcome::Wait {
            (outcome, response) =
                wait_for_verdict(run, plan, response, attempt, events, &judge).await;
        }
        run.judged(&outcome, dead_letter.is_some());
        match outcome {
            Outcome::Success => {
                telemetry.attempt_succeeded(&events.ids(), attempt, &response.summary());
                return Ok(());
            }
            Outcome::Retry { reason, after } if attempt < max => {
                let delay = after.unwrap_or_else(|| plan.backoff.delay(attempt + 1));
                telemetry.attempt_retried(&events.ids(), attempt, max, &reason, delay);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Outcome::Retry { reason, .. } => {
                let reason = format!("{reason} (after {attempt} attempts)");
                return Err(Failure::after(reason, attempt, &response));
            }
            Outcome::Fail { reason } => return Err(Failure::after(reason, attempt, &response)),
            // wait_for_verdict answers every "wait" with another verdict.
            Outcome::Wait => return Err(Failure::new("the policy kept waiting", attempt)),
        }
    }
}

/// A policy answered "wait": judge the object again each time it changes until the policy
/// gives another answer or its time runs out. Returns the verdict and the response it was
/// given on (the last state seen).
async fn wait_for_verdict(
    run: &Run,
    plan: &DeliveryPlan,
    response: Response,
    attempt: u32,
    events: &FiredEvents,
    judge: &impl Fn(&Response) -> Outcome,
) -> (Outcome, Response) {
    let trigger = &plan.trigger;
    let Some(mut changes) = run.changes(trigger, &response, attempt) else {
        let reason = "the policy answered \"wait\", which only Kubernetes triggers with a live object can do".to_owned();
        return (Outcome::Fail { reason }, response);
    };
    let limit = plan.policy.wait_limit();
    tracing::info!(
        sensor = %trigger.sensor,
        trigger = %trigger.name,
        events = %events.ids(),
        attempt,
        response = %response.summary(),
        timeout_ms = limit.timeout.as_millis() as u64,
        "policy waits for the object to change"
    );
    let deadline = tokio::time::Instant::now() + limit.timeout;
    let mut last = response;
    loop {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(next)) => {
                let outcome = judge(&next);
                last = next;
                if outcome != Outcome::Wait {
                    return (outcome, last);
                }
                tracing::debug!(trigger = %trigger.name, response = %last.summary(), "policy still waiting");
            }
            Ok(None) => {
                let reason = format!(
                    "the policy was still waiting when the object stopped changing: {}",
                    last.summary()
                );
                return (Outcome::Fail { reason }, last);
            }
            Err(_) if limit.fail_on_timeout => {
                let reason = format!(
                    "the policy was still waiting after {:?}: {}",
                    limit.timeout,
                    last.summary()
                );
                return (Outcome::Fail { reason }, last);
            }
            Err(_) => {
                tracing::warn!(
                    sensor = %trigger.sensor,
                    trigger = %trigger.name,
                    timeout_ms = limit.timeout.as_millis() as u64,
                    "policy labels not seen before the backoff ran out; counted as success (errorOnBackoffTimeout is false)"
                );
                return (Outcome::Success, last);
            }
        }
    }
}
