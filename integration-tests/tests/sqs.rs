//! SQS source against moto (the AWS emulator the suite installs, which also delivers S3
//! bucket notifications to SQS inside the same server): S3 notifications as records with
//! the `s3` filter on bucket, event type and key, Argo's data shape for plain messages with
//! attributes and the message id as event id, 0 lost across an agent SIGKILL (messages not
//! deleted reappear after a short visibility timeout), and a missing queue failing start-up.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::{
    forward_sensor, run_failing_to_start, Agent, Moto, Sink, DELIVERY_TIMEOUT,
};
use serde_json::json;

/// EventSource `store` with one sqs event `uploads` on `queue`; `extra` is appended.
fn sqs_source(moto: &Moto, queue: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: store
spec:
  sqs:
    uploads:
      region: us-east-1
      queue: {queue}
      endpoint: {}
      waitTimeSeconds: 1
      accessKey: {{name: aws, key: accesskey}}
      secretKey: {{name: aws, key: secretkey}}
{extra}"#,
        moto.url()
    )
}

fn agent(moto: &Moto, queue: &str, extra: &str, sink: &Sink) -> integration_tests::AgentBuilder {
    Agent::builder()
        .manifest(sqs_source(moto, queue, extra))
        .manifest(forward_sensor("fw", "store", "uploads", &sink.url("/u")))
        .secret("aws", "accesskey", "test")
        .secret("aws", "secretkey", "test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_notifications_become_records_and_the_s3_filter_keeps_matching_ones() {
    let moto = Moto::start().await;
    let queue = moto.create_queue("uploads", 30).await;
    moto.create_bucket_notifying("incoming", "uploads", &["s3:ObjectCreated:*"])
        .await;
    let sink = Sink::start().await;
    let filter = "      s3:\n        bucket: incoming\n        events: [\"s3:ObjectCreated:*\"]\n        filter: {prefix: in/, suffix: .csv}\n";
    let agent = agent(&moto, "uploads", filter, &sink).start().await;
    // The JSON object goes first: had the suffix filter been ignored it would arrive first.
    moto.put_object("incoming", "in/report.json", b"{}").await;
    moto.put_object("incoming", "in/report.csv", b"a,b\n1,2\n")
        .await;
    let event = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(event["type"], "sqs", "{event}");
    let record = &event["data"]["body"]["Records"][0];
    assert_eq!(record["eventSource"], "aws:s3", "{event}");
    assert_eq!(record["s3"]["bucket"]["name"], "incoming", "{event}");
    // Keys stay URL-encoded as S3 sends them (moto also encodes the slash); the s3 filter
    // compares the decoded key.
    let key = record["s3"]["object"]["key"].as_str().unwrap_or("");
    assert_eq!(key.replace("%2F", "/"), "in/report.csv", "{event}");
    assert!(
        record["eventName"]
            .as_str()
            .unwrap_or("")
            .starts_with("ObjectCreated:"),
        "{event}"
    );
    assert_eq!(
        event["id"], event["data"]["messageId"],
        "the SQS message id is the event id"
    );
    sink.expect_none(Duration::from_millis(500)).await;
    // Both notifications were handled (one kept, one dropped): none stays in the queue.
    agent
        .wait_for_metric(
            "triggerd_source_events_filtered_total",
            &[("event_source", "store"), ("event_name", "uploads")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while moto.queue_depth(&queue).await != (0, 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages stay in the queue: {:?}",
            moto.queue_depth(&queue).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_messages_arrive_in_argo_shape_with_their_attributes() {
    let moto = Moto::start().await;
    let queue = moto.create_queue("orders", 30).await;
    let sink = Sink::start().await;
    let agent = agent(
        &moto,
        "orders",
        "      jsonBody: true\n      metadata: {shop: north}\n",
        &sink,
    )
    .start()
    .await;
    moto.send_message(&queue, r#"{"order": 7}"#, &[("tenant", "acme")])
        .await;
    moto.send_message(&queue, "not json", &[]).await;
    let mut events = [
        agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json(),
        agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json(),
    ];
    events.sort_by_key(|e| e["data"]["body"].is_string());
    let data = &events[0]["data"];
    assert_eq!(data["body"], json!({"order": 7}), "{data}");
    assert_eq!(
        data["messageAttributes"]["tenant"],
        json!({"DataType": "String", "StringValue": "acme"}),
        "{data}"
    );
    assert_eq!(data["metadata"], json!({"shop": "north"}), "{data}");
    assert_eq!(events[0]["id"], data["messageId"]);
    assert_eq!(events[1]["data"]["body"], "not json", "kept as text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_deleted_reappear_after_an_agent_sigkill() {
    let moto = Moto::start().await;
    let queue = moto.create_queue("jobs", 1).await;
    let sink = Sink::start().await;
    let agent = agent(&moto, "jobs", "      jsonBody: true\n", &sink)
        .start()
        .await;
    let number = |r: integration_tests::Request| r.json()["data"]["body"]["n"].as_u64();
    let mut seen = BTreeSet::new();
    for n in 1..=30u64 {
        moto.send_message(&queue, &json!({"n": n}).to_string(), &[])
            .await;
        if n == 10 {
            // Killed while messages are in flight: received, maybe not yet deleted.
            seen.extend(number(agent.expect_request(&sink, DELIVERY_TIMEOUT).await));
            agent.kill();
        }
    }
    agent.restart().await;
    let want: BTreeSet<u64> = (1..=30).collect();
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT * 2;
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(r) = sink.next(left).await else {
            let missing: Vec<_> = want.difference(&seen).collect();
            agent.fail(format_args!("messages never arrived: {missing:?}"));
        };
        seen.extend(number(r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_fails_start_up_naming_the_event() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "test").unwrap();
    let file = format!("{{file: {}}}", key.display());
    let manifest = sqs_source(&moto, "nowhere", "")
        .replace("{name: aws, key: accesskey}", &file)
        .replace("{name: aws, key: secretkey}", &file);
    let out = run_failing_to_start(&manifest, &[]);
    assert!(
        out.stderr.contains("EventSource store, sqs event uploads")
            && out.stderr.contains("nowhere"),
        "{out}"
    );
}
