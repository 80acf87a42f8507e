//! File mode reloads when manifests change; a change that does not validate is refused and
//! the running configuration stays.

use integration_tests::{free_port, webhook_source, Agent, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

fn forward_sensor(url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: forward
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: forward
        http:
          url: {url}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_manifests_are_reloaded_and_invalid_ones_refused() {
    let first = Sink::start().await;
    let second = Sink::start().await;
    let port = free_port();
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(forward_sensor(&first.url("/a")))
        .args(["--watch-interval", "50ms"])
        .start()
        .await;
    let url = agent.webhook_url(port, "/push");
    let sensor_file = agent.dir().join("manifests").join("01.yaml");

    agent.post_event(&url, &json!({"n": 1})).await;
    assert_eq!(
        agent.expect_request(&first, DELIVERY_TIMEOUT).await.path,
        "/a"
    );

    std::fs::write(&sensor_file, forward_sensor(&second.url("/second"))).expect("rewrite sensor");
    agent
        .wait_for_metric(
            "triggerd_reloads_total",
            &[("outcome", "success")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"n": 2})).await;
    let request = agent.expect_request(&second, DELIVERY_TIMEOUT).await;
    assert_eq!(request.json()["data"]["body"]["n"], json!(2));
    assert_eq!(first.count(), 1, "the old trigger no longer fires");

    std::fs::write(
        &sensor_file,
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nspec: [broken\n",
    )
    .expect("break sensor");
    agent
        .wait_for_metric(
            "triggerd_reloads_total",
            &[("outcome", "failed")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"n": 3})).await;
    let request = agent.expect_request(&second, DELIVERY_TIMEOUT).await;
    assert_eq!(
        request.json()["data"]["body"]["n"],
        json!(3),
        "the running configuration stays"
    );
    // The log line is read from the agent's stderr pipe, which may trail the metric.
    agent
        .wait_for_stderr("the refused change logged", DELIVERY_TIMEOUT, |e| {
            e.contains("do not validate")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_start_goes_back_to_the_running_configuration() {
    let sink = Sink::start().await;
    let port = free_port();
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(forward_sensor(&sink.url("/a")))
        .args(["--watch-interval", "50ms"])
        .start()
        .await;
    let url = agent.webhook_url(port, "/push");
    // A valid change whose new port is taken by another process: it validates, but the
    // reloaded configuration cannot start.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("hold a port");
    let taken_port = taken.local_addr().expect("address").port();
    let source_file = agent.dir().join("manifests").join("00.yaml");
    std::fs::write(
        &source_file,
        webhook_source("hooks", "push", taken_port, "/push"),
    )
    .expect("rewrite source");
    agent
        .wait_for_metric(
            "triggerd_reloads_total",
            &[("outcome", "failed")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    // Started again, the configuration from before counts as a successful reload.
    agent
        .wait_for_metric(
            "triggerd_reloads_total",
            &[("outcome", "success")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    agent.post_event(&url, &json!({"n": 1})).await;
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(
        request.json()["data"]["body"]["n"],
        json!(1),
        "the configuration from before the reload serves again"
    );
    agent
        .wait_for_stderr("the failed start logged", DELIVERY_TIMEOUT, |e| {
            e.contains("going back to the one before")
        })
        .await;
    drop(taken);
}
