//! A TLS front for a plaintext test server: accepts TLS on its own free port with a
//! certificate from [`TestCerts`] and forwards the bytes to the server. The Kafka TLS tests
//! put it in front of tansu (whose 0.6 CLI cannot turn TLS on: `--cert` and `--key` are
//! declared mutually exclusive), with tansu advertising the proxy's address, so every
//! client connection, metadata-driven ones included, goes through TLS.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::TestCerts;

/// A running TLS front, stopped when dropped.
pub struct TlsProxy {
    port: u16,
    stop: CancellationToken,
}

impl TlsProxy {
    /// Listens on `port` (TLS with `certs`' server certificate) and forwards each connection
    /// to `127.0.0.1:upstream`.
    pub async fn start(certs: &TestCerts, port: u16, upstream: u16) -> TlsProxy {
        Self::start_with(certs, port, upstream, false).await
    }

    /// As [`TlsProxy::start`], and a client must present a certificate signed by `certs`' CA
    /// (mutual TLS); one that does not fails the handshake.
    pub async fn start_requiring_client_certificate(
        certs: &TestCerts,
        port: u16,
        upstream: u16,
    ) -> TlsProxy {
        Self::start_with(certs, port, upstream, true).await
    }

    async fn start_with(certs: &TestCerts, port: u16, upstream: u16, mutual: bool) -> TlsProxy {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.server_cert)
            .expect("read server certificate")
            .collect::<Result<_, _>>()
            .expect("parse server certificate");
        let key = PrivateKeyDer::from_pem_file(&certs.server_key).expect("read server key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if mutual {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(&certs.ca).expect("read the CA") {
                roots.add(ca.expect("parse the CA")).expect("add the CA");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(chain, key)
            .expect("TLS server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("TLS proxy: bind 127.0.0.1:{port}: {e}"));
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let (acceptor, token) = (acceptor.clone(), token.clone());
                tokio::spawn(async move {
                    // A client that fails the handshake (it does not trust the CA) is simply
                    // disconnected, as by a real TLS listener.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut server) => {}
                    }
                });
            }
        });
        TlsProxy { port, stop }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
