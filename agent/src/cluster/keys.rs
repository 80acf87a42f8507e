//! Keys of the namespace's Secrets and ConfigMaps read through the API, for credentials that
//! manifests name (`secretKeyRef`, `configMapKeyRef`, `basicAuth`, …) in cluster mode. Each
//! object is fetched at most once per [`FRESH_FOR`], so a changed Secret is used within that
//! time and busy triggers do not ask the API on every attempt. Only `get` on the named
//! objects of the agent's own namespace is needed (no list or watch of Secrets).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use tokio::time::Instant;

use super::Cluster;
use crate::secret::{ObjectKeys, ObjectKind};

/// How long a fetched object is used before it is fetched again.
pub const FRESH_FOR: Duration = Duration::from_secs(10);

/// The namespace's Secrets and ConfigMaps as [`ObjectKeys`].
#[derive(Debug)]
pub struct ObjectKeysApi {
    cluster: Cluster,
    #[allow(clippy::disallowed_types)] // never held across an await
    cache: std::sync::Mutex<HashMap<(ObjectKind, String), Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    /// `None`: the object does not exist.
    data: Option<BTreeMap<String, String>>,
}

impl ObjectKeysApi {
    /// Keys read with `cluster`'s client in its namespace.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            cache: Default::default(),
        }
    }

    fn cached(&self, kind: ObjectKind, name: &str) -> Option<Cached> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(&(kind, name.to_owned()))
            .filter(|c| c.at.elapsed() < FRESH_FOR)
            .cloned()
    }

    async fn fetch(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, kube::Error> {
        let client = self.cluster.client().clone();
        let ns = self.cluster.namespace();
        Ok(match kind {
            ObjectKind::Secret => Api::<Secret>::namespaced(client, ns)
                .get_opt(name)
                .await?
                .map(secret_data),
            ObjectKind::ConfigMap => Api::<ConfigMap>::namespaced(client, ns)
                .get_opt(name)
                .await?
                .map(|cm| cm.data.unwrap_or_default()),
        })
    }
}

/// A Secret's keys as text: `data` (base64 on the wire, decoded by k8s-openapi) and
/// `stringData`; values that are not UTF-8 are left out.
fn secret_data(secret: Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| String::from_utf8(v.0).ok().map(|v| (k, v)))
        .collect();
    out.extend(secret.string_data.unwrap_or_default());
    out
}

impl ObjectKeys for ObjectKeysApi {
    fn read<'a>(
        &'a self,
        kind: ObjectKind,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let data = match self.cached(kind, name) {
                Some(c) => c.data,
                None => {
                    let data = self.fetch(kind, name).await.map_err(|e| e.to_string())?;
                    if let Ok(mut cache) = self.cache.lock() {
                        cache.insert(
                            (kind, name.to_owned()),
                            Cached {
                                at: Instant::now(),
                                data: data.clone(),
                            },
                        );
                    }
                    data
                }
            };
            Ok(data.and_then(|d| d.get(key).cloned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn secret_keys_are_text_from_data_and_string_data() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("token".to_owned(), ByteString(b"s3cret".to_vec())),
                ("binary".to_owned(), ByteString(vec![0xff, 0xfe])),
            ])),
            string_data: Some(BTreeMap::from([("user".to_owned(), "app".to_owned())])),
            ..Secret::default()
        };
        let data = secret_data(secret);
        assert_eq!(data.get("token").map(String::as_str), Some("s3cret"));
        assert_eq!(data.get("user").map(String::as_str), Some("app"));
        assert!(!data.contains_key("binary"));
    }
}
