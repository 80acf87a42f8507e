//! The MQTT source: messages on a topic filter become events, through an MQTT 5 session the
//! broker keeps for the client id.
//!
//! Event data follows Argo's MQTT source: `{topic, messageId, body, metadata}`. `body` is the
//! parsed JSON with `jsonBody`, else the text as received; `messageId` is the MQTT packet id
//! as Argo gives it. Packet ids are per session and reused, so they are no event identity:
//! each message gets a fresh event id and nothing is deduplicated on them.
//!
//! At least once for QoS 1 and 2: acknowledgements are manual, and the PUBACK (QoS 1) or
//! PUBREC (QoS 2) is sent only after the bus accepted the event. A message the bus refused is
//! not acknowledged: the connection is dropped and made again, and the broker delivers the
//! message again. With a persistent session (the default for QoS 1 and 2), messages published
//! while the agent is down are delivered when it reconnects with the same client id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, Publish, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};

use super::SourceContext;
use crate::backoff::Backoff;
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{MqttEvent as MqttManifest, Spanned};
use crate::mqtt_client::{
    client_id_problem, parse_url, qos, qos_number, topic_filter_problem, MqttConnectError,
    MqttConnection,
};
use crate::nats_client::tls_problem;
use crate::secret::mask_url;
use crate::telemetry::SourceTelemetry;

/// How long the broker keeps a persistent session after the agent went away: MQTT 5's "never
/// expires" (the broker's own limit, e.g. Mosquitto's `persistent_client_expiration`, applies).
const SESSION_NEVER_EXPIRES: u32 = u32::MAX;
/// How long one connection attempt may take, up to the subscription's acknowledgement.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// Requests (acknowledgements) waiting for the connection: far more than can be in flight,
/// so acknowledging never waits on a connection that waits for the bus.
const REQUESTS: usize = 65_536;
/// Messages waiting between the connection and the bus (QoS 1 and 2 are bounded well below
/// this by the receive maximum the broker honours).
const QUEUE: usize = 1024;

/// A compiled MQTT event.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Broker and credentials; the client id is filled in at start when not given.
    pub connection: MqttConnection,
    /// Whether the manifest gave the client id.
    pub client_id_given: bool,
    /// Topic filter.
    pub topic: String,
    /// Subscription QoS.
    pub qos: QoS,
    /// Whether each connection starts a new session.
    pub clean_session: bool,
    /// Parse bodies as JSON.
    pub json_body: bool,
    /// Attempts and delays of the first connection; later reconnections use its delays.
    pub backoff: Backoff,
}

impl MqttConfig {
    /// Checks one MQTT event, naming each field that is wrong.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        m: &Spanned<MqttManifest>,
    ) -> Option<Self> {
        let loc = Some(&m.referenced);
        let m = &m.value;
        let mut ok = true;
        let endpoint = match parse_url(&m.url) {
            Ok(e) => Some(e),
            Err(problem) => {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.url"),
                    problem,
                    "e.g. tcp://mosquitto:1883 or ssl://mosquitto:8883",
                );
                None
            }
        };
        if let Some(problem) = topic_filter_problem(&m.topic) {
            ctx.error(loc, format!("{field}.topic"), problem);
            ok = false;
        }
        let qos = match qos(m.qos) {
            Ok(q) => Some(q),
            Err(problem) => {
                ctx.error(loc, format!("{field}.qos"), problem);
                None
            }
        };
        if let Some(problem) = m.client_id.as_deref().and_then(client_id_problem) {
            ctx.error(loc, format!("{field}.clientId"), problem);
            ok = false;
        }
        if let Some((sub, problem, hint)) = m.tls.as_ref().and_then(tls_problem) {
            ctx.error_with_hint(loc, format!("{field}.tls.{sub}"), problem, hint);
            ok = false;
        }
        let backoff = Backoff::compile(
            ctx,
            &format!("{field}.connectionBackoff"),
            m.connection_backoff.as_ref(),
        );
        let (endpoint, qos, backoff) = (endpoint?, qos?, backoff?);
        ok.then(|| Self {
            connection: MqttConnection {
                url: mask_url(m.url.trim()).into_owned(),
                endpoint,
                client_id: m.client_id.clone().unwrap_or_default(),
                auth: m.auth.clone(),
                tls: m.tls.clone(),
            },
            client_id_given: m.client_id.is_some(),
            topic: m.topic.clone(),
            qos,
            clean_session: m.clean_session.unwrap_or(qos == QoS::AtMostOnce),
            json_body: m.json_body,
            backoff,
        })
    }

    /// The connection with its client id: the manifest's, else one derived from the names,
    /// stable across restarts so the broker finds the session again.
    fn connection(&self, event_source: &str, event_name: &str) -> MqttConnection {
        let mut connection = self.connection.clone();
        if !self.client_id_given {
            connection.client_id = format!("triggerd-{event_source}-{event_name}");
        }
        connection
    }
}

impl super::Section for MqttConfig {
    const KEY: &'static str = "mqtt";
    type Manifest = MqttManifest;

    fn shared(event: &MqttManifest) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<MqttManifest>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(|c| super::SourceKind::Mqtt(Box::new(c)))
    }
}

/// A session that is connected and subscribed.
pub(super) struct Connected {
    client: AsyncClient,
    eventloop: EventLoop,
    /// Messages the broker sent before the subscription was acknowledged (a persistent
    /// session's backlog).
    early: Vec<Publish>,
}

/// Connects and subscribes, retrying on `connectionBackoff`; an error here fails start-up,
/// naming the event.
pub(super) async fn connect(
    config: &MqttConfig,
    event_source: &str,
    event_name: &str,
    ctx: &SourceContext,
) -> anyhow::Result<Connected> {
    let what = format!("EventSource {event_source}, mqtt event {event_name}");
    let connection = config.connection(event_source, event_name);
    let session = (!config.clean_session).then_some(SESSION_NEVER_EXPIRES);
    let mut options = connection
        .options(&ctx.secrets, session)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    // The source acknowledges each message itself, once the bus took its event.
    options.set_manual_acks(true);
    let steps = config.backoff.steps.max(1);
    let mut attempt = 1;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), REQUESTS);
        let first = tokio::time::timeout(
            CONNECT_TIMEOUT,
            first_connection(&client, &mut eventloop, config),
        )
        .await
        .unwrap_or_else(|_| Err(Failure::Timeout));
        let e = match first {
            Ok(early) => {
                tracing::info!(event_source, event_name, topic = %config.topic, url = %connection.url, qos = qos_number(config.qos), "MQTT source subscribed");
                return Ok(Connected {
                    client,
                    eventloop,
                    early,
                });
            }
            Err(Failure::Connection(e)) => {
                MqttConnectError::from_connection(&connection.url, attempt, &e)
            }
            Err(Failure::Timeout) => MqttConnectError::Connect {
                url: connection.url.clone(),
                attempts: attempt,
                message: format!("no answer within {CONNECT_TIMEOUT:?}"),
            },
            Err(Failure::Subscribe(code)) => {
                anyhow::bail!(
                    "{what}: topic: the broker refused the subscription to {:?} ({code:?})",
                    config.topic
                )
            }
        };
        if !e.is_retryable() || attempt >= steps {
            anyhow::bail!("{what}: {e}");
        }
        let delay = config.backoff.delay(attempt + 1);
        tracing::warn!(event_source, event_name, url = %connection.url, attempt, error = %e, retry_in = ?delay, "MQTT connection failed");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.shutdown.cancelled() => anyhow::bail!("{what}: shutting down"),
        }
        attempt += 1;
    }
}

/// Why a first connection failed.
enum Failure {
    Connection(rumqttc::v5::ConnectionError),
    Subscribe(SubscribeReasonCode),
    Timeout,
}

/// Polls until the broker acknowledged the connection and the subscription; returns the
/// messages that arrived meanwhile.
async fn first_connection(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    config: &MqttConfig,
) -> Result<Vec<Publish>, Failure> {
    let mut early = Vec::new();
    let mut subscribed = false;
    loop {
        match eventloop.poll().await.map_err(Failure::Connection)? {
            MqttEvent::Incoming(Packet::ConnAck(_)) if !subscribed => {
                subscribed = true;
                client
                    .try_subscribe(config.topic.clone(), config.qos)
                    .map_err(|_| Failure::Timeout)?;
            }
            MqttEvent::Incoming(Packet::SubAck(ack)) => {
                return match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => Ok(early),
                    Some(code) => Err(Failure::Subscribe(*code)),
                    None => Err(Failure::Subscribe(SubscribeReasonCode::Unspecified)),
                };
            }
            MqttEvent::Incoming(Packet::Publish(p)) => early.push(p),
            _ => {}
        }
    }
}

/// Receives messages until shutdown, publishing each event with back-pressure and
/// acknowledging it once the bus took it.
pub(super) async fn run(
    config: MqttConfig,
    shared: super::SharedSettings,
    event_source: String,
    event_name: String,
    connected: Connected,
    ctx: SourceContext,
) {
    let Connected {
        client,
        eventloop,
        early,
    } = connected;
    let source = Arc::new(Source {
        telemetry: SourceTelemetry::new(&ctx.metrics, &event_source, &event_name),
        metadata: serde_json::to_value(&shared.metadata).unwrap_or(Value::Null),
        filter: shared.filter,
        generation: AtomicU64::new(1),
        reconnect: Notify::new(),
        config,
        ctx,
    });
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let connection = tokio::spawn(source.clone().connection(client.clone(), eventloop, tx));
    for p in early {
        if !source.handle(&client, 1, p).await {
            break;
        }
    }
    loop {
        let next = tokio::select! {
            n = rx.recv() => n,
            () = source.ctx.shutdown.cancelled() => None,
        };
        let Some((generation, p)) = next else { break };
        if !source.handle(&client, generation, p).await {
            break;
        }
    }
    // The connection task stops with the agent; when the bus side stopped first, stop it.
    connection.abort();
    let _ = connection.await;
}

struct Source {
    telemetry: SourceTelemetry,
    config: MqttConfig,
    /// The manifest's `metadata`, as it goes into every event's data.
    metadata: Value,
    filter: Option<super::EventSourceFilter>,
    /// Counts connections: an acknowledgement is only sent on the connection its message
    /// came on (a packet id means nothing on another).
    generation: AtomicU64,
    /// Asks the connection task to drop the connection and make it again, so the broker
    /// redelivers what was not acknowledged.
    reconnect: Notify,
    ctx: SourceContext,
}

impl Source {
    /// Keeps the connection: polls it, forwards messages, reconnects and subscribes again
    /// after a disconnection.
    async fn connection(
        self: Arc<Self>,
        client: AsyncClient,
        mut eventloop: EventLoop,
        tx: mpsc::Sender<(u64, Publish)>,
    ) {
        let (es, en) = (self.telemetry.event_source(), self.telemetry.event_name());
        let mut failures = 0u32;
        loop {
            let polled = tokio::select! {
                r = eventloop.poll() => r,
                () = self.reconnect.notified() => {
                    tracing::info!(event_source = %es, event_name = %en, "reconnecting to MQTT broker so it redelivers unacknowledged messages");
                    eventloop.clean();
                    eventloop.pending.clear();
                    continue;
                }
                () = self.ctx.shutdown.cancelled() => break,
            };
            match polled {
                Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                    let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                    failures = 0;
                    tracing::info!(event_source = %es, event_name = %en, session_present = ack.session_present, generation, "MQTT source reconnected");
                    // The session may have the subscription already; subscribing again is
                    // harmless and needed when the broker lost the session.
                    if let Err(e) = client.try_subscribe(self.config.topic.clone(), self.config.qos)
                    {
                        tracing::warn!(event_source = %es, event_name = %en, error = %e, "MQTT subscribe request not queued");
                    }
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                    for code in &ack.return_codes {
                        if !matches!(code, SubscribeReasonCode::Success(_)) {
                            tracing::error!(event_source = %es, event_name = %en, topic = %self.config.topic, reason = ?code, "the broker refused the subscription");
                        }
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let generation = self.generation.load(Ordering::SeqCst);
                    if p.qos == QoS::AtMostOnce {
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            tx.try_send((generation, p))
                        {
                            tracing::warn!(event_source = %es, event_name = %en, "QoS 0 message dropped: too many messages wait for the bus");
                        }
                        continue;
                    }
                    // Back-pressure: the connection is not read while the bus is behind, so
                    // the broker holds the rest (a reconnection here would make it send again
                    // what is already waiting, as duplicates).
                    let queued = tokio::select! {
                        r = tx.send((generation, p)) => r.is_ok(),
                        () = self.ctx.shutdown.cancelled() => false,
                    };
                    if !queued {
                        break;
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Disconnect(d))) => {
                    tracing::warn!(event_source = %es, event_name = %en, reason = ?d.reason_code, "the MQTT broker closed the connection");
                }
                Ok(_) => {}
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = self
                        .config
                        .backoff
                        .delay(failures.saturating_add(1).min(32))
                        .min(MAX_RECONNECT_DELAY);
                    tracing::warn!(event_source = %es, event_name = %en, url = %self.config.connection.url, error = %e, retry_in = ?delay, "MQTT connection lost; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.ctx.shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    /// Publishes one message's event and acknowledges it; `false` when the source stops.
    async fn handle(&self, client: &AsyncClient, generation: u64, p: Publish) -> bool {
        let event = self.event(&p);
        let published = self
            .ctx
            .publish_waiting(&self.telemetry, self.filter.as_ref(), event)
            .await;
        let (es, en) = (self.telemetry.event_source(), self.telemetry.event_name());
        match published {
            Ok(()) => {
                if p.qos == QoS::AtMostOnce {
                    return true;
                }
                if generation != self.generation.load(Ordering::SeqCst) {
                    tracing::debug!(event_source = %es, event_name = %en, "connection changed before the acknowledgement; the broker delivers the message again");
                    return true;
                }
                if let Err(e) = client.ack(&p).await {
                    tracing::warn!(event_source = %es, event_name = %en, error = %e, "MQTT acknowledgement not sent; the broker delivers the message again");
                }
                true
            }
            Err(super::Stopped) if self.ctx.shutdown.is_cancelled() => false,
            Err(super::Stopped) => {
                // Not acknowledged; a new connection makes the broker deliver it again.
                let delay = self.config.backoff.delay(2).min(MAX_RECONNECT_DELAY);
                tracing::warn!(event_source = %es, event_name = %en, retry_in = ?delay, "the bus refused an MQTT message; it stays unacknowledged and is received again after reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.ctx.shutdown.cancelled() => return false,
                }
                self.reconnect.notify_one();
                true
            }
        }
    }

    /// Builds the event of one message: Argo's data shape, a fresh id.
    fn event(&self, p: &Publish) -> Event {
        let payload = p.payload.clone();
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
        let mut data = Map::new();
        data.insert(
            "topic".into(),
            String::from_utf8_lossy(&p.topic).into_owned().into(),
        );
        data.insert("messageId".into(), p.pkid.into());
        data.insert("body".into(), body);
        data.insert("metadata".into(), self.metadata.clone());
        Event::new(
            self.telemetry.event_source(),
            self.telemetry.event_name(),
            "mqtt",
            Value::Object(data),
            payload,
        )
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

    fn config(spec: &super::super::SourceSpec) -> &MqttConfig {
        match &spec.kind {
            super::super::SourceKind::Mqtt(c) => c,
            other => panic!("not an mqtt source: {other:?}"),
        }
    }

    #[test]
    fn every_mistake_names_its_field() {
        let base = "mqtt:\n  ev:\n    url: tcp://127.0.0.1:1883\n    topic: a/+/c\n";
        assert_eq!(compile(base).map(|s| s.len()), Ok(1));
        for (fields, named) in [
            ("url: http://x\n    topic: a", "spec.mqtt.ev.url"),
            ("url: ws://x:9001\n    topic: a", "spec.mqtt.ev.url"),
            ("url: tcp://x\n    topic: a/#/b", "spec.mqtt.ev.topic"),
            ("url: tcp://x\n    topic: ''", "spec.mqtt.ev.topic"),
            ("url: tcp://x\n    topic: a\n    qos: 3", "spec.mqtt.ev.qos"),
            (
                "url: tcp://x\n    topic: a\n    clientId: ''",
                "spec.mqtt.ev.clientId",
            ),
            (
                "url: tcp://x\n    topic: a\n    tls: {insecureSkipVerify: true}",
                "spec.mqtt.ev.tls.insecureSkipVerify",
            ),
            (
                "url: tcp://x\n    topic: a\n    tls: {clientCertSecret: {name: s, key: c}}",
                "spec.mqtt.ev.tls.clientCertSecret",
            ),
            (
                "url: tcp://x\n    topic: a\n    connectionBackoff: {duration: soon}",
                "spec.mqtt.ev.connectionBackoff",
            ),
        ] {
            let errors = compile(&format!("mqtt:\n  ev:\n    {fields}\n")).expect_err(fields);
            assert!(
                errors.iter().any(|e| e.contains(named)),
                "{fields}: expected an error naming {named}, got {errors:?}"
            );
        }
    }

    #[test]
    fn qos_and_session_defaults() {
        let specs = compile(
            "mqtt:\n  ev:\n    url: tcp://h\n    topic: t\n  zero:\n    url: tcp://h\n    topic: t\n    qos: 0\n",
        )
        .expect("compiles");
        let (one, zero) = (config(&specs[0]), config(&specs[1]));
        assert_eq!(one.qos, QoS::AtLeastOnce);
        assert!(!one.clean_session, "QoS 1 keeps a persistent session");
        assert_eq!(zero.qos, QoS::AtMostOnce);
        assert!(zero.clean_session);
        assert_eq!(one.connection("es", "ev").client_id, "triggerd-es-ev");
        assert!(specs[0].is_singleton());
    }
}
