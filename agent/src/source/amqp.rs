//! The AMQP source: a queue bound to an exchange on a RabbitMQ (AMQP 0-9-1) broker; each
//! message becomes an event.
//!
//! Event data follows Argo's AMQP source: the message properties (`contentType`,
//! `contentEncoding`, `deliveryMode`, `priority`, `correlationId`, `replyTo`, `expiration`,
//! `messageId`, `timestamp` as RFC 3339, `type`, `appId`), `exchange`, `routingKey`, and
//! triggerd's `headers` (the header table as JSON), `body` (parsed JSON with `jsonBody`, else
//! text) and `metadata`. The event id is the publisher's `messageId` when it set one, so a
//! redelivered message is deduplicated.
//!
//! At least once: each message is acknowledged only after the bus accepted its event; one
//! the bus refused is rejected with requeue after a pause, so the broker delivers it again,
//! and one in flight when the agent stops is delivered again to the next consumer. At most
//! `prefetch` messages are unacknowledged at a time, which bounds memory. `consume.autoAck:
//! true` acknowledges each message when it arrives instead (at most once; `validate` warns).
//! Declaring the exchange, queue and binding is Argo's: the exchange with `exchangeDeclare`,
//! the queue with `queueDeclare` (Argo's default is a server-named exclusive queue, which
//! the broker deletes when the connection closes; name a durable queue to keep messages
//! while the agent is down).

use std::time::Duration;

use chrono::DateTime;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, Consumer, ExchangeKind};
use serde_json::{Map, Value};

use super::SourceContext;
use crate::amqp_client::{
    arguments_table, compile_connection_fields, exchange_declare_options, exchange_kind,
    is_access_refused, short_string, table_to_json, AmqpConnectError, AmqpConnection,
};
use crate::backoff::Backoff;
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{AmqpEvent as AmqpManifest, Spanned};
use crate::telemetry::SourceTelemetry;

/// Unacknowledged messages the broker may send ahead, unless `prefetch` says otherwise.
const DEFAULT_PREFETCH: u16 = 64;
/// Longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// How the queue is declared.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Queue name; empty: the broker names one.
    pub name: String,
    /// Declare options.
    pub options: QueueDeclareOptions,
    /// `x-` arguments.
    pub arguments: FieldTable,
}

/// A compiled AMQP event.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Broker, credentials and TLS.
    pub connection: AmqpConnection,
    /// Exchange the queue is bound to.
    pub exchange: String,
    /// Its type.
    pub exchange_kind: ExchangeKind,
    /// How it is declared.
    pub exchange_options: ExchangeDeclareOptions,
    /// Binding key.
    pub routing_key: String,
    /// The queue.
    pub queue: QueueSettings,
    /// `queueBind.noWait`.
    pub bind_no_wait: bool,
    /// Consumer tag; `None`: derived from the names.
    pub consumer_tag: Option<String>,
    /// Consume options (`no_ack` is always false: see `auto_ack`).
    pub consume_options: BasicConsumeOptions,
    /// Acknowledge on arrival (at most once) instead of after the bus took the event.
    pub auto_ack: bool,
    /// basic.qos prefetch count.
    pub prefetch: u16,
    /// Parse bodies as JSON.
    pub json_body: bool,
    /// Attempts and delays of the first connection; later reconnections use its delays.
    pub backoff: Backoff,
}

impl AmqpConfig {
    /// Checks one AMQP event, naming each field that is wrong.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        m: &Spanned<AmqpManifest>,
    ) -> Option<Self> {
        let loc = Some(&m.referenced);
        let m = &m.value;
        let before = ctx.errors.len();
        let url = compile_connection_fields(
            ctx,
            loc,
            field,
            m.url.as_deref(),
            m.url_secret.as_ref(),
            m.tls.as_ref(),
        );
        let short = |ctx: &mut CompileContext<'_>, name: &str, value: &str| {
            if let Err(p) = short_string(name, value) {
                ctx.error(loc, format!("{field}.{name}"), p);
            }
        };
        if m.exchange_name.trim().is_empty() {
            ctx.error_with_hint(
                loc,
                format!("{field}.exchangeName"),
                "exchangeName is empty",
                "name the exchange to bind the queue to; the default exchange cannot be bound",
            );
        }
        short(ctx, "exchangeName", &m.exchange_name);
        short(ctx, "routingKey", &m.routing_key);
        let kind = exchange_kind(&m.exchange_type)
            .map_err(|p| ctx.error(loc, format!("{field}.exchangeType"), p))
            .ok();
        let queue = m.queue_declare.clone();
        if let Some(q) = &queue {
            short(ctx, "queueDeclare.name", &q.name);
        }
        let arguments = queue
            .as_ref()
            .map_or(Ok(FieldTable::default()), |q| arguments_table(&q.arguments))
            .map_err(|p| ctx.error(loc, format!("{field}.queueDeclare.arguments"), p))
            .ok();
        let consume = m.consume.clone().unwrap_or_default();
        if let Some(tag) = &consume.consumer_tag {
            short(ctx, "consume.consumerTag", tag);
        }
        let prefetch = match m.prefetch {
            None => Some(DEFAULT_PREFETCH),
            Some(n) => u16::try_from(n).ok().filter(|n| *n > 0).or_else(|| {
                ctx.error(
                    loc,
                    format!("{field}.prefetch"),
                    format!("prefetch {n} is not between 1 and 65535"),
                );
                None
            }),
        };
        let backoff = Backoff::compile(
            ctx,
            &format!("{field}.connectionBackoff"),
            m.connection_backoff.as_ref(),
        );
        if ctx.errors.len() > before {
            return None;
        }
        // Argo's default queue: server-named and exclusive.
        let (name, options) = queue.map_or(
            (
                String::new(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
            ),
            |q| {
                (
                    q.name,
                    QueueDeclareOptions {
                        passive: false,
                        durable: q.durable,
                        exclusive: q.exclusive,
                        auto_delete: q.auto_delete,
                        nowait: q.no_wait,
                    },
                )
            },
        );
        Some(Self {
            connection: AmqpConnection {
                url: url?,
                auth: m.auth.clone(),
                tls: m.tls.clone(),
                name: String::new(),
            },
            exchange: m.exchange_name.clone(),
            exchange_kind: kind?,
            exchange_options: exchange_declare_options(m.exchange_declare.as_ref()),
            routing_key: m.routing_key.clone(),
            queue: QueueSettings {
                name,
                options,
                arguments: arguments?,
            },
            bind_no_wait: m.queue_bind.as_ref().is_some_and(|b| b.no_wait),
            consumer_tag: consume.consumer_tag.clone(),
            consume_options: BasicConsumeOptions {
                no_local: consume.no_local,
                no_ack: false,
                exclusive: consume.exclusive,
                nowait: consume.no_wait,
            },
            auto_ack: consume.auto_ack.unwrap_or(false),
            prefetch: prefetch?,
            json_body: m.json_body,
            backoff: backoff?,
        })
    }
}

impl super::Section for AmqpConfig {
    const KEY: &'static str = "amqp";
    type Manifest = AmqpManifest;

    fn shared(event: &AmqpManifest) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<AmqpManifest>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(|c| super::SourceKind::Amqp(Box::new(c)))
    }
}

/// A connection with its consumer.
pub(super) struct Consuming {
    /// Kept so the connection stays open while consuming.
    _connection: Connection,
    consumer: Consumer,
}

/// Why one setup attempt failed.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error(transparent)]
    Connect(#[from] AmqpConnectError),
    #[error("{step}: {source}")]
    Broker {
        step: &'static str,
        #[source]
        source: lapin::Error,
    },
}

impl SetupError {
    /// A refusal of the declarations themselves (an exchange of another type, access to the
    /// queue) needs the manifest or the broker changed; a lost connection does not.
    fn is_retryable(&self) -> bool {
        match self {
            SetupError::Connect(e) => e.is_retryable(),
            SetupError::Broker { source, .. } => {
                !is_access_refused(source) && !source.is_amqp_soft_error()
            }
        }
    }
}

/// Connects, declares and starts consuming, retrying on `connectionBackoff`; an error here
/// fails start-up, naming the event.
pub(super) async fn connect(
    config: &AmqpConfig,
    event_source: &str,
    event_name: &str,
    ctx: &SourceContext,
) -> anyhow::Result<Consuming> {
    let what = format!("EventSource {event_source}, amqp event {event_name}");
    let steps = config.backoff.steps.max(1);
    let mut attempt = 1;
    loop {
        let e = match setup(config, event_source, event_name, ctx).await {
            Ok(c) => {
                tracing::info!(event_source, event_name, exchange = %config.exchange, routing_key = %config.routing_key, url = %config.connection.display_url(), "AMQP source consuming");
                return Ok(c);
            }
            Err(e) => e,
        };
        if !e.is_retryable() || attempt >= steps {
            anyhow::bail!("{what}: {e} (after {attempt} attempt(s))");
        }
        let delay = config.backoff.delay(attempt + 1);
        tracing::warn!(event_source, event_name, url = %config.connection.display_url(), attempt, error = %e, retry_in = ?delay, "AMQP connection failed");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.shutdown.cancelled() => anyhow::bail!("{what}: shutting down"),
        }
        attempt += 1;
    }
}

/// One connection: the exchange, queue and binding declared, the consumer started.
async fn setup(
    config: &AmqpConfig,
    event_source: &str,
    event_name: &str,
    ctx: &SourceContext,
) -> Result<Consuming, SetupError> {
    let broker = |step: &'static str| move |source| SetupError::Broker { step, source };
    let mut connection = config.connection.clone();
    connection.name = format!("triggerd {event_source}/{event_name}");
    let connection = connection.connect(&ctx.secrets).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(broker("prefetch"))?;
    // The names were checked at load time; `short` cannot fail here.
    let short = |s: &str| ShortString::try_new(s).unwrap_or_default();
    channel
        .exchange_declare(
            short(&config.exchange),
            config.exchange_kind.clone(),
            config.exchange_options,
            FieldTable::default(),
        )
        .await
        .map_err(broker("exchangeDeclare"))?;
    let queue = channel
        .queue_declare(
            short(&config.queue.name),
            config.queue.options,
            config.queue.arguments.clone(),
        )
        .await
        .map_err(broker("queueDeclare"))?;
    channel
        .queue_bind(
            queue.name().clone(),
            short(&config.exchange),
            short(&config.routing_key),
            QueueBindOptions {
                nowait: config.bind_no_wait,
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker("queueBind"))?;
    let tag = config
        .consumer_tag
        .clone()
        .unwrap_or_else(|| format!("triggerd-{event_source}-{event_name}"));
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            short(&tag),
            config.consume_options,
            FieldTable::default(),
        )
        .await
        .map_err(broker("consume"))?;
    Ok(Consuming {
        _connection: connection,
        consumer,
    })
}

/// Receives messages until shutdown, publishing each event with back-pressure and
/// acknowledging it once the bus took it; reconnects after a lost connection.
pub(super) async fn run(
    config: AmqpConfig,
    shared: super::SharedSettings,
    event_source: String,
    event_name: String,
    consuming: Consuming,
    ctx: SourceContext,
) {
    let source = Source {
        telemetry: SourceTelemetry::new(&ctx.metrics, &event_source, &event_name),
        metadata: serde_json::to_value(&shared.metadata).unwrap_or(Value::Null),
        filter: shared.filter,
        config,
        ctx,
    };
    let mut consuming = consuming;
    loop {
        let next = tokio::select! {
            d = consuming.consumer.next() => d,
            () = source.ctx.shutdown.cancelled() => return,
        };
        match next {
            Some(Ok(delivery)) => {
                if !source.handle(delivery).await {
                    return;
                }
            }
            lost => {
                match lost {
                    Some(Err(e)) => {
                        tracing::warn!(event_source = %event_source, event_name = %event_name, error = %e, "AMQP connection lost; reconnecting")
                    }
                    _ => {
                        tracing::warn!(event_source = %event_source, event_name = %event_name, "the AMQP broker cancelled the consumer; reconnecting")
                    }
                }
                match source.reconnect(&event_source, &event_name).await {
                    Some(c) => consuming = c,
                    None => return,
                }
            }
        }
    }
}

struct Source {
    telemetry: SourceTelemetry,
    config: AmqpConfig,
    /// The manifest's `metadata`, as it goes into every event's data.
    metadata: Value,
    filter: Option<super::EventSourceFilter>,
    ctx: SourceContext,
}

impl Source {
    /// Connects again with growing delays until it works or the agent stops (`None`).
    async fn reconnect(&self, event_source: &str, event_name: &str) -> Option<Consuming> {
        let mut failures = 0u32;
        loop {
            failures = failures.saturating_add(1);
            let delay = self
                .config
                .backoff
                .delay(failures.saturating_add(1).min(32))
                .min(MAX_RECONNECT_DELAY);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.ctx.shutdown.cancelled() => return None,
            }
            match setup(&self.config, event_source, event_name, &self.ctx).await {
                Ok(c) => {
                    tracing::info!(
                        event_source,
                        event_name,
                        attempts = failures,
                        "AMQP source reconnected"
                    );
                    return Some(c);
                }
                Err(e) => {
                    tracing::warn!(event_source, event_name, url = %self.config.connection.display_url(), error = %e, "AMQP reconnection failed");
                }
            }
        }
    }

    /// Publishes one message's event and acknowledges it; `false` when the source stops.
    async fn handle(&self, mut delivery: lapin::message::Delivery) -> bool {
        let (es, en) = (self.telemetry.event_source(), self.telemetry.event_name());
        let payload = bytes::Bytes::from(std::mem::take(&mut delivery.data));
        let event = self.event(&delivery, payload);
        if self.config.auto_ack {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(event_source = %es, event_name = %en, error = %e, "AMQP acknowledgement not sent");
            }
        }
        let published = self
            .ctx
            .publish_waiting(&self.telemetry, self.filter.as_ref(), event)
            .await;
        match published {
            Ok(()) if self.config.auto_ack => true,
            Ok(()) => {
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(event_source = %es, event_name = %en, error = %e, "AMQP acknowledgement not sent; the broker delivers the message again");
                }
                true
            }
            // Not acknowledged: the broker delivers it again once the connection closes.
            Err(super::Stopped) if self.ctx.shutdown.is_cancelled() => false,
            Err(super::Stopped) if self.config.auto_ack => {
                tracing::warn!(event_source = %es, event_name = %en, "the bus refused an AMQP message that autoAck already acknowledged; it is lost");
                true
            }
            Err(super::Stopped) => {
                let delay = self.config.backoff.delay(2).min(MAX_RECONNECT_DELAY);
                tracing::warn!(event_source = %es, event_name = %en, retry_in = ?delay, "the bus refused an AMQP message; it goes back to the queue");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.ctx.shutdown.cancelled() => return false,
                }
                if let Err(e) = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await
                {
                    tracing::warn!(event_source = %es, event_name = %en, error = %e, "AMQP reject not sent; the broker delivers the message again after reconnecting");
                }
                true
            }
        }
    }

    /// Builds the event of one message: Argo's data shape, the message id as event id.
    fn event(&self, d: &lapin::message::Delivery, payload: bytes::Bytes) -> Event {
        let p = &d.properties;
        let text = |s: &Option<ShortString>| -> Value {
            s.as_ref().map_or("", ShortString::as_str).into()
        };
        let as_text = || Value::String(String::from_utf8_lossy(&payload).into_owned());
        let body = if payload.is_empty() {
            Value::Null
        } else if self.config.json_body {
            serde_json::from_slice(&payload).unwrap_or_else(|e| {
                tracing::warn!(event_source = %self.telemetry.event_source(), event_name = %self.telemetry.event_name(), error = %e, "jsonBody is set but the message is not JSON; kept as text");
                as_text()
            })
        } else {
            as_text()
        };
        let timestamp = p
            .timestamp()
            .and_then(|t| i64::try_from(t).ok())
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .map_or(String::new(), |t| t.to_rfc3339());
        let mut data = Map::new();
        data.insert("contentType".into(), text(p.content_type()));
        data.insert("contentEncoding".into(), text(p.content_encoding()));
        data.insert("deliveryMode".into(), p.delivery_mode().unwrap_or(0).into());
        data.insert("priority".into(), p.priority().unwrap_or(0).into());
        data.insert("correlationId".into(), text(p.correlation_id()));
        data.insert("replyTo".into(), text(p.reply_to()));
        data.insert("expiration".into(), text(p.expiration()));
        data.insert("messageId".into(), text(p.message_id()));
        data.insert("timestamp".into(), timestamp.into());
        data.insert("type".into(), text(p.kind()));
        data.insert("appId".into(), text(p.app_id()));
        data.insert("exchange".into(), d.exchange.as_str().into());
        data.insert("routingKey".into(), d.routing_key.as_str().into());
        data.insert(
            "headers".into(),
            p.headers()
                .as_ref()
                .map_or(Value::Object(Map::new()), table_to_json),
        );
        data.insert("body".into(), body);
        data.insert("metadata".into(), self.metadata.clone());
        let mut event = Event::new(
            self.telemetry.event_source(),
            self.telemetry.event_name(),
            "amqp",
            Value::Object(data),
            payload,
        );
        if let Some(id) = p.message_id().as_ref().filter(|id| !id.as_str().is_empty()) {
            event.id = id.as_str().to_owned();
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_standalone;
    use crate::manifest::EventSourceSpec;
    use crate::script::ScriptHost;

    /// The specs of `yaml` (an EventSource spec), or every error's text.
    fn compile(yaml: &str) -> Result<Vec<super::super::SourceSpec>, Vec<String>> {
        let host = ScriptHost::new(Default::default(), vec![]);
        compile_standalone(&host, &[], yaml, |ctx, spec: &EventSourceSpec| {
            Some(super::super::compile_event_source(ctx, "es", spec))
        })
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    fn config(spec: &super::super::SourceSpec) -> &AmqpConfig {
        match &spec.kind {
            super::super::SourceKind::Amqp(c) => c,
            other => panic!("not an amqp source: {other:?}"),
        }
    }

    const BASE: &str = "url: amqp://127.0.0.1:5672\n    exchangeName: test\n    exchangeType: fanout\n    routingKey: hello";

    #[test]
    fn every_mistake_names_its_field() {
        assert_eq!(
            compile(&format!("amqp:\n  ev:\n    {BASE}\n")).map(|s| s.len()),
            Ok(1)
        );
        let long = "k".repeat(256);
        for (fields, named) in [
            ("url: http://x\n    exchangeName: e\n    exchangeType: fanout", "spec.amqp.ev.url"),
            ("exchangeName: e\n    exchangeType: fanout", "spec.amqp.ev.url"),
            (
                "url: amqp://h\n    urlSecret: {name: s, key: url}\n    exchangeName: e\n    exchangeType: fanout",
                "spec.amqp.ev.urlSecret",
            ),
            ("url: amqp://h\n    exchangeName: ''\n    exchangeType: fanout", "spec.amqp.ev.exchangeName"),
            ("url: amqp://h\n    exchangeName: e\n    exchangeType: fan", "spec.amqp.ev.exchangeType"),
            (
                &format!("url: amqp://h\n    exchangeName: e\n    exchangeType: topic\n    routingKey: {long}"),
                "spec.amqp.ev.routingKey",
            ),
            (
                "url: amqp://h\n    exchangeName: e\n    exchangeType: topic\n    queueDeclare: {name: q, arguments: '- a'}",
                "spec.amqp.ev.queueDeclare.arguments",
            ),
            (
                "url: amqp://h\n    exchangeName: e\n    exchangeType: topic\n    prefetch: 0",
                "spec.amqp.ev.prefetch",
            ),
            (
                "url: amqp://h\n    exchangeName: e\n    exchangeType: topic\n    tls: {caCertSecret: {name: s, key: ca}}",
                "spec.amqp.ev.tls",
            ),
            (
                "url: amqps://h\n    exchangeName: e\n    exchangeType: topic\n    tls: {insecureSkipVerify: true}",
                "spec.amqp.ev.tls.insecureSkipVerify",
            ),
            (
                "url: amqp://h\n    exchangeName: e\n    exchangeType: topic\n    connectionBackoff: {duration: soon}",
                "spec.amqp.ev.connectionBackoff",
            ),
        ] {
            let errors = compile(&format!("amqp:\n  ev:\n    {fields}\n")).expect_err(fields);
            assert!(
                errors.iter().any(|e| e.contains(named)),
                "{fields}: expected an error naming {named}, got {errors:?}"
            );
        }
    }

    #[test]
    fn defaults_are_argos_except_the_acknowledgement() {
        let specs = compile(&format!("amqp:\n  ev:\n    {BASE}\n")).expect("compiles");
        let c = config(&specs[0]);
        assert!(
            c.exchange_options.durable,
            "Argo declares exchanges durable"
        );
        assert!(c.queue.name.is_empty() && c.queue.options.exclusive);
        assert!(!c.auto_ack, "acknowledged after the bus took the event");
        assert_eq!(c.prefetch, DEFAULT_PREFETCH);
        let specs = compile(&format!(
            "amqp:\n  ev:\n    {BASE}\n    queueDeclare: {{name: jobs, durable: true, arguments: 'x-queue-type: quorum'}}\n    consume: {{autoAck: true, consumerTag: me}}\n    prefetch: 5\n"
        ))
        .expect("compiles");
        let c = config(&specs[0]);
        assert_eq!(c.queue.name, "jobs");
        assert!(c.queue.options.durable && !c.queue.options.exclusive);
        assert!(c.queue.arguments.contains_key("x-queue-type"));
        assert!(c.auto_ack);
        assert_eq!(c.consumer_tag.as_deref(), Some("me"));
        assert_eq!(c.prefetch, 5);
    }
}
