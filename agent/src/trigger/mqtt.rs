//! The `mqtt` trigger: publishes the payload (JSON) on a topic with QoS 0, 1 or 2 and the
//! retain flag. With QoS 1 an attempt succeeds on the broker's PUBACK, with QoS 2 on its
//! PUBCOMP; a negative reason code (e.g. not authorized) fails it. QoS 0 succeeds once the
//! message is written to the connection.
//!
//! One connection per trigger, made at the first attempt and kept for later ones; a lost
//! connection is made again. A broker that cannot be reached, or a connection lost before
//! the acknowledgement, is a retryable error, so `retryStrategy` and the dead letter apply as
//! for any other target. Credentials and TLS material are read when the plan starts, so a
//! missing secret stops the start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rhai::{Dynamic, Map};
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubCompReason, PubRecReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, EventLoop};
use rumqttc::Outgoing;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Mutex, OnceCell};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::compile::{
    check_parameter_dests, compile_params, parameterized, payload_builder, FixedParts, KindInput,
    KindParts,
};
use super::stub::{status_stub, StubMisuse, StubResponse, StubShape, StubSpec};
use super::TriggerKind;
use super::{BuildError, Call, CompiledParameter, Invocation, KindError, Outcome};
use super::{PrepareContext, PrepareFailure, Reply, ReplyShape, Response, TriggerError};
use super::{Shape, TriggerTarget};
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{MqttTrigger, ScriptSource};
use crate::mqtt_client::{
    client_id_problem, parse_url, qos, qos_number, topic_name_problem, MqttConnectError,
    MqttConnection,
};
use crate::nats_client::tls_problem;
use crate::script::ScriptHost;
use crate::secret::{mask_url, SecretStore};

/// The spec fields parameters may change (`dest: topic`).
pub const PARAMETER_FIELDS: [&str; 1] = ["topic"];

/// How long an attempt waits for the broker's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishes queued towards the connection at most.
const QUEUE: usize = 256;
/// Longest wait between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The request of one publish, after parameters were applied.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttRequestSpec {
    /// Topic to publish on.
    pub topic: String,
}

impl MqttRequestSpec {
    /// Why the spec is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        topic_name_problem(&self.topic)
    }
}

/// Compiles an `mqtt` spec: the connection, QoS and retain flag (fixed at load), parameters
/// (which may change only `topic`) and payload.
pub(super) fn compile(
    ctx: &mut CompileContext<'_>,
    m: &MqttTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let (tfield, dependencies) = (input.tfield, input.dependencies);
    let f = format!("{tfield}.mqtt");
    let loc = Some(&m.url.referenced);
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "mqtt",
            allowed: &PARAMETER_FIELDS,
            fixed: "url, qos, retain, clientId, auth and tls",
        },
        &m.parameters,
        input.template_params,
    );
    let endpoint = parse_url(&m.url.value)
        .map_err(|problem| {
            ctx.error_with_hint(
                loc,
                format!("{f}.url"),
                problem,
                "e.g. tcp://mosquitto:1883 or ssl://mosquitto:8883",
            );
        })
        .ok();
    let qos = qos(m.qos)
        .map_err(|problem| ctx.error(loc, format!("{f}.qos"), problem))
        .ok();
    if let Some(problem) = m.client_id.as_deref().and_then(client_id_problem) {
        ctx.error(loc, format!("{f}.clientId"), problem);
    }
    if let Some((sub, problem, hint)) = m.tls.as_ref().and_then(tls_problem) {
        ctx.error_with_hint(loc, format!("{f}.tls.{sub}"), problem, hint);
    }
    let spec = MqttRequestSpec {
        topic: m.topic.clone(),
    };
    let parameterized = !m.parameters.is_empty() || input.template_parameterized();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            ctx.error(loc, format!("{f}.topic"), p);
            false
        }
        Some(_) => false,
        None => true,
    };
    let compiled = compile_params(ctx, &format!("{f}.parameters"), &m.parameters, dependencies);
    let payload = payload_builder(
        ctx,
        &f,
        &m.payload,
        ScriptSource::from_fields(&m.payload_script, &m.payload_script_file),
        dependencies,
    );
    if ctx.errors.len() > before {
        return None;
    }
    let (endpoint, qos) = (endpoint?, qos?);
    let target = Arc::new(MqttTarget {
        connection: MqttConnection {
            url: mask_url(m.url.value.trim()).into_owned(),
            endpoint,
            client_id: m
                .client_id
                .clone()
                .unwrap_or_else(|| format!("triggerd-{}-{}", input.sensor, input.trigger)),
            auth: m.auth.clone(),
            tls: m.tls.clone(),
        },
        qos,
        retain: m.retain,
        topic: m.topic.clone(),
        secrets: Arc::new(OnceLock::new()),
        publisher: Arc::new(OnceCell::new()),
    });
    let fixed = (static_ok && !parameterized).then(|| {
        Invocation::new(MqttCall {
            target: target.clone(),
            spec,
        })
    });
    Some(KindParts {
        kind: TriggerKind::Mqtt(target),
        params: compiled?,
        payload: payload?,
        fixed,
    })
}

/// An MQTT broker to publish to, with its connection once made.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    connection: MqttConnection,
    qos: QoS,
    retain: bool,
    /// The manifest's topic (stubs report it).
    topic: String,
    secrets: Arc<OnceLock<SecretStore>>,
    publisher: Arc<OnceCell<Publisher>>,
}

impl MqttTarget {
    /// Reads the credentials and TLS material once, so a missing or malformed one fails the
    /// start; remembers the store for the connection made at the first attempt.
    async fn ready(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareFailure> {
        self.connection
            .options(ctx.secrets, None)
            .await
            .map_err(|e| KindError::boxed("mqtt", e))?;
        let _ = self.secrets.set(ctx.secrets.clone());
        Ok(())
    }

    /// Publishes one payload and waits for what its QoS promises.
    pub async fn execute(&self, spec: &MqttRequestSpec, payload: &Value) -> Response {
        let started = tokio::time::Instant::now();
        let failed = |e: TriggerError| Response::failed(e, started.elapsed());
        let publisher = match self
            .publisher
            .get_or_try_init(|| async {
                let secrets = self.secrets.get().cloned().unwrap_or_default();
                let options = self.connection.options(&secrets, None).await?;
                Ok::<_, MqttConnectError>(Publisher::start(options, self.connection.url.clone()))
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let retryable = e.is_retryable();
                return failed(TriggerError::new(e.to_string(), retryable).caused_by(e));
            }
        };
        let topic = spec.topic.trim().to_owned();
        let acked = publisher
            .publish(&topic, self.qos, self.retain, payload.to_string())
            .await;
        match acked {
            Ok(()) => Response::replied(
                Reply::new(MqttReply {
                    topic,
                    qos: qos_number(self.qos),
                }),
                started.elapsed(),
            ),
            Err(e) => failed(e),
        }
    }
}

impl TriggerTarget for MqttTarget {
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(self.ready(ctx))
    }

    /// The request of one execution: the template's `mqtt` section after parameters.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let spec = parameterized(
            template,
            "mqtt",
            params,
            host,
            events,
            MqttRequestSpec::problem,
        )?;
        Ok(Invocation::new(MqttCall { target: self, spec }))
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(MqttStub {
            topic: self.topic.clone(),
            qos: qos_number(self.qos),
        })
    }
}

/// What an attempt waits on: written (QoS 0) or acknowledged (QoS 1 and 2).
type Waiter = oneshot::Sender<Result<(), TriggerError>>;

/// Publishes in flight. Publish requests go to the connection in the order their waiters
/// were queued (both happen under this lock), and the connection reports each publish it
/// writes with its packet id in that same order: so the front waiter is the one written.
#[derive(Default)]
struct Waiters {
    /// Queued, not yet written.
    queued: VecDeque<(QoS, Waiter)>,
    /// Written, waiting for the broker, by packet id.
    acks: HashMap<u16, Waiter>,
}

impl Waiters {
    /// Fails every publish in flight (the connection is gone; the retry publishes again).
    fn fail_all(&mut self, error: &str, retryable: bool) {
        let all = self
            .queued
            .drain(..)
            .map(|(_, w)| w)
            .chain(self.acks.drain().map(|(_, w)| w));
        for w in all {
            let _ = w.send(Err(TriggerError::new(error.to_owned(), retryable)));
        }
    }
}

/// A connection to the broker and the task that keeps it.
struct Publisher {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
    /// Stops the connection task when the target goes (a plan reload).
    _stop: DropGuard,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Starts the connection task; the connection is made when the first publish is queued.
    fn start(options: rumqttc::v5::MqttOptions, url: String) -> Self {
        let (client, eventloop) = AsyncClient::new(options, QUEUE);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let stop = CancellationToken::new();
        tokio::spawn(keep_connection(
            eventloop,
            waiters.clone(),
            url,
            stop.clone(),
        ));
        Self {
            client,
            waiters,
            _stop: stop.drop_guard(),
        }
    }

    /// Publishes and waits for the broker's word.
    async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: String,
    ) -> Result<(), TriggerError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock().await;
            self.client
                .try_publish(topic, qos, retain, payload)
                .map_err(|e| {
                    TriggerError::retryable(format!("MQTT publish to {topic} not queued: {e}"))
                })?;
            waiters.queued.push_back((qos, tx));
        }
        match tokio::time::timeout(ACK_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(TriggerError::retryable(
                "MQTT connection task stopped before the acknowledgement",
            )),
            Err(_) => Err(TriggerError::retryable(format!(
                "MQTT publish to {topic}: no acknowledgement within {ACK_TIMEOUT:?}"
            ))),
        }
    }
}

/// Polls the connection: matches written publishes and acknowledgements to their waiters,
/// and on a failure fails them all, forgets what was queued (the retries publish again) and
/// connects again after a growing delay.
async fn keep_connection(
    mut eventloop: EventLoop,
    waiters: Arc<Mutex<Waiters>>,
    url: String,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let polled = tokio::select! {
            r = eventloop.poll() => r,
            () = stop.cancelled() => return,
        };
        let failed = match polled {
            Ok(event) => {
                let mut w = waiters.lock().await;
                if matches!(event, MqttEvent::Incoming(Packet::ConnAck(_))) {
                    delay = Duration::from_millis(100);
                    tracing::debug!(url = %url, "MQTT trigger connected");
                }
                settle(&mut w, event);
                continue;
            }
            Err(e) => MqttConnectError::from_connection(&url, 1, &e),
        };
        {
            let mut w = waiters.lock().await;
            w.fail_all(&failed.to_string(), failed.is_retryable());
            // Publishes not yet written are dropped: their attempts failed, and a retry
            // publishes again (a replay after reconnecting would be a second copy).
            eventloop.clean();
            eventloop.pending.clear();
        }
        tracing::warn!(url = %url, error = %failed, retry_in = ?delay, "MQTT trigger connection failed");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

/// Matches one connection event to the waiters it concerns.
fn settle(w: &mut Waiters, event: MqttEvent) {
    match event {
        MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
            if let Some((qos, waiter)) = w.queued.pop_front() {
                if qos == QoS::AtMostOnce {
                    let _ = waiter.send(Ok(()));
                } else {
                    w.acks.insert(pkid, waiter);
                }
            }
        }
        MqttEvent::Incoming(Packet::PubAck(ack)) => {
            let result = match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                PubAckReason::QuotaExceeded | PubAckReason::UnspecifiedError => Err(
                    TriggerError::retryable(format!("the broker refused: {:?}", ack.reason)),
                ),
                other => Err(TriggerError::new(
                    format!("the broker refused: {other:?}"),
                    false,
                )),
            };
            if let Some(waiter) = w.acks.remove(&ack.pkid) {
                let _ = waiter.send(result);
            }
        }
        MqttEvent::Incoming(Packet::PubRec(rec)) => {
            if matches!(
                rec.reason,
                PubRecReason::Success | PubRecReason::NoMatchingSubscribers
            ) {
                return;
            }
            if let Some(waiter) = w.acks.remove(&rec.pkid) {
                let retryable = matches!(
                    rec.reason,
                    PubRecReason::QuotaExceeded | PubRecReason::UnspecifiedError
                );
                let _ = waiter.send(Err(TriggerError::new(
                    format!("the broker refused: {:?}", rec.reason),
                    retryable,
                )));
            }
        }
        MqttEvent::Incoming(Packet::PubComp(comp)) => {
            if let Some(waiter) = w.acks.remove(&comp.pkid) {
                let _ = waiter.send(match comp.reason {
                    PubCompReason::Success => Ok(()),
                    other => Err(TriggerError::retryable(format!(
                        "the broker lost the QoS 2 exchange: {other:?}"
                    ))),
                });
            }
        }
        _ => {}
    }
}

/// One publish to make.
#[derive(Debug)]
struct MqttCall {
    target: Arc<MqttTarget>,
    spec: MqttRequestSpec,
}

impl Call for MqttCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec, payload))
    }

    /// `{type: mqtt, topic, qos, retain}`.
    fn to_json(&self) -> Value {
        json!({
            "type": "mqtt",
            "topic": self.spec.topic,
            "qos": qos_number(self.target.qos),
            "retain": self.target.retain,
        })
    }
}

/// What the broker confirmed; policies see `#{topic, qos, duration_ms}`.
#[derive(Debug, Clone, Default)]
pub struct MqttReply {
    /// The topic published on.
    pub topic: String,
    /// The QoS it was published with (0, 1 or 2).
    pub qos: u8,
}

impl ReplyShape for MqttReply {
    fn to_dynamic(&self, duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("topic".into(), self.topic.clone().into());
        map.insert("qos".into(), i64::from(self.qos).into());
        map.insert(
            "duration_ms".into(),
            i64::try_from(duration.as_millis())
                .unwrap_or(i64::MAX)
                .into(),
        );
        map.into()
    }

    /// The broker acknowledged (or, at QoS 0, the message was written): success.
    fn default_outcome(&self, _allow: Option<&[u16]>) -> Outcome {
        Outcome::Success
    }

    fn summary(&self) -> String {
        format!("published on {} with QoS {}", self.topic, self.qos)
    }
}

/// Stubs of mqtt triggers: `{}` (the broker acknowledged) or `{error}`; the reply carries
/// the manifest's topic and QoS.
#[derive(Debug, Clone)]
pub struct MqttStub {
    topic: String,
    qos: u8,
}

impl StubShape for MqttStub {
    fn name(&self) -> String {
        "mqtt".into()
    }

    fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse> {
        if spec.status.is_some()
            || !spec.body.is_null()
            || !spec.headers.is_empty()
            || spec.function_error.is_some()
            || spec.payload.is_some()
        {
            return Err(StubMisuse::new(
                None,
                "an mqtt trigger's stub is `{}` (acknowledged) or `{error}`",
            )
            .hint("status, body, headers, functionError and payload are for http and awsLambda triggers"));
        }
        status_stub(spec, true)
    }

    fn reply(&self, _stub: &StubResponse) -> Reply {
        Reply::new(MqttReply {
            topic: self.topic.clone(),
            qos: self.qos,
        })
    }

    fn to_json(&self, _stub: &StubResponse) -> Value {
        json!({})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_policies_see_is_topic_and_qos() {
        let reply = MqttReply {
            topic: "plant/valve".into(),
            qos: 2,
        };
        let d = reply.to_dynamic(Duration::from_millis(7));
        let map = d.cast::<Map>();
        assert_eq!(
            map.get("topic").map(ToString::to_string),
            Some("plant/valve".into())
        );
        assert_eq!(map.get("qos").and_then(|v| v.as_int().ok()), Some(2));
        assert_eq!(
            map.get("duration_ms").and_then(|v| v.as_int().ok()),
            Some(7)
        );
    }

    #[test]
    fn a_stub_is_acknowledged_or_an_error() {
        let stub = MqttStub {
            topic: "t".into(),
            qos: 1,
        };
        let parse = |yaml: &str| {
            let spec: StubSpec = serde_saphyr::from_str(yaml).expect("stub parses");
            stub.parse(&spec)
        };
        assert!(parse("{}").is_ok());
        assert!(parse("{error: refused}").is_ok());
        assert!(parse("{status: 200}").is_err());
    }

    #[test]
    fn publishing_needs_a_topic_without_wildcards() {
        for bad in ["", "a/+", "a/#"] {
            let spec = MqttRequestSpec { topic: bad.into() };
            assert!(spec.problem().is_some(), "{bad}");
        }
        assert!(MqttRequestSpec {
            topic: "a/b".into()
        }
        .problem()
        .is_none());
    }
}
