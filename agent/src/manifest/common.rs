//! Types shared by Sensor and EventSource manifests.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

/// Kubernetes object metadata; only `name` matters in file mode, the rest is accepted so
/// that `kubectl get -o yaml` output loads unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name, unique per kind.
    pub name: String,
    /// Namespace (informational in file mode).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Name prefix for generated names. Accepted and ignored.
    #[serde(default)]
    pub generate_name: Option<String>,
    /// Object uid. Accepted and ignored.
    #[serde(default)]
    pub uid: Option<String>,
    /// Resource version. Accepted and ignored.
    #[serde(default)]
    pub resource_version: Option<String>,
    /// Spec generation. Accepted and ignored.
    #[serde(default)]
    pub generation: Option<i64>,
    /// Creation time. Accepted and ignored.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    /// Finalizers. Accepted and ignored.
    #[serde(default)]
    pub finalizers: Option<Vec<String>>,
    /// Server-side apply bookkeeping. Accepted and ignored.
    #[serde(default)]
    pub managed_fields: Option<Value>,
    /// Owners. Accepted and ignored.
    #[serde(default)]
    pub owner_references: Option<Value>,
}

/// A Rhai script given inline (`script`) or by path (`scriptFile`).
#[derive(Debug, Clone, Default)]
pub struct ScriptSource {
    /// Inline Rhai source.
    pub script: Option<Spanned<String>>,
    /// Path to a `.rhai` file, relative to the manifest's directory or a library directory.
    pub script_file: Option<Spanned<String>>,
}

/// A reference to a secret value: Argo's `{name, key}` selector, or in file mode `env`/`file`.
///
/// `{name, key}` resolves from the environment variable `TRIGGERD_SECRET_<NAME>_<KEY>`
/// (upper-cased, other characters as `_`), else from the file `<secrets-dir>/<name>/<key>`,
/// which is how Kubernetes mounts a Secret volume.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Secret name.
    #[serde(default)]
    pub name: Option<String>,
    /// Key inside the secret.
    #[serde(default)]
    pub key: Option<String>,
    /// Environment variable holding the value.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the value (trailing newline trimmed).
    #[serde(default)]
    pub file: Option<String>,
    /// Argo's `optional`; a missing secret is always an error here.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// A number or a string, as Kubernetes `IntOrString` and Argo's `Int64OrString`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// Given as a number.
    Int(i64),
    /// Given as a string.
    Str(String),
}

/// Kubernetes' own marker for a field that holds an integer or a string.
impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

impl IntOrString {
    /// The value as text.
    pub fn as_string(&self) -> String {
        match self {
            IntOrString::Int(i) => i.to_string(),
            IntOrString::Str(s) => s.clone(),
        }
    }
}

/// A decimal amount given as a number or a string (Argo's `Amount`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    /// Given as a number.
    Num(f64),
    /// Given as a string.
    Str(String),
}

/// A number or a string: structural schemas have no such type, so any scalar is kept and
/// the agent checks it at load time.
impl JsonSchema for Amount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
    }
}

impl Amount {
    /// The amount as a float, if it parses.
    pub fn value(&self) -> Option<f64> {
        match self {
            Amount::Num(n) => Some(*n),
            Amount::Str(s) => s.trim().parse().ok(),
        }
    }
}

/// NATS credentials (Argo's `NATSAuth`): exactly one of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsAuth {
    /// User name and password.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// Token.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// NKey seed (`SU...`).
    #[serde(default)]
    pub nkey: Option<SecretRef>,
    /// Credentials file content (JWT and NKey seed, as `nsc` writes it).
    #[serde(default)]
    pub credential: Option<SecretRef>,
}

/// User name and password, each from a secret.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: SecretRef,
    /// Password.
    pub password: SecretRef,
}

/// Client TLS towards a broker or an http trigger's target (Argo's `TLSConfig`): the
/// certificates and key are secret references read as PEM text through the secret store.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTls {
    /// CA certificate(s) (PEM) that sign the server's certificate; default: system roots.
    #[serde(default)]
    pub ca_cert_secret: Option<SecretRef>,
    /// Client certificate (PEM), for servers that verify clients.
    #[serde(default)]
    pub client_cert_secret: Option<SecretRef>,
    /// Client private key (PEM).
    #[serde(default)]
    pub client_key_secret: Option<SecretRef>,
    /// Skip server verification: refused for brokers (add the server's CA instead), allowed
    /// for the http trigger (never the default).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Kafka SASL credentials (Argo's `SASLConfig`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSasl {
    /// `PLAIN` (Argo's default), `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub mechanism: Option<String>,
    /// User name.
    pub user_secret: SecretRef,
    /// Password.
    pub password_secret: SecretRef,
}

impl KafkaSasl {
    /// The mechanism, upper-cased; PLAIN when not given (Argo's default).
    pub fn mechanism(&self) -> String {
        self.mechanism
            .as_deref()
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "PLAIN".to_owned())
    }
}
