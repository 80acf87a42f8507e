//! NATS connections, shared by the `nats` event source and the `nats` trigger: credentials
//! and TLS material read through the secret store, and a first connection retried on the
//! manifest's backoff.

use async_nats::{Client, ConnectOptions};
use thiserror::Error;

use crate::backoff::Backoff;
use crate::broker_tls::{BrokerTlsError, ClientTlsPem};
use crate::manifest::{ClientTls, NatsAuth};
use crate::secret::{mask_url, FieldSecretError, SecretStore};

/// Why no NATS connection could be made.
#[derive(Debug, Error)]
pub enum NatsConnectError {
    /// A credential or certificate could not be read.
    #[error(transparent)]
    Secret(#[from] FieldSecretError),
    /// The certificate or key read is not usable.
    #[error(transparent)]
    Tls(#[from] BrokerTlsError),
    /// The credentials file is malformed.
    #[error("auth.credential: {0}")]
    Credentials(std::io::Error),
    /// The server could not be reached or refused the connection, after every attempt.
    #[error("cannot connect to {url} after {attempts} attempt(s): {message}")]
    Connect {
        /// Server URL(s), passwords masked.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
}

impl NatsConnectError {
    /// Whether trying again later may succeed (the server may come back, the secret may be
    /// created).
    pub fn is_retryable(&self) -> bool {
        match self {
            NatsConnectError::Connect { .. } => true,
            NatsConnectError::Secret(e) => e.is_retryable(),
            NatsConnectError::Tls(_) | NatsConnectError::Credentials(_) => false,
        }
    }
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

/// The secrets a connection needs, read.
#[derive(Clone, Default)]
pub struct NatsSecrets {
    tls: Option<rustls::ClientConfig>,
    auth: Option<NatsCredential>,
}

impl std::fmt::Debug for NatsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSecrets")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

#[derive(Clone)]
enum NatsCredential {
    Basic(String, String),
    Token(String),
    Nkey(String),
    Credentials(String),
}

impl NatsConnection {
    /// Reads every secret and certificate the connection needs; a missing or unusable one is
    /// named in the error.
    pub async fn read_secrets(&self, store: &SecretStore) -> Result<NatsSecrets, NatsConnectError> {
        let mut out = NatsSecrets::default();
        if let Some(tls) = &self.tls {
            let pem = ClientTlsPem::read(store, tls).await?;
            if !pem.is_empty() {
                out.tls = Some(pem.rustls_config()?);
            }
        }
        if let Some(auth) = &self.auth {
            out.auth = if let Some(basic) = &auth.basic {
                Some(NatsCredential::Basic(
                    store
                        .secret_of("auth.basic.username", &basic.username)
                        .await?,
                    store
                        .secret_of("auth.basic.password", &basic.password)
                        .await?,
                ))
            } else if let Some(t) = &auth.token {
                Some(NatsCredential::Token(
                    store.secret_of("auth.token", t).await?,
                ))
            } else if let Some(k) = &auth.nkey {
                Some(NatsCredential::Nkey(store.secret_of("auth.nkey", k).await?))
            } else if let Some(c) = &auth.credential {
                Some(NatsCredential::Credentials(
                    store.secret_of("auth.credential", c).await?,
                ))
            } else {
                None
            };
        }
        // A malformed credentials file fails here, not at the first attempt.
        self.options("", &out)?;
        Ok(out)
    }

    /// Connects with `secrets`, retrying the first connection on `backoff`; later
    /// disconnections are healed by the client itself (it reconnects and restores
    /// subscriptions).
    pub async fn connect(
        &self,
        name: &str,
        secrets: &NatsSecrets,
    ) -> Result<Client, NatsConnectError> {
        let steps = self.backoff.steps.max(1);
        let mut attempt = 1;
        loop {
            let options = self.options(name, secrets)?;
            match options.connect(self.url.as_str()).await {
                Ok(client) => return Ok(client),
                Err(e) if attempt >= steps => {
                    return Err(NatsConnectError::Connect {
                        url: mask_url(&self.url).into_owned(),
                        attempts: attempt,
                        message: e.to_string(),
                    })
                }
                Err(e) => {
                    let delay = self.backoff.delay(attempt + 1);
                    tracing::warn!(url = %mask_url(&self.url), attempt, error = %e, retry_in = ?delay, "NATS connection failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn options(
        &self,
        name: &str,
        secrets: &NatsSecrets,
    ) -> Result<ConnectOptions, NatsConnectError> {
        let mut options = ConnectOptions::new()
            .name(format!("triggerd {name}"))
            .connection_timeout(std::time::Duration::from_secs(5));
        if self.tls.is_some() {
            options = options.require_tls(true);
        }
        if let Some(config) = &secrets.tls {
            options = options.tls_client_config(config.clone());
        }
        Ok(match &secrets.auth {
            None => options,
            Some(NatsCredential::Basic(user, password)) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Some(NatsCredential::Token(t)) => options.token(t.clone()),
            Some(NatsCredential::Nkey(k)) => options.nkey(k.clone()),
            Some(NatsCredential::Credentials(c)) => options
                .credentials(c)
                .map_err(NatsConnectError::Credentials)?,
        })
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
