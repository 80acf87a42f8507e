//! The namespace guard: Kubernetes triggers act in the agent's own namespace, and in another
//! one only when it is on the allow-list given at start-up (DESIGN section 7).

use std::sync::Arc;

use crate::telemetry::{Metrics, NamespaceRefusalLabels};

/// A trigger aimed at a namespace it may not touch.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "namespace {namespace:?} is outside the agent's namespace {own:?} and not allowed \
     (start the agent with --allow-namespace {namespace} to permit it)"
)]
pub struct NamespaceRefused {
    /// The namespace asked for.
    pub namespace: String,
    /// The agent's namespace.
    pub own: String,
}

/// Decides which namespaces Kubernetes triggers may act in, and counts refusals.
pub struct NamespaceGuard {
    own: String,
    allow: Vec<String>,
    metrics: Arc<Metrics>,
}

impl NamespaceGuard {
    /// A guard for an agent in `own` that may also act in `allow` (`*`: anywhere).
    pub fn new(own: String, allow: Vec<String>, metrics: Arc<Metrics>) -> Self {
        Self {
            own,
            allow,
            metrics,
        }
    }

    /// The agent's namespace.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// Whether `namespace` may be acted in.
    pub fn allows(&self, namespace: &str) -> bool {
        namespace == self.own || self.allow.iter().any(|a| a == "*" || a == namespace)
    }

    /// `Ok` when `sensor`'s `trigger` may act in `namespace`; a refusal is counted in
    /// `triggerd_namespace_refusals_total`.
    pub fn check(
        &self,
        sensor: &str,
        trigger: &str,
        namespace: &str,
    ) -> Result<(), NamespaceRefused> {
        if self.allows(namespace) {
            return Ok(());
        }
        self.metrics
            .namespace_refusals
            .get_or_create(&NamespaceRefusalLabels {
                sensor: sensor.to_owned(),
                trigger: trigger.to_owned(),
                namespace: namespace.to_owned(),
            })
            .inc();
        Err(NamespaceRefused {
            namespace: namespace.to_owned(),
            own: self.own.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_listed_namespaces_pass_others_are_refused_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let guard = NamespaceGuard::new("team-a".into(), vec!["shared".into()], metrics.clone());
        assert!(guard.check("s", "t", "team-a").is_ok());
        assert!(guard.check("s", "t", "shared").is_ok());
        let refused = guard.check("s", "t", "kube-system").unwrap_err();
        assert!(refused
            .to_string()
            .contains("--allow-namespace kube-system"));
        assert!(metrics
            .encode()
            .contains("triggerd_namespace_refusals_total{sensor=\"s\",trigger=\"t\",namespace=\"kube-system\"} 1"));
        let open = NamespaceGuard::new("team-a".into(), vec!["*".into()], metrics);
        assert!(open.allows("anything"));
    }
}
