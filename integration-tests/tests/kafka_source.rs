//! Kafka source against a real broker (tansu, one per test on a free port): records fire a
//! sensor with Argo-shaped data and stable ids; a consumer group resumes after an agent
//! restart without firing earlier records again and reads every partition of a topic;
//! without a group, `partition` reads that partition only, under the generated group; a
//! missing topic fails start-up.

use std::time::Duration;

use integration_tests::{run_failing_to_start, Agent, Sink, Tansu, DELIVERY_TIMEOUT};
use serde_json::json;

/// EventSource `stream` with one kafka event `orders` read by group `shop`.
fn kafka_source(bootstrap: &str, topic: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: stream
spec:
  kafka:
    orders:
      url: {bootstrap}
      topic: {topic}
      jsonBody: true
      consumerGroup:
        groupName: shop
        oldest: true
      metadata:
        team: shop
"#
    )
}

/// Sensor `ship`: paid orders go to the sink with their record's coordinates.
fn ship_sensor(sink_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: ship
spec:
  dependencies:
    - name: order
      eventSourceName: stream
      eventName: orders
      filters:
        data:
          - {{path: value.kind, type: string, value: ["^paid$"]}}
  triggers:
    - template:
        name: ship
        http:
          url: {sink_url}
          payload:
            - src: {{dependencyName: order, dataKey: value.id}}
              dest: order
            - src: {{dependencyName: order, dataKey: key}}
              dest: key
            - src: {{dependencyName: order, script: 'event.topic + "/" + event.partition + "/" + event.offset'}}
              dest: position
            - src: {{dependencyName: order, dataKey: metadata.team}}
              dest: team
            - src: {{dependencyName: order, contextKey: id}}
              dest: eventId
      retryStrategy: {{steps: 1}}
"#
    )
}

async fn produce_order(broker: &Tansu, id: u64, kind: &str) -> i64 {
    broker
        .produce(
            "orders",
            &format!("k{id}"),
            &json!({"id": id, "kind": kind}).to_string(),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_fire_the_sensor_and_a_restarted_agent_resumes_where_it_stopped() {
    let broker = Tansu::start().await;
    broker.create_topic("orders", 1);
    // Written before the agent ever ran: a new group with `oldest` reads them all.
    assert_eq!(produce_order(&broker, 1, "paid").await, 0);
    produce_order(&broker, 2, "refund").await;
    produce_order(&broker, 3, "paid").await;
    let sink = Sink::start().await;
    let manifests = [
        kafka_source(&broker.bootstrap(), "orders"),
        ship_sensor(&sink.url("/ship")),
    ];
    let first = Agent::start(&[&manifests[0], &manifests[1]]).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(first.expect_request(&sink, DELIVERY_TIMEOUT).await.json());
    }
    seen.sort_by_key(|b| b["order"].to_string());
    assert_eq!(
        seen,
        vec![
            json!({"order": "1", "key": "k1", "position": "orders/0/0", "team": "shop", "eventId": "orders-0-0"}),
            json!({"order": "3", "key": "k3", "position": "orders/0/2", "team": "shop", "eventId": "orders-0-2"}),
        ]
    );
    first
        .wait_for_metric(
            "triggerd_events_received_total",
            &[("event_source", "stream"), ("event_name", "orders")],
            3.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    first.terminate();
    assert!(first.wait_exit(DELIVERY_TIMEOUT).await.success());

    // While no agent runs, one more order arrives; the next agent fires it, and only it.
    produce_order(&broker, 4, "paid").await;
    let second = Agent::start(&[&manifests[0], &manifests[1]]).await;
    let body = second
        .expect_request(&sink, DELIVERY_TIMEOUT * 2)
        .await
        .json();
    assert_eq!(body["order"], "4", "{body}");
    assert_eq!(body["eventId"], "orders-0-3", "{body}");
    sink.expect_none(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_start_up_naming_the_event() {
    let broker = Tansu::start().await;
    let out = run_failing_to_start(
        &kafka_source(&broker.bootstrap(), "nowhere").replace(
            "      jsonBody: true\n",
            "      jsonBody: true\n      connectionBackoff: {steps: 2, duration: 10ms}\n",
        ),
        &[],
    );
    assert!(
        out.stderr
            .contains("EventSource stream, kafka event orders")
            && out.stderr.contains("topic nowhere does not exist")
            && out.stderr.contains("after 2 attempt(s)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reads_every_partition_of_the_topic_once() {
    let broker = Tansu::start().await;
    broker.create_topic("orders", 3);
    for id in 1..=6 {
        produce_order(&broker, id, "paid").await;
    }
    let sink = Sink::start().await;
    let agent = Agent::start(&[
        &kafka_source(&broker.bootstrap(), "orders"),
        &ship_sensor(&sink.url("/ship")),
    ])
    .await;
    let mut orders = Vec::new();
    let mut partitions = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let body = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
        let position = body["position"].as_str().unwrap_or("").to_owned();
        let partition = position.split('/').nth(1).unwrap_or("").to_owned();
        // The id names the record's own partition and offset.
        assert_eq!(
            body["eventId"].as_str(),
            Some(position.replace('/', "-").as_str()),
            "{body}"
        );
        partitions.insert(partition);
        orders.push(body["order"].as_str().unwrap_or("").to_owned());
    }
    orders.sort();
    assert_eq!(orders, ["1", "2", "3", "4", "5", "6"]);
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );
    sink.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_group_one_partition_is_read_under_the_generated_group() {
    let broker = Tansu::start().await;
    broker.create_topic("orders", 2);
    let order = |id: u64| json!({"id": id, "kind": "paid"}).to_string();
    broker.produce_to("orders", Some(0), "k1", &order(1)).await;
    broker.produce_to("orders", Some(1), "k2", &order(2)).await;
    broker.produce_to("orders", Some(1), "k3", &order(3)).await;
    // A new group starts at the newest record; committed offsets make the start exact: the
    // generated group has read partition 1 up to (not including) offset 1, and nothing of
    // partition 0, which only a reader of the whole topic would fire.
    broker.commit("triggerd.stream.orders", "orders", 1, 1);
    broker.commit("triggerd.stream.orders", "orders", 0, 0);
    let source = kafka_source(&broker.bootstrap(), "orders").replace(
        "      consumerGroup:\n        groupName: shop\n        oldest: true\n",
        "      partition: \"1\"\n",
    );
    assert!(source.contains("partition: \"1\""), "{source}");
    let sink = Sink::start().await;
    let agent = Agent::start(&[&source, &ship_sensor(&sink.url("/ship"))]).await;
    let body = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(body["order"], "3", "{body}");
    assert_eq!(body["eventId"], "orders-1-1", "{body}");
    sink.expect_none(Duration::from_millis(300)).await;
}
