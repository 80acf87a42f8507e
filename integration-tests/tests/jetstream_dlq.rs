//! Dead letters on the JetStream bus: a trigger that finally fails is recorded on the DLQ
//! stream with its events and last error; `triggerd dlq list` shows it, and
//! `triggerd dlq replay` re-runs only that trigger with the same events, removing the
//! replayed entry (a replay that fails again makes a new entry).

use std::time::Duration;

use integration_tests::{
    free_port, jetstream_bus_args, run_cli, webhook_source, Agent, NatsServer, Sink,
    DELIVERY_TIMEOUT,
};
use serde_json::{json, Value};
use tokio::time::Instant;

const NAMESPACE: &str = "dlq";
/// How long a `triggerd dlq` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to listen for a request that must not come (see `Sink::expect_none`).
const NEGATIVE_WINDOW: Duration = Duration::from_millis(300);

/// Sensor `deploy` on `hooks/push`: trigger `notify` (one attempt, so a 500 is final) and
/// trigger `audit`, each posting the CloudEvent to its own sink.
fn sensor(notify_url: &str, audit_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: deploy
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: notify
        http:
          url: {notify_url}
          method: POST
      retryStrategy:
        steps: 1
    - template:
        name: audit
        http:
          url: {audit_url}
          method: POST
"#
    )
}

/// Runs `triggerd dlq SUBCOMMAND --nats-url URL --namespace dlq EXTRA...`, which must
/// succeed; returns its stdout. The runtime's other worker keeps serving the sinks
/// meanwhile.
fn dlq(agent: &Agent, server: &NatsServer, subcommand: &str, extra: &[&str]) -> String {
    let url = server.url();
    let mut args = vec![
        "dlq",
        subcommand,
        "--nats-url",
        &url,
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let out = tokio::task::block_in_place(|| run_cli(&args, agent.dir(), CLI_TIMEOUT));
    if out.code != Some(0) {
        agent.fail(format_args!("triggerd {}: {out}", args.join(" ")));
    }
    out.stdout
}

/// The entries `dlq list --output json` prints, one JSON object per line.
fn list(agent: &Agent, server: &NatsServer) -> Vec<Value> {
    dlq(agent, server, "list", &["--output", "json"])
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| {
                agent.fail(format_args!("dlq list line is not JSON ({err}): {line}"))
            })
        })
        .collect()
}

/// Runs `dlq list` (every 100 ms, at most [`DELIVERY_TIMEOUT`]) until `done` holds for
/// its entries; returns them.
async fn wait_list(
    agent: &Agent,
    server: &NatsServer,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let entries = list(agent, server);
        if done(&entries) {
            return entries;
        }
        if Instant::now() >= deadline {
            agent.fail(format_args!(
                "dlq list never showed {what} within {DELIVERY_TIMEOUT:?}; last: {entries:#?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The entry records the failed trigger, its last error and the event it failed on.
fn assert_entry(entry: &Value, id: &str, body: &Value) -> u64 {
    assert_eq!(entry["sensor"], "deploy", "{entry:#}");
    assert_eq!(entry["trigger"], "notify", "{entry:#}");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("500"),
        "the error names the HTTP 500: {entry:#}"
    );
    assert_eq!(entry["events"]["push"]["id"], id, "{entry:#}");
    assert_eq!(entry["events"]["push"]["data"]["body"], *body, "{entry:#}");
    entry["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("entry has no numeric seq: {entry:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_until_it_succeeds() {
    let server = NatsServer::start();
    let notify = Sink::start().await;
    let audit = Sink::start().await;
    notify.reply(500, r#"{"error":"down"}"#);
    let port = free_port();
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(sensor(&notify.url("/notify"), &audit.url("/audit")))
        .args(jetstream_bus_args(&server.url(), NAMESPACE))
        .start()
        .await;
    let body = json!({"ref": "refs/heads/main"});
    let id = agent
        .post_event(&agent.webhook_url(port, "/push"), &body)
        .await;
    assert_eq!(
        agent.expect_request(&notify, DELIVERY_TIMEOUT).await.json()["id"],
        id
    );
    agent.expect_request(&audit, DELIVERY_TIMEOUT).await;

    let entries = wait_list(&agent, &server, "the failed notify", |entries| {
        !entries.is_empty()
    })
    .await;
    assert_eq!(entries.len(), 1, "one dead letter: {entries:#?}");
    let first = assert_entry(&entries[0], &id, &body);

    // Replay while the target still fails: the entry is replaced by a new one.
    notify.reply(500, r#"{"error":"still down"}"#);
    dlq(&agent, &server, "replay", &["--all"]);
    let replayed = agent.expect_request(&notify, DELIVERY_TIMEOUT).await;
    assert_eq!(replayed.json()["id"], id, "a replay carries the same event");
    let entries = wait_list(
        &agent,
        &server,
        "a new entry replacing the replayed one",
        |e| e.len() == 1 && e[0]["seq"].as_u64() != Some(first),
    )
    .await;
    let second = assert_entry(&entries[0], &id, &body);

    // The target recovered: the replay succeeds and the DLQ is empty.
    dlq(&agent, &server, "replay", &["--seq", &second.to_string()]);
    let replayed = agent.expect_request(&notify, DELIVERY_TIMEOUT).await;
    assert_eq!(replayed.json()["id"], id);
    wait_list(&agent, &server, "no entries", <[Value]>::is_empty).await;
    // Only the failed trigger is replayed: audit succeeded the first time.
    audit.expect_none(NEGATIVE_WINDOW).await;
    assert_eq!(notify.count(), 3, "the original attempt and two replays");
}
