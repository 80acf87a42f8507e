//! What the webhook source refuses: bad tokens, wrong methods, big bodies, a full bus.

use integration_tests::{free_port, http_client, webhook_source, Agent, Sink, DELIVERY_TIMEOUT};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_auth_secret_is_set() {
    let (file_port, env_port) = (free_port(), free_port());
    let source = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    from-file:
      port: "{file_port}"
      endpoint: /push
      method: POST
      authSecret:
        name: hook-token
        key: token
    from-env:
      port: {env_port}
      endpoint: /push
      method: POST
      authSecret:
        name: other-token
        key: value
"#
    );
    let agent = Agent::builder()
        .manifest(source)
        .secret("hook-token", "token", "file-secret")
        .env("TRIGGERD_SECRET_OTHER_TOKEN_VALUE", "env-secret")
        .start()
        .await;
    let post = |port: u16, token: Option<&str>| {
        let mut request = agent
            .http()
            .post(agent.webhook_url(port, "/push"))
            .json(&json!({"hello": "world"}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let cases = [
        (file_port, None, StatusCode::UNAUTHORIZED),
        (file_port, Some("wrong"), StatusCode::UNAUTHORIZED),
        (file_port, Some("env-secret"), StatusCode::UNAUTHORIZED),
        (env_port, None, StatusCode::UNAUTHORIZED),
        (env_port, Some("file-secret"), StatusCode::UNAUTHORIZED),
    ];
    for (port, token, expected) in cases {
        let response = post(port, token).await.expect("POST webhook");
        assert_eq!(response.status(), expected, "port {port}, token {token:?}");
    }
    for (port, token) in [(file_port, "file-secret"), (env_port, "env-secret")] {
        let response = post(port, Some(token)).await.expect("POST webhook");
        assert_eq!(response.status(), StatusCode::OK, "port {port}");
        let reply: serde_json::Value = response.json().await.expect("JSON reply");
        assert!(
            reply["id"].as_str().is_some_and(|id| !id.is_empty()),
            "reply needs an id: {reply}"
        );
    }
    // Only the two authorized events were accepted.
    let accepted = [("event_source", "hooks"), ("event_name", "from-file")];
    let received = agent
        .wait_for_metric(
            "triggerd_events_received_total",
            &accepted,
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(received, 1.0);
    let accepted = [("event_source", "hooks"), ("event_name", "from-env")];
    assert_eq!(
        agent
            .metric("triggerd_events_received_total", &accepted)
            .await,
        Some(1.0)
    );
    // The secret never shows up in the logs.
    assert!(
        !agent.stderr().contains("file-secret") && !agent.stderr().contains("env-secret"),
        "a secret leaked into the log:\n{}",
        agent.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405() {
    let port = free_port();
    let agent = Agent::start(&[&webhook_source("hooks", "push", port, "/push")]).await;
    let response = agent
        .http()
        .get(agent.webhook_url(port, "/push"))
        .send()
        .await
        .expect("GET webhook");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// POST `body` and return the status. A server may answer 413 before it read the whole
/// body and close the connection, so the client can see a broken pipe while still
/// writing: such a transport error is retried on a fresh connection (a few times).
async fn send_body(url: &str, content_type: &str, body: String) -> StatusCode {
    let mut last_error = None;
    for _ in 0..5 {
        let sent = http_client()
            .post(url)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => return response.status(),
            Err(err) => last_error = Some(err),
        }
    }
    panic!("POST {url} ({} bytes) failed: {last_error:?}", body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_payload_size_are_413_json_and_form_alike() {
    let (small_port, default_port) = (free_port(), free_port());
    let source = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: hooks
spec:
  webhook:
    small:
      port: "{small_port}"
      endpoint: /small
      method: POST
      maxPayloadSize: 1024
    default:
      port: "{default_port}"
      endpoint: /default
      method: POST
"#
    );
    let agent = Agent::start(&[&source]).await;
    let small = agent.webhook_url(small_port, "/small");
    let json_body = |len: usize| {
        // `{"pad":"` + padding + `"}` is 10 bytes plus the padding.
        let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(len - 10));
        assert_eq!(body.len(), len);
        body
    };
    let form_body = |len: usize| {
        let body = format!("pad={}", "x".repeat(len - 4));
        assert_eq!(body.len(), len);
        body
    };
    const JSON: &str = "application/json";
    const FORM: &str = "application/x-www-form-urlencoded";

    let cases = [
        (JSON, json_body(2048), StatusCode::PAYLOAD_TOO_LARGE),
        (FORM, form_body(2048), StatusCode::PAYLOAD_TOO_LARGE),
        (JSON, json_body(1025), StatusCode::PAYLOAD_TOO_LARGE),
        (JSON, json_body(1000), StatusCode::OK),
        (FORM, form_body(1000), StatusCode::OK),
    ];
    for (content_type, body, expected) in cases {
        let len = body.len();
        assert_eq!(
            send_body(&small, content_type, body).await,
            expected,
            "{content_type} body of {len} bytes"
        );
    }

    // The default limit is 1 MiB.
    let default = agent.webhook_url(default_port, "/default");
    assert_eq!(
        send_body(&default, JSON, json_body(1024 * 1024 + 100)).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        send_body(&default, JSON, json_body(100_000)).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_bus_answers_503_with_retry_after_and_loses_nothing_accepted() {
    let sink = Sink::start().await;
    sink.hold();
    let port = free_port();
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: slow
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: notify
        http:
          url: {}
          method: POST
          timeout: 60
"#,
        sink.url("/hook")
    );
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(sensor)
        .args(["--bus-capacity", "1", "--max-inflight", "1"])
        .start()
        .await;
    let url = agent.webhook_url(port, "/push");

    // Event 1 is taken off the bus and its trigger is in flight (held by the sink).
    let first = agent.post_event(&url, &json!({"seq": 1})).await;
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(request.json()["id"], json!(first));
    // Event 2 fills the bus (capacity 1).
    let second = agent.post_event(&url, &json!({"seq": 2})).await;
    // Event 3 finds the bus full: refused, not dropped silently.
    let response = agent
        .http()
        .post(&url)
        .json(&json!({"seq": 3}))
        .send()
        .await
        .expect("POST event 3");
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "with --bus-capacity 1 and one trigger in flight, the third event must be refused"
    );
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(!retry_after.is_empty(), "503 needs a Retry-After header");

    // Once the target answers, the queued event is delivered too.
    sink.release();
    let request = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    let event = request.json();
    assert_eq!(event["id"], json!(second), "{event}");
    assert_eq!(event["data"]["body"]["seq"], json!(2), "{event}");
    let success = agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &[("sensor", "slow"), ("outcome", "success")],
            2.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert_eq!(success, 2.0);
    assert_eq!(sink.count(), 2, "the refused event must not be delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_takes_only_bodies_signed_with_its_secret() {
    use hmac::{KeyInit, Mac};
    let sink = Sink::start().await;
    let port = free_port();
    let source = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: github
spec:
  webhook:
    push:
      port: "{port}"
      endpoint: /push
      signature:
        secret: {{name: github, key: webhook-secret}}
"#
    );
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: signed
spec:
  dependencies:
    - {{name: push, eventSourceName: github, eventName: push}}
  triggers:
    - template:
        name: forward
        http:
          url: {}
          payload:
            - src: {{dependencyName: push, dataKey: body.n, useRawData: true}}
              dest: n
"#,
        sink.url("/signed")
    );
    let agent = Agent::builder()
        .manifest(source)
        .manifest(sensor)
        .secret("github", "webhook-secret", "s3cret")
        .start()
        .await;
    let sign = |key: &[u8], body: &[u8]| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let post = |body: &'static str, signature: Option<String>| {
        let mut request = agent
            .http()
            .post(agent.webhook_url(port, "/push"))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(s) = signature {
            request = request.header("X-Hub-Signature-256", s);
        }
        request.send()
    };
    let cases = [
        (r#"{"n": 1}"#, None, StatusCode::UNAUTHORIZED),
        (
            r#"{"n": 2}"#,
            Some(sign(b"wrong", br#"{"n": 2}"#)),
            StatusCode::UNAUTHORIZED,
        ),
        // Signed, then changed in transit.
        (
            r#"{"n": 3}"#,
            Some(sign(b"s3cret", br#"{"n": 4}"#)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            r#"{"n": 5}"#,
            Some(sign(b"s3cret", br#"{"n": 5}"#)),
            StatusCode::OK,
        ),
    ];
    for (body, signature, expected) in cases {
        let response = post(body, signature).await.expect("POST webhook");
        assert_eq!(response.status(), expected, "{body}");
    }
    let delivered = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(
        delivered["n"], 5,
        "only the correctly signed body fires: {delivered}"
    );
    agent
        .wait_for_metric(
            "triggerd_events_rejected_total",
            &[("event_source", "github"), ("event_name", "push")],
            3.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    assert!(
        !agent.stderr().contains("s3cret"),
        "the secret reached the log"
    );
}
