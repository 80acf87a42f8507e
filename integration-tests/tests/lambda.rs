//! The awsLambda trigger against real servers: moto (the AWS API emulator) for invocations,
//! and a small in-test stub of the Invoke REST call for what moto cannot produce (function
//! errors, throttling).

#![allow(
    clippy::disallowed_types,
    reason = "the stub's std Mutex is locked briefly and never across .await"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use integration_tests::{free_port, webhook_source, Agent, Moto, Sink, DELIVERY_TIMEOUT};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Sensor `orders` on `shop/orders` with one awsLambda trigger `invoke`: `lambda` is the
/// body of its `awsLambda` spec (indented 10 spaces), `extra` more trigger-level YAML
/// (indented 6), then 3 attempts 10 ms apart and a dead-letter http trigger to `dlq_url`.
fn sensor(lambda: &str, extra: &str, dlq_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: orders
spec:
  dependencies:
    - name: order
      eventSourceName: shop
      eventName: orders
  triggers:
    - template:
        name: invoke
        awsLambda:
          region: us-east-1
{lambda}
      retryStrategy: {{steps: 3, duration: 10ms, factor: 1}}
{extra}      dlqTrigger:
        template:
          name: dead-letter
          http:
            url: {dlq_url}
"#
    )
}

/// Payload parameters: `{orderId: body.id, accepted: body.accepted (raw)}`.
const PAYLOAD: &str = r#"          payload:
            - src: {dependencyName: order, dataKey: body.id}
              dest: orderId
            - src: {dependencyName: order, dataKey: body.accepted, useRawData: true}
              dest: accepted"#;

const TRIGGER: [(&str, &str); 2] = [("sensor", "orders"), ("trigger", "invoke")];

fn with_outcome(outcome: &'static str) -> [(&'static str, &'static str); 3] {
    [TRIGGER[0], TRIGGER[1], ("outcome", outcome)]
}

struct Setup {
    agent: Agent,
    dlq: Sink,
    url: String,
}

/// Starts an agent with the webhook `shop/orders` and `sensor`; `env` goes to the agent.
async fn start(lambda: &str, extra: &str, env: &[(&str, &str)]) -> Setup {
    let dlq = Sink::start().await;
    let port = free_port();
    let builder = Agent::builder()
        .manifest(webhook_source("shop", "orders", port, "/orders"))
        .manifest(sensor(lambda, extra, &dlq.url("/dlq")))
        .secret("aws", "access-key", "testing")
        .secret("aws", "secret-key", "testing")
        // Never ask an instance metadata service for credentials or a region.
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let agent = env
        .iter()
        .fold(builder, |b, (k, v)| b.env(k, v))
        .start()
        .await;
    let url = agent.webhook_url(port, "/orders");
    Setup { agent, dlq, url }
}

/// The `awsLambda` fields pointing at moto with file-mode secrets for the keys.
fn at_moto(moto: &Moto, function: &str, more: &str) -> String {
    format!(
        "          functionName: {function}\n          endpoint: {}\n          \
         accessKey: {{name: aws, key: access-key}}\n          \
         secretKey: {{name: aws, key: secret-key}}\n{more}{PAYLOAD}",
        moto.url()
    )
}

async fn counter(agent: &Agent, name: &str, labels: &[(&str, &str)]) -> f64 {
    agent.metric(name, labels).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_invocation_gets_the_parameterized_payload_and_the_policy_sees_the_result() {
    let moto = Moto::start().await;
    moto.create_function("process-order").await;
    // moto echoes the payload: the policy accepts only what the function says it accepted,
    // so the outcome depends on the parameterized payload making the round trip.
    let policy = "      policy:\n        script: 'if response.status == 200 && response.payload.orderId == \"o-1\" && response.payload.accepted == true { \"success\" } else { \"fail\" }'\n";
    let setup = start(&at_moto(&moto, "process-order", ""), policy, &[]).await;
    let agent = &setup.agent;

    agent
        .post_event(&setup.url, &json!({"id": "o-1", "accepted": true}))
        .await;
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;

    // Same function, same policy: a refused order fails at once and is dead-lettered.
    agent
        .post_event(&setup.url, &json!({"id": "o-2", "accepted": false}))
        .await;
    let envelope = agent
        .expect_request(&setup.dlq, DELIVERY_TIMEOUT)
        .await
        .json();
    assert_eq!(envelope["trigger"], json!("invoke"), "{envelope}");
    assert_eq!(envelope["attempts"], json!(1), "{envelope}");
    assert_eq!(
        envelope["events"]["order"]["data"]["body"]["id"],
        json!("o-2")
    );
    assert_eq!(
        counter(
            agent,
            "triggerd_trigger_executions_total",
            &with_outcome("success")
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_event_and_dry_run_invocations_answer_202_and_204() {
    let moto = Moto::start().await;
    moto.create_function("async-fn").await;
    // Strict policies: only the status of the requested invocation type succeeds. The
    // credentials come from assuming a role through moto's STS.
    let more = format!(
        "          invocationType: Event\n          roleARN: {}\n",
        moto.role_arn()
    );
    let event = at_moto(&moto, "async-fn", &more);
    let policy = "      policy:\n        script: 'if response.status == 202 { \"success\" } else { #{outcome: \"fail\", reason: `status ${response.status}`} }'\n";
    let setup = start(&event, policy, &[]).await;
    setup
        .agent
        .post_event(&setup.url, &json!({"id": "o-1", "accepted": true}))
        .await;
    setup
        .agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;

    let dry = at_moto(&moto, "async-fn", "          invocationType: DryRun\n");
    let policy = "      policy:\n        script: 'if response.status == 204 { \"success\" } else { \"fail\" }'\n";
    let setup = start(&dry, policy, &[]).await;
    setup
        .agent
        .post_event(&setup.url, &json!({"id": "o-2", "accepted": true}))
        .await;
    setup
        .agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_result_the_policy_rejects_is_retried_then_dead_lettered() {
    let moto = Moto::start().await;
    moto.create_function("flaky").await;
    // Each invocation returns a canned result; the policy wants `ok`, so every attempt
    // asks for a retry until the attempts run out.
    moto.queue_results(&[r#"{"ok": false}"#, r#"{"ok": false}"#, r#"{"ok": false}"#])
        .await;
    let policy = "      policy:\n        script: 'response.payload.ok == true'\n";
    let setup = start(&at_moto(&moto, "flaky", ""), policy, &[]).await;
    let agent = &setup.agent;
    agent
        .post_event(&setup.url, &json!({"id": "o-9", "accepted": true}))
        .await;

    let envelope = agent
        .expect_request(&setup.dlq, DELIVERY_TIMEOUT)
        .await
        .json();
    assert_eq!(envelope["attempts"], json!(3), "{envelope}");
    assert_eq!(envelope["trigger"], json!("invoke"), "{envelope}");
    assert_eq!(
        counter(agent, "triggerd_trigger_attempts_total", &TRIGGER).await,
        3.0
    );
    assert_eq!(
        counter(agent, "triggerd_dead_letters_total", &TRIGGER).await,
        1.0
    );
}

// ---------------------------------------------------------------------------------------
// A stub of the Lambda Invoke REST call, for replies moto cannot give.

/// One Invoke call the stub received.
struct Invoked {
    function: String,
    payload: Value,
}

/// A canned Invoke reply: status, extra headers, body.
type StubReply = (u16, Vec<(&'static str, &'static str)>, &'static str);

#[derive(Clone)]
struct StubState {
    replies: Arc<Mutex<VecDeque<StubReply>>>,
    calls: mpsc::UnboundedSender<Invoked>,
}

/// Serves `POST /2015-03-31/functions/{name}/invocations` on 127.0.0.1 from `replies`
/// (200 `{}` once they run out); returns its URL and the calls it received.
async fn lambda_invoke_stub(replies: Vec<StubReply>) -> (String, mpsc::UnboundedReceiver<Invoked>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = StubState {
        replies: Arc::new(Mutex::new(replies.into())),
        calls: tx,
    };
    let app = axum::Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(invoke),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind stub");
    let url = format!("http://{}", listener.local_addr().expect("stub addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

async fn invoke(
    State(state): State<StubState>,
    Path(name): Path<String>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _ = state.calls.send(Invoked {
        function: name,
        payload: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let (status, headers, body) = state
        .replies
        .lock()
        .expect("stub replies")
        .pop_front()
        .unwrap_or((200, Vec::new(), "{}"));
    let mut response = (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body,
    )
        .into_response();
    for (k, v) in headers {
        response
            .headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    response
}

async fn next_call(rx: &mut mpsc::UnboundedReceiver<Invoked>, agent: &Agent) -> Invoked {
    match tokio::time::timeout(DELIVERY_TIMEOUT, rx.recv()).await {
        Ok(Some(call)) => call,
        _ => agent.fail("the Lambda stub received no Invoke call"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_function_error_is_dead_lettered_without_retry() {
    let (url, mut calls) = lambda_invoke_stub(vec![(
        200,
        vec![("x-amz-function-error", "Unhandled")],
        r#"{"errorMessage": "unknown sku", "errorType": "ValueError"}"#,
    )])
    .await;
    // No policy: the default fails a function error at once. Credentials from the
    // default chain (environment).
    let lambda =
        format!("          functionName: process-order\n          endpoint: {url}\n{PAYLOAD}");
    let setup = start(
        &lambda,
        "",
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    )
    .await;
    let agent = &setup.agent;
    agent
        .post_event(&setup.url, &json!({"id": "o-5", "accepted": true}))
        .await;

    let call = next_call(&mut calls, agent).await;
    assert_eq!(call.function, "process-order");
    assert_eq!(call.payload, json!({"orderId": "o-5", "accepted": true}));
    let envelope = agent
        .expect_request(&setup.dlq, DELIVERY_TIMEOUT)
        .await
        .json();
    assert_eq!(envelope["attempts"], json!(1), "{envelope}");
    let error = envelope["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("function error (Unhandled): unknown sku"),
        "{envelope}"
    );
    assert!(
        calls.try_recv().is_err(),
        "a function error must not be retried"
    );
    assert_eq!(
        counter(agent, "triggerd_trigger_attempts_total", &TRIGGER).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_throttling_is_retried_until_success() {
    let throttled: StubReply = (
        429,
        vec![("x-amzn-errortype", "TooManyRequestsException")],
        r#"{"Type": "User", "message": "Rate exceeded", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}"#,
    );
    let (url, mut calls) =
        lambda_invoke_stub(vec![throttled, (200, Vec::new(), r#"{"done": true}"#)]).await;
    // No `endpoint`: the SDK takes AWS_ENDPOINT_URL by itself.
    let lambda = format!("          functionName: process-order\n{PAYLOAD}");
    let setup = start(
        &lambda,
        "",
        &[
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    )
    .await;
    let agent = &setup.agent;
    agent
        .post_event(&setup.url, &json!({"id": "o-6", "accepted": true}))
        .await;
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &with_outcome("success"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    // Exactly two Invoke calls, both with the payload: the SDK's own retries are off, so
    // the 429 went to triggerd's policy, which retried once.
    for _ in 0..2 {
        let call = next_call(&mut calls, agent).await;
        assert_eq!(call.payload, json!({"orderId": "o-6", "accepted": true}));
    }
    assert!(calls.try_recv().is_err(), "only two Invoke calls expected");
    assert_eq!(
        counter(agent, "triggerd_trigger_attempts_total", &TRIGGER).await,
        2.0
    );
    assert_eq!(
        counter(agent, "triggerd_trigger_retries_total", &TRIGGER).await,
        1.0
    );
    let stderr = agent.stderr();
    assert!(
        stderr.contains("TooManyRequestsException"),
        "the retry reason names the throttling:\n{stderr}"
    );
}
