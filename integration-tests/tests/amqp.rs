//! AMQP source and trigger against a real RabbitMQ (a private node per test, on free ports,
//! with its own data directory): Argo's data shape for JSON and text messages with
//! properties and headers, the EventSource filter, at least once across an agent SIGKILL
//! with a durable queue (0 lost), reconnection after a broker restart (0 lost), credentials
//! from secrets, start-up failures that name the event, back-pressure from a full bus (the
//! rest waits in the queue, nothing lost), and the trigger's confirmed publish,
//! policy, unroutable message and dead letter.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::{
    collect_numbers, free_port, run_cli, run_failing_to_start, webhook_source, Agent, RabbitMq,
    Sink, DELIVERY_TIMEOUT,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Value};

const USER: &str = "jobs";
const PASSWORD: &str = "r4bb1t-pw";

/// EventSource `shop` with one amqp event `orders`; `extra` is appended to its fields.
fn amqp_source(url: &str, exchange_type: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: shop
spec:
  amqp:
    orders:
      url: {url}
      jsonBody: true
      exchangeName: orders
      exchangeType: {exchange_type}
      routingKey: "order.*"
      connectionBackoff: {{duration: 50ms, steps: 3}}
{extra}"#
    )
}

/// A durable named queue, so messages wait while the agent is down.
const DURABLE_QUEUE: &str =
    "      queueDeclare: {name: shop-orders, durable: true, exclusive: false}\n";

/// `forward_sensor` with a forward of the whole event to `url`.
fn forward(url: &str) -> String {
    integration_tests::forward_sensor("fw", "shop", "orders", url)
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `{"n": n}` for each number, persistent, with message id `order-<n>`.
async fn publish_numbers(broker: &RabbitMq, numbers: impl IntoIterator<Item = u64>) {
    for n in numbers {
        broker
            .publish(
                "orders",
                "topic",
                "order.created",
                json!({"n": n}).to_string().as_bytes(),
                persistent().with_message_id(format!("order-{n}").into()),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_text_messages_arrive_in_argo_shape_and_the_filter_drops() {
    let broker = RabbitMq::start().await;
    let orders = Sink::start().await;
    let source = amqp_source(
        &broker.url(),
        "topic",
        "      metadata:\n        shop: north\n      filter:\n        expression: \"body.total > 20\"\n",
    );
    let agent = Agent::start(&[&source, &forward(&orders.url("/o"))]).await;
    let mut headers = FieldTable::default();
    headers.insert("x-tenant".into(), AMQPValue::LongString("acme".into()));
    headers.insert("x-attempt".into(), AMQPValue::LongLongInt(2));
    // Ready means consuming. The small order goes first: had the filter been ignored it
    // would arrive first.
    broker
        .publish(
            "orders",
            "topic",
            "order.created",
            br#"{"total": 5}"#,
            persistent(),
        )
        .await;
    broker
        .publish(
            "orders",
            "topic",
            "order.created",
            br#"{"total": 25}"#,
            persistent()
                .with_content_type("application/json".into())
                .with_message_id("order-25".into())
                .with_correlation_id("c-1".into())
                .with_app_id("checkout".into())
                .with_type("created".into())
                .with_priority(3)
                .with_timestamp(1_700_000_000)
                .with_headers(headers),
        )
        .await;
    let event = agent.expect_request(&orders, DELIVERY_TIMEOUT).await.json();
    assert_eq!(event["type"], "amqp", "{event}");
    assert_eq!(event["source"], "shop");
    assert_eq!(event["subject"], "orders");
    assert_eq!(event["id"], "order-25", "the message id is the event id");
    let data = &event["data"];
    assert_eq!(data["body"], json!({"total": 25}), "{event}");
    assert_eq!(data["exchange"], "orders", "{event}");
    assert_eq!(data["routingKey"], "order.created", "{event}");
    assert_eq!(data["contentType"], "application/json", "{event}");
    assert_eq!(data["deliveryMode"], 2, "{event}");
    assert_eq!(data["priority"], 3, "{event}");
    assert_eq!(data["correlationId"], "c-1", "{event}");
    assert_eq!(data["messageId"], "order-25", "{event}");
    assert_eq!(data["appId"], "checkout", "{event}");
    assert_eq!(data["type"], "created", "{event}");
    assert_eq!(data["timestamp"], "2023-11-14T22:13:20+00:00", "{event}");
    assert_eq!(
        data["headers"],
        json!({"x-attempt": 2, "x-tenant": "acme"}),
        "{event}"
    );
    assert_eq!(data["metadata"], json!({"shop": "north"}), "{event}");
    // The small order fails `body.total > 20`: the filter drops it, counted.
    agent
        .wait_for_metric(
            "triggerd_source_events_filtered_total",
            &[("event_source", "shop"), ("event_name", "orders")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    orders.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_bodies_stay_text_and_each_message_is_acknowledged() {
    let broker = RabbitMq::start().await;
    let sink = Sink::start().await;
    let source = amqp_source(&broker.url(), "fanout", DURABLE_QUEUE)
        .replace("jsonBody: true", "jsonBody: false");
    let agent = Agent::start(&[&source, &forward(&sink.url("/t"))]).await;
    broker
        .publish("orders", "fanout", "anything", b"plain words", persistent())
        .await;
    let event = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(event["data"]["body"], "plain words", "{event}");
    assert_eq!(event["data"]["messageId"], "", "{event}");
    // Acknowledged once the bus took it: nothing stays in the queue, ready or unacked.
    agent
        .wait_for_metric(
            "triggerd_events_received_total",
            &[("event_source", "shop"), ("event_name", "orders")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.terminate();
    assert!(agent.wait_exit(DELIVERY_TIMEOUT).await.success());
    assert_eq!(broker.queue_message_count("shop-orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_queue_loses_nothing_across_an_agent_sigkill() {
    let broker = RabbitMq::start().await;
    let sink = Sink::start().await;
    let agent = Agent::start(&[
        &amqp_source(&broker.url(), "topic", DURABLE_QUEUE),
        &forward(&sink.url("/o")),
    ])
    .await;
    publish_numbers(&broker, 1..=5).await;
    collect_numbers(&agent, &sink, &(1..=5).collect()).await;

    // Killed while messages are in flight: some were taken, maybe not acknowledged.
    publish_numbers(&broker, 6..=25).await;
    agent.kill();
    // Nobody consumes: the broker keeps these in the durable queue.
    publish_numbers(&broker, 26..=60).await;
    agent.restart().await;
    let received = collect_numbers(&agent, &sink, &(6..=60).collect()).await;
    assert!(received >= 55, "{received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reconnects_after_a_broker_restart_and_loses_nothing() {
    let mut broker = RabbitMq::start().await;
    let sink = Sink::start().await;
    let agent = Agent::start(&[
        &amqp_source(&broker.url(), "topic", DURABLE_QUEUE),
        &forward(&sink.url("/o")),
    ])
    .await;
    publish_numbers(&broker, 1..=3).await;
    collect_numbers(&agent, &sink, &(1..=3).collect()).await;

    broker.stop().await;
    broker.restart().await;
    // Published before the agent is back: they wait in the durable queue.
    publish_numbers(&broker, 4..=30).await;
    agent
        .wait_for_stderr("the source to reconnect", DELIVERY_TIMEOUT * 3, |s| {
            s.contains("AMQP source reconnected")
        })
        .await;
    collect_numbers(&agent, &sink, &(4..=30).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_secrets_and_a_wrong_password_fails_start_up() {
    let broker = RabbitMq::start_with_user(USER, PASSWORD).await;
    let sink = Sink::start().await;
    let url = format!("amqp://127.0.0.1:{}/%2f", broker.port());
    let auth = "      auth:\n        username: {name: mq, key: user}\n        password: {name: mq, key: password}\n";
    let agent = Agent::builder()
        .manifest(amqp_source(&url, "topic", auth))
        .manifest(forward(&sink.url("/s")))
        .secret("mq", "user", USER)
        .secret("mq", "password", PASSWORD)
        .start()
        .await;
    publish_numbers(&broker, [7]).await;
    collect_numbers(&agent, &sink, &[7].into()).await;
    assert!(
        !agent.stderr().contains(PASSWORD),
        "the password reached the log"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("user"), USER).unwrap();
    std::fs::write(dir.path().join("password"), "not-the-password").unwrap();
    let files = format!(
        "      auth:\n        username: {{file: {0}/user}}\n        password: {{file: {0}/password}}\n",
        dir.path().display()
    );
    let out = run_failing_to_start(&amqp_source(&url, "topic", &files), &[]);
    assert!(
        out.stderr.contains("EventSource shop, amqp event orders")
            && out.stderr.contains("refused"),
        "{out}"
    );
    assert!(!out.stderr.contains("not-the-password"), "{out}");
    // A password in the URL is masked in what the agent prints.
    let in_url = format!("amqp://{USER}:wrong-in-url@127.0.0.1:{}/%2f", broker.port());
    let out = run_failing_to_start(&amqp_source(&in_url, "topic", ""), &[]);
    assert!(out.stderr.contains("amqp event orders"), "{out}");
    assert!(!out.stderr.contains("wrong-in-url"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_start_up_naming_the_event() {
    let out = run_failing_to_start(
        &amqp_source(&format!("amqp://127.0.0.1:{}", free_port()), "topic", ""),
        &[],
    );
    assert!(
        out.stderr.contains("EventSource shop, amqp event orders")
            && out.stderr.contains("after 3 attempt(s)"),
        "{out}"
    );
}

/// Sensor `dispatch`: a webhook `ops/job` publishes `{job, priority}` to exchange `jobs`
/// with routing key `job.<kind>` and header `x-job`, judged by `policy`, dead letters to
/// `dlq_url`.
fn dispatch_sensor(url: &str, extra: &str, policy: &str, dlq_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: dispatch
spec:
  dependencies:
    - name: job
      eventSourceName: ops
      eventName: job
  triggers:
    - template:
        name: enqueue
        amqp:
          url: {url}
          exchangeName: jobs
          exchangeType: topic
          routingKey: job.unknown
{extra}          properties:
            correlationId: fixed
          parameters:
            - src:
                dependencyName: job
                script: '`job.${{event.body.kind}}`'
              dest: routingKey
            - src: {{dependencyName: job, dataKey: body.id}}
              dest: headers.x-job
            - src: {{dependencyName: job, dataKey: body.id}}
              dest: properties.messageId
          payload:
            - src: {{dependencyName: job, dataKey: body.id}}
              dest: job
      retryStrategy: {{steps: 3, duration: 10ms}}
      policy:
        script: '{policy}'
      dlqTrigger:
        template:
          name: enqueue-dlq
          http:
            url: {dlq_url}
"#
    )
}

fn labels(outcome: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("sensor", "dispatch"),
        ("trigger", "enqueue"),
        ("outcome", outcome),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_publishes_confirmed_and_the_policy_sees_the_routing_key() {
    let broker = RabbitMq::start().await;
    broker
        .declare_queue_bound("jobs", "topic", "builds", "job.build")
        .await;
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ops", "job", port, "/job"),
        &dispatch_sensor(
            &broker.url(),
            "          mandatory: true\n",
            r#"if "error" in response { "retry" } else if response.confirmed && response.routing_key == "job.build" { "success" } else { "fail" }"#,
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/job"),
            &json!({"kind": "build", "id": "j-1"}),
        )
        .await;
    let message = broker
        .receive("builds", DELIVERY_TIMEOUT)
        .await
        .unwrap_or_else(|| agent.fail("no message reached the queue"));
    let body: Value = serde_json::from_slice(&message.data).unwrap();
    assert_eq!(body, json!({"job": "j-1"}));
    assert_eq!(message.routing_key.as_str(), "job.build");
    let p = &message.properties;
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("j-1"));
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some("fixed")
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    let header = p
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-job").cloned());
    assert_eq!(header, Some(AMQPValue::LongString("j-1".into())));
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;

    // No queue is bound for `job.deploy`: with `mandatory` the broker returns it, and the
    // default outcome (the policy says "fail" too) dead-letters it without retries.
    agent
        .post_event(
            &agent.webhook_url(port, "/job"),
            &json!({"kind": "deploy", "id": "j-2"}),
        )
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "enqueue", "{dead}");
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(broker.queue_message_count("builds").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_retried_then_dead_lettered() {
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ops", "job", port, "/job"),
        &dispatch_sensor(
            &format!("amqp://127.0.0.1:{}", free_port()),
            "",
            r#"if "error" in response { "retry" } else { "success" }"#,
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/job"),
            &json!({"kind": "build", "id": "j-9"}),
        )
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "enqueue", "{dead}");
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot connect"),
        "{dead}"
    );
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("failed"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
}

#[test]
fn validate_accepts_auto_ack_with_a_warning_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("amqp.yaml");
    std::fs::write(
        &file,
        amqp_source(
            "amqp://127.0.0.1:5672",
            "fanout",
            "      consume: {autoAck: true}\n",
        ),
    )
    .unwrap();
    let out = run_cli(
        &["validate", "-f", &file.to_string_lossy()],
        dir.path(),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("warning:")
            && out.stderr.contains("spec.amqp.orders.consume.autoAck")
            && out.stderr.contains("at most once"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bus_leaves_messages_in_the_queue_and_every_one_arrives_later() {
    let broker = RabbitMq::start().await;
    let sink = Sink::start().await;
    // The sink answers nothing, so the sensor cannot finish its first event; with one event
    // of room on the bus and one execution in flight the source stops taking messages, and
    // with prefetch 5 the broker sends it no more than that ahead.
    sink.hold();
    let agent = Agent::builder()
        .manifest(amqp_source(
            &broker.url(),
            "topic",
            &format!("{DURABLE_QUEUE}      prefetch: 5\n"),
        ))
        .manifest(forward(&sink.url("/o")))
        .args(["--bus-capacity", "1", "--max-inflight", "1"])
        .start()
        .await;
    publish_numbers(&broker, 1..=40).await;
    let first = sink
        .next(DELIVERY_TIMEOUT)
        .await
        .unwrap_or_else(|| agent.fail("the first message never reached the sink"));
    let first = first.json()["data"]["body"]["n"]
        .as_u64()
        .expect("a number");
    // Every message was confirmed by the broker; all but the few the agent holds wait there.
    let ready = broker.queue_message_count("shop-orders").await;
    assert!(
        ready >= 30,
        "the agent took more than its window: {ready} left of 40"
    );
    sink.release();
    let mut want: BTreeSet<u64> = (1..=40).collect();
    want.remove(&first);
    collect_numbers(&agent, &sink, &want).await;
}
