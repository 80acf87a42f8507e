//! TLS towards brokers (NATS, Kafka) from Argo's `tls` section: the CA and client
//! certificate are read as PEM text through the [`SecretStore`], so they come from the
//! namespace's Secrets in cluster mode and never have to exist as files.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::manifest::ClientTls;
use crate::secret::{FieldSecretError, SecretStore};

/// The PEM texts a client's `tls` names, read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTlsPem {
    /// CA bundle that signs the server's certificate (`caCertSecret`); absent: system roots.
    pub ca: Option<String>,
    /// Client certificate chain and private key (`clientCertSecret`, `clientKeySecret`).
    pub identity: Option<(String, String)>,
}

impl std::fmt::Debug for ClientTlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsPem")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// The PEM text read is not a usable certificate or key (the text is never shown).
#[derive(Debug, Error)]
pub enum BrokerTlsError {
    /// `field` holds no PEM certificate.
    #[error("tls.{0} holds no PEM certificate")]
    NoCertificate(&'static str),
    /// The key is not a PEM private key.
    #[error("tls.clientKeySecret holds no PEM private key")]
    NoKey,
    /// rustls refused the material (a CA it cannot parse, a key that does not match).
    #[error("tls: {0}")]
    Refused(#[source] rustls::Error),
}

impl ClientTlsPem {
    /// Reads what `tls` names; the error names the field (`tls.caCertSecret`).
    pub async fn read(store: &SecretStore, tls: &ClientTls) -> Result<Self, FieldSecretError> {
        let ca = match &tls.ca_cert_secret {
            Some(r) => Some(store.secret_of("tls.caCertSecret", r).await?),
            None => None,
        };
        let identity = match (&tls.client_cert_secret, &tls.client_key_secret) {
            (Some(cert), Some(key)) => Some((
                store.secret_of("tls.clientCertSecret", cert).await?,
                store.secret_of("tls.clientKeySecret", key).await?,
            )),
            _ => None,
        };
        Ok(Self { ca, identity })
    }

    /// Whether the defaults of the client do (no CA, no client certificate).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.identity.is_none()
    }

    /// A rustls client configuration: only the given CA is trusted (as Argo sets the pool),
    /// else the system's roots; the client certificate is presented when given.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, BrokerTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                let certs = certificates(ca, "caCertSecret")?;
                for cert in certs {
                    roots.add(cert).map_err(BrokerTlsError::Refused)?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(BrokerTlsError::Refused)?
        .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = certificates(cert, "clientCertSecret")?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|_| BrokerTlsError::NoKey)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(BrokerTlsError::Refused)
            }
        }
    }
}

fn certificates(
    pem: &str,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, BrokerTlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| BrokerTlsError::NoCertificate(field))?;
    if certs.is_empty() {
        return Err(BrokerTlsError::NoCertificate(field));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_no_pem_is_named_not_shown() {
        let pem = ClientTlsPem {
            ca: Some("s3cret-not-a-cert".into()),
            identity: None,
        };
        let e = pem.rustls_config().unwrap_err().to_string();
        assert_eq!(e, "tls.caCertSecret holds no PEM certificate");
        assert!(!format!("{pem:?}").contains("s3cret"));
    }

    #[test]
    fn system_roots_without_a_ca() {
        let pem = ClientTlsPem::default();
        assert!(pem.is_empty());
        assert!(pem.rustls_config().is_ok());
    }
}
