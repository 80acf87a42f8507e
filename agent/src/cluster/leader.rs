//! Leader election between replicas of the agent through a `coordination.k8s.io/v1` Lease,
//! as client-go's leader election does it: the holder renews `renewTime` well within
//! `leaseDurationSeconds`; another replica takes the Lease over once it has not been
//! renewed for that long. Writes carry the `resourceVersion` read, so of two replicas
//! racing for an expired Lease one wins and the other gets a conflict.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

/// Which Lease, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaderOptions {
    /// The Lease's name in the agent's namespace.
    pub lease: String,
    /// This replica's identity (`holderIdentity`), unique among the replicas.
    pub identity: String,
    /// How long a Lease that is not renewed stays with its holder.
    pub duration: Duration,
}

/// Why the Lease could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API refused or could not be reached; retry at the next renewal.
    #[error("lease {lease}: {source}")]
    Api {
        /// The Lease's name.
        lease: String,
        /// The API error.
        source: kube::Error,
    },
    /// The Lease object does not have the expected shape.
    #[error("lease {lease}: {message}")]
    Malformed {
        /// The Lease's name.
        lease: String,
        /// What is wrong.
        message: String,
    },
}

/// The Lease as this replica sees it.
pub struct LeaseLock {
    api: Api<Lease>,
    options: LeaderOptions,
}

impl LeaseLock {
    /// A lock on `options.lease` in the namespace of `api`.
    pub fn new(api: Api<Lease>, options: LeaderOptions) -> Self {
        Self { api, options }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.options.identity
    }

    /// Takes or renews the Lease; `Ok(true)` while this replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, LeaseError> {
        let now = Utc::now();
        let stamp = now.to_rfc3339_opts(SecondsFormat::Micros, true);
        let seconds = self.options.duration.as_secs().max(1);
        let Some(current) = self
            .api
            .get_opt(&self.options.lease)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            let lease = self.lease(json!({
                "metadata": {"name": self.options.lease},
                "spec": {
                    "holderIdentity": self.options.identity,
                    "leaseDurationSeconds": seconds,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }))?;
            return self.written(self.api.create(&PostParams::default(), &lease).await);
        };
        let mut value =
            serde_json::to_value(&current).map_err(|e| self.malformed(e.to_string()))?;
        let spec = &value["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or("");
        let held_for = spec["leaseDurationSeconds"]
            .as_i64()
            .unwrap_or(seconds as i64);
        let renewed = spec["renewTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let expired = renewed.is_none_or(|t| t + chrono::Duration::seconds(held_for) < now);
        let ours = holder == self.options.identity;
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
        let spec = &mut value["spec"];
        if !ours {
            spec["holderIdentity"] = json!(self.options.identity);
            spec["acquireTime"] = json!(stamp);
            spec["leaseTransitions"] = json!(transitions + 1);
        }
        spec["leaseDurationSeconds"] = json!(seconds);
        spec["renewTime"] = json!(stamp);
        let lease = self.lease(value)?;
        self.written(
            self.api
                .replace(&self.options.lease, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the Lease up (at shutdown), so another replica need not wait for it to expire.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(current) = self
            .api
            .get_opt(&self.options.lease)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let mut value =
            serde_json::to_value(&current).map_err(|e| self.malformed(e.to_string()))?;
        if value["spec"]["holderIdentity"] != json!(self.options.identity) {
            return Ok(());
        }
        value["spec"]["holderIdentity"] = Value::Null;
        let lease = self.lease(value)?;
        self.api
            .replace(&self.options.lease, &PostParams::default(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| self.api_error(e))
    }

    fn lease(&self, value: Value) -> Result<Lease, LeaseError> {
        serde_json::from_value(value).map_err(|e| self.malformed(e.to_string()))
    }

    /// A write that lost a race (409) means another replica holds the Lease.
    fn written(&self, result: Result<Lease, kube::Error>) -> Result<bool, LeaseError> {
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            lease: self.options.lease.clone(),
            source,
        }
    }

    fn malformed(&self, message: String) -> LeaseError {
        LeaseError::Malformed {
            lease: self.options.lease.clone(),
            message,
        }
    }
}
