//! The `amqp` trigger: publishes the payload (JSON) to an exchange with a routing key,
//! message properties and headers, with publisher confirms. An attempt succeeds when the
//! broker confirms the message; a negative confirmation is retryable; with `mandatory` a
//! message the broker could not route to any queue is returned and fails the attempt. The
//! policy sees `#{exchange, routing_key, confirmed, returned, duration_ms}` and may decide
//! otherwise.
//!
//! One connection and channel per trigger, made at the first attempt and kept for later ones;
//! a lost one is made again at the next attempt. A broker that cannot be reached is a
//! retryable error, so `retryStrategy` and the dead letter apply as for any other target.
//! The URL, credentials and TLS material are read when the plan starts, so a missing secret
//! stops the start.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use rhai::{Dynamic, Map};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::compile::{
    check_parameter_dests, compile_params, parameterized, payload_builder, FixedParts, KindInput,
    KindParts,
};
use super::stub::{status_stub, StubMisuse, StubResponse, StubShape, StubSpec};
use super::TriggerKind;
use super::{BuildError, Call, CompiledParameter, Invocation, KindError, Outcome};
use super::{PrepareContext, PrepareFailure, Reply, ReplyShape, Response, TriggerError};
use super::{Shape, TriggerTarget};
use crate::amqp_client::{
    compile_connection_fields, exchange_declare_options, exchange_kind, is_access_refused,
    json_to_table, short_string, AmqpConnection,
};
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{AmqpProperties, AmqpTrigger, ScriptSource};
use crate::script::ScriptHost;
use crate::secret::SecretStore;

/// The spec fields parameters may change (`dest: routingKey`, `dest: headers.x-id`).
pub const PARAMETER_FIELDS: [&str; 4] = ["exchangeName", "routingKey", "headers", "properties"];

/// Sets one text property of a message.
type SetProperty = fn(BasicProperties, ShortString) -> BasicProperties;

/// How long an attempt waits for the broker's confirmation.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The request of one publish, after parameters were applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmqpRequestSpec {
    /// Exchange; empty: the default exchange.
    #[serde(default)]
    pub exchange_name: String,
    /// Routing key.
    #[serde(default)]
    pub routing_key: String,
    /// Message headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    /// Message properties.
    #[serde(default)]
    pub properties: AmqpProperties,
}

impl AmqpRequestSpec {
    /// Why the spec is unusable, if it is (names and values too long for AMQP, a delivery
    /// mode other than 1 or 2, a priority outside 0 to 9).
    pub fn problem(&self) -> Option<String> {
        self.message().err()
    }

    /// The AMQP names and properties of the message, or why they are unusable.
    fn message(&self) -> Result<(ShortString, ShortString, BasicProperties), String> {
        let exchange = short_string("exchangeName", &self.exchange_name)?;
        let routing_key = short_string("routingKey", &self.routing_key)?;
        let p = &self.properties;
        let text = |field: &str, v: &Option<String>| -> Result<Option<ShortString>, String> {
            v.as_deref()
                .map(|v| short_string(&format!("properties.{field}"), v))
                .transpose()
        };
        let content_type = text("contentType", &p.content_type)?
            .unwrap_or_else(|| ShortString::from("application/json"));
        let delivery_mode = match p.delivery_mode.unwrap_or(2) {
            m @ (1 | 2) => m as u8,
            other => {
                return Err(format!(
                    "properties.deliveryMode {other} is not 1 (transient) or 2 (persistent)"
                ))
            }
        };
        let mut props = BasicProperties::default()
            .with_content_type(content_type)
            .with_delivery_mode(delivery_mode)
            .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0));
        if let Some(priority) = p.priority {
            let priority = u8::try_from(priority)
                .ok()
                .filter(|p| *p <= 9)
                .ok_or_else(|| format!("properties.priority {priority} is not between 0 and 9"))?;
            props = props.with_priority(priority);
        }
        let fields: [(&str, &Option<String>, SetProperty); 7] = [
            (
                "contentEncoding",
                &p.content_encoding,
                BasicProperties::with_content_encoding,
            ),
            (
                "correlationId",
                &p.correlation_id,
                BasicProperties::with_correlation_id,
            ),
            ("replyTo", &p.reply_to, BasicProperties::with_reply_to),
            (
                "expiration",
                &p.expiration,
                BasicProperties::with_expiration,
            ),
            ("messageId", &p.message_id, BasicProperties::with_message_id),
            ("type", &p.kind, BasicProperties::with_type),
            ("appId", &p.app_id, BasicProperties::with_app_id),
        ];
        for (field, value, set) in fields {
            if let Some(v) = text(field, value)? {
                props = set(props, v);
            }
        }
        if let Some(e) = &p.expiration {
            if e.parse::<u64>().is_err() {
                return Err(format!(
                    "properties.expiration {e:?} is not a number of milliseconds"
                ));
            }
        }
        if !self.headers.is_empty() {
            let object: serde_json::Map<String, Value> = self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let table = json_to_table(&object).map_err(|e| format!("headers: {e}"))?;
            props = props.with_headers(table);
        }
        Ok((exchange, routing_key, props))
    }
}

/// Compiles an `amqp` spec: the connection and exchange declaration (fixed at load),
/// parameters (which may change the exchange, routing key, headers and properties) and
/// payload.
pub(super) fn compile(
    ctx: &mut CompileContext<'_>,
    m: &AmqpTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let (tfield, dependencies) = (input.tfield, input.dependencies);
    let f = format!("{tfield}.amqp");
    let loc = m.url.as_ref().map(|u| &u.referenced);
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "amqp",
            allowed: &PARAMETER_FIELDS,
            fixed: "url, urlSecret, exchangeType, exchangeDeclare, mandatory, auth and tls",
        },
        &m.parameters,
        input.template_params,
    );
    let url = compile_connection_fields(
        ctx,
        loc,
        &f,
        m.url.as_ref().map(|u| u.value.as_str()),
        m.url_secret.as_ref(),
        m.tls.as_ref(),
    );
    let declare = match &m.exchange_type {
        Some(t) => match exchange_kind(t) {
            Ok(kind) => Some(Some((
                kind,
                exchange_declare_options(m.exchange_declare.as_ref()),
            ))),
            Err(p) => {
                ctx.error(loc, format!("{f}.exchangeType"), p);
                None
            }
        },
        None => {
            if m.exchange_declare.is_some() {
                ctx.error(
                    loc,
                    format!("{f}.exchangeDeclare"),
                    "exchangeDeclare needs exchangeType",
                );
            }
            Some(None)
        }
    };
    if m.exchange_type.is_some() && m.exchange_name.trim().is_empty() {
        ctx.error(
            loc,
            format!("{f}.exchangeType"),
            "the default exchange (empty exchangeName) cannot be declared",
        );
    }
    let spec = AmqpRequestSpec {
        exchange_name: m.exchange_name.clone(),
        routing_key: m.routing_key.clone(),
        headers: m
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
        properties: m.properties.clone(),
    };
    let parameterized = !m.parameters.is_empty() || input.template_parameterized();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            ctx.error(loc, f.clone(), p);
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
    let target = Arc::new(AmqpTarget {
        connection: AmqpConnection {
            url: url?,
            auth: m.auth.clone(),
            tls: m.tls.clone(),
            name: format!("triggerd {}/{}", input.sensor, input.trigger),
        },
        declare: declare?,
        mandatory: m.mandatory,
        exchange: m.exchange_name.clone(),
        routing_key: m.routing_key.clone(),
        secrets: Arc::new(OnceLock::new()),
        publisher: Arc::new(Mutex::new(None)),
    });
    let fixed = (static_ok && !parameterized).then(|| {
        Invocation::new(AmqpCall {
            target: target.clone(),
            spec,
        })
    });
    Some(KindParts {
        kind: TriggerKind::Amqp(target),
        params: compiled?,
        payload: payload?,
        fixed,
    })
}

/// An AMQP broker to publish to, with its channel once opened.
#[derive(Debug, Clone)]
pub struct AmqpTarget {
    connection: AmqpConnection,
    /// The exchange to declare before publishing, when `exchangeType` is given.
    declare: Option<(ExchangeKind, ExchangeDeclareOptions)>,
    mandatory: bool,
    /// The manifest's exchange and routing key (stubs report them).
    exchange: String,
    routing_key: String,
    secrets: Arc<OnceLock<SecretStore>>,
    publisher: Arc<Mutex<Option<Arc<Publisher>>>>,
}

/// A connection and a channel in confirm mode.
struct Publisher {
    /// Kept so the channel's connection stays open.
    _connection: Connection,
    channel: Channel,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl AmqpTarget {
    /// Reads the URL, credentials and TLS material once, so a missing or malformed one fails
    /// the start; remembers the store for the connection made at the first attempt.
    async fn ready(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareFailure> {
        self.connection
            .resolve(ctx.secrets)
            .await
            .map_err(|e| KindError::boxed("amqp", e))?;
        let _ = self.secrets.set(ctx.secrets.clone());
        Ok(())
    }

    /// The open channel, or a new connection and channel when there is none or it broke.
    async fn publisher(&self) -> Result<Arc<Publisher>, TriggerError> {
        let mut slot = self.publisher.lock().await;
        if let Some(p) = slot.as_ref().filter(|p| p.channel.status().connected()) {
            return Ok(p.clone());
        }
        *slot = None;
        let secrets = self.secrets.get().cloned().unwrap_or_default();
        let connection = self.connection.connect(&secrets).await.map_err(|e| {
            let retryable = e.is_retryable();
            TriggerError::new(e.to_string(), retryable).caused_by(e)
        })?;
        let url = self.connection.display_url();
        let broker = |step: &str, e: lapin::Error| {
            TriggerError::new(format!("{step} on {url}: {e}"), !refused(&e)).caused_by(e)
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| broker("opening a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker("enabling publisher confirms", e))?;
        if let Some((kind, options)) = &self.declare {
            let name = ShortString::try_new(self.exchange.as_str()).unwrap_or_default();
            channel
                .exchange_declare(name, kind.clone(), *options, FieldTable::default())
                .await
                .map_err(|e| broker("declaring the exchange", e))?;
        }
        tracing::debug!(url = %url, "AMQP trigger connected");
        let p = Arc::new(Publisher {
            _connection: connection,
            channel,
        });
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Publishes one payload and waits for the broker's confirmation.
    pub async fn execute(&self, spec: &AmqpRequestSpec, payload: &Value) -> Response {
        let started = tokio::time::Instant::now();
        let failed = |e: TriggerError| Response::failed(e, started.elapsed());
        let (exchange, routing_key, properties) = match spec.message() {
            Ok(m) => m,
            Err(p) => return failed(TriggerError::new(p, false)),
        };
        let publisher = match self.publisher().await {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        let body = payload.to_string();
        let what = format!(
            "publish to exchange {:?} with routing key {:?}",
            spec.exchange_name, spec.routing_key
        );
        let confirm = publisher
            .channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: self.mandatory,
                    immediate: false,
                },
                body.as_bytes(),
                properties,
            )
            .await;
        let confirmation = match confirm {
            Ok(confirm) => tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await,
            Err(e) => Ok(Err(e)),
        };
        let reply = |confirmed, returned| {
            Response::replied(
                Reply::new(AmqpReply {
                    exchange: spec.exchange_name.clone(),
                    routing_key: spec.routing_key.clone(),
                    confirmed,
                    returned,
                }),
                started.elapsed(),
            )
        };
        match confirmation {
            Ok(Ok(Confirmation::Ack(returned))) => reply(true, returned.is_some()),
            Ok(Ok(Confirmation::Nack(returned))) => reply(false, returned.is_some()),
            Ok(Ok(Confirmation::NotRequested)) => reply(false, false),
            Ok(Err(e)) => {
                let retryable = !refused(&e);
                failed(TriggerError::new(format!("{what}: {e}"), retryable).caused_by(e))
            }
            Err(_) => failed(TriggerError::retryable(format!(
                "{what}: no confirmation within {CONFIRM_TIMEOUT:?}"
            ))),
        }
    }
}

/// Whether the broker refused the operation in a way a retry cannot change: access refused,
/// or an exchange that does not exist (its channel is closed with 404).
fn refused(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    is_access_refused(e)
        || matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

impl TriggerTarget for AmqpTarget {
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(self.ready(ctx))
    }

    /// The request of one execution: the template's `amqp` section after parameters.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let spec = parameterized(
            template,
            "amqp",
            params,
            host,
            events,
            AmqpRequestSpec::problem,
        )?;
        Ok(Invocation::new(AmqpCall { target: self, spec }))
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(AmqpStub {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
        })
    }
}

/// One publish to make.
#[derive(Debug)]
struct AmqpCall {
    target: Arc<AmqpTarget>,
    spec: AmqpRequestSpec,
}

impl Call for AmqpCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec, payload))
    }

    /// `{type: amqp, exchange, routingKey, mandatory, properties, headers}`.
    fn to_json(&self) -> Value {
        json!({
            "type": "amqp",
            "exchange": self.spec.exchange_name,
            "routingKey": self.spec.routing_key,
            "mandatory": self.target.mandatory,
            "properties": self.spec.properties,
            "headers": self.spec.headers,
        })
    }
}

/// What the broker answered; policies see `#{exchange, routing_key, confirmed, returned,
/// duration_ms}`.
#[derive(Debug, Clone, Default)]
pub struct AmqpReply {
    /// The exchange published to.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The broker confirmed the message (false: it nacked it).
    pub confirmed: bool,
    /// The broker returned the message as unroutable (`mandatory`).
    pub returned: bool,
}

impl ReplyShape for AmqpReply {
    fn to_dynamic(&self, duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("exchange".into(), self.exchange.clone().into());
        map.insert("routing_key".into(), self.routing_key.clone().into());
        map.insert("confirmed".into(), self.confirmed.into());
        map.insert("returned".into(), self.returned.into());
        map.insert(
            "duration_ms".into(),
            i64::try_from(duration.as_millis())
                .unwrap_or(i64::MAX)
                .into(),
        );
        map.into()
    }

    /// Confirmed and routed: success; returned as unroutable: fail (no queue is bound, a
    /// retry goes the same way); nacked: retry (the broker could not take it now).
    fn default_outcome(&self, _allow: Option<&[u16]>) -> Outcome {
        if self.returned {
            Outcome::Fail {
                reason: format!(
                    "the broker returned the message: no queue is bound to exchange {:?} for routing key {:?}",
                    self.exchange, self.routing_key
                ),
            }
        } else if self.confirmed {
            Outcome::Success
        } else {
            Outcome::Retry {
                reason: "the broker did not confirm the message (nack)".into(),
                after: None,
            }
        }
    }

    fn summary(&self) -> String {
        let state = match (self.confirmed, self.returned) {
            (_, true) => "returned as unroutable",
            (true, false) => "confirmed",
            (false, false) => "not confirmed",
        };
        format!(
            "published to {:?} with routing key {:?}: {state}",
            self.exchange, self.routing_key
        )
    }
}

/// Stubs of amqp triggers: `{}` (confirmed) or `{error}`; the reply carries the manifest's
/// exchange and routing key.
#[derive(Debug, Clone)]
pub struct AmqpStub {
    exchange: String,
    routing_key: String,
}

impl StubShape for AmqpStub {
    fn name(&self) -> String {
        "amqp".into()
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
                "an amqp trigger's stub is `{}` (confirmed) or `{error}`",
            )
            .hint("status, body, headers, functionError and payload are for http and awsLambda triggers"));
        }
        status_stub(spec, true)
    }

    fn reply(&self, _stub: &StubResponse) -> Reply {
        Reply::new(AmqpReply {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            confirmed: true,
            returned: false,
        })
    }

    fn to_json(&self, _stub: &StubResponse) -> Value {
        json!({})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AmqpRequestSpec {
        serde_saphyr::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn the_reply_policies_see_and_its_default_outcome() {
        let reply = AmqpReply {
            exchange: "jobs".into(),
            routing_key: "build".into(),
            confirmed: true,
            returned: false,
        };
        let map = reply.to_dynamic(Duration::from_millis(3)).cast::<Map>();
        assert_eq!(
            map.get("routing_key").map(ToString::to_string),
            Some("build".into())
        );
        assert_eq!(
            map.get("confirmed").and_then(|v| v.as_bool().ok()),
            Some(true)
        );
        assert_eq!(reply.default_outcome(None), Outcome::Success);
        let returned = AmqpReply {
            returned: true,
            ..reply.clone()
        };
        assert!(matches!(
            returned.default_outcome(None),
            Outcome::Fail { .. }
        ));
        let nacked = AmqpReply {
            confirmed: false,
            ..reply
        };
        assert!(matches!(
            nacked.default_outcome(None),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn properties_and_names_are_checked() {
        assert_eq!(spec("{exchangeName: e, routingKey: k}").problem(), None);
        assert_eq!(
            spec("{routingKey: q, properties: {deliveryMode: 1, priority: 9, expiration: '60000', type: t}, headers: {x-id: 7}}").problem(),
            None
        );
        for bad in [
            "{properties: {deliveryMode: 3}}",
            "{properties: {priority: 10}}",
            "{properties: {expiration: soon}}",
        ] {
            assert!(spec(bad).problem().is_some(), "{bad}");
        }
        let long = format!("{{routingKey: {}}}", "k".repeat(256));
        assert!(spec(&long)
            .problem()
            .expect("too long")
            .contains("routingKey"));
    }

    #[test]
    fn the_message_carries_json_persistence_and_the_headers() {
        let (exchange, key, props) = spec(
            "{exchangeName: e, routingKey: k, headers: {x-id: abc}, properties: {messageId: m1}}",
        )
        .message()
        .expect("valid");
        assert_eq!((exchange.as_str(), key.as_str()), ("e", "k"));
        assert_eq!(
            props.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(
            props.message_id().as_ref().map(ShortString::as_str),
            Some("m1")
        );
        assert!(props
            .headers()
            .as_ref()
            .is_some_and(|h| h.contains_key("x-id")));
    }

    #[test]
    fn a_stub_is_confirmed_or_an_error() {
        let stub = AmqpStub {
            exchange: "e".into(),
            routing_key: "k".into(),
        };
        let parse = |yaml: &str| {
            let spec: StubSpec = serde_saphyr::from_str(yaml).expect("stub parses");
            stub.parse(&spec)
        };
        assert!(parse("{}").is_ok());
        assert!(parse("{error: refused}").is_ok());
        assert!(parse("{status: 200}").is_err());
    }
}
