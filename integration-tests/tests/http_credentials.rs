//! The http trigger's credentials come from secrets, never from the manifest: Argo's
//! `basicAuth` and `secureHeaders` (file mode: `--secrets-dir`), read again at each attempt
//! so a rotated secret is used without a restart, and masked in what the agent logs even when
//! the target echoes them back; `tls` presents a client certificate and trusts only the CA
//! it names.

use integration_tests::{
    free_port, webhook_source, Agent, Sink, TestCerts, TlsProxy, DELIVERY_TIMEOUT,
};
use serde_json::json;

fn sensor(url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: creds
spec:
  dependencies:
    - name: push
      eventSourceName: hooks
      eventName: push
  triggers:
    - template:
        name: call
        http:
          url: {url}
          method: POST
          basicAuth:
            username: {{name: api, key: user}}
            password: {{name: api, key: password}}
          secureHeaders:
            - name: X-Api-Key
              valueFrom:
                secretKeyRef: {{name: api, key: token}}
      retryStrategy:
        steps: 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_secure_headers_come_from_secrets_and_are_masked() {
    let sink = Sink::start().await;
    let port = free_port();
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(sensor(&sink.url("/call")))
        .secret("api", "user", "robot")
        .secret("api", "password", "pa55word-1")
        .secret("api", "token", "key-0001-secret")
        .env("RUST_LOG", "debug")
        .start()
        .await;
    let url = agent.webhook_url(port, "/push");
    agent.post_event(&url, &json!({"n": 1})).await;
    let first = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(first.header("x-api-key"), Some("key-0001-secret"));
    // base64("robot:pa55word-1")
    assert_eq!(
        first.header("authorization"),
        Some("Basic cm9ib3Q6cGE1NXdvcmQtMQ==")
    );

    // Rotate the token: the next attempt reads it again. The target now fails and echoes
    // the credential back; the failure the agent logs must not show it.
    std::fs::write(agent.dir().join("secrets/api/token"), "key-0002-secret").expect("rotate");
    sink.reply(
        500,
        "denied for X-Api-Key key-0002-secret, password pa55word-1",
    );
    agent.post_event(&url, &json!({"n": 2})).await;
    let second = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(second.header("x-api-key"), Some("key-0002-secret"));
    agent
        .wait_for_stderr("the failed attempt logged", DELIVERY_TIMEOUT, |log| {
            log.contains("500")
        })
        .await;
    let log = agent.stderr();
    for secret in [
        "key-0001-secret",
        "key-0002-secret",
        "pa55word-1",
        "cm9ib3Q6cGE1NXdvcmQtMQ==",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}

#[test]
fn validate_refuses_two_authorizations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = format!(
        "{}---\n{}",
        webhook_source("hooks", "push", 12000, "/push"),
        sensor("http://127.0.0.1:1/x").replace(
            "      retryStrategy:",
            "          bearerToken: {name: api, key: token}\n      retryStrategy:"
        )
    );
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, manifest).expect("write");
    let out = integration_tests::run_cli(
        &["validate".as_ref(), "-f".as_ref(), path.as_os_str()],
        dir.path(),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("spec.triggers[0].template.http")
            && out
                .stderr
                .contains("more than one of basicAuth, bearerToken"),
        "{out}"
    );
}

fn tls_trigger(name: &str, url: &str, tls: &str) -> String {
    format!(
        r#"
    - template:
        name: {name}
        http:
          url: {url}
          method: POST
          tls: {tls}
      retryStrategy:
        steps: 1"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_presents_the_client_certificate_and_trusts_only_the_given_ca() {
    let certs = TestCerts::generate();
    let other = TestCerts::generate();
    let sink = Sink::start().await;
    let front =
        TlsProxy::start_requiring_client_certificate(&certs, free_port(), sink.port()).await;
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", front.port());
    let port = free_port();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("read PEM");
    let client = "{caCertSecret: {name: tls, key: ca}, clientCertSecret: {name: tls, key: crt}, clientKeySecret: {name: tls, key: key}}";
    let sensor = format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: mtls
spec:
  dependencies:
    - {{name: push, eventSourceName: hooks, eventName: push}}
  triggers:{}{}{}
"#,
        tls_trigger("mutual", &url("/mutual"), client),
        tls_trigger(
            "no-client-cert",
            &url("/anonymous"),
            "{caCertSecret: {name: tls, key: ca}}"
        ),
        tls_trigger(
            "other-ca",
            &url("/other"),
            "{caCertSecret: {name: other, key: ca}, clientCertSecret: {name: tls, key: crt}, clientKeySecret: {name: tls, key: key}}"
        ),
    );
    let agent = Agent::builder()
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(sensor)
        .secret("tls", "ca", &read(&certs.ca))
        .secret("tls", "crt", &read(&certs.client_cert))
        .secret("tls", "key", &read(&certs.client_key))
        .secret("other", "ca", &read(&other.ca))
        .start()
        .await;
    agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({"n": 1}))
        .await;

    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.path, "/mutual", "{}", hit.text());
    assert_eq!(hit.json()["data"]["body"]["n"], 1, "{}", hit.text());
    for trigger in ["no-client-cert", "other-ca"] {
        agent
            .wait_for_metric(
                "triggerd_trigger_executions_total",
                &[
                    ("sensor", "mtls"),
                    ("trigger", trigger),
                    ("outcome", "failed"),
                ],
                1.0,
                DELIVERY_TIMEOUT,
            )
            .await;
    }
    assert_eq!(
        sink.count(),
        1,
        "a trigger without the right TLS got through"
    );
    let log = agent.stderr();
    assert!(
        !log.contains("PRIVATE KEY"),
        "the client key reached the log:\n{log}"
    );
}
