//! Kind resolution: `apiVersion` + `kind` → the resource's plural, scope and subresources,
//! asked of the API server's discovery endpoint (never guessed from the kind's name), once
//! per kind and process.

use std::collections::HashMap;
// Held only for a map lookup or insert, never across an `.await`.
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;

use kube::core::{GroupVersion, GroupVersionKind};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::Client;

/// A kind the API server serves.
#[derive(Debug, Clone)]
pub struct ResolvedKind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
    /// Whether it has a `status` subresource (status is then written separately).
    pub status_subresource: bool,
}

/// Why a kind could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The API server does not serve the kind (a missing CRD, a typo): permanent.
    #[error("the API server does not serve kind {kind} in {api_version}: {detail}")]
    Unknown {
        /// `apiVersion` asked for.
        api_version: String,
        /// `kind` asked for.
        kind: String,
        /// The server's answer.
        detail: String,
    },
    /// The API server does not serve the resource (plural) in the group/version: permanent.
    #[error("the API server does not serve resource {resource:?} in {api_version}: {detail}")]
    UnknownResource {
        /// Group/version asked for (`v1` for the core group).
        api_version: String,
        /// The plural asked for.
        resource: String,
        /// The server's answer, or the resources it does serve.
        detail: String,
    },
    /// Discovery itself failed (connection, 5xx): may work on the next attempt.
    #[error("discovery of {kind} in {api_version} failed: {source}")]
    Unavailable {
        /// `apiVersion` asked for.
        api_version: String,
        /// `kind` asked for.
        kind: String,
        /// The client error.
        source: kube::Error,
    },
}

impl ResolveError {
    /// Whether repeating the attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ResolveError::Unavailable { .. })
    }
}

/// Kinds resolved so far. The lock is never held across an `.await`.
#[derive(Default)]
pub(super) struct KindCache {
    #[allow(clippy::disallowed_types)]
    kinds: Mutex<HashMap<(String, String), ResolvedKind>>,
}

impl KindCache {
    pub(super) async fn resolve(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<ResolvedKind, ResolveError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| classify(api_version, kind, e))?;
        let resolved = ResolvedKind {
            namespaced: matches!(caps.scope, Scope::Namespaced),
            status_subresource: has_status(&caps),
            resource,
        };
        self.lock().insert(key, resolved.clone());
        Ok(resolved)
    }

    #[allow(clippy::disallowed_types)]
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ResolvedKind>> {
        self.kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Resolves a resource by group, version and plural (how the resource source names it),
/// from the group/version's resource list (`/api/v1` for the core group `""`).
pub(super) async fn resolve_resource(
    client: &Client,
    group: &str,
    version: &str,
    plural: &str,
) -> Result<ResolvedKind, ResolveError> {
    let gv = GroupVersion::gv(group, version);
    let api_version = gv.api_version();
    let unknown = |detail: String| ResolveError::UnknownResource {
        api_version: api_version.clone(),
        resource: plural.to_owned(),
        detail,
    };
    let found = match kube::discovery::pinned_group(client, &gv).await {
        Ok(g) => g,
        Err(kube::Error::Api(status)) if status.code == 404 => return Err(unknown(status.message)),
        Err(kube::Error::Discovery(d)) => return Err(unknown(d.to_string())),
        Err(source) => {
            return Err(ResolveError::Unavailable {
                api_version: api_version.clone(),
                kind: plural.to_owned(),
                source,
            })
        }
    };
    let resources = found.versioned_resources(version);
    match resources.iter().find(|(r, _)| r.plural == plural) {
        Some((resource, caps)) => Ok(ResolvedKind {
            namespaced: matches!(caps.scope, Scope::Namespaced),
            status_subresource: has_status(caps),
            resource: resource.clone(),
        }),
        None => {
            let mut served: Vec<&str> = resources.iter().map(|(r, _)| r.plural.as_str()).collect();
            served.sort_unstable();
            let more = served.len().saturating_sub(12);
            served.truncate(12);
            let mut detail = format!("it serves {}", served.join(", "));
            if more > 0 {
                detail.push_str(&format!(" and {more} more"));
            }
            if served.is_empty() {
                detail = "it serves no resources there".to_owned();
            }
            Err(unknown(detail))
        }
    }
}

fn has_status(caps: &ApiCapabilities) -> bool {
    caps.subresources
        .iter()
        .any(|(sub, _)| sub.plural == "status" || sub.plural.ends_with("/status"))
}

/// A group/version the server does not have answers 404; a kind missing from a served
/// group/version is reported by kube as a missing resource. Both are permanent.
fn classify(api_version: &str, kind: &str, e: kube::Error) -> ResolveError {
    let unknown = |detail: String| ResolveError::Unknown {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        detail,
    };
    match e {
        kube::Error::Api(status) if status.code == 404 => unknown(status.message),
        kube::Error::Discovery(d) => unknown(d.to_string()),
        source => ResolveError::Unavailable {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            source,
        },
    }
}
