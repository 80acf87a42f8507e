//! The `kafka` trigger: writes the payload (JSON) as one record to a topic and waits for the
//! broker's acknowledgement (`requiredAcks`, all in-sync replicas by default).
//!
//! One producer per trigger, created at the first attempt and shared by later ones. A broker
//! that cannot be reached makes the attempt time out (`timeout`), a retryable error, so
//! `retryStrategy` and the dead letter apply as for any other target. Dropping the producer
//! purges what is still queued and waits at most half a second, so it never holds shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rhai::{Dynamic, Map};
use serde::Deserialize;
use serde_json::{json, Value};

use super::compile::{
    check_parameter_dests, compile_params, parameterized, payload_builder, FixedParts, KindInput,
    KindParts,
};
use super::response::duration_ms;
use super::stub::{status_stub, StubMisuse, StubResponse, StubShape, StubSpec};
use super::TriggerKind;
use super::{BuildError, Call, CompiledParameter, Invocation, KindError, Outcome};
use super::{PrepareContext, PrepareFailure, Reply, ReplyShape, Response, TriggerError};
use super::{Shape, TriggerTarget};
use crate::backoff::parse_duration;
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::kafka_client::{KafkaSecrets, KafkaSecurity};
use crate::manifest::{KafkaTrigger, ScriptSource};
use crate::script::ScriptHost;

/// The spec fields parameters may change (`dest: topic`, `dest: partitioningKey`).
pub const PARAMETER_FIELDS: [&str; 2] = ["topic", "partitioningKey"];

/// Default wait for the broker's acknowledgement of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The request of one write, after parameters were applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRequestSpec {
    /// Topic to write to.
    pub topic: String,
    /// Record key: a string, or a number or boolean written as text.
    #[serde(default)]
    pub partitioning_key: Option<Value>,
}

impl KafkaRequestSpec {
    /// Why the spec is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        let t = self.topic.trim();
        if t.is_empty() {
            return Some("topic is empty".into());
        }
        if t.len() > 249
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Some(format!(
                "invalid topic {t:?}: at most 249 characters of a-z, A-Z, 0-9, '.', '_' and '-'"
            ));
        }
        match &self.partitioning_key {
            None | Some(Value::Null | Value::String(_) | Value::Number(_) | Value::Bool(_)) => None,
            Some(other) => Some(format!(
                "partitioningKey must be a string, number or boolean, not {other}"
            )),
        }
    }

    /// The record key, if any.
    pub fn key(&self) -> Option<String> {
        match &self.partitioning_key {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }
}

/// Compiles a `kafka` spec: the producer settings (fixed at load), parameters (which may
/// change only `topic` and `partitioningKey`) and payload.
pub(super) fn compile(
    ctx: &mut CompileContext<'_>,
    k: &KafkaTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let (tfield, dependencies) = (input.tfield, input.dependencies);
    let f = format!("{tfield}.kafka");
    let at = Some(&k.url.referenced);
    let before = ctx.errors.len();
    check_parameter_dests(
        ctx,
        tfield,
        FixedParts {
            type_key: "kafka",
            allowed: &PARAMETER_FIELDS,
            fixed: "url, headers, requiredAcks, compress, flushFrequency and timeout",
        },
        &k.parameters,
        input.template_params,
    );
    if k.url.value.trim().is_empty() {
        ctx.error_with_hint(
            at,
            format!("{f}.url"),
            "url is empty",
            "bootstrap servers, e.g. 127.0.0.1:9092",
        );
    }
    let unsupported = [
        (
            "schemaRegistry",
            k.schema_registry.as_ref(),
            "Avro/schema registry encoding is not supported; the payload is written as JSON",
        ),
        (
            "secureHeaders",
            k.secure_headers.as_ref(),
            "not supported yet; use `headers`",
        ),
    ];
    for (name, value, hint) in unsupported {
        if let Some(v) = value {
            ctx.error_with_hint(
                Some(&v.referenced),
                format!("{f}.{name}"),
                format!("{name} is not supported"),
                hint,
            );
        }
    }
    let security = KafkaSecurity::compile(ctx, &f, k.tls.as_ref(), k.sasl.as_ref());
    let required_acks = match &k.required_acks {
        None => -1,
        Some(a) if [-1, 0, 1].contains(&a.value) => a.value,
        Some(a) => {
            ctx.error_with_hint(
                Some(&a.referenced),
                format!("{f}.requiredAcks"),
                format!("invalid requiredAcks {}", a.value),
                "-1 (all in-sync replicas, the default), 1 (the leader) or 0 (none)",
            );
            -1
        }
    };
    let linger_ms = match &k.flush_frequency {
        Some(ms) if !(0..=900_000).contains(&ms.value) => {
            ctx.error_with_hint(
                Some(&ms.referenced),
                format!("{f}.flushFrequency"),
                format!("invalid flushFrequency {}", ms.value),
                "milliseconds between 0 and 900000",
            );
            None
        }
        other => other.as_ref().map(|ms| ms.value),
    };
    let timeout = match &k.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => match parse_duration(&t.value) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                ctx.error_with_hint(
                    Some(&t.referenced),
                    format!("{f}.timeout"),
                    format!("invalid timeout {:?}", t.value),
                    "a Go duration such as 10s or 500ms",
                );
                DEFAULT_TIMEOUT
            }
        },
    };
    let spec = KafkaRequestSpec {
        topic: k.topic.clone(),
        partitioning_key: k.partitioning_key.clone().map(Value::String),
    };
    let parameterized = !k.parameters.is_empty() || input.template_parameterized();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            ctx.error(at, format!("{f}.topic"), p);
            false
        }
        Some(_) => false,
        None => true,
    };
    let compiled = compile_params(ctx, &format!("{f}.parameters"), &k.parameters, dependencies);
    let payload = payload_builder(
        ctx,
        &f,
        &k.payload,
        ScriptSource::from_fields(&k.payload_script, &k.payload_script_file),
        dependencies,
    );
    if ctx.errors.len() > before {
        return None;
    }
    let target = Arc::new(KafkaTarget::new(
        KafkaSettings {
            url: k.url.value.trim().to_owned(),
            required_acks,
            compress: k.compress,
            linger_ms,
            timeout,
            headers: k.headers.clone(),
            security,
        },
        format!("triggerd/{}/{}", input.sensor, input.trigger),
    ));
    let fixed = (static_ok && !parameterized).then(|| {
        Invocation::new(KafkaCall {
            target: target.clone(),
            spec,
        })
    });
    Some(KindParts {
        kind: TriggerKind::Kafka(target),
        params: compiled?,
        payload: payload?,
        fixed,
    })
}

/// Producer settings fixed at load.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub url: String,
    /// `acks`: -1, 0 or 1.
    pub required_acks: i64,
    /// Compress batches with lz4.
    pub compress: bool,
    /// `linger.ms`, when given.
    pub linger_ms: Option<i64>,
    /// How long one attempt waits for the acknowledgement.
    pub timeout: Duration,
    /// Record headers.
    pub headers: BTreeMap<String, String>,
    /// TLS and SASL towards the brokers.
    pub security: KafkaSecurity,
}

/// A Kafka cluster to write to, with its producer once made.
#[derive(Clone)]
pub struct KafkaTarget {
    settings: KafkaSettings,
    client_id: String,
    secrets: Arc<OnceLock<KafkaSecrets>>,
    producer: Arc<OnceLock<FutureProducer>>,
}

impl std::fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTarget")
            .field("settings", &self.settings)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl KafkaTarget {
    /// Reads the TLS material and SASL credentials (a missing one stops the start); the
    /// producer is made at the first attempt.
    async fn ready(&self, ctx: &PrepareContext<'_>) -> Result<(), PrepareFailure> {
        let secrets = self
            .settings
            .security
            .read_secrets(ctx.secrets)
            .await
            .map_err(|e| KindError::boxed("kafka", e))?;
        let _ = self.secrets.set(secrets);
        Ok(())
    }

    /// A target with these settings; `client_id` (sensor/trigger) names it to the broker.
    pub fn new(settings: KafkaSettings, client_id: String) -> Self {
        Self {
            settings,
            client_id,
            secrets: Arc::new(OnceLock::new()),
            producer: Arc::new(OnceLock::new()),
        }
    }

    fn producer(&self) -> Result<&FutureProducer, KafkaError> {
        if let Some(p) = self.producer.get() {
            return Ok(p);
        }
        let s = &self.settings;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &s.url)
            .set("client.id", &self.client_id)
            .set("acks", s.required_acks.to_string())
            .set("compression.type", if s.compress { "lz4" } else { "none" })
            .set(
                "message.timeout.ms",
                s.timeout.as_millis().max(1).to_string(),
            )
            // An attempt is short: after a broker restart, reconnect within a second.
            .set("reconnect.backoff.max.ms", "1000");
        if let Some(ms) = s.linger_ms {
            config.set("linger.ms", ms.to_string());
        }
        s.security.apply(
            &mut config,
            self.secrets.get().unwrap_or(&KafkaSecrets::default()),
        );
        let producer: FutureProducer = config.create()?;
        // Two first attempts may race; the loser's producer is dropped unused.
        Ok(self.producer.get_or_init(|| producer))
    }

    /// Writes one record and waits for the acknowledgement.
    pub async fn execute(&self, spec: &KafkaRequestSpec, payload: &Value) -> Response {
        let started = tokio::time::Instant::now();
        let failed = |e: TriggerError| Response::failed(e, started.elapsed());
        let producer = match self.producer() {
            Ok(p) => p,
            Err(e) => {
                return failed(
                    TriggerError::permanent(format!("cannot create the Kafka producer: {e}"))
                        .caused_by(e),
                )
            }
        };
        let topic = spec.topic.trim().to_owned();
        let key = spec.key();
        let body = payload.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(self.settings.headers.len());
        for (name, value) in &self.settings.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&topic).payload(&body).headers(headers);
        if let Some(k) = &key {
            record = record.key(k);
        }
        match producer
            .send(record, Timeout::After(self.settings.timeout))
            .await
        {
            Ok(delivery) => Response::replied(
                Reply::new(KafkaReply {
                    topic,
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                started.elapsed(),
            ),
            Err((e, _)) => failed(
                TriggerError::new(format!("Kafka write to {topic}: {e}"), is_retryable(&e))
                    .caused_by(e),
            ),
        }
    }
}

impl TriggerTarget for KafkaTarget {
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(self.ready(ctx))
    }

    /// The request of one execution: the template's `kafka` section after parameters.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let spec = parameterized(
            template,
            "kafka",
            params,
            host,
            events,
            KafkaRequestSpec::problem,
        )?;
        Ok(Invocation::new(KafkaCall { target: self, spec }))
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(KafkaStub)
    }
}

/// One record to write.
#[derive(Debug)]
struct KafkaCall {
    target: Arc<KafkaTarget>,
    spec: KafkaRequestSpec,
}

impl Call for KafkaCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec, payload))
    }

    /// `{type: kafka, topic, partitioningKey}`.
    fn to_json(&self) -> Value {
        json!({
            "type": "kafka",
            "topic": self.spec.topic,
            "partitioningKey": self.spec.key(),
        })
    }
}

/// Whether a failed write may succeed when repeated: everything but errors about the record
/// or the configuration (too large, invalid, not authorised).
pub fn is_retryable(error: &KafkaError) -> bool {
    !matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRequiredAcks
                | RDKafkaErrorCode::InvalidArgument
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// Where the broker stored the record; policies see `#{topic, partition, offset,
/// duration_ms}` (`offset` is -1 with `requiredAcks: 0`).
#[derive(Debug, Clone, Default)]
pub struct KafkaReply {
    /// The topic written to.
    pub topic: String,
    /// The partition that took the record.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
}

impl ReplyShape for KafkaReply {
    fn to_dynamic(&self, duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("topic".into(), self.topic.clone().into());
        map.insert("partition".into(), i64::from(self.partition).into());
        map.insert("offset".into(), self.offset.into());
        map.insert("duration_ms".into(), duration_ms(duration).into());
        map.into()
    }

    /// The broker acknowledged the record: success.
    fn default_outcome(&self, _allow: Option<&[u16]>) -> Outcome {
        Outcome::Success
    }

    fn summary(&self) -> String {
        format!(
            "written to {} partition {} at offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// Stubs of kafka triggers: `{}` (the broker confirmed) or `{error}`; where the message
/// went is the live broker's to say.
#[derive(Debug, Clone, Copy)]
pub struct KafkaStub;

impl StubShape for KafkaStub {
    fn name(&self) -> String {
        "kafka".into()
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
                "a kafka trigger's stub is `{}` (acknowledged) or `{error}`",
            )
            .hint("status, body, headers, functionError and payload are for http and awsLambda triggers"));
        }
        status_stub(spec, true)
    }

    fn reply(&self, _stub: &StubResponse) -> Reply {
        Reply::new(KafkaReply::default())
    }

    fn to_json(&self, _stub: &StubResponse) -> Value {
        json!({})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_errors_are_permanent_and_transport_errors_retryable() {
        let production = KafkaError::MessageProduction;
        assert!(!is_retryable(&production(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(!is_retryable(&production(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(is_retryable(&production(RDKafkaErrorCode::MessageTimedOut)));
        assert!(is_retryable(&production(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(is_retryable(&production(
            RDKafkaErrorCode::NotLeaderForPartition
        )));
    }

    #[test]
    fn keys_are_text_and_topics_are_checked() {
        let spec = |topic: &str, key: Value| KafkaRequestSpec {
            topic: topic.into(),
            partitioning_key: Some(key),
        };
        assert_eq!(spec("a", Value::from(42)).key().as_deref(), Some("42"));
        assert_eq!(spec("a", Value::from("k")).key().as_deref(), Some("k"));
        assert_eq!(spec("a", Value::Null).key(), None);
        assert!(spec("a", serde_json::json!({"x": 1})).problem().is_some());
        assert!(spec("bad topic", Value::Null).problem().is_some());
        assert!(spec("orders.v1_x-y", Value::Null).problem().is_none());
    }
}
