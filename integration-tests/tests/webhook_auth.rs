//! Webhook senders authenticated end to end through the binary: HTTPS from a certificate
//! and key in secrets (rotated without a restart) and a timestamped Slack signature (an old
//! timestamp is refused as a replay).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use integration_tests::{free_port, Agent, Sink, TestCerts, DELIVERY_TIMEOUT};
use serde_json::json;

/// How long a rotated secret may take to be in use (it is re-read every 10 s).
const ROTATION_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

fn forwarding_sensor(url: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {{name: relay}}
spec:
  dependencies:
    - {{name: in, eventSourceName: hooks, eventName: push}}
  triggers:
    - template:
        name: forward
        http: {{url: "{url}", method: POST}}
"#
    )
}

/// A client that trusts only the CA of `certs` and makes a new connection (a new handshake)
/// for every request.
fn trusting(certs: &TestCerts) -> reqwest::Client {
    let pem = std::fs::read(&certs.ca).expect("read the CA");
    let ca = reqwest::Certificate::from_pem(&pem).expect("a PEM CA");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .pool_max_idle_per_host(0)
        .build()
        .expect("a TLS client")
}

/// Status of one POST, or `None` when no HTTP answer came (the handshake failed).
async fn post(client: &reqwest::Client, url: &str) -> Option<u16> {
    client
        .post(url)
        .json(&json!({"kind": "a"}))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn copy_pair(certs: &TestCerts, secrets: &Path) {
    let write = |from: &Path, key: &str| {
        let pem = std::fs::read(from).expect("read PEM");
        // Written aside and renamed, as a Secret volume updates: never half a file.
        let tmp = secrets.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, pem).expect("write PEM");
        std::fs::rename(&tmp, secrets.join(key)).expect("replace PEM");
    };
    write(&certs.server_cert, "crt");
    write(&certs.server_key, "key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_from_secrets_and_a_rotated_certificate_is_served_without_a_restart() {
    let first = TestCerts::generate();
    let second = TestCerts::generate();
    let sink = Sink::start().await;
    let port = free_port();
    let read = |p: &Path| std::fs::read_to_string(p).expect("read PEM");
    let agent = Agent::builder()
        .manifest(format!(
            r#"
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {{name: hooks}}
spec:
  webhook:
    push:
      port: "{port}"
      endpoint: /push
      method: POST
      serverCertSecret: {{name: tls, key: crt}}
      serverKeySecret: {{name: tls, key: key}}
"#
        ))
        .manifest(forwarding_sensor(&sink.url("/hit")))
        .secret("tls", "crt", &read(&first.server_cert))
        .secret("tls", "key", &read(&first.server_key))
        .start()
        .await;
    let url = format!("https://127.0.0.1:{port}/push");
    let (old, new) = (trusting(&first), trusting(&second));

    assert_eq!(post(&old, &url).await, Some(200));
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"]["kind"], "a", "{}", hit.text());
    assert_eq!(
        post(&new, &url).await,
        None,
        "a client of another CA got in"
    );
    let plain = agent.webhook_url(port, "/push");
    assert!(
        !matches!(post(agent.http(), &plain).await, Some(200)),
        "plain HTTP was taken on an HTTPS port"
    );

    copy_pair(&second, &agent.dir().join("secrets").join("tls"));
    let deadline = tokio::time::Instant::now() + ROTATION_TIMEOUT;
    while post(&new, &url).await != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated certificate was not served within {ROTATION_TIMEOUT:?}: {}",
            agent.stderr_tail()
        );
        tokio::time::sleep(POLL).await;
    }
    // A client that knew the old certificate may resume its TLS session (that proves the
    // session key, not the certificate's); a new handshake gets only the new certificate.
    assert_eq!(
        post(&trusting(&first), &url).await,
        None,
        "the old certificate is still served"
    );
    agent.check_alive();
}

/// Slack's signature of `body` at `timestamp`: `v0=` and the hex HMAC-SHA256 of
/// `v0:<timestamp>:<body>`.
fn slack_signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_signed_request_is_taken_and_an_old_or_forged_one_refused() {
    let sink = Sink::start().await;
    let port = free_port();
    let agent = Agent::builder()
        .manifest(format!(
            r#"
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {{name: hooks}}
spec:
  webhook:
    push:
      port: "{port}"
      endpoint: /push
      method: POST
      signature:
        provider: slack
        secret: {{name: slack, key: signing}}
"#
        ))
        .manifest(forwarding_sensor(&sink.url("/hit")))
        .secret("slack", "signing", "8f742231b10e8888abcd99yyyzzz85a5")
        .start()
        .await;
    let url = agent.webhook_url(port, "/push");
    let body = "token=x&command=%2Fdeploy&text=prod";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let send = |timestamp: u64, signature: String| {
        agent
            .http()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body)
            .send()
    };
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";

    let fresh = send(now, slack_signature(secret, now, body))
        .await
        .expect("send");
    assert_eq!(fresh.status(), 200);
    let hit = agent.expect_request(&sink, DELIVERY_TIMEOUT).await;
    assert_eq!(hit.json()["data"]["body"], body, "{}", hit.text());

    // Signed correctly, ten minutes ago: a replay outside the default 5 minute tolerance.
    let then = now - 600;
    let old = send(then, slack_signature(secret, then, body))
        .await
        .expect("send");
    assert_eq!(old.status(), 401);
    let text = old.text().await.expect("body");
    assert!(text.contains("tolerance"), "{text}");

    let forged = send(now, slack_signature("another-secret", now, body))
        .await
        .expect("send");
    assert_eq!(forged.status(), 401);
    assert_eq!(sink.count(), 1, "a refused request reached the trigger");
    assert!(
        !agent.stderr().contains(secret),
        "the signing secret reached the log"
    );
}
