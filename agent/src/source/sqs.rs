//! The SQS source: long-polls a queue, up to 10 messages per receive; each message becomes
//! an event. S3 bucket notifications (directly, or in an SNS envelope) are recognised: their
//! records become the body, an optional `s3` filter keeps records by bucket, event type and
//! key, and S3's `s3:TestEvent` is dropped.
//!
//! Event data follows Argo's SQS source: `{messageId, messageAttributes, body, metadata}`
//! (`body` is the parsed JSON with `jsonBody`, else the text; an S3 notification is parsed
//! either way, and one that came through SNS also keeps the envelope under `sns`). The event
//! id is the SQS message id, so a message received again is deduplicated.
//!
//! At least once: a message is deleted only after the bus accepted its event (or the source
//! dropped it on purpose); one the bus refused, or that was in flight when the agent
//! stopped, stays and reappears after its visibility timeout. The messages of one receive
//! are deleted in one batch after all of them were handled.

use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message};
use serde_json::{Map, Value};

use super::SourceContext;
use crate::aws_client::{AwsFields, AwsSettings};
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{S3Filter, Spanned, SqsEvent as SqsManifest};
use crate::telemetry::{SourceDrop, SourceTelemetry};

/// SQS's largest batch.
const BATCH: i32 = 10;
/// SQS's longest long poll, and triggerd's default.
const MAX_WAIT_SECONDS: i64 = 20;
/// Longest pause after failed receives.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// A compiled SQS event.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    /// Region, endpoint and credentials.
    pub aws: AwsSettings,
    /// Queue name.
    pub queue: String,
    /// Account owning the queue.
    pub queue_account_id: Option<String>,
    /// Long-poll wait per receive.
    pub wait_seconds: i32,
    /// Parse bodies as JSON.
    pub json_body: bool,
    /// Which S3 notification records to keep.
    pub s3: Option<S3Filter>,
}

impl SqsConfig {
    /// Checks one SQS event, naming each field that is wrong.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        m: &Spanned<SqsManifest>,
    ) -> Option<Self> {
        let loc = Some(&m.referenced);
        let m = &m.value;
        let before = ctx.errors.len();
        let aws = AwsSettings::compile(
            ctx,
            field,
            AwsFields {
                region: &m.region,
                endpoint: m.endpoint.as_ref(),
                access_key: m.access_key.as_ref(),
                secret_key: m.secret_key.as_ref(),
                session_token: m.session_token.as_ref(),
                role_arn: m.role_arn.as_ref(),
            },
        );
        if m.queue.trim().is_empty() {
            ctx.error(loc, format!("{field}.queue"), "queue is empty");
        }
        let wait = m.wait_time_seconds.unwrap_or(MAX_WAIT_SECONDS);
        if !(0..=MAX_WAIT_SECONDS).contains(&wait) {
            ctx.error(
                loc,
                format!("{field}.waitTimeSeconds"),
                format!("waitTimeSeconds {wait} is not between 0 and 20"),
            );
        }
        if let Some(s3) = &m.s3 {
            for (i, e) in s3.events.iter().enumerate() {
                if !e.starts_with("s3:") {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.s3.events[{i}]"),
                        format!("{e:?} is not an S3 event type"),
                        "e.g. s3:ObjectCreated:* or s3:ObjectRemoved:Delete",
                    );
                }
            }
        }
        if ctx.errors.len() > before {
            return None;
        }
        Some(Self {
            aws: aws?,
            queue: m.queue.trim().to_owned(),
            queue_account_id: m.queue_account_id.clone(),
            wait_seconds: i32::try_from(wait).unwrap_or(20),
            json_body: m.json_body,
            s3: m.s3.clone(),
        })
    }
}

impl super::Section for SqsConfig {
    const KEY: &'static str = "sqs";
    type Manifest = SqsManifest;

    fn shared(event: &SqsManifest) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<SqsManifest>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(|c| super::SourceKind::Sqs(Box::new(c)))
    }
}

/// A client and the URL of its queue.
pub(super) struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

/// Builds the client and looks the queue up; an error here fails start-up, naming the event.
pub(super) async fn connect(
    config: &SqsConfig,
    event_source: &str,
    event_name: &str,
    ctx: &SourceContext,
) -> anyhow::Result<Queue> {
    let what = format!("EventSource {event_source}, sqs event {event_name}");
    let timeout = Duration::from_secs(u64::from(config.wait_seconds.unsigned_abs()) + 10);
    let sdk = config
        .aws
        .sdk_config(&ctx.secrets, timeout)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let url = client
        .get_queue_url()
        .queue_name(&config.queue)
        .set_queue_owner_aws_account_id(config.queue_account_id.clone())
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{what}: queue {:?}: {}",
                config.queue,
                DisplayErrorContext(&e)
            )
        })?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("{what}: queue {:?}: no URL returned", config.queue))?;
    tracing::info!(event_source, event_name, queue = %config.queue, url = %url, "SQS source polling");
    Ok(Queue { client, url })
}

/// Receives until shutdown, publishing each message's event with back-pressure and deleting
/// the messages handled.
pub(super) async fn run(
    config: SqsConfig,
    shared: super::SharedSettings,
    event_source: String,
    event_name: String,
    queue: Queue,
    ctx: SourceContext,
) {
    let source = Source {
        telemetry: SourceTelemetry::new(&ctx.metrics, &event_source, &event_name),
        metadata: serde_json::to_value(&shared.metadata).unwrap_or(Value::Null),
        filter: shared.filter,
        config,
        queue,
        ctx,
    };
    let mut failures = 0u32;
    loop {
        let received = tokio::select! {
            r = source.receive() => r,
            () = source.ctx.shutdown.cancelled() => return,
        };
        let messages = match received {
            Ok(m) => {
                failures = 0;
                m
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_secs(1 << failures.min(5)).min(MAX_RETRY_DELAY);
                tracing::warn!(event_source = %event_source, event_name = %event_name, error = %e, retry_in = ?delay, "SQS receive failed");
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = source.ctx.shutdown.cancelled() => return,
                }
            }
        };
        let mut handled = Vec::new();
        let mut stopped = false;
        for m in messages {
            match source.handle(&m).await {
                Handled::Delete => handled.extend(m.receipt_handle().map(str::to_owned)),
                Handled::Leave => {}
                Handled::Stop => {
                    stopped = true;
                    break;
                }
            }
        }
        source.delete(handled).await;
        if stopped {
            return;
        }
    }
}

/// What became of one message.
enum Handled {
    /// The bus took its event, or it was dropped on purpose: delete it.
    Delete,
    /// The bus refused it: it reappears after its visibility timeout.
    Leave,
    /// The agent is stopping: leave it and stop.
    Stop,
}

/// What a message's body turned out to be.
enum Body {
    /// An event with this body (and, from SNS, the envelope).
    Event(Value, Option<Value>),
    /// Dropped on purpose, with the reason.
    Dropped(&'static str),
}

struct Source {
    telemetry: SourceTelemetry,
    config: SqsConfig,
    /// The manifest's `metadata`, as it goes into every event's data.
    metadata: Value,
    filter: Option<super::EventSourceFilter>,
    queue: Queue,
    ctx: SourceContext,
}

impl Source {
    async fn receive(&self) -> Result<Vec<Message>, String> {
        self.queue
            .client
            .receive_message()
            .queue_url(&self.queue.url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(self.config.wait_seconds)
            .message_attribute_names("All")
            .send()
            .await
            .map(|out| out.messages.unwrap_or_default())
            .map_err(|e| DisplayErrorContext(&e).to_string())
    }

    /// Deletes the messages handled, in one batch.
    async fn delete(&self, receipts: Vec<String>) {
        if receipts.is_empty() {
            return;
        }
        let entries: Vec<_> = receipts
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .ok()
            })
            .collect();
        let (es, en) = (self.telemetry.event_source(), self.telemetry.event_name());
        match self
            .queue
            .client
            .delete_message_batch()
            .queue_url(&self.queue.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) if out.failed.is_empty() => {}
            Ok(out) => {
                tracing::warn!(event_source = %es, event_name = %en, failed = out.failed.len(), "SQS kept some handled messages; they reappear and are deduplicated by id");
            }
            Err(e) => {
                tracing::warn!(event_source = %es, event_name = %en, error = %DisplayErrorContext(&e), "SQS delete failed; the messages reappear and are deduplicated by id");
            }
        }
    }

    async fn handle(&self, m: &Message) -> Handled {
        let id = m.message_id().unwrap_or_default().to_owned();
        let text = m.body().unwrap_or_default();
        let (body, sns) = match self.body(text) {
            Body::Event(body, sns) => (body, sns),
            Body::Dropped(reason) => {
                self.telemetry.filtered(&id, SourceDrop::Rule(reason));
                return Handled::Delete;
            }
        };
        let mut data = Map::new();
        data.insert("messageId".into(), id.clone().into());
        data.insert("messageAttributes".into(), attributes(m));
        data.insert("body".into(), body);
        if let Some(envelope) = sns {
            data.insert("sns".into(), envelope);
        }
        data.insert("metadata".into(), self.metadata.clone());
        let mut event = Event::new(
            self.telemetry.event_source(),
            self.telemetry.event_name(),
            "sqs",
            Value::Object(data),
            bytes::Bytes::copy_from_slice(text.as_bytes()),
        );
        if !id.is_empty() {
            event.id = id;
        }
        match self
            .ctx
            .publish_waiting(&self.telemetry, self.filter.as_ref(), event)
            .await
        {
            Ok(()) => Handled::Delete,
            Err(super::Stopped) if self.ctx.shutdown.is_cancelled() => Handled::Stop,
            Err(super::Stopped) => {
                tracing::warn!(event_source = %self.telemetry.event_source(), event_name = %self.telemetry.event_name(), "the bus refused an SQS message; it reappears after its visibility timeout");
                Handled::Leave
            }
        }
    }

    /// The body of a message: an S3 notification's records (filtered), or the message as
    /// JSON or text.
    fn body(&self, text: &str) -> Body {
        let parsed: Option<Value> = text
            .trim_start()
            .starts_with('{')
            .then(|| serde_json::from_str(text).ok())
            .flatten();
        let (inner, sns) = match parsed {
            Some(Value::Object(o)) if is_sns_notification(&o) => {
                let message = o.get("Message").and_then(Value::as_str).unwrap_or("");
                match serde_json::from_str::<Value>(message) {
                    Ok(inner) => (Some(inner), Some(Value::Object(o))),
                    Err(_) => (None, Some(Value::Object(o))),
                }
            }
            other => (other, None),
        };
        if let Some(inner) = &inner {
            if is_s3_test_event(inner) {
                return Body::Dropped("s3:TestEvent");
            }
            if let Some(records) = s3_records(inner) {
                let kept: Vec<Value> = records
                    .iter()
                    .filter(|r| self.config.s3.as_ref().is_none_or(|f| record_matches(f, r)))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    return Body::Dropped("no S3 record matches the s3 filter");
                }
                let mut body = inner.clone();
                if let Some(o) = body.as_object_mut() {
                    o.insert("Records".into(), Value::Array(kept));
                }
                return Body::Event(body, sns);
            }
        }
        if self.config.s3.is_some() {
            return Body::Dropped("not an S3 notification (the s3 filter is set)");
        }
        let body = match (sns, inner) {
            (Some(envelope), _) if !self.config.json_body => {
                return Body::Event(Value::String(text.to_owned()), Some(envelope))
            }
            (Some(envelope), Some(inner)) => return Body::Event(inner, Some(envelope)),
            (_, Some(v)) if self.config.json_body => v,
            _ if self.config.json_body && !text.is_empty() => match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(event_source = %self.telemetry.event_source(), event_name = %self.telemetry.event_name(), error = %e, "jsonBody is set but the message is not JSON; kept as text");
                    Value::String(text.to_owned())
                }
            },
            _ => Value::String(text.to_owned()),
        };
        Body::Event(body, None)
    }
}

/// Whether a JSON object is an SNS notification envelope (SNS to SQS without raw delivery).
fn is_sns_notification(o: &Map<String, Value>) -> bool {
    o.get("Type").and_then(Value::as_str) == Some("Notification") && o.contains_key("Message")
}

/// The test message S3 sends when a notification is configured.
fn is_s3_test_event(v: &Value) -> bool {
    v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent")
}

/// The records of an S3 event notification, if `v` is one.
fn s3_records(v: &Value) -> Option<&Vec<Value>> {
    let records = v.get("Records")?.as_array()?;
    let all_s3 = !records.is_empty()
        && records
            .iter()
            .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:s3"));
    all_s3.then_some(records)
}

/// Whether one S3 record passes the filter: bucket, event type (`s3:ObjectCreated:*` matches
/// every `ObjectCreated:` event; records name events without the `s3:` prefix), key prefix
/// and suffix.
fn record_matches(f: &S3Filter, r: &Value) -> bool {
    let bucket = r
        .pointer("/s3/bucket/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if f.bucket
        .as_deref()
        .is_some_and(|b| !b.is_empty() && b != bucket)
    {
        return false;
    }
    let name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
    let name = name.strip_prefix("s3:").unwrap_or(name);
    let type_ok = f.events.is_empty()
        || f.events.iter().any(|e| {
            let e = e.strip_prefix("s3:").unwrap_or(e);
            match e.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == e,
            }
        });
    if !type_ok {
        return false;
    }
    // Keys in notifications are URL-encoded (a space is `+`).
    let key = r
        .pointer("/s3/object/key")
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = decode_key(key);
    f.filter
        .as_ref()
        .is_none_or(|k| key.starts_with(&k.prefix) && key.ends_with(&k.suffix))
}

/// An S3 notification key as the object's name: `+` is a space, `%XX` a byte.
fn decode_key(key: &str) -> String {
    let spaced = key.replace('+', " ");
    let bytes = spaced.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The message attributes as Argo shows them: `{name: {DataType, StringValue | BinaryValue}}`
/// (binary values base64).
fn attributes(m: &Message) -> Value {
    use base64::Engine as _;
    let mut out = Map::new();
    for (name, a) in m.message_attributes().into_iter().flatten() {
        let mut v = Map::new();
        v.insert("DataType".into(), a.data_type().into());
        if let Some(s) = a.string_value() {
            v.insert("StringValue".into(), s.into());
        }
        if let Some(b) = a.binary_value() {
            v.insert(
                "BinaryValue".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(b.as_ref())
                    .into(),
            );
        }
        out.insert(name.clone(), Value::Object(v));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_standalone;
    use crate::manifest::{EventSourceSpec, S3KeyFilter};
    use crate::script::ScriptHost;
    use serde_json::json;

    fn compile(yaml: &str) -> Result<Vec<super::super::SourceSpec>, Vec<String>> {
        let host = ScriptHost::new(Default::default(), vec![]);
        compile_standalone(&host, &[], yaml, |ctx, spec: &EventSourceSpec| {
            Some(super::super::compile_event_source(ctx, "es", spec))
        })
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_mistake_names_its_field() {
        assert_eq!(
            compile("sqs:\n  ev:\n    region: us-east-1\n    queue: q\n").map(|s| s.len()),
            Ok(1)
        );
        for (fields, named) in [
            ("region: ''\n    queue: q", "spec.sqs.ev.region"),
            ("region: r\n    queue: ''", "spec.sqs.ev.queue"),
            (
                "region: r\n    queue: q\n    waitTimeSeconds: 21",
                "spec.sqs.ev.waitTimeSeconds",
            ),
            (
                "region: r\n    queue: q\n    endpoint: not a url",
                "spec.sqs.ev.endpoint",
            ),
            (
                "region: r\n    queue: q\n    accessKey: {name: a, key: b}",
                "spec.sqs.ev.secretKey",
            ),
            (
                "region: r\n    queue: q\n    sessionToken: {name: a, key: t}",
                "spec.sqs.ev.sessionToken",
            ),
            (
                "region: r\n    queue: q\n    s3: {events: [ObjectCreated]}",
                "spec.sqs.ev.s3.events[0]",
            ),
        ] {
            let errors = compile(&format!("sqs:\n  ev:\n    {fields}\n")).expect_err(fields);
            assert!(
                errors.iter().any(|e| e.contains(named)),
                "{fields}: expected an error naming {named}, got {errors:?}"
            );
        }
    }

    fn record(bucket: &str, event: &str, key: &str) -> Value {
        json!({"eventSource": "aws:s3", "eventName": event,
               "s3": {"bucket": {"name": bucket}, "object": {"key": key}}})
    }

    #[test]
    fn s3_records_match_on_bucket_type_and_key() {
        let f = S3Filter {
            bucket: Some("uploads".into()),
            events: vec!["s3:ObjectCreated:*".into()],
            filter: Some(S3KeyFilter {
                prefix: "in/".into(),
                suffix: ".csv".into(),
            }),
        };
        assert!(record_matches(
            &f,
            &record("uploads", "ObjectCreated:Put", "in/a.csv")
        ));
        assert!(record_matches(
            &f,
            &record("uploads", "ObjectCreated:Put", "in/my+file%21.csv")
        ));
        assert!(!record_matches(
            &f,
            &record("other", "ObjectCreated:Put", "in/a.csv")
        ));
        assert!(!record_matches(
            &f,
            &record("uploads", "ObjectRemoved:Delete", "in/a.csv")
        ));
        assert!(!record_matches(
            &f,
            &record("uploads", "ObjectCreated:Put", "out/a.csv")
        ));
        assert!(!record_matches(
            &f,
            &record("uploads", "ObjectCreated:Put", "in/a.json")
        ));
        assert_eq!(decode_key("in/my+file%21.csv"), "in/my file!.csv");
        assert_eq!(decode_key("100%"), "100%");
        let exact = S3Filter {
            bucket: None,
            events: vec!["s3:ObjectRemoved:Delete".into()],
            filter: None,
        };
        assert!(record_matches(
            &exact,
            &record("b", "ObjectRemoved:Delete", "k")
        ));
        assert!(!record_matches(
            &exact,
            &record("b", "ObjectRemoved:DeleteMarkerCreated", "k")
        ));
    }

    #[test]
    fn notifications_are_recognised_directly_and_through_sns() {
        let direct = json!({"Records": [record("b", "ObjectCreated:Put", "k")]});
        assert!(s3_records(&direct).is_some());
        assert!(s3_records(&json!({"Records": []})).is_none());
        assert!(s3_records(&json!({"Records": [{"eventSource": "aws:sqs"}]})).is_none());
        assert!(is_s3_test_event(
            &json!({"Service": "Amazon S3", "Event": "s3:TestEvent"})
        ));
        let envelope = json!({"Type": "Notification", "Message": direct.to_string()});
        assert!(is_sns_notification(envelope.as_object().expect("object")));
    }
}
