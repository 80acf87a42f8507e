//! The http trigger's credentials: Argo's `basicAuth`, `secureHeaders` and `tls` (CA, client
//! certificate and key), and triggerd's `bearerToken`. The manifest only names secrets; their
//! values are read from the [`SecretStore`] at each attempt (so a rotated secret is used
//! without a restart), sent as sensitive headers, and masked wherever a request or a reply
//! is shown (test reports, dead letters, logs).

use base64::Engine;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::Value;
use thiserror::Error;

use crate::compile::CompileContext;
use crate::manifest::{HttpTrigger, SecretRef};
use crate::secret::{ObjectKind, SecretError, SecretStore};

/// What the text of a masked secret becomes.
pub(super) const MASK: &str = "***";

/// Secrets shorter than this are not searched for in replies (they would match by chance).
const MIN_MASKED_LEN: usize = 4;

/// The credentials a trigger names.
#[derive(Debug, Clone)]
pub(super) struct Credentials {
    basic: Option<(SecretRef, SecretRef)>,
    bearer: Option<SecretRef>,
    headers: Vec<(HeaderName, ObjectKind, SecretRef)>,
    tls: Option<TlsRefs>,
}

/// The secrets of `tls`.
#[derive(Debug, Clone)]
struct TlsRefs {
    ca: Option<SecretRef>,
    client: Option<(SecretRef, SecretRef)>,
}

/// The credentials of one attempt, read.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    /// Headers to send (marked sensitive).
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    /// Every value read, to mask in what is shown.
    pub(super) secrets: Vec<String>,
    /// TLS material: CA bundle and client certificate + key (PEM), when given.
    pub(super) tls: Option<TlsMaterial>,
}

/// PEM texts a TLS client is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct TlsMaterial {
    pub(super) ca: Option<String>,
    pub(super) identity: Option<String>,
}

/// A credential could not be read.
#[derive(Debug, Error)]
#[error("http {field}: {source}")]
pub struct CredentialError {
    field: String,
    #[source]
    source: SecretError,
}

impl CredentialError {
    /// Whether a later attempt may read it (the API was down, the secret may yet appear).
    pub fn is_retryable(&self) -> bool {
        self.source.is_retryable()
    }
}

impl Credentials {
    /// The credentials of `h` at `f` (`spec.triggers[0].template.http`); `None` after an
    /// error was recorded. `Some(None)` when the trigger names none.
    pub(super) fn compile(
        ctx: &mut CompileContext<'_>,
        f: &str,
        h: &HttpTrigger,
    ) -> Option<Option<Credentials>> {
        let mut ok = true;
        let mut headers = Vec::new();
        for (i, sh) in h.secure_headers.iter().enumerate() {
            let at = format!("{f}.secureHeaders[{i}]");
            let Ok(name) = HeaderName::from_bytes(sh.name.as_bytes()) else {
                ctx.error(
                    None,
                    format!("{at}.name"),
                    format!("invalid header name {:?}", sh.name),
                );
                ok = false;
                continue;
            };
            let from = &sh.value_from;
            match (&from.secret_key_ref, &from.config_map_key_ref) {
                (Some(r), None) => headers.push((name, ObjectKind::Secret, r.clone())),
                (None, Some(r)) => headers.push((name, ObjectKind::ConfigMap, r.clone())),
                _ => {
                    ctx.error(
                        None,
                        format!("{at}.valueFrom"),
                        "set exactly one of secretKeyRef and configMapKeyRef",
                    );
                    ok = false;
                }
            }
        }
        let basic = h
            .basic_auth
            .as_ref()
            .map(|b| (b.username.clone(), b.password.clone()));
        let authorizations = usize::from(basic.is_some())
            + usize::from(h.bearer_token.is_some())
            + usize::from(headers.iter().any(|(n, _, _)| n == AUTHORIZATION))
            + usize::from(
                h.headers
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case("authorization")),
            );
        if authorizations > 1 {
            ctx.error_with_hint(
                None,
                f,
                "more than one of basicAuth, bearerToken and an Authorization header is set",
                "each sets the Authorization header; keep one",
            );
            ok = false;
        }
        let tls = h.tls.as_ref().and_then(|t| {
            let client = match (&t.client_cert_secret, &t.client_key_secret) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                _ => {
                    ctx.error(
                        None,
                        format!("{f}.tls.clientCertSecret"),
                        "clientCertSecret and clientKeySecret go together",
                    );
                    ok = false;
                    None
                }
            };
            if t.insecure_skip_verify && t.ca_cert_secret.is_some() {
                ctx.error(
                    None,
                    format!("{f}.tls.insecureSkipVerify"),
                    "insecureSkipVerify and caCertSecret contradict each other",
                );
                ok = false;
            }
            (t.ca_cert_secret.is_some() || client.is_some()).then(|| TlsRefs {
                ca: t.ca_cert_secret.clone(),
                client,
            })
        });
        if !ok {
            return None;
        }
        let credentials = Credentials {
            basic,
            bearer: h.bearer_token.clone(),
            headers,
            tls,
        };
        let none = credentials.basic.is_none()
            && credentials.bearer.is_none()
            && credentials.headers.is_empty()
            && credentials.tls.is_none();
        Some((!none).then_some(credentials))
    }

    /// Reads every credential from `store`.
    pub(super) async fn resolve(&self, store: &SecretStore) -> Result<Resolved, CredentialError> {
        let mut out = Resolved::default();
        if let Some((user, password)) = &self.basic {
            let user = read(store, "basicAuth.username", ObjectKind::Secret, user).await?;
            let password = read(store, "basicAuth.password", ObjectKind::Secret, password).await?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            out.push_header(AUTHORIZATION, format!("Basic {token}"), "basicAuth")?;
            out.secrets.extend([password, token]);
        }
        if let Some(r) = &self.bearer {
            let token = read(store, "bearerToken", ObjectKind::Secret, r).await?;
            out.push_header(AUTHORIZATION, format!("Bearer {token}"), "bearerToken")?;
            out.secrets.push(token);
        }
        for (i, (name, kind, r)) in self.headers.iter().enumerate() {
            let field = format!("secureHeaders[{i}]");
            let value = read(store, &field, *kind, r).await?;
            out.push_header(name.clone(), value.clone(), &field)?;
            out.secrets.push(value);
        }
        if let Some(tls) = &self.tls {
            let mut material = TlsMaterial::default();
            if let Some(ca) = &tls.ca {
                material.ca = Some(read(store, "tls.caCertSecret", ObjectKind::Secret, ca).await?);
            }
            if let Some((cert, key)) = &tls.client {
                let cert = read(store, "tls.clientCertSecret", ObjectKind::Secret, cert).await?;
                let key = read(store, "tls.clientKeySecret", ObjectKind::Secret, key).await?;
                out.secrets.push(key.clone());
                material.identity = Some(format!("{cert}\n{key}"));
            }
            out.tls = Some(material);
        }
        out.secrets.retain(|s| s.len() >= MIN_MASKED_LEN);
        Ok(out)
    }

    /// What the request shows of its credentials: which are set, never their values.
    pub(super) fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        if self.basic.is_some() {
            out.insert("basicAuth".into(), MASK.into());
        }
        if self.bearer.is_some() {
            out.insert("bearerToken".into(), MASK.into());
        }
        if !self.headers.is_empty() {
            let names: serde_json::Map<String, Value> = self
                .headers
                .iter()
                .map(|(n, _, _)| (n.as_str().to_owned(), MASK.into()))
                .collect();
            out.insert("secureHeaders".into(), Value::Object(names));
        }
        if self.tls.is_some() {
            out.insert("tls".into(), MASK.into());
        }
        Value::Object(out)
    }
}

/// Reads one credential, naming its field when it cannot.
async fn read(
    store: &SecretStore,
    field: &str,
    kind: ObjectKind,
    r: &SecretRef,
) -> Result<String, CredentialError> {
    store
        .resolve(kind, r)
        .await
        .map_err(|source| CredentialError {
            field: field.to_owned(),
            source,
        })
}

impl Resolved {
    fn push_header(
        &mut self,
        name: HeaderName,
        value: String,
        field: &str,
    ) -> Result<(), CredentialError> {
        let mut value = HeaderValue::from_str(&value).map_err(|_| CredentialError {
            field: field.to_owned(),
            source: SecretError::Unusable("the value is not a valid header value".into()),
        })?;
        value.set_sensitive(true);
        self.headers.push((name, value));
        Ok(())
    }

    /// `text` with every secret value replaced by [`MASK`].
    pub(super) fn mask(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(s.as_str(), MASK))
    }

    /// `value` with every secret in its strings (and object keys) masked.
    pub(super) fn mask_json(&self, value: Value) -> Value {
        if self.secrets.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.mask(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.mask_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.mask(&k), self.mask_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_replaces_every_secret_in_text_and_json() {
        let r = Resolved {
            secrets: vec!["s3cret-token".into(), "hunter22".into()],
            ..Resolved::default()
        };
        assert_eq!(r.mask("echo: Bearer s3cret-token"), "echo: Bearer ***");
        let masked = r.mask_json(serde_json::json!({
            "auth": "Bearer s3cret-token",
            "nested": [{"hunter22": "x hunter22"}],
            "n": 1
        }));
        assert_eq!(
            masked,
            serde_json::json!({"auth": "Bearer ***", "nested": [{"***": "x ***"}], "n": 1})
        );
    }
}
