//! The NATS source: messages on a subject become events, from a core subscription (optionally
//! in a queue group) or a JetStream durable consumer.
//!
//! Event data follows Argo's NATS source: `{subject, header, body, metadata}`; `header` maps
//! each header name to its list of values. `body` is the parsed JSON with `jsonBody`, else
//! the text as received (not base64, unlike Argo, as for webhooks).
//!
//! A JetStream message is acknowledged only after the bus accepted its event, so a crash or
//! a full bus leads to redelivery, never to loss. Its event id is `<stream>-<sequence>` (or
//! the publisher's `Nats-Msg-Id`), stable across redeliveries, so the bus recognises a
//! redelivered message as a duplicate within its window.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::AckKind;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::SourceContext;
use crate::backoff::{parse_duration, Backoff};
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{NatsEvent, Spanned};
use crate::nats_client::{auth_problem, tls_problem, NatsConnection};
use crate::secret::mask_url;
use crate::telemetry::SourceTelemetry;

/// How messages are received.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A core subscription, in a queue group when one is named.
    Core {
        /// Queue group shared by replicas.
        queue: Option<String>,
    },
    /// A durable pull consumer on a stream.
    JetStream(JetStreamSettings),
}

/// A compiled `jetStream` section.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamSettings {
    /// Stream name.
    pub stream: String,
    /// Durable consumer name.
    pub durable: String,
    /// Where a new consumer starts.
    pub deliver_from: DeliverFrom,
    /// Redelivery delay of unacknowledged messages.
    pub ack_wait: Duration,
    /// Deliveries per message (-1: unlimited).
    pub max_deliver: i64,
}

/// Where a new durable consumer starts reading its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverFrom {
    /// Every message the stream holds.
    All,
    /// Only messages published after the consumer was created.
    New,
    /// The last message, then new ones.
    Last,
}

/// A compiled NATS event.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server and credentials.
    pub connection: NatsConnection,
    /// Subject (wildcards allowed).
    pub subject: String,
    /// Parse bodies as JSON.
    pub json_body: bool,
    /// Core or JetStream.
    pub delivery: Delivery,
}

impl NatsConfig {
    /// Checks one NATS event.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        n: &Spanned<NatsEvent>,
    ) -> Option<Self> {
        let loc = Some(&n.referenced);
        let n = &n.value;
        let mut ok = true;
        if n.url.trim().is_empty() {
            ctx.error_with_hint(
                loc,
                format!("{field}.url"),
                "url is empty",
                "e.g. nats://127.0.0.1:4222",
            );
            ok = false;
        }
        if n.subject.trim().is_empty() {
            ctx.error(loc, format!("{field}.subject"), "subject is empty");
            ok = false;
        }
        if let Some((sub, problem, hint)) = n.tls.as_ref().and_then(tls_problem) {
            ctx.error_with_hint(loc, format!("{field}.tls.{sub}"), problem, hint);
            ok = false;
        }
        if let Some(problem) = n.auth.as_ref().and_then(auth_problem) {
            ctx.error(loc, format!("{field}.auth"), problem);
            ok = false;
        }
        let backoff = Backoff::compile(
            ctx,
            &format!("{field}.connectionBackoff"),
            n.connection_backoff.as_ref(),
        );
        let delivery = match &n.jet_stream {
            None => Some(Delivery::Core {
                queue: n.queue.clone(),
            }),
            Some(js) => {
                if n.queue.is_some() {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.queue"),
                        "queue applies to core subscriptions only",
                        "replicas sharing a JetStream durable consumer already split its messages",
                    );
                    ok = false;
                }
                jet_stream(ctx, &format!("{field}.jetStream"), js).map(Delivery::JetStream)
            }
        };
        let (backoff, delivery) = (backoff?, delivery?);
        ok.then(|| Self {
            connection: NatsConnection {
                url: n.url.trim().to_owned(),
                auth: n.auth.clone(),
                tls: n.tls.clone(),
                backoff,
            },
            subject: n.subject.clone(),
            json_body: n.json_body,
            delivery,
        })
    }
}

impl super::Section for NatsConfig {
    const KEY: &'static str = "nats";
    type Manifest = NatsEvent;

    fn shared(event: &NatsEvent) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<NatsEvent>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(|c| super::SourceKind::Nats(Box::new(c)))
    }
}

fn jet_stream(
    ctx: &mut CompileContext<'_>,
    field: &str,
    js: &Spanned<crate::manifest::JetStreamConsumer>,
) -> Option<JetStreamSettings> {
    let loc = Some(&js.referenced);
    let js = &js.value;
    let deliver_from = match js.deliver_policy.as_deref().unwrap_or("all") {
        "all" => DeliverFrom::All,
        "new" => DeliverFrom::New,
        "last" => DeliverFrom::Last,
        other => {
            ctx.error_with_hint(
                loc,
                format!("{field}.deliverPolicy"),
                format!("unknown deliverPolicy {other:?}"),
                "one of all, new, last",
            );
            return None;
        }
    };
    let ack_wait = match js.ack_wait.as_deref().map(parse_duration) {
        None => Duration::from_secs(30),
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            ctx.error_with_hint(
                loc,
                format!("{field}.ackWait"),
                format!("invalid ackWait {:?}", js.ack_wait.as_deref().unwrap_or("")),
                "use a Go duration such as 30s",
            );
            return None;
        }
    };
    if js.stream.is_empty() || js.durable.is_empty() {
        ctx.error(loc, field, "stream and durable must not be empty");
        return None;
    }
    Some(JetStreamSettings {
        stream: js.stream.clone(),
        durable: js.durable.clone(),
        deliver_from,
        ack_wait,
        max_deliver: js.max_deliver.filter(|m| *m > 0).unwrap_or(-1),
    })
}

/// A subscription that is open: messages already flow to it.
pub(super) enum Receiver {
    Core(async_nats::Subscriber),
    JetStream(Box<pull::Stream>),
}

/// Connects and subscribes; an error here fails start-up, naming the event.
pub(super) async fn subscribe(
    config: &NatsConfig,
    event_source: &str,
    event_name: &str,
    ctx: &SourceContext,
) -> anyhow::Result<(Client, Receiver)> {
    let what = format!("EventSource {event_source}, nats event {event_name}");
    let secrets = config
        .connection
        .read_secrets(&ctx.secrets)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let client = config
        .connection
        .connect(&format!("{event_source}/{event_name}"), &secrets)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let receiver = match &config.delivery {
        Delivery::Core { queue: None } => Receiver::Core(
            client
                .subscribe(config.subject.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{what}: subscribe to {}: {e}", config.subject))?,
        ),
        Delivery::Core { queue: Some(q) } => Receiver::Core(
            client
                .queue_subscribe(config.subject.clone(), q.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{what}: subscribe to {}: {e}", config.subject))?,
        ),
        Delivery::JetStream(js) => Receiver::JetStream(Box::new(
            consume(&client, &config.subject, js).await.map_err(|e| {
                anyhow::anyhow!(
                    "{what}: JetStream stream {} consumer {}: {e}",
                    js.stream,
                    js.durable
                )
            })?,
        )),
    };
    // Make sure the server has the subscription before the agent reports ready.
    client
        .flush()
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    tracing::info!(event_source, event_name, subject = %config.subject, url = %mask_url(&config.connection.url), "NATS source subscribed");
    Ok((client, receiver))
}

async fn consume(
    client: &Client,
    subject: &str,
    js: &JetStreamSettings,
) -> Result<pull::Stream, async_nats::Error> {
    let context = async_nats::jetstream::new(client.clone());
    let stream = context.get_stream(&js.stream).await?;
    let consumer = stream
        .get_or_create_consumer(
            &js.durable,
            pull::Config {
                durable_name: Some(js.durable.clone()),
                filter_subject: subject.to_owned(),
                deliver_policy: match js.deliver_from {
                    DeliverFrom::All => DeliverPolicy::All,
                    DeliverFrom::New => DeliverPolicy::New,
                    DeliverFrom::Last => DeliverPolicy::Last,
                },
                ack_policy: AckPolicy::Explicit,
                ack_wait: js.ack_wait,
                max_deliver: js.max_deliver,
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer.messages().await?)
}

/// Receives messages until shutdown, publishing each event with back-pressure.
pub(super) async fn run(
    config: NatsConfig,
    shared: super::SharedSettings,
    event_source: String,
    event_name: String,
    client: Client,
    receiver: Receiver,
    ctx: SourceContext,
) {
    let source = Source {
        telemetry: SourceTelemetry::new(&ctx.metrics, &event_source, &event_name),
        metadata: serde_json::to_value(&shared.metadata).unwrap_or(Value::Null),
        filter: shared.filter,
        config,
        ctx,
    };
    match receiver {
        Receiver::Core(mut sub) => loop {
            let message = tokio::select! {
                m = sub.next() => m,
                () = source.ctx.shutdown.cancelled() => break,
            };
            let Some(m) = message else {
                tracing::error!(%event_source, %event_name, "NATS subscription closed");
                break;
            };
            let event = source.event(&m.subject, m.headers.as_ref(), m.payload, None);
            if source.publish(event).await.is_err() {
                break;
            }
        },
        Receiver::JetStream(mut messages) => loop {
            let message = tokio::select! {
                m = messages.next() => m,
                () = source.ctx.shutdown.cancelled() => break,
            };
            let m = match message {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // Heartbeats missed or the connection dropped: the client keeps trying.
                    tracing::warn!(%event_source, %event_name, error = %e, "JetStream consumer error");
                    continue;
                }
                None => {
                    tracing::error!(%event_source, %event_name, "JetStream consumer closed");
                    break;
                }
            };
            let position = m.info().ok().map(|i| {
                (
                    format!("{}-{}", i.stream, i.stream_sequence),
                    DateTime::<Utc>::from_timestamp_nanos(
                        i64::try_from(i.published.unix_timestamp_nanos()).unwrap_or(0),
                    ),
                )
            });
            let event = source.event(&m.subject, m.headers.as_ref(), m.payload.clone(), position);
            let accepted = source.publish(event).await;
            let ack = match accepted {
                Ok(()) => m.ack().await,
                // Shutting down: hand the message back for another replica or the next run.
                Err(super::Stopped) => m.ack_with(AckKind::Nak(None)).await,
            };
            if let Err(e) = ack {
                tracing::warn!(%event_source, %event_name, error = %e, "JetStream acknowledgement failed; the message will be redelivered");
            }
            if accepted.is_err() {
                break;
            }
        },
    }
    // Leave the subscription cleanly so the server stops sending at once.
    if let Err(e) = client.drain().await {
        tracing::debug!(%event_source, %event_name, error = %e, "NATS drain");
    }
}

struct Source {
    telemetry: SourceTelemetry,
    config: NatsConfig,
    /// The manifest's `metadata`, as it goes into every event's data.
    metadata: Value,
    filter: Option<super::EventSourceFilter>,
    ctx: SourceContext,
}

impl Source {
    /// Builds the event of one message; `position` is the JetStream id and publish time.
    fn event(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        position: Option<(String, DateTime<Utc>)>,
    ) -> Event {
        let body = if payload.is_empty() {
            Value::Null
        } else if self.config.json_body {
            serde_json::from_slice(&payload).unwrap_or_else(|e| {
                tracing::warn!(event_source = %self.telemetry.event_source(), event_name = %self.telemetry.event_name(), error = %e, "jsonBody is set but the message is not JSON; kept as text");
                Value::String(String::from_utf8_lossy(&payload).into_owned())
            })
        } else {
            Value::String(String::from_utf8_lossy(&payload).into_owned())
        };
        let mut header = Map::new();
        let mut msg_id = None;
        for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case("Nats-Msg-Id") {
                msg_id = values.first().map(|v| v.as_str().to_owned());
            }
            header.insert(
                name.to_owned(),
                values.iter().map(|v| Value::from(v.as_str())).collect(),
            );
        }
        let mut data = Map::new();
        data.insert("subject".into(), subject.into());
        data.insert("header".into(), Value::Object(header));
        data.insert("body".into(), body);
        data.insert("metadata".into(), self.metadata.clone());
        let mut event = Event::new(
            self.telemetry.event_source(),
            self.telemetry.event_name(),
            "nats",
            Value::Object(data),
            payload,
        );
        if let Some((id, time)) = position {
            event.id = id;
            event.time = time;
        }
        if let Some(id) = msg_id {
            event.id = id;
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
