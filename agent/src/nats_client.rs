//! NATS connections, shared by the `nats` event source and the `nats` trigger: credentials
//! from secrets, and a first connection retried on the manifest's backoff.

use std::path::Path;

use async_nats::{Client, ConnectOptions};
use thiserror::Error;

use crate::backoff::Backoff;
use crate::manifest::{ClientTls, NatsAuth};
use crate::secret::{resolve_secret, secret_file, SecretError};

/// Why no NATS connection could be made.
#[derive(Debug, Error)]
pub enum NatsConnectError {
    /// A credential or certificate could not be read.
    #[error("{field}: {source}")]
    Secret {
        /// Which one (`auth.token`, `tls.caCertSecret`, ...).
        field: &'static str,
        /// Why it could not be read.
        source: SecretError,
    },
    /// The credentials file is malformed.
    #[error("auth.credential: {0}")]
    Credentials(std::io::Error),
    /// The server could not be reached or refused the connection, after every attempt.
    #[error("cannot connect to {url} after {attempts} attempt(s): {message}")]
    Connect {
        /// Server URL(s).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
}

/// Connection settings resolved at start-up.
#[derive(Debug, Clone)]
pub struct NatsConnection {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Credentials, as given in the manifest.
    pub auth: Option<NatsAuth>,
    /// TLS towards the server, as given in the manifest.
    pub tls: Option<ClientTls>,
    /// Attempts and delays of the first connection.
    pub backoff: Backoff,
}

impl NatsConnection {
    /// Connects, retrying the first connection on `backoff`; later disconnections are
    /// healed by the client itself (it reconnects and restores subscriptions).
    pub async fn connect(
        &self,
        name: &str,
        secrets_dir: Option<&Path>,
    ) -> Result<Client, NatsConnectError> {
        let steps = self.backoff.steps.max(1);
        let mut attempt = 1;
        loop {
            let options = self.options(name, secrets_dir)?;
            match options.connect(self.url.as_str()).await {
                Ok(client) => return Ok(client),
                Err(e) if attempt >= steps => {
                    return Err(NatsConnectError::Connect {
                        url: self.url.clone(),
                        attempts: attempt,
                        message: e.to_string(),
                    })
                }
                Err(e) => {
                    let delay = self.backoff.delay(attempt + 1);
                    tracing::warn!(url = %self.url, attempt, error = %e, retry_in = ?delay, "NATS connection failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Reads every secret and certificate file the connection needs, so that a missing one
    /// fails start-up rather than the first attempt.
    pub fn check_secrets(&self, secrets_dir: Option<&Path>) -> Result<(), NatsConnectError> {
        self.options("", secrets_dir).map(|_| ())
    }

    fn options(
        &self,
        name: &str,
        secrets_dir: Option<&Path>,
    ) -> Result<ConnectOptions, NatsConnectError> {
        let mut options = ConnectOptions::new()
            .name(format!("triggerd {name}"))
            .connection_timeout(std::time::Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            let file = |field: &'static str, r| {
                secret_file(r, secrets_dir)
                    .map_err(|source| NatsConnectError::Secret { field, source })
            };
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca_cert_secret {
                options = options.add_root_certificates(file("tls.caCertSecret", ca)?);
            }
            if let (Some(cert), Some(key)) = (&tls.client_cert_secret, &tls.client_key_secret) {
                options = options.add_client_certificate(
                    file("tls.clientCertSecret", cert)?,
                    file("tls.clientKeySecret", key)?,
                );
            }
        }
        let Some(auth) = &self.auth else {
            return Ok(options);
        };
        let secret = |field: &'static str, r| {
            resolve_secret(r, secrets_dir)
                .map_err(|source| NatsConnectError::Secret { field, source })
        };
        if let Some(basic) = &auth.basic {
            return Ok(options.user_and_password(
                secret("auth.basic.username", &basic.username)?,
                secret("auth.basic.password", &basic.password)?,
            ));
        }
        if let Some(t) = &auth.token {
            return Ok(options.token(secret("auth.token", t)?));
        }
        if let Some(k) = &auth.nkey {
            return Ok(options.nkey(secret("auth.nkey", k)?));
        }
        if let Some(c) = &auth.credential {
            return options
                .credentials(&secret("auth.credential", c)?)
                .map_err(NatsConnectError::Credentials);
        }
        Ok(options)
    }
}

/// Checks TLS settings; the error names the field and says what to do.
pub fn tls_problem(tls: &ClientTls) -> Option<(&'static str, &'static str, &'static str)> {
    if tls.insecure_skip_verify {
        return Some((
            "insecureSkipVerify",
            "skipping server verification is not supported",
            "give the CA that signed the server's certificate in caCertSecret",
        ));
    }
    if tls.client_cert_secret.is_some() != tls.client_key_secret.is_some() {
        return Some((
            "clientCertSecret",
            "clientCertSecret and clientKeySecret go together",
            "give both, or neither",
        ));
    }
    None
}

/// Checks that at most one kind of credential is given; the error names the field.
pub fn auth_problem(auth: &NatsAuth) -> Option<&'static str> {
    let given = [
        auth.basic.is_some(),
        auth.token.is_some(),
        auth.nkey.is_some(),
        auth.credential.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    match given {
        0 => Some("auth needs one of basic, token, nkey or credential"),
        1 => None,
        _ => Some("set only one of basic, token, nkey or credential"),
    }
}
