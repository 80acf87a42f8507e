//! Secret values (webhook tokens, client credentials, TLS files) for sources, triggers and
//! their clients, resolved from mounted secret files or the environment, or, in cluster
//! mode, from the namespace's Kubernetes Secrets ([`SecretStore`]).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use thiserror::Error;

use crate::manifest::SecretRef;

/// Which kind of object a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A Secret (`secretKeyRef`, most credential fields).
    Secret,
    /// A ConfigMap (`configMapKeyRef`).
    ConfigMap,
}

impl ObjectKind {
    /// The Kubernetes kind.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Secret => "Secret",
            ObjectKind::ConfigMap => "ConfigMap",
        }
    }
}

/// Reads keys of the namespace's Secrets and ConfigMaps (cluster mode; implemented over the
/// Kubernetes API in `cluster`).
pub trait ObjectKeys: Send + Sync + Debug {
    /// The value of `key` in object `name`; `Ok(None)` when the object or key is missing.
    fn read<'a>(
        &'a self,
        kind: ObjectKind,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// Where secret values come from while the agent runs. Values are looked up at each use, so
/// a changed secret is picked up without a restart: file mode reads the file (or the
/// environment) again; cluster mode reads the Secret through a short-lived cache.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    dir: Option<PathBuf>,
    cluster: Option<Arc<dyn ObjectKeys>>,
}

impl SecretStore {
    /// File mode: `env`, `file`, `TRIGGERD_SECRET_<NAME>_<KEY>` and `<dir>/<name>/<key>`.
    pub fn files(dir: Option<PathBuf>) -> Self {
        Self { dir, cluster: None }
    }

    /// Cluster mode: `{name, key}` of the namespace's Secrets and ConfigMaps only. `env` and
    /// `file` are refused, so a manifest cannot send the agent's own environment or files
    /// (its service account token) anywhere.
    pub fn cluster(keys: Arc<dyn ObjectKeys>) -> Self {
        Self {
            dir: None,
            cluster: Some(keys),
        }
    }

    /// The value `r` names in a `kind` object (a ConfigMap in file mode is looked up as a
    /// secret is).
    pub async fn resolve(&self, kind: ObjectKind, r: &SecretRef) -> Result<String, SecretError> {
        let Some(cluster) = &self.cluster else {
            return resolve_secret(r, self.dir.as_deref());
        };
        if r.env.is_some() || r.file.is_some() {
            return Err(SecretError::NotInCluster);
        }
        let (Some(name), Some(key)) = (&r.name, &r.key) else {
            return Err(SecretError::Incomplete);
        };
        match cluster.read(kind, name, key).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(SecretError::NotFound(
                format!("{name}/{key}"),
                format!("{} {name} in the namespace", kind.name()),
            )),
            Err(e) => Err(SecretError::Unreadable(format!(
                "{} {name}: {e}",
                kind.name()
            ))),
        }
    }
}

/// A secret a manifest field names could not be read; says which field (`auth.token`).
#[derive(Debug, Error)]
#[error("{field}: {source}")]
pub struct FieldSecretError {
    /// The field, as the manifest spells it.
    pub field: &'static str,
    /// Why it could not be read.
    #[source]
    pub source: SecretError,
}

impl FieldSecretError {
    /// Whether a later read may succeed.
    pub fn is_retryable(&self) -> bool {
        self.source.is_retryable()
    }
}

impl SecretStore {
    /// The Secret value `r` at `field` names.
    pub async fn secret_of(
        &self,
        field: &'static str,
        r: &SecretRef,
    ) -> Result<String, FieldSecretError> {
        self.resolve(ObjectKind::Secret, r)
            .await
            .map_err(|source| FieldSecretError { field, source })
    }
}

/// How often a [`WatchedSecret`] is read again (as the cluster cache's lifetime, so a rotated
/// Secret is in use within twice this).
pub const SECRET_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// A secret a long-lived server holds (a webhook's token or signing key, its TLS certificate):
/// read once when it starts, which fails when the secret cannot be read, then again every
/// [`SECRET_REFRESH`] until shutdown. A failed re-read keeps the value in use and says so in
/// the log; a changed value replaces it, and [`WatchedSecret::changes`] lets a holder rebuild
/// what it derives from it.
#[derive(Debug, Clone)]
pub struct WatchedSecret {
    value: tokio::sync::watch::Receiver<Arc<str>>,
}

impl WatchedSecret {
    /// Reads `r` now and keeps it current until `shutdown`; `what` names it in the log
    /// (`webhook es/push: signature.secret`).
    pub async fn start(
        store: &SecretStore,
        r: &SecretRef,
        what: String,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Self, SecretError> {
        let first: Arc<str> = store.resolve(ObjectKind::Secret, r).await?.into();
        let (tx, rx) = tokio::sync::watch::channel(first);
        let (store, r) = (store.clone(), r.clone());
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SECRET_REFRESH) => {}
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                }
                match store.resolve(ObjectKind::Secret, &r).await {
                    Ok(v) => {
                        if failing {
                            tracing::info!(secret = %what, "secret readable again");
                            failing = false;
                        }
                        tx.send_if_modified(|current| {
                            let changed = **current != *v;
                            if changed {
                                tracing::info!(secret = %what, "secret changed; using the new value");
                                *current = v.into();
                            }
                            changed
                        });
                    }
                    Err(e) if !failing => {
                        tracing::warn!(secret = %what, error = %e, "cannot read secret again; keeping the value in use");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(Self { value: rx })
    }

    /// The value in use.
    pub fn current(&self) -> Arc<str> {
        self.value.borrow().clone()
    }

    /// A receiver that wakes when the value changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Arc<str>> {
        self.value.clone()
    }
}

/// A secret could not be read.
#[derive(Debug, Error)]
pub enum SecretError {
    /// Nothing says where the secret is.
    #[error("secret reference needs name and key, env, or file")]
    Incomplete,
    /// No source had it.
    #[error("secret {0} not found (looked in: {1})")]
    NotFound(String, String),
    /// Cluster mode reads secrets only from the namespace's Secrets and ConfigMaps.
    #[error("in cluster mode secrets come from the namespace's Secrets: give `name` and `key`, not `env` or `file`")]
    NotInCluster,
    /// The API could not be asked (a transient failure: try again).
    #[error("cannot read {0}")]
    Unreadable(String),
    /// The value was read but cannot be used as it is (never shown).
    #[error("{0}")]
    Unusable(String),
}

impl SecretError {
    /// Whether asking again later may succeed (the API was unreachable, or the secret may be
    /// created yet).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SecretError::Unreadable(_) | SecretError::NotFound(..))
    }
}

/// Reads a secret: `env`, then `file`, then for `{name, key}` the environment variable
/// `TRIGGERD_SECRET_<NAME>_<KEY>` and the file `<secrets_dir>/<name>/<key>`.
fn resolve_secret(r: &SecretRef, secrets_dir: Option<&Path>) -> Result<String, SecretError> {
    let mut looked = Vec::new();
    if let Some(var) = &r.env {
        if let Ok(v) = std::env::var(var) {
            return Ok(v);
        }
        looked.push(format!("env {var}"));
    }
    if let Some(file) = &r.file {
        if let Ok(v) = std::fs::read_to_string(file) {
            return Ok(v.trim_end_matches(['\n', '\r']).to_owned());
        }
        looked.push(format!("file {file}"));
    }
    if let (Some(name), Some(key)) = (&r.name, &r.key) {
        let var = format!("TRIGGERD_SECRET_{}_{}", env_part(name), env_part(key));
        if let Ok(v) = std::env::var(&var) {
            return Ok(v);
        }
        looked.push(format!("env {var}"));
        if let Some(dir) = secrets_dir {
            let path = dir.join(name).join(key);
            if let Ok(v) = std::fs::read_to_string(&path) {
                return Ok(v.trim_end_matches(['\n', '\r']).to_owned());
            }
            looked.push(format!("file {}", path.display()));
        }
    }
    if looked.is_empty() {
        return Err(SecretError::Incomplete);
    }
    let what = match (&r.name, &r.key) {
        (Some(n), Some(k)) => format!("{n}/{k}"),
        _ => "reference".into(),
    };
    Err(SecretError::NotFound(what, looked.join(", ")))
}

/// `url` with the password of each URL in it replaced by `***` (`https://user:***@host/`,
/// also in comma-separated server lists), for logs and error messages; text without such a
/// URL is returned as given.
pub fn mask_url(url: &str) -> std::borrow::Cow<'_, str> {
    if !url.contains('@') {
        return url.into();
    }
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(scheme_end) = rest.find("://") {
        out.push_str(&rest[..scheme_end + 3]);
        rest = &rest[scheme_end + 3..];
        let next_url = rest.find("://").unwrap_or(rest.len());
        let authority_end = rest[..next_url].find(['/', '?', '#']).unwrap_or(next_url);
        let Some(at) = rest[..authority_end].rfind('@') else {
            continue;
        };
        let userinfo = &rest[..at];
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            None => out.push_str("***"),
        }
        rest = &rest[at..];
    }
    out.push_str(rest);
    out.into()
}

/// Whether two secrets are equal, in time that depends on neither their contents nor their
/// lengths (both are hashed first, then the digests compared without an early exit).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    let (x, y) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

fn env_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url("nats://app:s3cret@nats:4222"),
            "nats://app:***@nats:4222"
        );
        assert_eq!(
            mask_url("https://tok3n@api.example.com/a@b?x=@"),
            "https://***@api.example.com/a@b?x=@"
        );
        assert_eq!(
            mask_url("nats://a:one@h1:4222,nats://h2:4222,nats://c:two@h3"),
            "nats://a:***@h1:4222,nats://h2:4222,nats://c:***@h3"
        );
        assert_eq!(mask_url("nats://u:p,w@h"), "nats://u:***@h");
        assert_eq!(
            mask_url("https://api.example.com/x"),
            "https://api.example.com/x"
        );
        assert_eq!(
            mask_url("broker-1:9092,broker-2:9092"),
            "broker-1:9092,broker-2:9092"
        );
    }

    #[derive(Debug)]
    struct Fixed;

    impl ObjectKeys for Fixed {
        fn read<'a>(
            &'a self,
            kind: ObjectKind,
            name: &'a str,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, String>> {
            let v = (kind == ObjectKind::Secret && name == "api" && key == "token")
                .then(|| "from-the-api".to_owned());
            Box::pin(std::future::ready(Ok(v)))
        }
    }

    #[tokio::test]
    async fn cluster_mode_reads_secrets_from_the_api_and_refuses_env_and_files() {
        let store = SecretStore::cluster(Arc::new(Fixed));
        let named = SecretRef {
            name: Some("api".into()),
            key: Some("token".into()),
            env: None,
            file: None,
            optional: None,
        };
        assert_eq!(
            store.resolve(ObjectKind::Secret, &named).await.unwrap(),
            "from-the-api"
        );
        assert!(matches!(
            store.resolve(ObjectKind::ConfigMap, &named).await,
            Err(SecretError::NotFound(..))
        ));
        let file = SecretRef {
            file: Some("/var/run/secrets/kubernetes.io/serviceaccount/token".into()),
            ..named.clone()
        };
        assert!(matches!(
            store.resolve(ObjectKind::Secret, &file).await,
            Err(SecretError::NotInCluster)
        ));
    }

    #[test]
    fn reads_mounted_secret_files() {
        let dir = std::env::temp_dir().join(format!("triggerd-secret-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("hook")).unwrap();
        std::fs::write(dir.join("hook").join("token"), "s3cret\n").unwrap();
        let r = SecretRef {
            name: Some("hook".into()),
            key: Some("token".into()),
            env: None,
            file: None,
            optional: None,
        };
        assert_eq!(resolve_secret(&r, Some(&dir)).unwrap(), "s3cret");
        let missing = SecretRef {
            key: Some("other".into()),
            ..r
        };
        assert!(matches!(
            resolve_secret(&missing, Some(&dir)),
            Err(SecretError::NotFound(..))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
