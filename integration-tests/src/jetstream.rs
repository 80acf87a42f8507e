//! The agent's durable bus on NATS JetStream as the tests see it: the `triggerd run`
//! arguments that select it, the names of what it creates, and a client that inspects them
//! (consumer acknowledgement state, key-value buckets).
//!
//! Names, one set per namespace `NS`: the events stream `triggerd-NS-events`, one durable
//! pull consumer per sensor named like the sensor, the dead-letter stream `triggerd-NS-dlq`,
//! and the key-value buckets `triggerd-NS-conditions` (partial condition state) and
//! `triggerd-NS-leases`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::TryStreamExt;
use tokio::time::Instant;

use crate::NatsServer;

/// The ack wait the JetStream tests give the agent (`--jetstream-ack-wait`): short, so a
/// killed agent's unacknowledged events come back quickly.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// `run` arguments selecting the JetStream bus on `nats_url` for `namespace`, with
/// [`ACK_WAIT`] as ack wait.
pub fn jetstream_bus_args(nats_url: &str, namespace: &str) -> Vec<String> {
    [
        "--bus",
        "jetstream",
        "--nats-url",
        nats_url,
        "--namespace",
        namespace,
        "--jetstream-ack-wait",
        &format!("{}s", ACK_WAIT.as_secs()),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// An agent on `server`'s JetStream bus for `namespace`, running EventSource `hooks`
/// (webhook event `push` on `port` at `/push`) and Sensor `sensor`, which forwards each
/// event to `sink_url` (see [`crate::forward_sensor`]). Add arguments and start it.
pub fn forwarding_agent(
    server: &NatsServer,
    namespace: &str,
    sensor: &str,
    port: u16,
    sink_url: &str,
) -> crate::AgentBuilder {
    crate::Agent::builder()
        .manifest(crate::webhook_source("hooks", "push", port, "/push"))
        .manifest(crate::forward_sensor(sensor, "hooks", "push", sink_url))
        .args(jetstream_bus_args(&server.url(), namespace))
}

/// The events stream of `namespace`.
pub fn events_stream(namespace: &str) -> String {
    format!("triggerd-{namespace}-events")
}

/// The key-value bucket holding the partial condition state of `namespace`.
pub fn conditions_bucket(namespace: &str) -> String {
    format!("triggerd-{namespace}-conditions")
}

/// A JetStream client on a test's [`NatsServer`], looking at one namespace's objects.
/// Every method returns its failure as text, so the test can fail with the agent's output
/// ([`crate::Agent::fail`]).
pub struct JetStreamProbe {
    js: jetstream::Context,
    namespace: String,
}

impl JetStreamProbe {
    /// Connects to `server` (the client reconnects by itself across a server restart).
    pub async fn connect(server: &NatsServer, namespace: &str) -> JetStreamProbe {
        JetStreamProbe {
            js: jetstream::new(server.client(None).await),
            namespace: namespace.to_owned(),
        }
    }

    /// The namespace's events stream.
    async fn events(&self) -> Result<jetstream::stream::Stream, String> {
        let stream = events_stream(&self.namespace);
        self.js
            .get_stream(&stream)
            .await
            .map_err(|err| format!("stream {stream}: {err}"))
    }

    /// The current state of `sensor`'s durable consumer on the events stream.
    pub async fn consumer(&self, sensor: &str) -> Result<consumer::Info, String> {
        let stream = events_stream(&self.namespace);
        self.events()
            .await?
            .consumer_info(sensor)
            .await
            .map_err(|err| format!("consumer {sensor} on stream {stream}: {err}"))
    }

    /// Polls `sensor`'s consumer (every 20 ms, at most `timeout`) until `done` holds for
    /// it; returns the info that satisfied it, or a message naming `what` and the last
    /// info (or error) seen.
    pub async fn wait_consumer(
        &self,
        sensor: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&consumer::Info) -> bool,
    ) -> Result<consumer::Info, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.consumer(sensor).await {
                Ok(info) if done(&info) => return Ok(info),
                Ok(info) => format!("{info:#?}"),
                Err(err) => err,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "consumer {sensor}: never {what} within {timeout:?}; last seen: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `sensor`'s consumer has nothing left: every event on the stream was
    /// delivered (`num_pending == 0`) and acknowledged (`num_ack_pending == 0`).
    pub async fn wait_settled(
        &self,
        sensor: &str,
        timeout: Duration,
    ) -> Result<consumer::Info, String> {
        self.wait_consumer(
            sensor,
            "delivered and acknowledged everything",
            timeout,
            |info| info.num_pending == 0 && info.num_ack_pending == 0,
        )
        .await
    }

    /// Publishes the events-stream message at `sequence` again as a new message (its
    /// headers but a fresh `Nats-Msg-Id`): what a consumer sees when the server lost its
    /// record of having delivered and acknowledged it (a crash before its consumer state
    /// was written), a first delivery of an event the agent already handled.
    pub async fn republish_as_new(&self, sequence: u64) -> Result<(), String> {
        let message = self
            .events()
            .await?
            .get_raw_message(sequence)
            .await
            .map_err(|err| {
                let stream = events_stream(&self.namespace);
                format!("message {sequence} of {stream}: {err}")
            })?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter() {
            if AsRef::<str>::as_ref(name) == "Nats-Msg-Id" {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert("Nats-Msg-Id", format!("republished-{sequence}").as_str());
        self.js
            .publish_with_headers(message.subject, headers, message.payload)
            .await
            .map_err(|err| format!("republish: {err}"))?
            .await
            .map_err(|err| format!("republish ack: {err}"))?;
        Ok(())
    }

    /// The live keys of key-value bucket `bucket`: read from the stream `KV_<bucket>` that
    /// backs it (subjects `$KV.<bucket>.<key>`), leaving out keys whose last entry is a
    /// delete or purge marker. (The workspace's async-nats has no `kv` feature, so the
    /// bucket is read as the stream it is.)
    pub async fn kv_keys(&self, bucket: &str) -> Result<Vec<String>, String> {
        let name = format!("KV_{bucket}");
        let prefix = format!("$KV.{bucket}.");
        let stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|err| format!("key-value bucket {bucket} (stream {name}): {err}"))?;
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|err| format!("subjects of {name}: {err}"))?
            .try_collect()
            .await
            .map_err(|err| format!("subjects of {name}: {err}"))?;
        let mut keys = Vec::new();
        for (subject, _) in subjects {
            let last = stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .map_err(|err| format!("last entry of {subject}: {err}"))?;
            let deleted = last
                .headers
                .get("KV-Operation")
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            if !deleted {
                let key = subject.strip_prefix(&prefix).unwrap_or(&subject);
                keys.push(key.to_owned());
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }
}
