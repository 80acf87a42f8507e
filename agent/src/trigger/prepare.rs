//! Readying trigger targets when a plan starts: what they may need (secrets, the cluster)
//! and how a kind says it could not get ready.

use std::error::Error;

/// What readying a trigger may need.
#[derive(Debug, Clone, Copy)]
pub struct PrepareContext<'a> {
    /// Where credentials read at each attempt come from.
    pub secrets: &'a crate::secret::SecretStore,
    /// The Kubernetes API, when the plan has Kubernetes triggers.
    pub cluster: Option<&'a crate::cluster::Cluster>,
}

/// Why a trigger kind could not be readied: the kind's own error, cause chain kept.
pub type PrepareFailure = Box<dyn Error + Send + Sync>;

/// A trigger could not be readied when the plan started (e.g. a missing secret).
#[derive(Debug, thiserror::Error)]
#[error("sensor {sensor}, trigger {trigger}")]
pub struct PrepareError {
    /// Sensor name.
    pub sensor: String,
    /// Trigger name.
    pub trigger: String,
    /// Why.
    pub source: PrepareFailure,
}

/// A kind's setup error under the kind's name (`nats …`), with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {source}")]
pub(super) struct KindError<E: Error + 'static> {
    kind: &'static str,
    source: E,
}

impl<E: Error + Send + Sync + 'static> KindError<E> {
    /// `source` as a prepare failure of `kind`.
    pub(super) fn boxed(kind: &'static str, source: E) -> PrepareFailure {
        Box::new(Self { kind, source })
    }
}
