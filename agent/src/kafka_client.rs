//! What the Kafka source and trigger share about reaching a broker: TLS (Argo's `tls`:
//! CA, client certificate and key, read from secrets as PEM text) and SASL (Argo's `sasl`: PLAIN or SCRAM with a
//! user and password from secrets), turned into librdkafka settings.

use crate::broker_tls::ClientTlsPem;
use crate::compile::CompileContext;
use crate::manifest::{ClientTls, KafkaSasl, Spanned};
use crate::secret::{FieldSecretError, SecretStore};
use rdkafka::config::ClientConfig;

/// The SASL mechanisms librdkafka is built with here (GSSAPI needs Kerberos, OAUTHBEARER a
/// token provider: neither is supported).
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// How a client reaches the broker: plaintext, TLS, SASL, or SASL over TLS.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// TLS towards the broker.
    pub tls: Option<ClientTls>,
    /// SASL authentication.
    pub sasl: Option<KafkaSasl>,
}

/// A setting that cannot work, found at load time: (field under the spec, message, hint).
pub type SecurityProblem = (&'static str, String, &'static str);

impl KafkaSecurity {
    /// The `tls` and `sasl` of a Kafka source or trigger at `field`; what cannot work is
    /// reported at the location of the part it is in.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        tls: Option<&Spanned<ClientTls>>,
        sasl: Option<&Spanned<KafkaSasl>>,
    ) -> Self {
        let security = Self {
            tls: tls.map(|t| t.value.clone()),
            sasl: sasl.map(|s| s.value.clone()),
        };
        for (sub, message, hint) in security.problems() {
            let at = if sub.starts_with("tls") {
                tls.map(|t| &t.referenced)
            } else {
                sasl.map(|s| &s.referenced)
            };
            ctx.error_with_hint(at, format!("{field}.{sub}"), message, hint);
        }
        security
    }

    /// Problems a manifest can be told about at load time.
    pub fn problems(&self) -> Vec<SecurityProblem> {
        let mut out = Vec::new();
        if let Some((field, message, hint)) =
            self.tls.as_ref().and_then(crate::nats_client::tls_problem)
        {
            let field = match field {
                "insecureSkipVerify" => "tls.insecureSkipVerify",
                _ => "tls.clientCertSecret",
            };
            out.push((field, message.to_owned(), hint));
        }
        if let Some(sasl) = &self.sasl {
            let mechanism = sasl.mechanism();
            if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
                out.push((
                    "sasl.mechanism",
                    format!("SASL mechanism {mechanism:?} is not supported"),
                    "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
                ));
            }
        }
        out
    }

    /// librdkafka's `security.protocol` for these settings.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// Reads the TLS material and SASL credentials through the store; the error names the
    /// field of a missing one.
    pub async fn read_secrets(
        &self,
        store: &SecretStore,
    ) -> Result<KafkaSecrets, FieldSecretError> {
        let tls = match &self.tls {
            Some(tls) => ClientTlsPem::read(store, tls).await?,
            None => ClientTlsPem::default(),
        };
        let sasl = match &self.sasl {
            Some(sasl) => Some((
                store
                    .secret_of("sasl.userSecret", &sasl.user_secret)
                    .await?,
                store
                    .secret_of("sasl.passwordSecret", &sasl.password_secret)
                    .await?,
            )),
            None => None,
        };
        Ok(KafkaSecrets { tls, sasl })
    }

    /// Sets the protocol, TLS material (as PEM text, so no file is needed) and SASL
    /// credentials on `config`.
    pub fn apply(&self, config: &mut ClientConfig, secrets: &KafkaSecrets) {
        config.set("security.protocol", self.protocol());
        if let Some(ca) = &secrets.tls.ca {
            config.set("ssl.ca.pem", ca);
        }
        if let Some((cert, key)) = &secrets.tls.identity {
            config.set("ssl.certificate.pem", cert);
            config.set("ssl.key.pem", key);
        }
        if let (Some(sasl), Some((user, password))) = (&self.sasl, &secrets.sasl) {
            config
                .set("sasl.mechanism", sasl.mechanism())
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
    }
}

/// The secrets of a Kafka client, read.
#[derive(Clone, Default)]
pub struct KafkaSecrets {
    tls: ClientTlsPem,
    sasl: Option<(String, String)>,
}

impl std::fmt::Debug for KafkaSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecrets")
            .field("tls", &self.tls)
            .field("sasl", &self.sasl.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SecretRef;

    fn secret(value: &str) -> SecretRef {
        serde_json::from_value(serde_json::json!({ "name": value, "key": "k" })).unwrap()
    }

    #[test]
    fn protocol_follows_what_is_given() {
        let sasl = KafkaSasl {
            mechanism: Some("scram-sha-512".into()),
            user_secret: secret("u"),
            password_secret: secret("p"),
        };
        assert_eq!(KafkaSecurity::default().protocol(), "plaintext");
        let with_sasl = KafkaSecurity {
            tls: None,
            sasl: Some(sasl.clone()),
        };
        assert_eq!(with_sasl.protocol(), "sasl_plaintext");
        assert_eq!(sasl.mechanism(), "SCRAM-SHA-512");
        let tls: ClientTls = serde_json::from_value(serde_json::json!({})).unwrap();
        let both = KafkaSecurity {
            tls: Some(tls),
            sasl: Some(sasl),
        };
        assert_eq!(both.protocol(), "sasl_ssl");
        assert!(both.problems().is_empty());
    }

    #[test]
    fn unsupported_settings_are_named() {
        let sasl = KafkaSecurity {
            tls: Some(
                serde_json::from_value(serde_json::json!({"insecureSkipVerify": true})).unwrap(),
            ),
            sasl: Some(KafkaSasl {
                mechanism: Some("GSSAPI".into()),
                user_secret: secret("u"),
                password_secret: secret("p"),
            }),
        };
        let fields: Vec<_> = sasl.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(fields, ["tls.insecureSkipVerify", "sasl.mechanism"]);
    }
}
