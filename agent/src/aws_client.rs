//! AWS clients, shared by the `awsLambda` trigger and the `sqs` event source: Argo's region,
//! endpoint, static keys and role fields checked at load time, and the SDK configuration
//! built from them with the keys read through the secret store (absent: the SDK's default
//! credential chain; a role: assumed through STS with those credentials).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_lambda::config::{Credentials, SharedCredentialsProvider};
use serde_saphyr::Spanned;

use crate::compile::CompileContext;
use crate::manifest::SecretRef;
use crate::secret::{FieldSecretError, SecretStore};

/// Where a client connects and with which credentials (fixed at load time).
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// AWS region.
    pub region: String,
    /// Endpoint URL override (emulators); otherwise the SDK's own resolution, which honours
    /// `AWS_ENDPOINT_URL` and the per-service variables.
    pub endpoint: Option<String>,
    /// Static credentials: access key id and secret access key.
    pub keys: Option<(SecretRef, SecretRef)>,
    /// Session token going with the static keys.
    pub session_token: Option<SecretRef>,
    /// Role assumed through STS with the base credentials.
    pub role_arn: Option<String>,
}

/// The AWS fields of one manifest section, as given.
pub struct AwsFields<'a> {
    /// `region`.
    pub region: &'a Spanned<String>,
    /// `endpoint`.
    pub endpoint: Option<&'a Spanned<String>>,
    /// `accessKey`.
    pub access_key: Option<&'a Spanned<SecretRef>>,
    /// `secretKey`.
    pub secret_key: Option<&'a Spanned<SecretRef>>,
    /// `sessionToken`.
    pub session_token: Option<&'a SecretRef>,
    /// `roleARN`.
    pub role_arn: Option<&'a String>,
}

impl AwsSettings {
    /// Checks the fields, recording errors under `field` (e.g. `spec.sqs.uploads`).
    pub fn compile(ctx: &mut CompileContext<'_>, field: &str, f: AwsFields<'_>) -> Option<Self> {
        let before = ctx.errors.len();
        if f.region.value.trim().is_empty() {
            ctx.error(
                Some(&f.region.referenced),
                format!("{field}.region"),
                "region is empty",
            );
        }
        if let Some(e) = f.endpoint {
            if let Err(err) = reqwest::Url::parse(&e.value) {
                ctx.error_with_hint(
                    Some(&e.referenced),
                    format!("{field}.endpoint"),
                    format!("invalid endpoint {:?}: {err}", e.value),
                    "an absolute URL such as http://127.0.0.1:5000",
                );
            }
        }
        let keys = match (f.access_key, f.secret_key) {
            (Some(a), Some(s)) => Some((a.value.clone(), s.value.clone())),
            (None, None) => None,
            (Some(given), None) | (None, Some(given)) => {
                let missing = if f.access_key.is_some() {
                    "secretKey"
                } else {
                    "accessKey"
                };
                ctx.error_with_hint(
                    Some(&given.referenced),
                    format!("{field}.{missing}"),
                    format!("{missing} is missing"),
                    "give both accessKey and secretKey, or neither (the default AWS credential chain)",
                );
                None
            }
        };
        if f.session_token.is_some() && keys.is_none() {
            ctx.error_with_hint(
                Some(&f.region.referenced),
                format!("{field}.sessionToken"),
                "sessionToken needs accessKey and secretKey",
                "give the temporary keys with their session token, or none of them",
            );
        }
        (ctx.errors.len() == before).then(|| Self {
            region: f.region.value.trim().to_owned(),
            endpoint: f.endpoint.map(|e| e.value.clone()),
            keys,
            session_token: f.session_token.cloned(),
            role_arn: f.role_arn.cloned(),
        })
    }

    /// The SDK configuration: no SDK retries (callers retry on their own terms), `timeout`
    /// per operation, credentials read from `store` now; no network traffic yet (the default
    /// chain and assumed roles are fetched at the first call).
    pub async fn sdk_config(
        &self,
        store: &SecretStore,
        timeout: Duration,
    ) -> Result<SdkConfig, FieldSecretError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build());
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((access, secret)) = &self.keys {
            let access = store.secret_of("accessKey", access).await?;
            let secret = store.secret_of("secretKey", secret).await?;
            let token = match &self.session_token {
                Some(t) => Some(store.secret_of("sessionToken", t).await?),
                None => None,
            };
            loader = loader
                .credentials_provider(Credentials::new(access, secret, token, None, "triggerd"));
        }
        let base = loader.load().await;
        let Some(role) = &self.role_arn else {
            return Ok(base);
        };
        let assumed = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name("triggerd")
            .configure(&base)
            .build()
            .await;
        Ok(base
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(assumed))
            .build())
    }
}
