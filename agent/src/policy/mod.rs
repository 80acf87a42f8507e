//! Trigger policies: decide from a response whether an attempt succeeded, should be retried,
//! or failed for good.

use std::time::Duration;

use rhai::Dynamic;

use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{Policy, ScriptSource};
use crate::script::{CompiledScript, ScriptError, ScriptHost, ScriptKind};
pub use crate::trigger::Outcome;
use crate::trigger::Response;

/// How long a waiting policy may wait, and what running out of time means.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitLimit {
    /// The longest wait after an attempt.
    pub timeout: Duration,
    /// Whether running out of time fails the trigger (else it counts as success, as for
    /// Argo's `policy.k8s` without `errorOnBackoffTimeout`).
    pub fail_on_timeout: bool,
}

/// How long a policy script's "wait" may last when `policy.timeout` is not set.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(600);

/// A compiled policy: allowed statuses and/or a script; defaults per DESIGN section 5.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    allow: Option<Vec<u16>>,
    script: Option<CompiledScript>,
    /// `policy.k8s.labels`: the live object must carry them.
    labels: Option<std::collections::BTreeMap<String, String>>,
    wait: Option<WaitLimit>,
}

impl CompiledPolicy {
    /// Compiles `policy`; `field` is its path.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        policy: Option<&Policy>,
    ) -> Option<Self> {
        let Some(p) = policy else {
            return Some(Self::default());
        };
        let script = match ScriptSource::from_fields(&p.script, &p.script_file) {
            Some(s) => Some(ctx.script(&format!("{field}.script"), ScriptKind::Policy, &s)?),
            None => None,
        };
        let timeout = match &p.timeout {
            None => None,
            Some(t) => match crate::backoff::parse_duration(&t.value) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => {
                    ctx.error_with_hint(
                        Some(&t.referenced),
                        format!("{field}.timeout"),
                        format!("invalid timeout {:?}", t.value),
                        "a Go duration such as 30m or 1h",
                    );
                    return None;
                }
            },
        };
        let k8s_wait = match &p.k8s {
            Some(k) => {
                let backoff = crate::backoff::Backoff::compile(
                    ctx,
                    &format!("{field}.k8s.backoff"),
                    k.backoff.as_ref(),
                )?;
                Some(WaitLimit {
                    timeout: timeout.unwrap_or_else(|| backoff.total_delay()),
                    fail_on_timeout: k.error_on_backoff_timeout,
                })
            }
            None => None,
        };
        let wait = k8s_wait.or_else(|| {
            script.as_ref().map(|_| WaitLimit {
                timeout: timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT),
                fail_on_timeout: true,
            })
        });
        Some(Self {
            allow: p.status.as_ref().map(|s| s.allow.clone()),
            script,
            labels: p.k8s.as_ref().map(|k| k.labels.clone()),
            wait,
        })
    }

    /// Judges one response; a failing policy script is an error (the caller counts it and
    /// fails the execution: a broken policy must not pass as success).
    pub fn judge(
        &self,
        host: &ScriptHost,
        response: &Response,
        attempt: u32,
        max_attempts: u32,
        events: &FiredEvents,
    ) -> Result<Outcome, ScriptError> {
        if let Some(script) = &self.script {
            let vars = [
                ("response", response.to_dynamic()),
                ("attempt", Dynamic::from(i64::from(attempt))),
                ("max_attempts", Dynamic::from(i64::from(max_attempts))),
                ("events", events.view_for(script)),
            ];
            return host
                .eval(script, vars)
                // A bare "fail" or "retry" still says what the response was.
                .and_then(|v| outcome_from_script(&v, &format!("policy: {}", response.summary())));
        }
        let outcome = default_outcome(response, self.allow.as_deref());
        let object = response
            .reply
            .as_ref()
            .ok()
            .and_then(|r| r.shape().object());
        if let (Outcome::Success, Some(expected), Some(object)) = (&outcome, &self.labels, object) {
            if !labels_satisfied(expected, &labels_of(object)) {
                return Ok(Outcome::Wait);
            }
        }
        Ok(outcome)
    }

    /// How long an answer of "wait" may keep waiting; `None` when this policy never waits.
    pub fn wait_limit(&self) -> WaitLimit {
        self.wait.clone().unwrap_or(WaitLimit {
            timeout: DEFAULT_WAIT_TIMEOUT,
            fail_on_timeout: true,
        })
    }
}

/// The built-in judgement (DESIGN section 5): a retryable transport error retries, any
/// other fails; a reply is judged by its trigger type's shape (for http and awsLambda:
/// `allow` or 2xx succeeds, 5xx and 429 retry, anything else fails).
pub fn default_outcome(response: &Response, allow: Option<&[u16]>) -> Outcome {
    match &response.reply {
        Ok(reply) => reply.shape().default_outcome(allow),
        Err(e) if e.is_retryable() => Outcome::Retry {
            reason: e.to_string(),
            after: None,
        },
        Err(e) => Outcome::Fail {
            reason: e.to_string(),
        },
    }
}

/// An object's `metadata.labels`.
fn labels_of(object: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// Argo's Kubernetes resource-label policy: every expected label is on the live object with
/// the same value.
pub fn labels_satisfied(
    expected: &std::collections::BTreeMap<String, String>,
    live: &std::collections::BTreeMap<String, String>,
) -> bool {
    expected.iter().all(|(k, v)| live.get(k) == Some(v))
}

/// Reads a policy script's result: a string, a bool, or `#{outcome, reason, after}`
/// (also used by `triggerd eval --kind policy`). `default_reason` is the reason of a retry or
/// failure the script gave none for.
pub fn outcome_from_script(value: &Dynamic, default_reason: &str) -> Result<Outcome, ScriptError> {
    if let Some(b) = value.clone().try_cast::<bool>() {
        return Ok(if b {
            Outcome::Success
        } else {
            Outcome::Retry {
                reason: "policy returned false".into(),
                after: None,
            }
        });
    }
    if let Ok(s) = value.clone().into_immutable_string() {
        return named_outcome(&s, default_reason, None);
    }
    if let Some(map) = value.clone().try_cast::<rhai::Map>() {
        let get_str = |k: &str| {
            map.get(k)
                .and_then(|v| v.clone().into_immutable_string().ok())
                .map(|s| s.to_string())
        };
        let outcome = get_str("outcome").ok_or(ScriptError::Type {
            expected: "a map with an `outcome` field",
            got: "a map without one".into(),
        })?;
        let reason = get_str("reason").unwrap_or_else(|| default_reason.to_owned());
        let after = map.get("after").and_then(|v| {
            v.as_int()
                .ok()
                .map(|ms| Duration::from_millis(ms.max(0) as u64))
                .or_else(|| {
                    v.clone()
                        .into_immutable_string()
                        .ok()
                        .and_then(|s| crate::backoff::parse_duration(&s).ok())
                })
        });
        return named_outcome(&outcome, &reason, after);
    }
    Err(ScriptError::Type {
        expected: "\"success\", \"retry\", \"fail\", a bool or #{outcome, reason, after}",
        got: value.type_name().to_owned(),
    })
}

fn named_outcome(
    name: &str,
    reason: &str,
    after: Option<Duration>,
) -> Result<Outcome, ScriptError> {
    Ok(match name {
        "success" => Outcome::Success,
        "retry" => Outcome::Retry {
            reason: reason.to_owned(),
            after,
        },
        "fail" => Outcome::Fail {
            reason: reason.to_owned(),
        },
        "wait" => Outcome::Wait,
        other => {
            return Err(ScriptError::Type {
                expected: "\"success\", \"retry\", \"fail\" or \"wait\"",
                got: format!("{other:?}"),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Limits;
    use crate::trigger::{HttpReply, Reply, TriggerError};

    fn status(s: u16) -> Response {
        Response::replied(Reply::new(HttpReply::status(s)), Duration::ZERO)
    }

    #[test]
    fn defaults_follow_the_design() {
        assert_eq!(default_outcome(&status(201), None), Outcome::Success);
        assert!(matches!(
            default_outcome(&status(500), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            default_outcome(&status(429), None),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            default_outcome(&status(404), None),
            Outcome::Fail { .. }
        ));
        assert!(matches!(
            default_outcome(&status(201), Some(&[200])),
            Outcome::Fail { .. }
        ));
        let transport = Response::failed(TriggerError::retryable("refused"), Duration::ZERO);
        assert!(matches!(
            default_outcome(&transport, None),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn script_results_are_read() {
        let host = ScriptHost::new(Limits::default(), vec![]);
        let judge = |src: &str, r: &Response| {
            let script = host.compile(ScriptKind::Policy, src).unwrap();
            CompiledPolicy {
                script: Some(script),
                ..CompiledPolicy::default()
            }
            .judge(&host, r, 1, 3, &FiredEvents::new(Default::default()))
            .unwrap_or_else(|e| Outcome::Fail {
                reason: e.to_string(),
            })
        };
        assert_eq!(
            judge("response.status == 200", &status(200)),
            Outcome::Success
        );
        assert!(matches!(
            judge("false", &status(200)),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            judge("\"fail\"", &status(200)),
            Outcome::Fail { .. }
        ));
        assert_eq!(
            judge(
                "#{outcome: \"retry\", reason: \"busy\", after: 250}",
                &status(200)
            ),
            Outcome::Retry {
                reason: "busy".into(),
                after: Some(Duration::from_millis(250))
            }
        );
        assert!(matches!(judge("42", &status(200)), Outcome::Fail { .. }));
    }
}
