//! The Kubernetes API as the agent reaches it: one client per process, the agent's own
//! namespace, the namespace guard, and kind resolution through discovery.
//!
//! Built only when a plan needs it (a `k8s` or `argoWorkflow` trigger, a `resource` source),
//! so file mode on a laptop without a cluster never looks for credentials.

pub mod crd;
mod discovery;
mod guard;
mod keys;
pub mod leader;

use std::path::PathBuf;
use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

pub use discovery::{ResolveError, ResolvedKind};
pub use guard::{NamespaceGuard, NamespaceRefused};
pub use keys::ObjectKeysApi;

use crate::telemetry::Metrics;

/// How to reach the API server, from `triggerd run`'s flags.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// A kubeconfig file; without one, `KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account, in that order (kube's inference).
    pub kubeconfig: Option<PathBuf>,
    /// The agent's namespace; default: the kubeconfig context's, or the service account's.
    pub namespace: Option<String>,
    /// Other namespaces Kubernetes triggers may act in (`*`: any).
    pub allow_namespaces: Vec<String>,
}

/// Why the API server cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig (or in-cluster environment) is missing or unusable.
    #[error("Kubernetes credentials: {0}")]
    Config(String),
    /// The client could not be built from a valid configuration.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// The connection to the API server shared by every Kubernetes trigger and source.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    guard: Arc<NamespaceGuard>,
    kinds: Arc<discovery::KindCache>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.guard.own())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects with `options`' credentials (nothing is requested until first use).
    pub async fn connect(
        options: &ClusterOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ClusterError> {
        let config = match &options.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    ClusterError::Config(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| {
                        ClusterError::Config(format!("kubeconfig {}: {e}", path.display()))
                    })?
            }
            None => kube::Config::infer().await.map_err(|e| {
                ClusterError::Config(format!(
                    "no kubeconfig and not in a cluster ({e}); pass --kubeconfig or set KUBECONFIG"
                ))
            })?,
        };
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)?;
        Ok(Self::from_client(
            client,
            namespace,
            &options.allow_namespaces,
            metrics,
        ))
    }

    /// A cluster over an existing client (tests).
    pub fn from_client(
        client: Client,
        namespace: String,
        allow: &[String],
        metrics: Arc<Metrics>,
    ) -> Self {
        tracing::info!(namespace = %namespace, allowed = ?allow, "Kubernetes API client ready");
        Self {
            client,
            guard: Arc::new(NamespaceGuard::new(namespace, allow.to_vec(), metrics)),
            kinds: Arc::new(discovery::KindCache::default()),
        }
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The agent's own namespace, where objects without one are put.
    pub fn namespace(&self) -> &str {
        self.guard.own()
    }

    /// The namespace guard.
    pub fn guard(&self) -> &NamespaceGuard {
        &self.guard
    }

    /// The resource and scope of `apiVersion`/`kind`, from discovery (cached).
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<ResolvedKind, ResolveError> {
        self.kinds.resolve(&self.client, api_version, kind).await
    }

    /// The kind and scope of a resource named by group, version and plural (`group` `""`
    /// is the core group), from discovery.
    pub async fn resolve_resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Result<ResolvedKind, ResolveError> {
        discovery::resolve_resource(&self.client, group, version, plural).await
    }
}
