//! The JetStream bus: one events stream per namespace, one durable pull consumer per sensor,
//! key-value buckets for partial condition state and leader leases, and a dead-letter stream.
//!
//! Sources publish each event once per subscribed sensor, to that sensor's subject, with
//! `Nats-Msg-Id` = sensor/identity (EventSource, event, producer and id, hashed): a republished event within the stream's duplicate window
//! is stored once, and a publisher that was refused part-way can simply publish again. A
//! webhook answers 200 only after every one of those publishes was acknowledged.
//!
//! A sensor acknowledges a message only when all its triggers reached a final outcome (see
//! [`super::Pending`]), so a crash at any point means redelivery, never loss. Replicas share a
//! sensor's durable consumer, so each message goes to one of them.

mod conditions;
mod consumer;
mod dlq;
mod lease;
mod names;
mod publisher;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use async_nats::Client;
use thiserror::Error;

use crate::secret::mask_url;

pub use conditions::ConditionStore;
pub use consumer::SensorConsumer;
pub use dlq::{DeadLetterEntry, DeadLetterRecord, DeadLetters};
pub use lease::Lease;
pub use names::{token, Names};
pub use publisher::Publisher;
pub use wire::{DecodeError, WireEvent};

/// Dead letters are kept this long.
const DLQ_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How the events stream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Retention {
    /// Until the sensor's consumer acknowledged them (the default; every subject has one
    /// consumer, so no other consumer may read the stream).
    Workqueue,
    /// Until the age and size limits remove them (acknowledged events stay, so size the
    /// limits for the traffic: a full stream refuses new events).
    Limits,
    /// Until every consumer acknowledged them. nats-server 2.9 was seen to lose
    /// acknowledged publishes on such streams across a server restart; prefer `workqueue`.
    Interest,
}

/// What the events stream does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Discard {
    /// Refuse new events (a webhook answers 503): nothing accepted is ever dropped.
    New,
    /// Drop the oldest events to make room.
    Old,
}

/// Settings of the JetStream bus.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// The namespace whose stream, consumers and buckets are used.
    pub namespace: String,
    /// This replica's name (lease holder, client name).
    pub replica_id: String,
    /// How long a delivered, unacknowledged event waits before it is delivered again.
    pub ack_wait: Duration,
    /// Oldest event the stream keeps (zero: no limit).
    pub max_age: Duration,
    /// Largest size of the stream in bytes (-1: no limit).
    pub max_bytes: i64,
    /// Stream and bucket replicas (JetStream clustering).
    pub replicas: usize,
    /// How the stream keeps events.
    pub retention: Retention,
    /// What a full stream does.
    pub discard: Discard,
    /// How long the stream remembers a message id to drop a republished event (and the
    /// consumer side a handled id to drop a redelivery).
    pub dedup_window: Duration,
    /// How long a publish waits for the server's acknowledgement.
    pub publish_timeout: Duration,
    /// How long a leader's lease lasts without renewal.
    pub lease_ttl: Duration,
}

/// Why the JetStream bus could not be set up.
#[derive(Debug, Error)]
pub enum BusError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// Server URL(s).
        url: String,
        /// Why.
        message: String,
    },
    /// A stream, consumer or bucket could not be created or read.
    #[error("JetStream {what}: {message}")]
    Setup {
        /// Which object.
        what: String,
        /// Why.
        message: String,
    },
}

impl BusError {
    fn setup(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        BusError::Setup {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// A connection to the namespace's JetStream bus, with its stream and buckets in place.
/// Cheap to clone; kept across reloads.
#[derive(Debug, Clone)]
pub struct JetStreamBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    js: Context,
    names: Names,
    options: JetStreamOptions,
    conditions: kv::Store,
    leases: kv::Store,
}

impl JetStreamBus {
    /// Connects and makes sure the events and dead-letter streams and the buckets exist
    /// (creating them, or bringing their limits in line with `options`). `on_connection`
    /// hears every loss and return of the connection (readiness).
    pub async fn connect(
        options: JetStreamOptions,
        on_connection: impl Fn(bool) + Send + Sync + 'static,
    ) -> Result<Self, BusError> {
        let on_connection = Arc::new(on_connection);
        let url = options.url.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("triggerd {}", options.replica_id))
            .event_callback(move |event| {
                let on_connection = on_connection.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            on_connection(false);
                            tracing::warn!("JetStream bus: disconnected from NATS; reconnecting")
                        }
                        async_nats::Event::Connected => {
                            on_connection(true);
                            tracing::info!("JetStream bus: connected to NATS")
                        }
                        other => {
                            tracing::debug!(event = %other, "JetStream bus: connection event")
                        }
                    }
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| BusError::Connect {
                url: mask_url(&url).into_owned(),
                message: e.to_string(),
            })?;
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(options.publish_timeout);
        let names = Names::new(&options.namespace);
        ensure_stream(&js, events_stream_config(&names, &options)).await?;
        ensure_stream(&js, dlq_stream_config(&names, &options)).await?;
        let conditions = ensure_bucket(
            &js,
            &names.conditions_bucket(),
            "triggerd: partial dependency state of multi-dependency triggers",
            Duration::ZERO,
            options.replicas,
        )
        .await?;
        let leases = ensure_bucket(
            &js,
            &names.leases_bucket(),
            "triggerd: leader leases for singleton sources",
            options.lease_ttl,
            options.replicas,
        )
        .await?;
        tracing::info!(
            url = %mask_url(&options.url),
            stream = %names.events_stream(),
            replica = %options.replica_id,
            "JetStream bus ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                names,
                options,
                conditions,
                leases,
            }),
        })
    }

    /// Names of this namespace's bus objects.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// The settings it was made with.
    pub fn options(&self) -> &JetStreamOptions {
        &self.inner.options
    }

    /// Whether the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A publisher routing (event source, event name) to the sensors subscribed to it.
    pub fn publisher<'a>(
        &self,
        routes: impl IntoIterator<Item = ((&'a str, &'a str), &'a str)>,
    ) -> Publisher {
        Publisher::new(self.clone(), routes)
    }

    /// The durable consumer of `sensor`, fetching up to `batch` messages at a time, ending
    /// when `stop` is cancelled.
    pub async fn consumer(
        &self,
        sensor: &str,
        batch: usize,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<SensorConsumer, BusError> {
        SensorConsumer::open(self.clone(), sensor, batch, stop).await
    }

    /// Partial condition state of multi-dependency triggers.
    pub fn conditions(&self) -> ConditionStore {
        ConditionStore::new(self.inner.conditions.clone(), self.inner.names.clone())
    }

    /// The dead-letter stream.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.inner.js.clone(), self.inner.names.clone())
    }

    /// The lease that picks the replica running singleton sources.
    pub fn lease(&self, key: &str) -> Lease {
        Lease::new(
            self.inner.leases.clone(),
            key,
            &self.inner.options.replica_id,
            self.inner.options.lease_ttl,
        )
    }

    fn js(&self) -> &Context {
        &self.inner.js
    }
}

fn events_stream_config(names: &Names, o: &JetStreamOptions) -> stream::Config {
    stream::Config {
        name: names.events_stream(),
        subjects: vec![names.events_subjects()],
        description: Some("triggerd: events on their way to sensors".into()),
        retention: match o.retention {
            Retention::Interest => RetentionPolicy::Interest,
            Retention::Limits => RetentionPolicy::Limits,
            Retention::Workqueue => RetentionPolicy::WorkQueue,
        },
        discard: match o.discard {
            Discard::New => DiscardPolicy::New,
            Discard::Old => DiscardPolicy::Old,
        },
        max_age: o.max_age,
        max_bytes: o.max_bytes,
        max_messages: -1,
        storage: StorageType::File,
        num_replicas: o.replicas,
        duplicate_window: if o.max_age.is_zero() {
            o.dedup_window
        } else {
            o.dedup_window.min(o.max_age)
        },
        ..Default::default()
    }
}

fn dlq_stream_config(names: &Names, o: &JetStreamOptions) -> stream::Config {
    stream::Config {
        name: names.dlq_stream(),
        subjects: vec![names.dlq_subjects()],
        description: Some("triggerd: dead letters (triggerd dlq list / replay)".into()),
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: DLQ_MAX_AGE,
        max_messages: -1,
        max_bytes: -1,
        storage: StorageType::File,
        num_replicas: o.replicas,
        ..Default::default()
    }
}

async fn ensure_stream(js: &Context, config: stream::Config) -> Result<(), BusError> {
    let what = format!("stream {}", config.name);
    match js.get_stream(&config.name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| BusError::setup(&what, e))?;
            if info.config.retention != config.retention {
                tracing::warn!(
                    stream = %config.name,
                    "the stream exists with another retention policy, which JetStream cannot change; keeping it"
                );
            }
            let mut wanted = info.config.clone();
            wanted.max_age = config.max_age;
            wanted.max_bytes = config.max_bytes;
            wanted.discard = config.discard;
            wanted.duplicate_window = config.duplicate_window;
            wanted.num_replicas = config.num_replicas;
            if wanted != info.config {
                js.update_stream(&wanted)
                    .await
                    .map_err(|e| BusError::setup(&what, e))?;
            }
            Ok(())
        }
        Err(_) => js
            .create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| BusError::setup(&what, e)),
    }
}

/// Opens a key-value bucket (history 1), creating its stream first when missing. The
/// stream is made here, following the key-value conventions (`KV_<bucket>`, subjects
/// `$KV.<bucket>.>`, one message per key, rollups, direct get), because the client's own
/// bucket creation first queries account limits in a form 2.9 servers do not answer.
async fn ensure_bucket(
    js: &Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    let what = format!("key-value bucket {bucket}");
    if js.get_stream(format!("KV_{bucket}")).await.is_err() {
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            max_age,
            storage: StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        js.create_stream(config)
            .await
            .map_err(|e| BusError::setup(&what, e))?;
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| BusError::setup(&what, e))
}

/// What a sensor keeps on the durable bus: shared condition state and dead letters.
#[derive(Debug, Clone)]
pub struct Durable {
    /// Partial condition state of multi-dependency triggers.
    pub conditions: ConditionStore,
    /// Where failed executions are recorded.
    pub dead_letters: DeadLetters,
    /// This replica's name, stamped on dead letters.
    pub replica: String,
}

impl JetStreamBus {
    /// The stores a sensor uses on this bus.
    pub fn durable(&self) -> Durable {
        Durable {
            conditions: self.conditions(),
            dead_letters: self.dead_letters(),
            replica: self.inner.options.replica_id.clone(),
        }
    }
}
