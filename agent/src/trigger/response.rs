//! What a trigger attempt returns, as policies see it.
//!
//! Every attempt ends in a [`Response`]: a [`Reply`] from the target, or a [`TriggerError`]
//! when nothing came back. Each trigger kind has its own reply shape, a struct in the kind's
//! own file implementing [`ReplyShape`]; a [`Reply`] holds any of them, so a new kind adds
//! no variant here.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rhai::{Dynamic, Map};
use serde_json::Value;

/// The verdict on one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Try again (while attempts remain), optionally after a given delay.
    Retry {
        /// Why.
        reason: String,
        /// Delay requested by the policy instead of the backoff.
        after: Option<Duration>,
    },
    /// Give up now and dead-letter.
    Fail {
        /// Why.
        reason: String,
    },
    /// Kubernetes triggers: judge the live object again when it changes (bounded by the
    /// policy's timeout).
    Wait,
}

/// A failure to get any reply (connection refused, timeout, bad URL, missing credentials).
///
/// Its text (what logs, policies and dead letters say) already includes the cause's own
/// words; the typed cause is kept beside it as the error's [`source`](std::error::Error::source)
/// so code can ask it (a timeout, a refused connection, an API status) instead of parsing text.
#[derive(Debug, Clone)]
pub struct TriggerError {
    message: String,
    retryable: bool,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl TriggerError {
    /// An error that may go away when the attempt is repeated (a timeout, a reset).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(message, true)
    }

    /// An error that repeating the same attempt cannot fix (a bad request, a bug).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(message, false)
    }

    /// An error whose retryability the caller decided.
    pub fn new(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            message: message.into(),
            retryable,
            cause: None,
        }
    }

    /// The same error with the typed error that caused it kept as its source.
    #[must_use]
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The typed error behind this one, when a client or the API gave one.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl std::fmt::Display for TriggerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TriggerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// Responses to a policy that waits: the object each time it changes.
pub type ObjectChanges = Pin<Box<dyn Stream<Item = Response> + Send>>;

/// What one reply shape tells policies, the default policy and logs.
pub trait ReplyShape: Debug + Send + Sync {
    /// `response` for policy scripts (`duration` is how long the attempt took).
    fn to_dynamic(&self, duration: Duration) -> Dynamic;
    /// The verdict without a policy script; `allow` is `policy.status.allow`.
    fn default_outcome(&self, allow: Option<&[u16]>) -> Outcome;
    /// A short description for logs and dead letters.
    fn summary(&self) -> String;
    /// The live object the attempt acted on (Kubernetes triggers), which `policy.k8s.labels`
    /// checks; `None` for kinds that act on no object.
    fn object(&self) -> Option<&Value> {
        None
    }
    /// The object's later states, for a policy that answered "wait"; `None` when the reply
    /// names no object that can be watched.
    fn changes(&self) -> Option<ObjectChanges> {
        None
    }
}

/// A reply from a target, in its kind's shape.
#[derive(Debug, Clone)]
pub struct Reply(Arc<dyn ReplyShape>);

impl Reply {
    /// Wraps one kind's reply.
    pub fn new(shape: impl ReplyShape + 'static) -> Self {
        Self(Arc::new(shape))
    }

    /// The shape behind this reply.
    pub fn shape(&self) -> &dyn ReplyShape {
        self.0.as_ref()
    }
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct Response {
    /// The reply, or why there was none.
    pub reply: Result<Reply, TriggerError>,
    /// How long the attempt took.
    pub duration: Duration,
}

impl Response {
    /// A reply that took `duration`.
    pub fn replied(reply: Reply, duration: Duration) -> Self {
        Self {
            reply: Ok(reply),
            duration,
        }
    }

    /// A transport failure.
    pub fn failed(error: TriggerError, duration: Duration) -> Self {
        Self {
            reply: Err(error),
            duration,
        }
    }

    /// `response` for policy scripts: the reply's shape, or `#{error, duration_ms}`.
    pub fn to_dynamic(&self) -> Dynamic {
        match &self.reply {
            Ok(r) => r.shape().to_dynamic(self.duration),
            Err(e) => {
                let mut map = Map::new();
                map.insert("error".into(), e.message.clone().into());
                map.insert("duration_ms".into(), duration_ms(self.duration).into());
                map.into()
            }
        }
    }

    /// A short description for logs and dead letters.
    pub fn summary(&self) -> String {
        match &self.reply {
            Ok(r) => r.shape().summary(),
            Err(e) => e.message.clone(),
        }
    }
}

/// Milliseconds as a Rhai integer.
pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The default judgement of a status code, shared by shapes that have one: `allow` (or
/// 2xx) succeeds; 5xx and 429 retry (after `retry_after`, when the target said so); any
/// other status fails.
pub(super) fn status_outcome(
    status: u16,
    allow: Option<&[u16]>,
    detail: &str,
    retry_after: Option<Duration>,
) -> Outcome {
    let allowed = match allow {
        Some(list) => list.contains(&status),
        None => (200..300).contains(&status),
    };
    if allowed {
        return Outcome::Success;
    }
    let mut reason = match allow {
        Some(_) => format!(
            "policy application resulted in failure. http response status {status} is not allowed"
        ),
        None => format!("status {status}"),
    };
    if !detail.is_empty() {
        reason.push_str(": ");
        reason.push_str(detail);
    }
    if status >= 500 || status == 429 {
        Outcome::Retry {
            reason,
            after: retry_after,
        }
    } else {
        Outcome::Fail { reason }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error as IoError, ErrorKind};

    use super::*;

    #[test]
    fn the_typed_cause_is_kept_beside_unchanged_text() {
        let refused = IoError::new(ErrorKind::ConnectionRefused, "connection refused");
        let error = TriggerError::retryable("connect: connection refused").caused_by(refused);
        let response = Response::failed(error, Duration::ZERO);
        let kept = response.reply.clone().expect_err("a failed attempt");
        assert_eq!(kept.to_string(), "connect: connection refused");
        assert!(kept.is_retryable());
        let cause = std::error::Error::source(&kept)
            .and_then(|cause| cause.downcast_ref::<IoError>())
            .map(IoError::kind);
        assert_eq!(cause, Some(ErrorKind::ConnectionRefused));
        assert_eq!(response.summary(), "connect: connection refused");
    }

    #[test]
    fn an_error_without_a_cause_has_no_source() {
        let error = TriggerError::permanent("bad request");
        assert!(std::error::Error::source(&error).is_none());
        assert!(error.cause().is_none());
        assert!(!error.is_retryable());
    }
}
