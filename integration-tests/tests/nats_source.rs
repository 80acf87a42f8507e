//! NATS source against a real `nats-server -js` (one per test, on free ports): core
//! subjects with token auth, a JetStream durable consumer across an agent restart, and
//! JetStream redelivery recognised as a duplicate.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use integration_tests::{
    free_port, run_failing_to_start, Agent, NatsServer, Sink, TestCerts, DELIVERY_TIMEOUT,
};
use serde_json::json;

const TOKEN: &str = "n4ts-t0ken";

/// EventSource `bus` with one nats event `orders`; `extra` is appended to its fields.
fn nats_source(url: &str, subject: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: bus
spec:
  nats:
    orders:
      url: {url}
      subject: "{subject}"
      jsonBody: true
      metadata:
        team: shop
{extra}"#
    )
}

/// Sensor `ship`: orders of kind `paid` go to the sink with a parameterized payload.
fn ship_sensor(sink_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: ship
spec:
  dependencies:
    - name: order
      eventSourceName: bus
      eventName: orders
      filters:
        data:
          - {{path: body.kind, type: string, value: ["^paid$"]}}
  triggers:
    - template:
        name: ship
        http:
          url: {sink_url}
          payload:
            - src: {{dependencyName: order, dataKey: body.id}}
              dest: order
            - src: {{dependencyName: order, dataKey: subject}}
              dest: subject
            - src: {{dependencyName: order, script: 'if "X-Trace" in event.header {{ event.header["X-Trace"][0] }} else {{ "none" }}'}}
              dest: trace
            - src: {{dependencyName: order, dataKey: metadata.team}}
              dest: team
            - src: {{dependencyName: order, contextKey: id}}
              dest: eventId
      retryStrategy: {{steps: 1}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_subject_with_token_auth_fires_the_sensor_with_argo_shaped_data() {
    let server = NatsServer::start_with_token(TOKEN);
    let sink = Sink::start().await;
    let agent = Agent::builder()
        .manifest(nats_source(
            &server.url(),
            "orders.*",
            "      auth:\n        token: {name: nats, key: token}\n",
        ))
        .manifest(ship_sensor(&sink.url("/ship")))
        .secret("nats", "token", TOKEN)
        .start()
        .await;
    // Ready means subscribed: messages published now are received.
    let client = server.client(Some(TOKEN)).await;
    client
        .publish(
            "orders.eu",
            json!({"id": 1, "kind": "refund"}).to_string().into(),
        )
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Trace", "abc");
    client
        .publish_with_headers(
            "orders.us",
            headers,
            json!({"id": 2, "kind": "paid"}).to_string().into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();

    // The refund went first: had the filter been ignored it would arrive first.
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    let body = request.json();
    assert_eq!(body["order"], "2", "{body}");
    assert_eq!(body["subject"], "orders.us");
    assert_eq!(body["trace"], "abc");
    assert_eq!(body["team"], "shop");
    agent
        .wait_for_metric(
            "triggerd_events_received_total",
            &[("event_source", "bus"), ("event_name", "orders")],
            2.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent
        .wait_for_metric(
            "triggerd_events_filtered_total",
            &[("sensor", "ship")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert!(
        !agent.stderr().contains(TOKEN),
        "the NATS token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_reached_fails_start_up_naming_the_event() {
    let port = free_port();
    let out = run_failing_to_start(
        &nats_source(
            &format!("nats://127.0.0.1:{port}"),
            "orders",
            "      connectionBackoff: {steps: 2, duration: 10ms}\n",
        ),
        &[],
    );
    assert!(
        out.stderr.contains("EventSource bus, nats event orders")
            && out.stderr.contains("after 2 attempt(s)"),
        "{out}"
    );
}

async fn orders_stream(server: &NatsServer) -> (jetstream::Context, stream::Stream) {
    let js = jetstream::new(server.client(None).await);
    let stream = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .expect("create stream");
    (js, stream)
}

async fn publish(js: &jetstream::Context, id: u64) {
    js.publish(
        "orders.new",
        json!({"id": id, "kind": "paid"}).to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stream acknowledges");
}

/// Polls the durable consumer until everything up to `seq` is acknowledged.
async fn wait_acked(stream: &stream::Stream, seq: u64) -> jetstream::consumer::Info {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let mut consumer: PullConsumer = stream
            .get_consumer("triggerd")
            .await
            .expect("consumer exists");
        let info = consumer.info().await.expect("consumer info").clone();
        if info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0 {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer did not acknowledge up to {seq}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DURABLE: &str = "      jetStream: {stream: ORDERS, durable: triggerd, ackWait: 30s}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_durable_consumer_resumes_where_it_stopped() {
    let server = NatsServer::start();
    let (js, stream) = orders_stream(&server).await;
    // Published before the agent ever ran: a new durable consumer delivers them all.
    publish(&js, 1).await;
    publish(&js, 2).await;
    let sink = Sink::start().await;
    let manifests = [
        nats_source(&server.url(), "orders.>", DURABLE),
        ship_sensor(&sink.url("/ship")),
    ];
    let first = Agent::start(&[&manifests[0], &manifests[1]]).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let body = first.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
        seen.push((body["order"].clone(), body["eventId"].clone()));
    }
    // Triggers run concurrently, so the sink may see them in either order.
    seen.sort_by_key(|(order, _)| order.to_string());
    assert_eq!(
        seen,
        vec![
            (json!("1"), json!("ORDERS-1")),
            (json!("2"), json!("ORDERS-2"))
        ],
        "each message once, with its stream sequence as id"
    );
    wait_acked(&stream, 2).await;
    first.terminate();
    assert!(first.wait_exit(DELIVERY_TIMEOUT).await.success());

    // While no agent runs, one more order arrives; the next agent gets it, and only it.
    publish(&js, 3).await;
    let second = Agent::start(&[&manifests[0], &manifests[1]]).await;
    let body = second.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(body["order"], "3", "{body}");
    let info = wait_acked(&stream, 3).await;
    assert_eq!(info.num_pending, 0);
    sink.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_jetstream_message_fires_once() {
    let server = NatsServer::start();
    let (js, stream) = orders_stream(&server).await;
    let sink = Sink::start().await;
    // The sink holds every request, so the sensor cannot finish order 1; with one event
    // per sensor queue and one in flight, the source cannot hand order 3 to the bus, does
    // not acknowledge it, and JetStream redelivers it after ackWait.
    sink.hold();
    let agent = Agent::builder()
        .manifest(nats_source(
            &server.url(),
            "orders.>",
            "      jetStream: {stream: ORDERS, durable: triggerd, ackWait: 1s}\n",
        ))
        .manifest(ship_sensor(&sink.url("/ship")))
        .args(["--bus-capacity", "1", "--max-inflight", "1"])
        .start()
        .await;
    for id in 1..=3 {
        publish(&js, id).await;
    }
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let mut consumer: PullConsumer = stream.get_consumer("triggerd").await.unwrap();
        if consumer.info().await.unwrap().num_redelivered > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "JetStream never redelivered; the agent acknowledged a message it had not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.release();
    let mut orders = Vec::new();
    for _ in 0..3 {
        let body = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
        orders.push(body["order"].as_str().unwrap().to_owned());
    }
    orders.sort_unstable();
    assert_eq!(orders, ["1", "2", "3"]);
    wait_acked(&stream, 3).await;
    // The redelivered copy has the same id and is dropped by the bus as a duplicate.
    sink.expect_none(Duration::from_millis(300)).await;
    agent
        .wait_for_metric(
            "triggerd_events_deduplicated_total",
            &[],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_secrets_connects_and_without_the_ca_or_client_certificate_start_up_fails()
{
    let certs = TestCerts::generate();
    let server = NatsServer::start_with_tls(&certs);
    let sink = Sink::start().await;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read PEM");
    let tls = "      tls:\n        caCertSecret: {name: nats-tls, key: ca}\n        clientCertSecret: {name: nats-tls, key: crt}\n        clientKeySecret: {name: nats-tls, key: key}\n";
    let agent = Agent::builder()
        .manifest(nats_source(&server.url(), "orders.*", tls))
        .manifest(ship_sensor(&sink.url("/ship")))
        .secret("nats-tls", "ca", &read(&certs.ca))
        .secret("nats-tls", "crt", &read(&certs.client_cert))
        .secret("nats-tls", "key", &read(&certs.client_key))
        .start()
        .await;
    let client = server.tls_client(&certs).await;
    client
        .publish(
            "orders.eu",
            json!({"id": 5, "kind": "paid"}).to_string().into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    let body = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(body["order"], "5", "{body}");

    // The system roots do not know the test CA: the server is not trusted.
    let out = run_failing_to_start(
        &nats_source(
            &server.url(),
            "orders.*",
            "      tls: {}\n      connectionBackoff: {steps: 1}\n",
        ),
        &[],
    );
    assert!(out.stderr.contains("cannot connect"), "{out}");

    // The CA, but no client certificate: the server refuses the handshake.
    let ca_only = format!(
        "      tls:\n        caCertSecret: {{file: {}}}\n      connectionBackoff: {{steps: 1}}\n",
        certs.ca.display()
    );
    let out = run_failing_to_start(&nats_source(&server.url(), "orders.*", &ca_only), &[]);
    assert!(out.stderr.contains("cannot connect"), "{out}");
}
