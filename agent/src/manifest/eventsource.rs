//! The `EventSource` manifest: named events of each source kind.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::common::{BasicAuth, ClientTls, IntOrString, KafkaSasl, NatsAuth, SecretRef};
use super::sensor::Backoff;

/// `spec` of an EventSource: one map per kind, keyed by event name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventSourceSpec {
    /// HTTP endpoints.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, WebhookEvent>")]
    pub webhook: BTreeMap<String, Spanned<WebhookEvent>>,
    /// Cron schedules and intervals.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, CalendarEvent>")]
    pub calendar: BTreeMap<String, Spanned<CalendarEvent>>,
    /// NATS subjects, core or through a JetStream durable consumer.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, NatsEvent>")]
    pub nats: BTreeMap<String, Spanned<NatsEvent>>,
    /// Kafka topics, read through a consumer group.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, KafkaEvent>")]
    pub kafka: BTreeMap<String, Spanned<KafkaEvent>>,
    /// MQTT topics, through a persistent session.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, MqttEvent>")]
    pub mqtt: BTreeMap<String, Spanned<MqttEvent>>,
    /// AMQP (RabbitMQ) queues bound to an exchange.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, AmqpEvent>")]
    pub amqp: BTreeMap<String, Spanned<AmqpEvent>>,
    /// AWS SQS queues (S3 bucket notifications arrive through them).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SqsEvent>")]
    pub sqs: BTreeMap<String, Spanned<SqsEvent>>,
    /// Kubernetes objects of one resource, watched for ADD, UPDATE and DELETE.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ResourceEvent>")]
    pub resource: BTreeMap<String, Spanned<ResourceEvent>>,
    /// Argo's pod template; accepted and ignored.
    #[serde(default)]
    pub template: Option<Value>,
    /// Argo's Service spec; accepted and ignored in file mode.
    #[serde(default)]
    pub service: Option<Value>,
    /// Argo's EventBus name; accepted and ignored in file mode.
    #[serde(default)]
    pub event_bus_name: Option<String>,
    /// Argo's replica count; accepted and ignored.
    #[serde(default)]
    pub replicas: Option<i64>,
}

/// One webhook endpoint (Argo's `WebhookContext`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookEvent {
    /// TCP port to listen on; endpoints on the same port share a server.
    pub port: IntOrString,
    /// URL path.
    pub endpoint: String,
    /// Accepted method, default POST.
    #[serde(default)]
    pub method: Option<String>,
    /// Bearer token required in `Authorization`.
    #[serde(default)]
    pub auth_secret: Option<SecretRef>,
    /// Require the sender's token or body signature (triggerd only).
    #[serde(default)]
    pub signature: Option<WebhookSignature>,
    /// Serve HTTPS with this PEM certificate (chain); re-read when the secret changes.
    #[serde(default)]
    pub server_cert_secret: Option<SecretRef>,
    /// The PEM private key of `serverCertSecret`.
    #[serde(default)]
    pub server_key_secret: Option<SecretRef>,
    /// Largest accepted body in bytes (default 1 MiB), for every content type.
    #[serde(default)]
    pub max_payload_size: Option<u64>,
    /// Extra fields copied into the event context as extensions.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// External URL (informational).
    #[serde(default)]
    pub url: Option<String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}

/// How a sender proves a request is its own: a shared token or an HMAC over the raw body
/// (triggerd only; Argo's generic webhook has `authSecret` alone). `provider` picks a
/// sender's documented scheme; the other fields override it, or describe any other sender.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSignature {
    /// The shared secret (the sender's webhook secret or token).
    pub secret: SecretRef,
    /// The sender's scheme (default `github`).
    #[serde(default)]
    pub provider: Option<SignatureProvider>,
    /// Header carrying the signature (or the token, for `gitlab`).
    #[serde(default)]
    pub header: Option<String>,
    /// Text before the digest in the header, such as `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The HMAC's hash: `sha1`, `sha256` or `sha512`.
    #[serde(default)]
    pub algorithm: Option<SignatureAlgorithm>,
    /// How the digest is written: `hex` or `base64`.
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,
    /// Header carrying the Unix time the sender signed at; the signed text then includes it
    /// and a request outside `tolerance` of now is refused (replay protection).
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// The signed text, with `{timestamp}` and `{body}` placeholders (default `{body}`).
    #[serde(default)]
    pub signed_payload: Option<String>,
    /// Largest difference between the signed timestamp and now (default 5m).
    #[serde(default)]
    pub tolerance: Option<String>,
}

/// A sender whose webhook scheme triggerd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureProvider {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`.
    Github,
    /// `X-Gitlab-Token: <the secret>` (a token, compared in constant time).
    Gitlab,
    /// `X-Gitea-Signature: <hex HMAC-SHA256>` (Gitea and Forgejo).
    Gitea,
    /// `X-Hub-Signature: sha256=<hex HMAC-SHA256>` (Bitbucket Cloud and Server).
    Bitbucket,
    /// `X-Slack-Signature: v0=<hex HMAC-SHA256 of v0:{timestamp}:{body}>` with
    /// `X-Slack-Request-Timestamp`.
    Slack,
    /// `Stripe-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of {timestamp}.{body}>`.
    Stripe,
    /// Only what the other fields say (`header` is required).
    Generic,
}

/// The hash of a webhook HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureAlgorithm {
    /// HMAC-SHA1 (older senders).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How a webhook digest is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Hexadecimal (either case).
    Hex,
    /// Standard base64.
    Base64,
}

/// An EventSource filter (Argo's `filter.expression`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceFilter {
    /// Boolean expression over the top-level keys of the event data.
    #[schemars(with = "String")]
    pub expression: Spanned<String>,
}

/// One calendar schedule (Argo's `CalendarEventSource`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CalendarEvent {
    /// Standard 5-field cron (minute hour day-of-month month day-of-week, 0 or 7 = Sunday).
    #[serde(default)]
    pub schedule: Option<String>,
    /// Fixed interval as a Go duration (`10s`, `1m30s`).
    #[serde(default)]
    pub interval: Option<String>,
    /// Dates (`YYYY-MM-DD`, in `timezone`) on which nothing fires.
    #[serde(default)]
    pub exclusion_dates: Vec<String>,
    /// IANA zone name for the schedule, default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}

/// One NATS subscription (Argo's `NATSEventsSource`, plus `jetStream`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsEvent {
    /// Server URL(s), comma-separated (`nats://host:4222`; the scheme may be left out).
    pub url: String,
    /// Subject to subscribe to; wildcards allowed.
    pub subject: String,
    /// Parse message bodies as JSON (otherwise JSON bodies are still parsed, other bodies
    /// are kept as text).
    #[serde(default)]
    pub json_body: bool,
    /// Queue group: replicas of the agent share the messages (core subjects only).
    #[serde(default)]
    pub queue: Option<String>,
    /// Attempts and delays of the first connection.
    #[serde(default)]
    pub connection_backoff: Option<Backoff>,
    /// Credentials.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    /// TLS towards the server.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Extra fields copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
    /// Consume through a JetStream durable consumer instead of a core subscription: messages
    /// are acknowledged once the bus accepted them, so none is lost across restarts.
    #[serde(default)]
    #[schemars(with = "Option<JetStreamConsumer>")]
    pub jet_stream: Option<Spanned<JetStreamConsumer>>,
}

/// One MQTT subscription (Argo's `MQTTEventSource`, plus `qos` and `cleanSession`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttEvent {
    /// Broker URL: `tcp://` or `mqtt://` (TLS when `tls` is given), `ssl://` or `mqtts://`.
    pub url: String,
    /// Topic filter to subscribe to; `+` and `#` wildcards allowed.
    pub topic: String,
    /// Client identifier; the broker keeps the session under it (default
    /// `triggerd-<EventSource>-<event>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Attempts and delays of the first connection.
    #[serde(default)]
    pub connection_backoff: Option<Backoff>,
    /// Parse message bodies as JSON (otherwise they are kept as text).
    #[serde(default)]
    pub json_body: bool,
    /// TLS towards the broker (PEM values from secrets).
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// User name and password, from secrets.
    #[serde(default)]
    pub auth: Option<BasicAuth>,
    /// Subscription QoS: 0, 1 (default) or 2 (triggerd only).
    #[serde(default)]
    pub qos: Option<i64>,
    /// Start a new session at each connection, dropping what the broker kept (triggerd only;
    /// default false with QoS 1 or 2, true with QoS 0).
    #[serde(default)]
    pub clean_session: Option<bool>,
    /// Extra fields copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}

/// One AMQP consumer (Argo's `AMQPEventSource`, plus `prefetch`): a queue bound to an
/// exchange with a routing key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpEvent {
    /// Broker URL, `amqp://` or `amqps://` (user and password may be in it; `auth` replaces
    /// them). Give this or `urlSecret`.
    #[serde(default)]
    pub url: Option<String>,
    /// Secret holding the broker URL.
    #[serde(default)]
    pub url_secret: Option<SecretRef>,
    /// Exchange to bind the queue to; declared when missing.
    pub exchange_name: String,
    /// `direct`, `fanout`, `topic`, `headers` or a plugin's `x-` type.
    pub exchange_type: String,
    /// Binding key.
    #[serde(default)]
    pub routing_key: String,
    /// Attempts and delays of the first connection; later reconnections use its delays.
    #[serde(default)]
    pub connection_backoff: Option<Backoff>,
    /// Parse message bodies as JSON (otherwise they are kept as text).
    #[serde(default)]
    pub json_body: bool,
    /// TLS towards the broker (PEM values from secrets); needs an `amqps://` URL.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// User name and password, from secrets.
    #[serde(default)]
    pub auth: Option<BasicAuth>,
    /// Extra fields copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// How the exchange is declared.
    #[serde(default)]
    pub exchange_declare: Option<AmqpExchangeDeclare>,
    /// How the queue is declared.
    #[serde(default)]
    pub queue_declare: Option<AmqpQueueDeclare>,
    /// How the queue is bound.
    #[serde(default)]
    pub queue_bind: Option<AmqpNoWait>,
    /// How messages are consumed.
    #[serde(default)]
    pub consume: Option<AmqpConsume>,
    /// Unacknowledged messages the broker may send ahead (basic.qos; triggerd only, default
    /// 64).
    #[serde(default)]
    pub prefetch: Option<i64>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}

/// One SQS queue (Argo's `SQSEventSource`, plus `s3`), long-polled.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SqsEvent {
    /// AWS region.
    #[schemars(with = "String")]
    pub region: Spanned<String>,
    /// Queue name.
    pub queue: String,
    /// Account owning the queue, when it is another account's.
    #[serde(default)]
    pub queue_account_id: Option<String>,
    /// Long-poll wait per receive, 0 to 20 seconds (default 20).
    #[serde(default)]
    pub wait_time_seconds: Option<i64>,
    /// Access key id (secret reference); absent: the SDK's default credential chain.
    #[serde(default)]
    #[schemars(with = "Option<SecretRef>")]
    pub access_key: Option<Spanned<SecretRef>>,
    /// Secret access key (secret reference).
    #[serde(default)]
    #[schemars(with = "Option<SecretRef>")]
    pub secret_key: Option<Spanned<SecretRef>>,
    /// Session token of temporary keys (secret reference).
    #[serde(default)]
    pub session_token: Option<SecretRef>,
    /// Role assumed through STS.
    #[serde(default, rename = "roleARN")]
    pub role_arn: Option<String>,
    /// Endpoint URL override (emulators, other clouds).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<Spanned<String>>,
    /// Parse message bodies as JSON (otherwise they are kept as text; S3 notifications are
    /// parsed either way).
    #[serde(default)]
    pub json_body: bool,
    /// Argo's "leave failed messages for the queue's dead-letter policy": triggerd always
    /// leaves a message it could not hand to the bus, so this changes nothing.
    #[serde(default)]
    pub dlq: bool,
    /// Only S3 notifications of this bucket, event types and key prefix/suffix (triggerd
    /// only).
    #[serde(default)]
    pub s3: Option<S3Filter>,
    /// Extra fields copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
}

/// Which S3 notification records an `sqs` event keeps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Filter {
    /// Bucket name; empty or absent: any.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Event types, e.g. `s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`; absent: any.
    #[serde(default)]
    pub events: Vec<String>,
    /// Key prefix and suffix.
    #[serde(default)]
    pub filter: Option<S3KeyFilter>,
}

/// Key prefix and suffix of an [`S3Filter`].
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3KeyFilter {
    /// Keys start with this.
    #[serde(default)]
    pub prefix: String,
    /// Keys end with this.
    #[serde(default)]
    pub suffix: String,
}

/// Argo's `AMQPExchangeDeclareConfig`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpExchangeDeclare {
    /// Survives a broker restart (default true, as Argo).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when the last queue is unbound.
    #[serde(default)]
    pub auto_delete: bool,
    /// Only other exchanges publish to it.
    #[serde(default)]
    pub internal: bool,
    /// Do not wait for the broker's answer.
    #[serde(default)]
    pub no_wait: bool,
}

fn yes() -> bool {
    true
}

/// Argo's `AMQPQueueDeclareConfig`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpQueueDeclare {
    /// Queue name; empty: the broker names a new queue at each connection.
    #[serde(default)]
    pub name: String,
    /// Survives a broker restart.
    #[serde(default)]
    pub durable: bool,
    /// Deleted when the last consumer goes.
    #[serde(default)]
    pub auto_delete: bool,
    /// Only this connection uses it; deleted when it closes.
    #[serde(default)]
    pub exclusive: bool,
    /// Do not wait for the broker's answer.
    #[serde(default)]
    pub no_wait: bool,
    /// Queue arguments as YAML text, e.g. `x-queue-type: quorum`.
    #[serde(default)]
    pub arguments: String,
}

/// Argo's `AMQPQueueBindConfig`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpNoWait {
    /// Do not wait for the broker's answer.
    #[serde(default)]
    pub no_wait: bool,
}

/// Argo's `AMQPConsumeConfig`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmqpConsume {
    /// Consumer tag (default `triggerd-<EventSource>-<event>`).
    #[serde(default)]
    pub consumer_tag: Option<String>,
    /// Acknowledge each message as it arrives, before the bus took it (at most once).
    /// Default false: acknowledged once the bus accepted the event (at least once).
    #[serde(default)]
    pub auto_ack: Option<bool>,
    /// Be the queue's only consumer.
    #[serde(default)]
    pub exclusive: bool,
    /// Accepted for Argo compatibility; RabbitMQ ignores it.
    #[serde(default)]
    pub no_local: bool,
    /// Do not wait for the broker's answer.
    #[serde(default)]
    pub no_wait: bool,
}

/// A JetStream durable pull consumer on an existing stream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JetStreamConsumer {
    /// The stream holding `subject`.
    pub stream: String,
    /// Durable consumer name: it remembers what was acknowledged across restarts.
    pub durable: String,
    /// Where a new consumer starts: `all` (default), `new` or `last`.
    #[serde(default)]
    pub deliver_policy: Option<String>,
    /// How long an unacknowledged message waits before redelivery (Go duration, default 30s).
    #[serde(default)]
    pub ack_wait: Option<String>,
    /// Deliveries of one message before JetStream gives up on it (default unlimited).
    #[serde(default)]
    pub max_deliver: Option<i64>,
}

/// One Kafka topic (Argo's `KafkaEventSource`). Fields triggerd cannot honour yet are
/// accepted by the parser only so the loader can reject them with a hint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaEvent {
    /// Bootstrap servers, comma-separated `host:port`.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (Argo's mode without `consumerGroup`).
    #[serde(default)]
    #[schemars(with = "Option<IntOrString>")]
    pub partition: Option<Spanned<IntOrString>>,
    /// The consumer group that remembers what was read.
    #[serde(default)]
    #[schemars(with = "Option<KafkaConsumerGroup>")]
    pub consumer_group: Option<Spanned<KafkaConsumerGroup>>,
    /// Parse record values as JSON.
    #[serde(default)]
    pub json_body: bool,
    /// Extra fields copied into the event data as `metadata`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Drops events whose data does not pass the expression.
    #[serde(default)]
    pub filter: Option<SourceFilter>,
    /// Kafka protocol version; librdkafka negotiates it, so it is accepted and unused.
    #[serde(default)]
    pub version: Option<String>,
    /// Rejected: not supported yet.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub limit_events_per_second: Option<Spanned<Value>>,
    /// Rejected: Sarama's YAML configuration.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub config: Option<Spanned<Value>>,
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
    /// Attempts and delays of the start-up check (broker reachable, topic present).
    #[serde(default)]
    pub connection_backoff: Option<Backoff>,
}

/// A Kafka consumer group (Argo's `KafkaConsumerGroup`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaConsumerGroup {
    /// Group id.
    pub group_name: String,
    /// A group without committed offsets starts at the oldest record (else the newest).
    #[serde(default)]
    pub oldest: bool,
    /// `range` (default), `roundrobin` or `sticky`.
    #[serde(default)]
    pub rebalance_strategy: Option<String>,
}

/// One watched Kubernetes resource (Argo's `ResourceEventSource`). Fields triggerd cannot
/// honour are accepted by the parser only so the loader can reject them with a hint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceEvent {
    /// Namespace to watch; empty or absent: the agent's namespace. Another namespace must be
    /// on the agent's `--allow-namespace` list.
    #[serde(default)]
    pub namespace: Option<String>,
    /// API group; `""` (the default) is the core group (`/api/v1`).
    #[serde(default)]
    pub group: String,
    /// API version, e.g. `v1`. Required.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub version: Option<Spanned<String>>,
    /// The resource's plural name, e.g. `pods` or `configmaps`. Required.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub resource: Option<Spanned<String>>,
    /// Which changes become events: `ADD`, `UPDATE`, `DELETE`. Required.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub event_types: Option<Vec<Spanned<String>>>,
    /// Narrows the objects that produce events.
    #[serde(default)]
    pub filter: Option<ResourceFilter>,
    /// Extra fields copied into the event data as `metadata` and onto the event as
    /// extension attributes (names lower-cased).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Rejected: a resource is watched in the cluster the agent is connected to.
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub cluster: Option<Spanned<Value>>,
}

/// Argo's `ResourceFilter`, plus triggerd's `expression`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceFilter {
    /// Only objects whose name starts with this.
    #[serde(default)]
    pub prefix: String,
    /// Label requirements, sent to the API server as a label selector. `in`/`notin` take
    /// comma-separated values.
    #[serde(default)]
    #[schemars(with = "Vec<ResourceSelector>")]
    pub labels: Vec<Spanned<ResourceSelector>>,
    /// Field requirements checked on each object: `key` is a gjson path into the object,
    /// `value` a regular expression; operations `=`, `==` (match) and `!=` (no match).
    #[serde(default)]
    #[schemars(with = "Vec<ResourceSelector>")]
    pub fields: Vec<Spanned<ResourceSelector>>,
    /// An RFC 3339 time: only objects created at or before it produce events.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub created_by: Option<Spanned<String>>,
    /// Only changes that happened after the source started (creation time for ADD, last
    /// update for UPDATE, deletion for DELETE).
    #[serde(default)]
    pub after_start: bool,
    /// Boolean expression over the top-level keys of the event data (triggerd only, as the
    /// other kinds' `filter.expression`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expression: Option<Spanned<String>>,
}

/// One requirement of a label or field filter (Argo's `Selector`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSelector {
    /// Label key, or gjson path for a field.
    pub key: String,
    /// `==` (default), `=`, `!=`; for labels also `in`, `notin`, `exists`, `!`, `gt`, `lt`.
    #[serde(default)]
    pub operation: Option<String>,
    /// The value (labels: comma-separated for `in`/`notin`, empty for `exists`/`!`;
    /// fields: a regular expression).
    #[serde(default)]
    pub value: String,
}
