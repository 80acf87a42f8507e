//! Through-the-broker benchmark of the MQTT and AMQP sources: one publisher sends stamped
//! 1 KB messages as fast as the broker acknowledges them (MQTT QoS 1, AMQP publisher
//! confirms, 64 unacknowledged at most), and the run measures delivered messages per second
//! and publish-to-arrival latency. Each broker is measured twice in the same run: with a
//! plain client consuming (the broker's own rate: the baseline) and with triggerd consuming
//! through its source, the benchmark sensor and an HTTP trigger to the sink.
// std Mutex: short critical sections in plain code, never held across an await.
#![allow(clippy::disallowed_types)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::time::Instant;

use crate::loadbench::{body, percentile, sensor_on, start_sink, SinkState};
use crate::{Agent, Mosquitto, RabbitMq};

/// Messages the publisher may have unacknowledged.
const WINDOW: usize = 64;
/// How long a run waits for the last messages after publishing ended.
const DRAIN: Duration = Duration::from_secs(30);

/// What one run through a broker measured.
#[derive(Debug, Clone, Default)]
pub struct BrokerReport {
    /// Messages published (and acknowledged by the broker).
    pub published: u64,
    /// Messages that arrived (at the plain consumer, or at the sink through triggerd).
    pub delivered: u64,
    /// Delivered messages per second, from the first publish to the last arrival.
    pub per_sec: f64,
    /// Publish-to-arrival latency percentiles (µs).
    pub e2e_p50_us: u64,
    /// 99th percentile of that latency (µs).
    pub e2e_p99_us: u64,
    /// Messages that arrived more than once.
    pub duplicates: u64,
}

/// Where arrivals are recorded: latency and sequence number of each.
#[derive(Clone)]
struct Arrivals {
    clock: Instant,
    latencies: Arc<Mutex<Vec<u64>>>,
    numbers: Arc<Mutex<Vec<u64>>>,
}

impl Arrivals {
    fn new(clock: Instant) -> Self {
        Self {
            clock,
            latencies: Arc::default(),
            numbers: Arc::default(),
        }
    }

    /// Records a body carrying `t` (µs on the clock) and `n`.
    fn record(&self, body: &[u8]) {
        let now = self.clock.elapsed().as_micros() as u64;
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if let (Some(t), Some(n)) = (v["t"].as_u64(), v["n"].as_u64()) {
            if let Ok(mut l) = self.latencies.lock() {
                l.push(now.saturating_sub(t));
            }
            if let Ok(mut l) = self.numbers.lock() {
                l.push(n);
            }
        }
    }

    fn count(&self) -> u64 {
        self.latencies.lock().map_or(0, |l| l.len() as u64)
    }

    /// Waits (bounded) until `published` arrived, then summarises from `started`.
    async fn report(&self, published: u64, started: Instant) -> BrokerReport {
        let deadline = Instant::now() + DRAIN;
        while self.count() < published && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mut latencies = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        latencies.sort_unstable();
        let mut numbers = self.numbers.lock().map(|l| l.clone()).unwrap_or_default();
        numbers.sort_unstable();
        let all = numbers.len();
        numbers.dedup();
        BrokerReport {
            published,
            delivered: latencies.len() as u64,
            per_sec: latencies.len() as f64 / elapsed,
            e2e_p50_us: percentile(&latencies, 0.50),
            e2e_p99_us: percentile(&latencies, 0.99),
            duplicates: (all - numbers.len()) as u64,
        }
    }
}

/// Publishes `messages` stamped bodies on `topic` with QoS 1, at most [`WINDOW`] waiting for
/// their PUBACK; returns the number acknowledged.
async fn mqtt_publish(port: u16, topic: &str, messages: u64, clock: Instant) -> u64 {
    let mut options = MqttOptions::new(
        format!("bench-pub-{}", rand::random::<u32>()),
        "127.0.0.1",
        port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, WINDOW);
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < messages {
        if sent < messages && sent - acked < WINDOW as u64 {
            let t = clock.elapsed().as_micros() as u64;
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, body(t.max(1), sent + 1))
                .is_ok()
            {
                sent += 1;
            }
        }
        match tokio::time::timeout(DRAIN, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("benchmark publisher: {e}"),
            Err(_) => panic!("benchmark publisher: no progress within {DRAIN:?}"),
        }
    }
    let _ = client.try_disconnect();
    acked
}

/// The broker's own rate: the publisher and a plain QoS 1 subscriber on one Mosquitto.
pub async fn mqtt_baseline(messages: u64) -> BrokerReport {
    let broker = Mosquitto::start().await;
    let clock = Instant::now();
    let arrivals = Arrivals::new(clock);
    let mut options = MqttOptions::new("bench-sub", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, WINDOW);
    client
        .subscribe("bench/#", QoS::AtLeastOnce)
        .await
        .expect("queue the subscription");
    loop {
        let event = tokio::time::timeout(DRAIN, eventloop.poll())
            .await
            .expect("subscription acknowledged in time")
            .expect("subscriber connects");
        if let Event::Incoming(Packet::SubAck(_)) = event {
            break;
        }
    }
    let recorder = arrivals.clone();
    let subscriber = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                recorder.record(&p.payload);
            }
        }
    });
    let started = Instant::now();
    let published = mqtt_publish(broker.port(), "bench/load", messages, clock).await;
    let report = arrivals.report(published, started).await;
    subscriber.abort();
    drop(client);
    report
}

/// triggerd consuming through its MQTT source (QoS 1, persistent session), the benchmark
/// sensor and an HTTP trigger to the sink.
pub async fn mqtt_triggerd(binary: &Path, messages: u64) -> BrokerReport {
    let broker = Mosquitto::start().await;
    let clock = Instant::now();
    let sink = SinkState::new(clock);
    let sink_addr = start_sink(sink.clone()).await;
    let source = format!(
        "apiVersion: triggerd.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: broker\nspec:\n  mqtt:\n    load:\n      url: {}\n      topic: bench/#\n      jsonBody: true\n",
        broker.url()
    );
    let agent = bench_agent(binary, &source, &sensor_on("broker", "load", sink_addr)).await;
    let started = Instant::now();
    let published = mqtt_publish(broker.port(), "bench/load", messages, clock).await;
    let report = sink.broker_report(published, started).await;
    drop(agent);
    report
}

/// Publishes `messages` stamped bodies to the fanout exchange `bench` with confirms, at
/// most [`WINDOW`] unconfirmed; returns the number confirmed.
async fn amqp_publish(broker: &RabbitMq, messages: u64, clock: Instant) -> u64 {
    let connection = broker.connect().await;
    let channel = connection
        .create_channel()
        .await
        .expect("publisher channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    declare_exchange(&channel).await;
    let mut pending = VecDeque::new();
    let mut confirmed = 0;
    for n in 1..=messages {
        if pending.len() >= WINDOW {
            if let Some(c) = pending.pop_front() {
                wait_confirm(c).await;
                confirmed += 1;
            }
        }
        let t = clock.elapsed().as_micros() as u64;
        let confirm = channel
            .basic_publish(
                "bench".into(),
                "load".into(),
                BasicPublishOptions::default(),
                &body(t.max(1), n),
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .expect("basic.publish");
        pending.push_back(confirm);
    }
    for c in pending {
        wait_confirm(c).await;
        confirmed += 1;
    }
    let _ = connection.close(200, "OK".into()).await;
    confirmed
}

async fn wait_confirm(c: lapin::PublisherConfirm) {
    let confirmation = tokio::time::timeout(DRAIN, c)
        .await
        .expect("a confirmation in time")
        .expect("the channel stays open");
    assert!(confirmation.is_ack(), "the broker nacked: {confirmation:?}");
}

async fn declare_exchange(channel: &lapin::Channel) {
    channel
        .exchange_declare(
            "bench".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare the bench exchange");
}

/// The broker's own rate: the publisher and a plain consumer acknowledging each message
/// (prefetch 64, as triggerd's default) on one private RabbitMQ node.
pub async fn amqp_baseline(messages: u64) -> BrokerReport {
    let broker = RabbitMq::start().await;
    let clock = Instant::now();
    let arrivals = Arrivals::new(clock);
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.expect("consumer channel");
    channel
        .basic_qos(64, Default::default())
        .await
        .expect("basic.qos");
    declare_exchange(&channel).await;
    channel
        .queue_declare(
            "bench".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare the bench queue");
    channel
        .queue_bind(
            "bench".into(),
            "bench".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the bench queue");
    let mut consumer = channel
        .basic_consume(
            "bench".into(),
            "bench-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let recorder = arrivals.clone();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            recorder.record(&delivery.data);
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
    });
    let started = Instant::now();
    let published = amqp_publish(&broker, messages, clock).await;
    let report = arrivals.report(published, started).await;
    consuming.abort();
    let _ = connection.close(200, "OK".into()).await;
    report
}

/// triggerd consuming through its AMQP source (a named queue, acks after the bus took each
/// event, prefetch 64), the benchmark sensor and an HTTP trigger to the sink.
pub async fn amqp_triggerd(binary: &Path, messages: u64) -> BrokerReport {
    let broker = RabbitMq::start().await;
    let clock = Instant::now();
    let sink = SinkState::new(clock);
    let sink_addr = start_sink(sink.clone()).await;
    let source = format!(
        "apiVersion: triggerd.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: broker\nspec:\n  amqp:\n    load:\n      url: {}\n      jsonBody: true\n      exchangeName: bench\n      exchangeType: fanout\n      exchangeDeclare: {{durable: false}}\n      queueDeclare: {{name: bench}}\n",
        broker.url()
    );
    let agent = bench_agent(binary, &source, &sensor_on("broker", "load", sink_addr)).await;
    let started = Instant::now();
    let published = amqp_publish(&broker, messages, clock).await;
    let report = sink.broker_report(published, started).await;
    drop(agent);
    report
}

async fn bench_agent(binary: &Path, source: &str, sensor: &str) -> Agent {
    crate::loadbench::bench_agent(binary)
        .manifest(source.to_owned())
        .manifest(sensor.to_owned())
        .start()
        .await
}

impl SinkState {
    /// Waits (bounded) until `published` events reached the sink, then summarises.
    async fn broker_report(&self, published: u64, started: Instant) -> BrokerReport {
        let arrivals = Arrivals {
            clock: self.clock,
            latencies: self.latencies.clone(),
            numbers: self.sent_times.clone(),
        };
        arrivals.report(published, started).await
    }
}
