//! The Kafka source: records of a topic become events, read through a consumer group.
//!
//! Event data follows Argo's Kafka source: `{topic, partition, offset, key, headers,
//! timestamp, value, metadata}`; `headers` maps each header name to its (last) value as text,
//! `value` is the parsed JSON with `jsonBody`, else the text as received.
//!
//! At least once: offsets are committed by hand, and a record's offset only after the bus
//! accepted its event, so a crash or a full bus leads to redelivery, never to loss. Records are
//! handled one at a time, which keeps each partition's order. An event's id is
//! `<topic>-<partition>-<offset>`, stable across redeliveries, so the bus recognises a
//! redelivered record as a duplicate within its window.
//!
//! Without `consumerGroup` the group id is `triggerd.<EventSource>.<event>`: stable, so a
//! restarted agent resumes where it stopped; a new group starts at the newest record, as
//! Argo's partition reader does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value};

use super::SourceContext;
use crate::backoff::Backoff;
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{KafkaEvent, Spanned};
use crate::secret::SecretStore;
use crate::telemetry::SourceTelemetry;

/// How long one start-up check waits for the topic's metadata, and shutdown for the last
/// commit.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which partitions are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// All of them, shared with the other members of the group.
    Group {
        /// `partition.assignment.strategy`.
        strategy: &'static str,
    },
    /// Only this one (Argo's mode without `consumerGroup`).
    Partition(i32),
}

/// A compiled Kafka event.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub url: String,
    /// Topic to read.
    pub topic: String,
    /// Group id; `None` for the generated one.
    pub group: Option<String>,
    /// A group without committed offsets starts at the oldest record.
    pub oldest: bool,
    /// Group or single partition.
    pub assignment: Assignment,
    /// Attempts and delays of the start-up check.
    pub backoff: Backoff,
    /// Parse values as JSON.
    pub json_body: bool,
    /// TLS and SASL towards the brokers.
    pub security: crate::kafka_client::KafkaSecurity,
}

impl KafkaConfig {
    /// Checks one Kafka event.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        k: &Spanned<KafkaEvent>,
    ) -> Option<Self> {
        let loc = Some(&k.referenced);
        let k = &k.value;
        let before = ctx.errors.len();
        if k.url.value.trim().is_empty() {
            ctx.error_with_hint(
                Some(&k.url.referenced),
                format!("{field}.url"),
                "url is empty",
                "bootstrap servers, e.g. 127.0.0.1:9092",
            );
        }
        if k.topic.trim().is_empty() {
            ctx.error(loc, format!("{field}.topic"), "topic is empty");
        }
        let unsupported = [
            (
                "limitEventsPerSecond",
                k.limit_events_per_second.as_ref(),
                "not supported yet; rate-limit the triggers instead (`rateLimit`)",
            ),
            (
                "config",
                k.config.as_ref(),
                "Sarama's YAML configuration does not apply to triggerd's client; remove it",
            ),
            (
                "schemaRegistry",
                k.schema_registry.as_ref(),
                "Avro/schema registry decoding is not supported; values are read as JSON or text",
            ),
        ];
        for (name, value, hint) in unsupported {
            if let Some(v) = value {
                ctx.error_with_hint(
                    Some(&v.referenced),
                    format!("{field}.{name}"),
                    format!("{name} is not supported"),
                    hint,
                );
            }
        }
        let security = crate::kafka_client::KafkaSecurity::compile(
            ctx,
            field,
            k.tls.as_ref(),
            k.sasl.as_ref(),
        );
        let (group, oldest, assignment) = match (&k.consumer_group, &k.partition) {
            (Some(_), Some(p)) => {
                ctx.error_with_hint(
                    Some(&p.referenced),
                    format!("{field}.partition"),
                    "partition and consumerGroup exclude each other",
                    "a consumer group reads every partition of the topic; remove partition",
                );
                (None, false, None)
            }
            (Some(g), None) => {
                let at = Some(&g.referenced);
                let g = &g.value;
                if g.group_name.trim().is_empty() {
                    ctx.error(
                        at,
                        format!("{field}.consumerGroup.groupName"),
                        "groupName is empty",
                    );
                }
                let strategy = match g.rebalance_strategy.as_deref().unwrap_or("range") {
                    "range" => Some("range"),
                    "roundrobin" => Some("roundrobin"),
                    "sticky" => Some("cooperative-sticky"),
                    other => {
                        ctx.error_with_hint(
                            at,
                            format!("{field}.consumerGroup.rebalanceStrategy"),
                            format!("unknown rebalanceStrategy {other:?}"),
                            "one of range, roundrobin, sticky",
                        );
                        None
                    }
                };
                (
                    Some(g.group_name.trim().to_owned()),
                    g.oldest,
                    strategy.map(|strategy| Assignment::Group { strategy }),
                )
            }
            (None, Some(p)) => {
                let partition = p
                    .value
                    .as_string()
                    .trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|n| *n >= 0);
                if partition.is_none() {
                    ctx.error_with_hint(
                        Some(&p.referenced),
                        format!("{field}.partition"),
                        format!("invalid partition {:?}", p.value.as_string()),
                        "a partition number such as \"0\", or a consumerGroup to read them all",
                    );
                }
                (None, false, partition.map(Assignment::Partition))
            }
            (None, None) => (None, false, Some(Assignment::Group { strategy: "range" })),
        };
        let backoff = Backoff::compile(
            ctx,
            &format!("{field}.connectionBackoff"),
            k.connection_backoff.as_ref(),
        );
        if ctx.errors.len() > before {
            return None;
        }
        Some(Self {
            url: k.url.value.trim().to_owned(),
            topic: k.topic.trim().to_owned(),
            group,
            oldest,
            assignment: assignment?,
            backoff: backoff?,
            json_body: k.json_body,
            security,
        })
    }

    /// The group id offsets are committed under.
    pub fn group_id(&self, event_source: &str, event_name: &str) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("triggerd.{event_source}.{event_name}"))
    }
}

impl super::Section for KafkaConfig {
    const KEY: &'static str = "kafka";
    type Manifest = KafkaEvent;

    fn shared(event: &KafkaEvent) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<KafkaEvent>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(|c| super::SourceKind::Kafka(Box::new(c)))
    }
}

/// Creates the consumer, checks that the broker answers and the topic exists (retried on
/// `connectionBackoff`) and starts reading; an error here fails start-up, naming the event.
pub(super) async fn subscribe(
    config: &KafkaConfig,
    event_source: &str,
    event_name: &str,
    secrets: &SecretStore,
) -> anyhow::Result<SourceConsumer> {
    let what = format!("EventSource {event_source}, kafka event {event_name}");
    let group = config.group_id(event_source, event_name);
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.url)
        .set("group.id", &group)
        .set("client.id", format!("triggerd/{event_source}/{event_name}"))
        // Offsets are stored after the bus accepted an event and committed by hand.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if config.oldest { "earliest" } else { "latest" },
        );
    if let Assignment::Group { strategy } = config.assignment {
        client.set("partition.assignment.strategy", strategy);
    }
    let read = config
        .security
        .read_secrets(secrets)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    config.security.apply(&mut client, &read);
    let mut consumer: SourceConsumer = client
        .create_with_context(ErrorMemo::default())
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    // Wait for the broker and the topic, retrying on `connectionBackoff`.
    let steps = config.backoff.steps.max(1);
    let mut attempt = 1;
    let partitions = loop {
        let (back, checked) = check_topic(consumer, &config.topic).await?;
        consumer = back;
        let problem = match checked {
            Ok(0) => format!(
                "topic {} does not exist on {} (topics are not created by triggerd)",
                config.topic, config.url
            ),
            Ok(n) => break n,
            Err(e) => match consumer.context().last() {
                Some(reported) => format!("cannot reach {}: {e} ({reported})", config.url),
                None => format!("cannot reach {}: {e}", config.url),
            },
        };
        if attempt >= steps {
            anyhow::bail!("{what}: {problem}, after {attempt} attempt(s)");
        }
        let delay = config.backoff.delay(attempt + 1);
        tracing::warn!(event_source, event_name, attempt, problem, retry_in = ?delay, "Kafka source not ready");
        tokio::time::sleep(delay).await;
        attempt += 1;
    };
    match config.assignment {
        Assignment::Group { .. } => consumer.subscribe(&[&config.topic]),
        Assignment::Partition(p) => {
            if usize::try_from(p).unwrap_or(usize::MAX) >= partitions {
                anyhow::bail!(
                    "{what}: topic {} has {partitions} partition(s), no partition {p}",
                    config.topic
                );
            }
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&config.topic, p, Offset::Stored)
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            consumer.assign(&list)
        }
    }
    .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    tracing::info!(event_source, event_name, topic = %config.topic, group = %group, url = %config.url, "Kafka source subscribed");
    Ok(consumer)
}

/// The consumer of a Kafka source, remembering what librdkafka reported on its own.
pub(super) type SourceConsumer = StreamConsumer<ErrorMemo>;

/// Keeps the last error librdkafka reported outside any request (a refused SASL login, a
/// TLS failure): a metadata request that then only times out is explained by it.
#[derive(Default)]
pub(super) struct ErrorMemo {
    // Locked only to swap a string, never across an await.
    #[allow(clippy::disallowed_types)]
    last: std::sync::Mutex<Option<String>>,
}

impl ErrorMemo {
    fn last(&self) -> Option<String> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

impl rdkafka::ClientContext for ErrorMemo {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "librdkafka reported an error");
        if let Ok(mut last) = self.last.lock() {
            *last = Some(reason.to_owned());
        }
    }
}

impl ConsumerContext for ErrorMemo {}

/// The number of partitions of `topic` (0 when it does not exist). Metadata requests block,
/// so this runs on a blocking thread, bounded by BROKER_TIMEOUT; the consumer comes back.
async fn check_topic(
    consumer: SourceConsumer,
    topic: &str,
) -> anyhow::Result<(SourceConsumer, rdkafka::error::KafkaResult<usize>)> {
    let topic = topic.to_owned();
    let checked = tokio::task::spawn_blocking(move || {
        let partitions = consumer
            .fetch_metadata(Some(&topic), BROKER_TIMEOUT)
            .map(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len())
            });
        (consumer, partitions)
    })
    .await?;
    Ok(checked)
}

/// Reads records until shutdown, publishing each event with back-pressure and committing its
/// offset once the bus accepted it.
pub(super) async fn run(
    config: KafkaConfig,
    shared: super::SharedSettings,
    event_source: String,
    event_name: String,
    consumer: SourceConsumer,
    ctx: SourceContext,
) {
    let source = Source {
        telemetry: SourceTelemetry::new(&ctx.metrics, &event_source, &event_name),
        metadata: serde_json::to_value(&shared.metadata).unwrap_or(Value::Null),
        filter: shared.filter,
        config,
        ctx,
    };
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            () = source.ctx.shutdown.cancelled() => break,
        };
        let (event, position) = match message {
            Ok(m) => (
                source.event(&m),
                (m.topic().to_owned(), m.partition(), m.offset()),
            ),
            Err(e) => {
                // The broker went away or a fetch failed: the client keeps trying.
                tracing::warn!(%event_source, %event_name, error = %e, "Kafka consumer error");
                continue;
            }
        };
        if source.publish(event).await.is_err() {
            break;
        }
        let (topic, partition, offset) = position;
        let mut next = TopicPartitionList::new();
        let stored = next
            .add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
            .and_then(|()| consumer.store_offsets(&next))
            .and_then(|()| consumer.commit_consumer_state(CommitMode::Async));
        if let Err(e) = stored {
            tracing::warn!(%event_source, %event_name, %topic, partition, offset, error = %e, "Kafka offset commit failed; the record may be delivered again");
        }
    }
    // Commit what was accepted, then leave the group so a successor gets the partitions at
    // once. Both block, so they run on their own thread; shutdown waits for them at most
    // BROKER_TIMEOUT.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let committed = match consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing was stored since the last commit.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => Ok(()),
            other => other,
        };
        drop(consumer);
        let _ = tx.send(committed);
    });
    match tokio::time::timeout(BROKER_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => {
            tracing::debug!(%event_source, %event_name, "Kafka offsets committed, group left")
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(%event_source, %event_name, error = %e, "final Kafka offset commit failed; records after the last commit will be delivered again")
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(%event_source, %event_name, "final Kafka offset commit did not finish in time; records after the last commit may be delivered again")
        }
    }
}

struct Source {
    telemetry: SourceTelemetry,
    config: KafkaConfig,
    /// The manifest's `metadata`, as it goes into every event's data.
    metadata: Value,
    filter: Option<super::EventSourceFilter>,
    ctx: SourceContext,
}

impl Source {
    /// Builds the event of one record.
    fn event(&self, m: &BorrowedMessage<'_>) -> Event {
        let payload = m.payload().unwrap_or_default();
        let text = || Value::String(String::from_utf8_lossy(payload).into_owned());
        let value = if payload.is_empty() {
            Value::Null
        } else if self.config.json_body {
            serde_json::from_slice(payload).unwrap_or_else(|e| {
                tracing::warn!(event_source = %self.telemetry.event_source(), event_name = %self.telemetry.event_name(), error = %e, "jsonBody is set but the record is not JSON; kept as text");
                text()
            })
        } else {
            text()
        };
        let mut headers = Map::new();
        for h in m.headers().into_iter().flat_map(|h| h.iter()) {
            let v = h.value.map_or(Value::Null, |v| {
                String::from_utf8_lossy(v).into_owned().into()
            });
            headers.insert(h.key.to_owned(), v);
        }
        let time = m
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        let mut data = Map::new();
        data.insert("topic".into(), m.topic().into());
        data.insert("partition".into(), m.partition().into());
        data.insert("offset".into(), m.offset().into());
        data.insert(
            "key".into(),
            m.key().map_or(Value::Null, |k| {
                String::from_utf8_lossy(k).into_owned().into()
            }),
        );
        data.insert("headers".into(), Value::Object(headers));
        data.insert(
            "timestamp".into(),
            time.map_or(Value::Null, |t| t.to_rfc3339().into()),
        );
        data.insert("value".into(), value);
        data.insert("metadata".into(), self.metadata.clone());
        let mut event = Event::new(
            self.telemetry.event_source(),
            self.telemetry.event_name(),
            "kafka",
            Value::Object(data),
            bytes::Bytes::copy_from_slice(payload),
        );
        event.id = format!("{}-{}-{}", m.topic(), m.partition(), m.offset());
        if let Some(t) = time {
            event.time = t;
        }
        event
    }

    /// Publishes with back-pressure (see [`SourceContext::publish_waiting`]).
    async fn publish(&self, event: Event) -> Result<(), super::Stopped> {
        self.ctx
            .publish_waiting(&self.telemetry, self.filter.as_ref(), event)
            .await
    }
}
