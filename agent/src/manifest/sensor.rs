//! The `Sensor` manifest: dependencies on events, filters, and the triggers they fire.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::common::{
    Amount, BasicAuth, ClientTls, IntOrString, KafkaSasl, NatsAuth, ScriptSource, SecretRef,
};
use super::k8s::{ArgoWorkflowTrigger, K8sPolicy, K8sTrigger};

/// `spec` of a Sensor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SensorSpec {
    /// Events the sensor waits for.
    pub dependencies: Vec<Dependency>,
    /// What to do when the dependencies are met.
    pub triggers: Vec<Trigger>,
    /// Argo's sensor pod template; accepted and ignored (triggerd runs no pod per sensor).
    #[serde(default)]
    pub template: Option<Value>,
    /// Argo's EventBus name; accepted and ignored in file mode.
    #[serde(default)]
    pub event_bus_name: Option<String>,
    /// Argo's replica count; accepted and ignored.
    #[serde(default)]
    pub replicas: Option<i64>,
    /// Argo's extra logging fields; accepted and ignored.
    #[serde(default)]
    pub logging_fields: Option<BTreeMap<String, String>>,
    /// Argo's revision history limit; accepted and ignored.
    #[serde(default)]
    pub revision_history_limit: Option<i64>,
    /// Argo's error-on-failed-round switch; accepted and ignored.
    #[serde(default)]
    pub error_on_failed_round: Option<bool>,
}

/// One event the sensor depends on.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dependency {
    /// Name used in parameters and conditions.
    pub name: String,
    /// EventSource that produces the event.
    pub event_source_name: String,
    /// Event name within the EventSource.
    pub event_name: String,
    /// Filters an event must pass.
    #[serde(default)]
    pub filters: Option<Filters>,
    /// How filter kinds combine: `and` (default) or `or`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub filters_logical_operator: Option<Spanned<String>>,
    /// Rewrites the event data before filtering.
    #[serde(default)]
    pub transform: Option<Transform>,
}

/// Filters of a dependency.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filters {
    /// Comparisons on data paths.
    #[serde(default)]
    #[schemars(with = "Vec<DataFilter>")]
    pub data: Vec<Spanned<DataFilter>>,
    /// How data filters combine: `and` (default) or `or`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub data_logical_operator: Option<Spanned<String>>,
    /// Expressions over named fields of the data.
    #[serde(default)]
    #[schemars(with = "Vec<ExprFilter>")]
    pub exprs: Vec<Spanned<ExprFilter>>,
    /// How expressions combine: `and` (default) or `or`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expr_logical_operator: Option<Spanned<String>>,
    /// Expected context attributes.
    #[serde(default)]
    #[schemars(with = "Option<ContextFilter>")]
    pub context: Option<Spanned<ContextFilter>>,
    /// Time-of-day window.
    #[serde(default)]
    #[schemars(with = "Option<TimeFilter>")]
    pub time: Option<Spanned<TimeFilter>>,
    /// A Rhai predicate over `event` and `ctx`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script: Option<Spanned<String>>,
    /// A file holding the Rhai predicate.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script_file: Option<Spanned<String>>,
}

/// One data filter: the value at `path` compared with `value` (any entry matches).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataFilter {
    /// gjson path into the event data.
    pub path: String,
    /// `string`, `number` or `bool`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Candidate values; strings are unanchored regular expressions.
    #[serde(default)]
    pub value: Vec<String>,
    /// `=` (default), `!=`, `>`, `>=`, `<`, `<=`.
    #[serde(default)]
    pub comparator: Option<String>,
}

/// An expression (Rhai, accepting govaluate's `'strings'`, `=~`, `!~` and `in (a, b)`)
/// over fields taken from the data by gjson path.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExprFilter {
    /// The boolean expression.
    pub expr: String,
    /// Variables of the expression.
    pub fields: Vec<PayloadField>,
}

/// A named value taken from the event data.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayloadField {
    /// gjson path.
    pub path: String,
    /// Variable name in the expression.
    pub name: String,
}

/// Expected context attributes; only the non-empty ones are compared, exactly.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContextFilter {
    /// Event type (source kind).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Subject (event name).
    #[serde(default)]
    pub subject: Option<String>,
    /// Source (EventSource name).
    #[serde(default)]
    pub source: Option<String>,
    /// Data content type.
    #[serde(default)]
    pub datacontenttype: Option<String>,
    /// Argo's other context fields; accepted, not compared (as in Argo).
    #[serde(default)]
    pub id: Option<String>,
    /// Accepted, not compared.
    #[serde(default)]
    pub specversion: Option<String>,
    /// Accepted, not compared.
    #[serde(default)]
    pub time: Option<String>,
}

/// A time-of-day window `[start, stop)`; it wraps past midnight when stop is before start.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeFilter {
    /// `HH:MM:SS`, inclusive.
    pub start: String,
    /// `HH:MM:SS`, exclusive.
    pub stop: String,
    /// IANA zone of the window and of the date (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A rewrite of event data.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Transform {
    /// Rhai returning the new data.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script_file: Option<Spanned<String>>,
    /// A jq program returning the new data (Argo's `transform.jq`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub jq: Option<Spanned<String>>,
}

/// A trigger with its delivery settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// What to execute.
    pub template: TriggerTemplate,
    /// Parameters applied to the template before it is executed.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// How a response is judged.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Attempts and backoff.
    #[serde(default)]
    pub retry_strategy: Option<Backoff>,
    /// At most this many executions (attempts included) per unit of time.
    #[serde(default)]
    #[schemars(with = "Option<RateLimit>")]
    pub rate_limit: Option<Spanned<RateLimit>>,
    /// Argo's at-least-once switch; triggerd always retries, so it only documents intent.
    #[serde(default)]
    pub at_least_once: Option<bool>,
    /// Trigger run with the failed events after the last failed attempt.
    #[serde(default)]
    pub dlq_trigger: Option<Box<Trigger>>,
}

/// The trigger itself: a name and exactly one type.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerTemplate {
    /// Name, unique within the sensor.
    pub name: String,
    /// Which dependencies must have arrived: `a && (b || c)`; default all of them.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub conditions: Option<Spanned<String>>,
    /// When partially met conditions are forgotten.
    #[serde(default)]
    pub conditions_reset: Vec<ConditionsReset>,
    /// Where older Argo examples put the policy; same as the trigger's `policy`.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Where older Argo examples put `atLeastOnce`; accepted, triggerd always retries.
    #[serde(default)]
    pub at_least_once: Option<bool>,
    /// HTTP request trigger.
    #[serde(default)]
    pub http: Option<HttpTrigger>,
    /// AWS Lambda invocation trigger.
    #[serde(default)]
    pub aws_lambda: Option<AwsLambdaTrigger>,
    /// NATS publish trigger.
    #[serde(default)]
    pub nats: Option<NatsTrigger>,
    /// Kafka produce trigger.
    #[serde(default)]
    pub kafka: Option<KafkaTrigger>,
    /// MQTT publish trigger.
    #[serde(default)]
    pub mqtt: Option<MqttTrigger>,
    /// AMQP (RabbitMQ) publish trigger.
    #[serde(default)]
    pub amqp: Option<AmqpTrigger>,
    /// Log trigger, for debugging.
    #[serde(default)]
    pub log: Option<LogTrigger>,
    /// Any Kubernetes resource: create, update, patch or delete.
    #[serde(default)]
    pub k8s: Option<K8sTrigger>,
    /// Argo Workflow operations through the Kubernetes API.
    #[serde(default)]
    pub argo_workflow: Option<ArgoWorkflowTrigger>,
}

/// When to forget dependencies that arrived but did not complete a condition.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConditionsReset {
    /// On a cron schedule.
    #[schemars(with = "ConditionsResetByTime")]
    pub by_time: Spanned<ConditionsResetByTime>,
}

/// A cron schedule for resetting conditions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionsResetByTime {
    /// Standard 5-field cron.
    pub cron: String,
    /// IANA zone of the schedule (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A trigger rate limit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// `Second` (default), `Minute` or `Hour`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Executions allowed per unit.
    pub requests_per_unit: u32,
}

/// An HTTP request.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpTrigger {
    /// Target URL (older Argo manifests call it `serverURL`).
    #[serde(alias = "serverURL")]
    pub url: String,
    /// Method, default POST.
    #[serde(default)]
    pub method: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Parameters building the JSON body.
    #[serde(default)]
    pub payload: Vec<Parameter>,
    /// Parameters applied to this spec (e.g. `dest: url`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rhai building the whole body from `events`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script_file: Option<Spanned<String>>,
    /// Request timeout in seconds (default 60).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// TLS settings; verification is on unless `insecureSkipVerify` is set.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Argo's `basicAuth`: user name and password from secrets, sent as `Authorization: Basic`.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Argo's `secureHeaders`: headers whose values come from a Secret or ConfigMap, so no
    /// credential sits in the manifest.
    #[serde(default)]
    pub secure_headers: Vec<SecureHeader>,
    /// triggerd: a token from a secret, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub bearer_token: Option<SecretRef>,
}

/// A request header whose value is read from a Secret or ConfigMap (Argo's `SecureHeader`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureHeader {
    /// Header name.
    pub name: String,
    /// Where the value comes from.
    pub value_from: ValueFrom,
}

/// A value from a Secret or a ConfigMap key (Argo's `ValueFromSource`); exactly one is set.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret.
    #[serde(default)]
    pub secret_key_ref: Option<SecretRef>,
    /// A key of a ConfigMap.
    #[serde(default)]
    pub config_map_key_ref: Option<SecretRef>,
}

/// An AWS Lambda invocation (Argo's `awsLambda`, plus `endpoint` and `payloadScript`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsLambdaTrigger {
    /// Function name, ARN or partial ARN.
    pub function_name: String,
    /// AWS region, e.g. `us-east-1`.
    #[schemars(with = "String")]
    pub region: Spanned<String>,
    /// Access key id (with `secretKey`); without both, the default credential chain.
    #[serde(default)]
    #[schemars(with = "Option<SecretRef>")]
    pub access_key: Option<Spanned<SecretRef>>,
    /// Secret access key (with `accessKey`).
    #[serde(default)]
    #[schemars(with = "Option<SecretRef>")]
    pub secret_key: Option<Spanned<SecretRef>>,
    /// A role to assume through STS with the credentials above (or the default chain).
    #[serde(default, rename = "roleARN")]
    pub role_arn: Option<String>,
    /// `RequestResponse` (default), `Event` or `DryRun`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub invocation_type: Option<Spanned<String>>,
    /// Endpoint URL override for emulators such as moto or LocalStack (triggerd only).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<Spanned<String>>,
    /// Parameters building the JSON payload.
    #[serde(default)]
    pub payload: Vec<Parameter>,
    /// Parameters applied to this spec (e.g. `dest: functionName`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rhai building the whole payload from `events`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script_file: Option<Spanned<String>>,
}

/// Publishes the payload on a NATS subject (Argo's `NATSTrigger`, plus `jetStream`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsTrigger {
    /// Server URL(s), comma-separated (`nats://host:4222`; the scheme may be left out).
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Subject to publish on; parameters may change it.
    pub subject: String,
    /// Publish through JetStream and wait for the stream's acknowledgement (triggerd only);
    /// otherwise a core publish, confirmed by a round trip to the server.
    #[serde(default)]
    pub jet_stream: bool,
    /// Parameters building the JSON payload.
    #[serde(default)]
    pub payload: Vec<Parameter>,
    /// Parameters applied to this spec (e.g. `dest: subject`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rhai building the whole payload from `events`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script_file: Option<Spanned<String>>,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    /// TLS towards the server.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

/// Publishes the payload (JSON) on an MQTT topic (triggerd only; Argo has no MQTT trigger).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttTrigger {
    /// Broker URL: `tcp://` or `mqtt://` (TLS when `tls` is given), `ssl://` or `mqtts://`.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Topic to publish on (no wildcards); parameters may change it.
    pub topic: String,
    /// QoS 0, 1 (default) or 2; with 1 and 2 an attempt waits for the broker's
    /// acknowledgement.
    #[serde(default)]
    pub qos: Option<i64>,
    /// Ask the broker to keep the message as the topic's retained message.
    #[serde(default)]
    pub retain: bool,
    /// Client identifier (default `triggerd-<sensor>-<trigger>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Parameters building the JSON payload.
    #[serde(default)]
    pub payload: Vec<Parameter>,
    /// Parameters applied to this spec (e.g. `dest: topic`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rhai building the whole payload from `events`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script_file: Option<Spanned<String>>,
    /// User name and password, from secrets.
    #[serde(default)]
    pub auth: Option<BasicAuth>,
    /// TLS towards the broker (PEM values from secrets).
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

/// Publishes the payload (JSON) to an AMQP exchange with publisher confirms (triggerd only;
/// Argo has no AMQP trigger). Field names follow the `amqp` event source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpTrigger {
    /// Broker URL, `amqp://` or `amqps://`. Give this or `urlSecret`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Secret holding the broker URL.
    #[serde(default)]
    pub url_secret: Option<SecretRef>,
    /// Exchange to publish to; empty: the default exchange (routing key = queue name).
    /// Parameters may change it.
    #[serde(default)]
    pub exchange_name: String,
    /// When given, the exchange is declared with this type (`direct`, `fanout`, `topic`,
    /// `headers`) before the first publish; otherwise it must exist.
    #[serde(default)]
    pub exchange_type: Option<String>,
    /// How the exchange is declared (with `exchangeType`).
    #[serde(default)]
    pub exchange_declare: Option<super::eventsource::AmqpExchangeDeclare>,
    /// Routing key; parameters may change it.
    #[serde(default)]
    pub routing_key: String,
    /// Fail the attempt when the broker cannot route the message to any queue.
    #[serde(default)]
    pub mandatory: bool,
    /// Message properties; parameters may change them (`properties.correlationId`).
    #[serde(default)]
    pub properties: AmqpProperties,
    /// Message headers; parameters may set them (`headers.x-id`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Parameters building the JSON payload.
    #[serde(default)]
    pub payload: Vec<Parameter>,
    /// Parameters applied to this spec (e.g. `dest: routingKey`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rhai building the whole payload from `events`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script_file: Option<Spanned<String>>,
    /// User name and password, from secrets.
    #[serde(default)]
    pub auth: Option<BasicAuth>,
    /// TLS towards the broker (PEM values from secrets); needs an `amqps://` URL.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

/// AMQP message properties a trigger sets (the source's event data has the same names).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpProperties {
    /// Default `application/json`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// E.g. `gzip`.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// 1 transient, 2 persistent (default 2).
    #[serde(default)]
    pub delivery_mode: Option<i64>,
    /// 0 to 9.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Reply queue.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as text (AMQP's form).
    #[serde(default)]
    pub expiration: Option<String>,
    /// Message id (consumers, triggerd's own source included, dedup on it).
    #[serde(default)]
    pub message_id: Option<String>,
    /// Message type.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Application id.
    #[serde(default)]
    pub app_id: Option<String>,
}

/// Writes the payload (JSON) as a record to a Kafka topic (Argo's `KafkaTrigger`, plus
/// `timeout`). Fields triggerd cannot honour yet are parsed only to be rejected with a hint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaTrigger {
    /// Bootstrap servers, comma-separated `host:port`.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Topic to write to; parameters may change it.
    pub topic: String,
    /// Record key (it picks the partition); parameters may set it.
    #[serde(default)]
    pub partitioning_key: Option<String>,
    /// Record headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Acknowledgements the broker waits for: -1 (all in-sync replicas, default), 1 or 0.
    #[serde(default)]
    #[schemars(with = "Option<i64>")]
    pub required_acks: Option<Spanned<i64>>,
    /// Compress records (lz4).
    #[serde(default)]
    pub compress: bool,
    /// Batching delay in milliseconds (librdkafka's `linger.ms`).
    #[serde(default)]
    #[schemars(with = "Option<i64>")]
    pub flush_frequency: Option<Spanned<i64>>,
    /// How long one attempt waits for the broker's acknowledgement (Go duration, default
    /// 10s; triggerd only).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Deprecated in Argo, where it is ignored too; records are partitioned by key.
    #[serde(default)]
    pub partition: Option<IntOrString>,
    /// Kafka protocol version; librdkafka negotiates it, so it is accepted and unused.
    #[serde(default)]
    pub version: Option<String>,
    /// Parameters building the JSON payload.
    #[serde(default)]
    pub payload: Vec<Parameter>,
    /// Parameters applied to this spec (`dest: topic` or `dest: partitioningKey`).
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Rhai building the whole payload from `events`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub payload_script_file: Option<Spanned<String>>,
    /// TLS towards the brokers (CA, client certificate and key as files).
    #[serde(default)]
    #[schemars(with = "Option<ClientTls>")]
    pub tls: Option<Spanned<ClientTls>>,
    /// SASL authentication (PLAIN or SCRAM).
    #[serde(default)]
    #[schemars(with = "Option<KafkaSasl>")]
    pub sasl: Option<Spanned<KafkaSasl>>,
    /// Rejected: not supported yet.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub schema_registry: Option<Spanned<Value>>,
    /// Rejected: use `headers`.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub secure_headers: Option<Spanned<Value>>,
}

/// Writes the events to the agent's log.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogTrigger {
    /// Argo's minimum interval between log lines; accepted, not enforced.
    #[serde(default)]
    pub interval_seconds: Option<u64>,
}

/// A parameter: a value from an event (or a script) written to `dest`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Parameter {
    /// Where the value comes from.
    pub src: ParameterSource,
    /// gjson-style path the value is written to.
    pub dest: String,
    /// `overwrite` (default), `append` or `prepend`.
    #[serde(default)]
    pub operation: Option<String>,
}

/// Source of a parameter value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParameterSource {
    /// Dependency whose event is read.
    #[serde(default)]
    pub dependency_name: Option<String>,
    /// gjson path into the event data.
    #[serde(default)]
    pub data_key: Option<String>,
    /// Context attribute name.
    #[serde(default)]
    pub context_key: Option<String>,
    /// Literal value, and the default when a key is missing.
    #[serde(default)]
    pub value: Option<String>,
    /// Keep the JSON type of the selected value instead of its text.
    #[serde(default)]
    pub use_raw_data: Option<bool>,
    /// Rhai returning the value.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script_file: Option<Spanned<String>>,
}

/// How the response of a trigger is judged.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Status codes that count as success.
    #[serde(default)]
    pub status: Option<StatusPolicy>,
    /// Rhai policy script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script: Option<Spanned<String>>,
    /// File holding that script.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub script_file: Option<Spanned<String>>,
    /// Kubernetes triggers: labels the live object must get.
    #[serde(default)]
    pub k8s: Option<K8sPolicy>,
    /// Kubernetes triggers: how long a script returning "wait" may keep waiting for the
    /// live object to change (Go duration, default 10m).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}

/// Allowed HTTP status codes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusPolicy {
    /// Codes that mean success.
    pub allow: Vec<u16>,
}

/// Argo's `retryStrategy` (Kubernetes wait.Backoff fields). `steps` is the total number of attempts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// First delay: a Go duration string (`"10ms"`, `"1s"`) or nanoseconds as a number.
    #[serde(default)]
    pub duration: Option<IntOrString>,
    /// Multiplier per attempt.
    #[serde(default)]
    pub factor: Option<Amount>,
    /// Random extra delay as a fraction of the delay.
    #[serde(default)]
    pub jitter: Option<Amount>,
    /// Total attempts.
    #[serde(default)]
    pub steps: Option<u32>,
}

impl ScriptSource {
    /// A script source from optional inline/file fields.
    pub fn from_fields(
        script: &Option<Spanned<String>>,
        file: &Option<Spanned<String>>,
    ) -> Option<Self> {
        if script.is_none() && file.is_none() {
            return None;
        }
        Some(Self {
            script: script.clone(),
            script_file: file.clone(),
        })
    }
}
