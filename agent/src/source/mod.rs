//! Event sources: turn outside happenings into events on the bus. One file per kind, one arm
//! of [`SourceKind`] each.
//!
//! A kind's file holds its settings compiled from its manifest section (implementing
//! `Section`; the `filter` and `metadata` every kind has are compiled once, here, into
//! [`SharedSettings`] on the [`SourceSpec`]), its start-up checks and its run loop, which
//! publishes through [`SourceContext::publish_waiting`] and counts through its
//! `SourceTelemetry`. A new kind also adds its manifest type to `manifest/eventsource.rs`,
//! one line to [`compile_event_source`], and its arm to the matches of [`SourceSpec`] and
//! [`start_sources`] below.

mod amqp;
mod calendar;
mod filter;
mod kafka;
mod mqtt;
mod nats;
pub mod resource;
mod sqs;
mod webhook;
mod webhook_auth;
mod webhook_tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use amqp::AmqpConfig;
pub use calendar::{CalendarConfig, Clock};
pub use filter::{expand, EventSourceFilter};
pub use kafka::{Assignment, KafkaConfig};
pub use mqtt::MqttConfig;
pub use nats::{DeliverFrom, Delivery, JetStreamSettings, NatsConfig};
pub use resource::{ResourceConfig, ResourceEventType};
pub use sqs::SqsConfig;
pub use webhook::{request_body, request_event, WebhookConfig};

use crate::bus::Bus;
use crate::compile::CompileContext;
use crate::manifest::{EventSourceSpec, Spanned};
use crate::telemetry::{Metrics, SourceDrop, SourceTelemetry};

/// The closed set of source kinds.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// HTTP endpoint.
    Webhook(WebhookConfig),
    /// Cron schedule or interval.
    Calendar(CalendarConfig),
    /// NATS subject, core or JetStream.
    Nats(Box<NatsConfig>),
    /// Kafka topic, through a consumer group.
    Kafka(Box<KafkaConfig>),
    /// MQTT topic filter, through a persistent session.
    Mqtt(Box<MqttConfig>),
    /// AMQP queue bound to an exchange.
    Amqp(Box<AmqpConfig>),
    /// SQS queue, long-polled.
    Sqs(Box<SqsConfig>),
    /// Kubernetes objects of one resource, through a watch.
    Resource(Box<ResourceConfig>),
}

/// The settings every kind's event has besides its own (Argo's `filter` and `metadata`),
/// compiled once for all kinds.
#[derive(Debug, Clone, Default)]
pub struct SharedSettings {
    /// Drops events whose data does not pass (`filter.expression`).
    pub filter: Option<EventSourceFilter>,
    /// Extra fields the kind copies into its events (data or extensions, as Argo's kind does).
    pub metadata: BTreeMap<String, String>,
}

/// One event of an EventSource, ready to run.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// EventSource name.
    pub event_source: String,
    /// Event name.
    pub event_name: String,
    /// Filter and metadata.
    pub shared: SharedSettings,
    /// Kind and settings.
    pub kind: SourceKind,
}

impl SourceSpec {
    /// The source kind, as events carry it in `type`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            SourceKind::Webhook(_) => "webhook",
            SourceKind::Calendar(_) => "calendar",
            SourceKind::Nats(_) => "nats",
            SourceKind::Kafka(_) => "kafka",
            SourceKind::Mqtt(_) => "mqtt",
            SourceKind::Amqp(_) => "amqp",
            SourceKind::Sqs(_) => "sqs",
            SourceKind::Resource(_) => "resource",
        }
    }

    /// The EventSource filter of this event, if any.
    pub fn filter(&self) -> Option<&EventSourceFilter> {
        self.shared.filter.as_ref()
    }

    /// Adds the extension attributes the source stamps on its events (a webhook's
    /// `metadata`, names lower-cased as the webhook does), keeping any the event has.
    pub fn add_extensions(&self, event: &mut crate::event::Event) {
        if let SourceKind::Webhook(_) = &self.kind {
            for (k, v) in &self.shared.metadata {
                event
                    .extensions
                    .entry(k.to_ascii_lowercase())
                    .or_insert_with(|| v.clone().into());
            }
        }
    }

    /// Whether only one replica may run this source (it would produce every event once per
    /// replica): calendars, resource watches and core NATS subscriptions without a queue
    /// group, MQTT subscriptions (replicas with one client id would take the session from
    /// each other) and AMQP consumers of a server-named or exclusive queue (each replica would
    /// get its own copy, or be refused). Webhooks, AMQP consumers of a shared queue, SQS queues, Kafka consumer groups, NATS queue groups and JetStream durable
    /// consumers already share their input between replicas.
    pub fn is_singleton(&self) -> bool {
        match &self.kind {
            SourceKind::Calendar(_) | SourceKind::Resource(_) | SourceKind::Mqtt(_) => true,
            SourceKind::Nats(n) => matches!(&n.delivery, Delivery::Core { queue: None }),
            SourceKind::Amqp(a) => a.queue.name.is_empty() || a.queue.options.exclusive,
            SourceKind::Webhook(_) | SourceKind::Kafka(_) | SourceKind::Sqs(_) => false,
        }
    }

    /// Whether the source talks to the Kubernetes API (resource watches).
    pub fn needs_cluster(&self) -> bool {
        matches!(self.kind, SourceKind::Resource(_))
    }

    /// The webhook settings, for checks across events (ports, TLS).
    pub fn webhook(&self) -> Option<&webhook::WebhookConfig> {
        match &self.kind {
            SourceKind::Webhook(w) => Some(w),
            SourceKind::Calendar(_)
            | SourceKind::Nats(_)
            | SourceKind::Kafka(_)
            | SourceKind::Mqtt(_)
            | SourceKind::Amqp(_)
            | SourceKind::Sqs(_)
            | SourceKind::Resource(_) => None,
        }
    }
}

/// The agent is shutting down (or its bus closed): a source stops taking events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// What a source needs when it is started.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Where events go.
    pub bus: Arc<Bus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the agent shuts down: sources stop taking events.
    pub shutdown: CancellationToken,
    /// Wall clock for calendars.
    pub clock: Clock,
    /// Where secret values come from (the namespace's Secrets in cluster mode).
    pub secrets: crate::secret::SecretStore,
    /// Address webhook servers bind to.
    pub bind_host: std::net::IpAddr,
    /// Connection budget and timeouts every webhook listener shares.
    pub http_limits: crate::telemetry::ServerLimits,
    /// The script engine, for EventSource filters.
    pub host: Arc<crate::script::ScriptHost>,
    /// The Kubernetes API, when a source of the plan needs it.
    pub cluster: Option<crate::cluster::Cluster>,
}

impl SourceContext {
    /// Publishes an event that passed its source's filter, waiting for room on the bus
    /// (back-pressure for sources that can wait: NATS, Kafka), and counts it as received or
    /// deduplicated. An event the filter drops counts as handled. `Err` when the agent is
    /// shutting down or the bus refused the event: the caller stops and does not acknowledge.
    pub async fn publish_waiting(
        &self,
        telemetry: &SourceTelemetry,
        filter: Option<&EventSourceFilter>,
        event: crate::event::Event,
    ) -> Result<(), Stopped> {
        if !self.passes(telemetry, filter, &event) {
            return Ok(());
        }
        let id = event.id.clone();
        let published = tokio::select! {
            r = self.bus.publish(event) => r,
            () = self.shutdown.cancelled() => return Err(Stopped),
        };
        match published {
            Ok(crate::bus::Published::Duplicate) => {
                telemetry.deduplicated(&id);
                Ok(())
            }
            Ok(crate::bus::Published::Accepted) => {
                telemetry.received(&id);
                Ok(())
            }
            Err(e) => {
                telemetry.not_published(&id, &e);
                Err(Stopped)
            }
        }
    }

    /// Whether an event passes its source's filter; failures are logged and drop the event.
    pub fn passes(
        &self,
        telemetry: &SourceTelemetry,
        filter: Option<&EventSourceFilter>,
        event: &crate::event::Event,
    ) -> bool {
        let Some(f) = filter else { return true };
        match f.evaluate(&self.host, &event.data) {
            Ok(true) => true,
            Ok(false) => {
                telemetry.filtered(&event.id, SourceDrop::Filter);
                false
            }
            Err(e) => {
                telemetry.filtered(&event.id, SourceDrop::FilterFailed(&e));
                false
            }
        }
    }
}

/// The fields of one event's manifest that every kind has.
struct SharedManifest<'a> {
    /// `filter.expression`.
    expression: Option<&'a Spanned<String>>,
    /// `metadata`.
    metadata: &'a BTreeMap<String, String>,
}

/// One kind's section of an EventSource (`spec.<key>.<event>`), compiled in the kind's own
/// file: a new kind implements this and adds one line to [`compile_event_source`].
trait Section {
    /// The section's key under `spec`.
    const KEY: &'static str;
    /// One event of the section, as the manifest gives it.
    type Manifest;
    /// Where the event's manifest keeps the fields every kind has.
    fn shared(event: &Self::Manifest) -> SharedManifest<'_>;
    /// Compiles one event's settings; `field` is its path, e.g. `spec.webhook.push`.
    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<Self::Manifest>,
    ) -> Option<SourceKind>;
}

/// Compiles every event of one section of EventSource `name` into `out`.
fn compile_section<S: Section>(
    ctx: &mut CompileContext<'_>,
    name: &str,
    events: &BTreeMap<String, Spanned<S::Manifest>>,
    out: &mut Vec<SourceSpec>,
) {
    for (event, manifest) in events {
        let field = format!("spec.{}.{event}", S::KEY);
        let kind = S::compile_kind(ctx, &field, manifest);
        let SharedManifest {
            expression,
            metadata,
        } = S::shared(&manifest.value);
        let filter = match expression {
            Some(e) => {
                match EventSourceFilter::compile(ctx, &format!("{field}.filter.expression"), e) {
                    Some(f) => Some(f),
                    None => continue,
                }
            }
            None => None,
        };
        if let Some(kind) = kind {
            out.push(SourceSpec {
                event_source: name.to_owned(),
                event_name: event.clone(),
                shared: SharedSettings {
                    filter,
                    metadata: metadata.clone(),
                },
                kind,
            });
        }
    }
}

/// Compiles every event of an EventSource, one section per kind.
pub fn compile_event_source(
    ctx: &mut CompileContext<'_>,
    name: &str,
    spec: &EventSourceSpec,
) -> Vec<SourceSpec> {
    let mut out = Vec::new();
    compile_section::<WebhookConfig>(ctx, name, &spec.webhook, &mut out);
    compile_section::<CalendarConfig>(ctx, name, &spec.calendar, &mut out);
    compile_section::<NatsConfig>(ctx, name, &spec.nats, &mut out);
    compile_section::<KafkaConfig>(ctx, name, &spec.kafka, &mut out);
    compile_section::<MqttConfig>(ctx, name, &spec.mqtt, &mut out);
    compile_section::<AmqpConfig>(ctx, name, &spec.amqp, &mut out);
    compile_section::<SqsConfig>(ctx, name, &spec.sqs, &mut out);
    compile_section::<ResourceConfig>(ctx, name, &spec.resource, &mut out);
    if spec.webhook.is_empty()
        && spec.calendar.is_empty()
        && spec.nats.is_empty()
        && spec.kafka.is_empty()
        && spec.mqtt.is_empty()
        && spec.amqp.is_empty()
        && spec.sqs.is_empty()
        && spec.resource.is_empty()
    {
        ctx.error_with_hint(
            None,
            "spec",
            "the EventSource defines no events",
            "add a webhook, calendar, nats, kafka, mqtt, amqp, sqs or resource section",
        );
    }
    out
}

/// Starts every source. Webhook ports are bound, NATS and MQTT subscriptions made, Kafka topics
/// checked and watched resources resolved and listed before this returns, so a port
/// conflict, a missing secret, an unreachable server, a missing topic or an unknown resource
/// fails start-up instead of surfacing later.
pub async fn start_sources(
    specs: &[SourceSpec],
    ctx: &SourceContext,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut handles = webhook::start(specs, ctx).await?;
    for spec in specs {
        let (ctx, es, ev, shared) = (
            ctx.clone(),
            spec.event_source.clone(),
            spec.event_name.clone(),
            spec.shared.clone(),
        );
        match &spec.kind {
            SourceKind::Webhook(_) => {}
            SourceKind::Calendar(c) => {
                let c = c.clone();
                handles.push(tokio::spawn(async move {
                    calendar::run(c, shared, &es, &ev, ctx).await
                }));
            }
            SourceKind::Nats(c) => {
                let (client, receiver) = nats::subscribe(c, &es, &ev, &ctx).await?;
                let c = NatsConfig::clone(c);
                handles.push(tokio::spawn(nats::run(
                    c, shared, es, ev, client, receiver, ctx,
                )));
            }
            SourceKind::Kafka(c) => {
                let consumer = kafka::subscribe(c, &es, &ev, &ctx.secrets).await?;
                let c = KafkaConfig::clone(c);
                handles.push(tokio::spawn(kafka::run(c, shared, es, ev, consumer, ctx)));
            }
            SourceKind::Mqtt(c) => {
                let connected = mqtt::connect(c, &es, &ev, &ctx).await?;
                let c = MqttConfig::clone(c);
                handles.push(tokio::spawn(mqtt::run(c, shared, es, ev, connected, ctx)));
            }
            SourceKind::Amqp(c) => {
                let consuming = amqp::connect(c, &es, &ev, &ctx).await?;
                let c = AmqpConfig::clone(c);
                handles.push(tokio::spawn(amqp::run(c, shared, es, ev, consuming, ctx)));
            }
            SourceKind::Sqs(c) => {
                let queue = sqs::connect(c, &es, &ev, &ctx).await?;
                let c = SqsConfig::clone(c);
                handles.push(tokio::spawn(sqs::run(c, shared, es, ev, queue, ctx)));
            }
            SourceKind::Resource(c) => {
                let watch = resource::start(c, &es, &ev, &ctx).await?;
                let c = ResourceConfig::clone(c);
                handles.push(tokio::spawn(resource::run(c, shared, es, ev, watch, ctx)));
            }
        }
    }
    Ok(handles)
}
