//! HTTPS for webhook ports (Argo's `serverCertSecret` / `serverKeySecret`): the PEM
//! certificate chain and key come from secrets, are checked when the port starts (a bad pair
//! fails the start), and are re-read while it runs; a changed, valid pair is served to new
//! connections, an invalid one is logged and the pair in use kept.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::compile::CompileContext;
use crate::manifest::SecretRef;
use crate::secret::{SecretStore, WatchedSecret};

/// The secrets a TLS webhook port serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsRefs {
    /// PEM certificate chain, leaf first.
    pub cert: SecretRef,
    /// PEM private key.
    pub key: SecretRef,
}

impl ServerTlsRefs {
    /// Checks that both or neither of the fields are set; `field` is the webhook event's path.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        loc: Option<&serde_saphyr::Location>,
        field: &str,
        cert: Option<&SecretRef>,
        key: Option<&SecretRef>,
    ) -> Option<Option<Box<Self>>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Some(Some(Box::new(Self {
                cert: cert.clone(),
                key: key.clone(),
            }))),
            (None, None) => Some(None),
            (Some(_), None) => {
                ctx.error(
                    loc,
                    format!("{field}.serverKeySecret"),
                    "serverCertSecret needs serverKeySecret",
                );
                None
            }
            (None, Some(_)) => {
                ctx.error(
                    loc,
                    format!("{field}.serverCertSecret"),
                    "serverKeySecret needs serverCertSecret",
                );
                None
            }
        }
    }
}

/// Why a certificate and key cannot be served (never shows their contents).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A secret could not be read.
    #[error("{0}: {1}")]
    Secret(&'static str, crate::secret::SecretError),
    /// The certificate secret holds no PEM certificate.
    #[error("serverCertSecret holds no PEM certificate")]
    NoCertificate,
    /// The key secret holds no PEM private key.
    #[error("serverKeySecret holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    /// The key is not one rustls can sign with, or does not match the certificate.
    #[error("serverKeySecret does not fit serverCertSecret: {0}")]
    Mismatch(rustls::Error),
}

/// A running TLS port's certificate, kept current.
#[derive(Debug)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Reads and checks the pair, then re-reads it until `shutdown`.
    pub async fn start(
        refs: &ServerTlsRefs,
        store: &SecretStore,
        port: u16,
        shutdown: &CancellationToken,
    ) -> Result<Self, TlsSetupError> {
        let what = |f: &str| format!("webhook port {port}: {f}");
        let cert = WatchedSecret::start(
            store,
            &refs.cert,
            what("serverCertSecret"),
            shutdown.clone(),
        )
        .await
        .map_err(|e| TlsSetupError::Secret("serverCertSecret", e))?;
        let key = WatchedSecret::start(store, &refs.key, what("serverKeySecret"), shutdown.clone())
            .await
            .map_err(|e| TlsSetupError::Secret("serverKeySecret", e))?;
        let current = Arc::new(RwLock::new(certified_key(&cert.current(), &key.current())?));
        let resolver = Arc::new(Resolver(current.clone()));
        tokio::spawn(reload(cert, key, current, port, shutdown.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Mismatch)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The acceptor the port's server wraps each connection with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// Rebuilds the served pair whenever either secret changes.
async fn reload(
    cert: WatchedSecret,
    key: WatchedSecret,
    current: Arc<RwLock<Arc<CertifiedKey>>>,
    port: u16,
    shutdown: CancellationToken,
) {
    let (mut cert_changes, mut key_changes) = (cert.changes(), key.changes());
    loop {
        tokio::select! {
            r = cert_changes.changed() => if r.is_err() { return },
            r = key_changes.changed() => if r.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        match certified_key(&cert.current(), &key.current()) {
            Ok(pair) => {
                if let Ok(mut slot) = current.write() {
                    *slot = pair;
                    tracing::info!(port, "webhook TLS certificate reloaded");
                }
            }
            // A certificate and key rotated one after the other are briefly a mismatch.
            Err(e) => {
                tracing::warn!(port, error = %e, "new webhook TLS certificate not usable yet; serving the previous one")
            }
        }
    }
}

fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsSetupError::NoCertificate);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsSetupError::NoKey)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let pair = CertifiedKey::from_der(chain, key, &provider).map_err(TlsSetupError::Mismatch)?;
    Ok(Arc::new(pair))
}

/// Hands each handshake the pair in use.
#[derive(Debug)]
struct Resolver(Arc<RwLock<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}
