//! Deduplication is scoped: a CloudEvent id counts as "seen" only on the EventSource and event
//! it arrived on, from the same CloudEvent `source`. An unauthenticated sender on one endpoint
//! must not be able to suppress an authenticated sender's event on another by reusing its id,
//! on either bus.

use integration_tests::{free_port, jetstream_bus_args, Agent, NatsServer, Sink, DELIVERY_TIMEOUT};
use serde_json::json;

/// EventSource `hooks`: `/open` takes anyone, `/auth` wants the bearer token `s3cret`.
fn hooks(port: u16) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    open:
      port: "{port}"
      endpoint: /open
      method: POST
    auth:
      port: "{port}"
      endpoint: /auth
      method: POST
      authSecret:
        name: hook-token
        key: token
"#
    )
}

/// Sensor `both` forwards every event of either endpoint to `url`.
fn both(url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: both
spec:
  dependencies:
    - name: open
      eventSourceName: hooks
      eventName: open
    - name: auth
      eventSourceName: hooks
      eventName: auth
  triggers:
    - template:
        name: forward
        conditions: "open || auth"
        http:
          url: {url}
          method: POST
      retryStrategy:
        steps: 1
"#
    )
}

/// Posts a binary-mode CloudEvent with `id` from producer `source`; the reply status.
async fn post(agent: &Agent, url: &str, id: &str, source: &str, token: Option<&str>) -> u16 {
    let mut request = agent
        .http()
        .post(url)
        .header("ce-id", id)
        .header("ce-specversion", "1.0")
        .header("ce-type", "release")
        .header("ce-source", source)
        .json(&json!({ "release": 42 }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST").status().as_u16()
}

/// Sends the poisoning event to `/open`, then the real one to `/auth` with the same id, then a
/// second producer's event with that id to `/auth`, and a true repeat of the real one; all but
/// the repeat must reach the sink, each once.
async fn poisoning_is_refused(agent: &Agent, sink: &Sink, port: u16) {
    let open = agent.webhook_url(port, "/open");
    let auth = agent.webhook_url(port, "/auth");
    assert_eq!(post(agent, &open, "release-42", "/ci", None).await, 200);
    assert_eq!(
        post(agent, &auth, "release-42", "/ci", Some("s3cret")).await,
        200
    );
    assert_eq!(
        post(agent, &auth, "release-42", "/other-ci", Some("s3cret")).await,
        200
    );
    // The same producer sending the same event again is a true duplicate.
    assert_eq!(
        post(agent, &auth, "release-42", "/ci", Some("s3cret")).await,
        200
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = agent.expect_request(sink, DELIVERY_TIMEOUT).await.json();
        assert_eq!(event["id"], json!("release-42"), "{event}");
        seen.push(format!(
            "{} {}",
            event["subject"].as_str().unwrap_or("?"),
            event["originalsource"].as_str().unwrap_or("?")
        ));
    }
    seen.sort();
    assert_eq!(seen, ["auth /ci", "auth /other-ci", "open /ci"]);
    let labels = [("event_source", "hooks"), ("event_name", "auth")];
    let deduplicated = agent
        .wait_for_metric(
            "triggerd_events_deduplicated_total",
            &labels,
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(deduplicated, 1.0, "only the true repeat is a duplicate");
    assert_eq!(
        agent
            .metric("triggerd_events_received_total", &labels)
            .await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_sent_to_one_endpoint_does_not_suppress_another_on_the_embedded_bus() {
    let sink = Sink::start().await;
    let port = free_port();
    let agent = Agent::builder()
        .manifest(hooks(port))
        .manifest(both(&sink.url("/events")))
        .secret("hook-token", "token", "s3cret")
        .start()
        .await;
    poisoning_is_refused(&agent, &sink, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_sent_to_one_endpoint_does_not_suppress_another_on_jetstream() {
    let server = NatsServer::start();
    let sink = Sink::start().await;
    let port = free_port();
    let agent = Agent::builder()
        .manifest(hooks(port))
        .manifest(both(&sink.url("/events")))
        .secret("hook-token", "token", "s3cret")
        .args(jetstream_bus_args(&server.url(), "dedup-scope"))
        .start()
        .await;
    poisoning_is_refused(&agent, &sink, port).await;
}
