//! A leader lease in a JetStream key-value bucket whose entries expire after the lease's
//! time to live: the replica that creates the key leads and renews it every third of that
//! time; when it dies the key expires and another replica takes over. A leader that cannot
//! renew for two thirds of the time steps down before anyone else can take over, so two
//! replicas never lead at once.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One lease key.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    pub(super) fn new(kv: kv::Store, key: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            kv,
            key: super::token(key),
            holder: holder.to_owned(),
            ttl,
        }
    }

    /// Competes for the lease until `stop` (then releases it if held). The receiver says
    /// whether this replica leads now.
    pub fn run(self, stop: CancellationToken) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let every = self.ttl / 3;
            let mut held: Option<u64> = None;
            let mut renewed = Instant::now();
            loop {
                held = self.step(held, &mut renewed).await;
                let leads = held.is_some();
                if *tx.borrow() != leads {
                    if leads {
                        tracing::info!(lease = %self.key, holder = %self.holder, "leading: singleton sources run here");
                    } else {
                        tracing::warn!(lease = %self.key, holder = %self.holder, "lease lost: singleton sources stop here");
                    }
                    let _ = tx.send(leads);
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
            }
            if let Some(revision) = held {
                let _ = tx.send(false);
                if let Err(e) = self
                    .kv
                    .delete_expect_revision(&self.key, Some(revision))
                    .await
                {
                    tracing::debug!(error = %e, "lease release failed; it expires on its own");
                }
            }
        });
        rx
    }

    /// One take-or-renew round; the revision while held.
    async fn step(&self, held: Option<u64>, renewed: &mut Instant) -> Option<u64> {
        let value = Bytes::from(self.holder.clone());
        match held {
            None => match self.kv.create(&self.key, value).await {
                Ok(revision) => {
                    *renewed = Instant::now();
                    Some(revision)
                }
                Err(e) => {
                    if e.kind() != kv::CreateErrorKind::AlreadyExists {
                        tracing::debug!(error = %e, "lease not taken");
                    }
                    None
                }
            },
            Some(revision) => match self.kv.update(&self.key, value, revision).await {
                Ok(next) => {
                    *renewed = Instant::now();
                    Some(next)
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                Err(e) => {
                    if renewed.elapsed() > self.ttl * 2 / 3 {
                        tracing::warn!(error = %e, "lease not renewed in time; stepping down");
                        None
                    } else {
                        Some(revision)
                    }
                }
            },
        }
    }
}
