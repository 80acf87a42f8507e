//! A moto server (AWS API emulator) for the awsLambda trigger tests.
//!
//! `integration-tests/run` installs moto into `target/test-servers/moto-venv` and exports
//! `TRIGGERD_MOTO_SERVER`; without it `moto_server` is looked up on `PATH`. A missing moto
//! fails the test with the way to install it: a test that needs it never passes silently.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::{free_port, http_client};

/// How long moto gets to answer after it was spawned (Python start-up on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The IAM role every test function runs as (moto checks that it exists).
const ROLE: &str = "triggerd-test";
/// An empty zip archive: moto stores the code but, without Docker, never runs it.
const EMPTY_ZIP_BASE64: &str = "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==";

/// The region the test functions live in.
pub const MOTO_REGION: &str = "us-east-1";

/// A running `moto_server` on 127.0.0.1 with Lambda in its no-Docker mode: `Invoke`
/// returns the request payload, or the next result queued with [`Moto::queue_results`].
/// Dropping it kills the process.
pub struct Moto {
    child: Child,
    url: String,
    http: reqwest::Client,
}

/// The `moto_server` executable: `TRIGGERD_MOTO_SERVER`, else `moto_server` on `PATH`.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIGGERD_MOTO_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TRIGGERD_MOTO_SERVER={} is not a file; run integration-tests/run to install moto",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found: the awsLambda tests need moto (AWS API emulator). \
                 Run integration-tests/run (it installs moto into target/test-servers/moto-venv), \
                 or `pip install 'moto[server]'` and put moto_server on PATH, or set \
                 TRIGGERD_MOTO_SERVER to its path"
            )
        })
}

/// A fake SigV4 header: moto routes requests by the service named in it (it does not
/// check signatures).
fn auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=test/20240101/{MOTO_REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

impl Moto {
    /// Starts moto on a free port, waits until it answers, and switches Lambda to its
    /// no-Docker mode (which must happen before any function is created).
    pub async fn start() -> Moto {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn moto_server: {e}"));
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: http_client(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start-up: {status}");
            }
            let up = moto
                .http
                .get(format!("{}/moto-api/", moto.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {} within {START_TIMEOUT:?}",
                moto.url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        moto.post_json(
            "/moto-api/config",
            &json!({"lambda": {"use_docker": false}}),
        )
        .await;
        moto.create_role().await;
        moto
    }

    /// `http://127.0.0.1:PORT`: the `endpoint` of an awsLambda trigger.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn post_json(&self, path: &str, body: &serde_json::Value) -> String {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("authorization", auth("lambda"))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST moto {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST moto {path}: {status}: {text}");
        text
    }

    async fn create_role(&self) {
        // The IAM query API, form-encoded by hand (the policy is `{"Version":"2012-10-17"}`).
        let form = format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={ROLE}\
             &AssumeRolePolicyDocument=%7B%22Version%22%3A%222012-10-17%22%7D"
        );
        let response = self
            .http
            .post(format!("{}/", self.url))
            .header("authorization", auth("iam"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto CreateRole: {e}"));
        let status = response.status();
        assert!(
            status.is_success(),
            "moto CreateRole: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// The ARN of the role created at start-up.
    pub fn role_arn(&self) -> String {
        format!("arn:aws:iam::123456789012:role/{ROLE}")
    }

    /// Creates function `name` (its code never runs: invoke echoes the payload).
    pub async fn create_function(&self, name: &str) {
        self.post_json(
            "/2015-03-31/functions",
            &json!({
                "FunctionName": name,
                "Runtime": "python3.12",
                "Role": self.role_arn(),
                "Handler": "index.handler",
                "Code": {"ZipFile": EMPTY_ZIP_BASE64},
            }),
        )
        .await;
    }

    /// Queues results the next invocations return (one each, in order) instead of the echo.
    pub async fn queue_results(&self, results: &[&str]) {
        self.post_json(
            "/moto-api/static/lambda-simple/response",
            &json!({"results": results, "region": MOTO_REGION}),
        )
        .await;
    }
}

impl Moto {
    /// One call of the SQS JSON API (`AmazonSQS.<action>`); the parsed reply.
    async fn sqs(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(format!("{}/", self.url))
            .header("authorization", auth("sqs"))
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto SQS {action}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "moto SQS {action}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// Creates queue `name` with the given visibility timeout; its URL.
    pub async fn create_queue(&self, name: &str, visibility_timeout_secs: u32) -> String {
        let reply = self
            .sqs(
                "CreateQueue",
                json!({"QueueName": name,
                       "Attributes": {"VisibilityTimeout": visibility_timeout_secs.to_string()}}),
            )
            .await;
        reply["QueueUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no QueueUrl in {reply}"))
            .to_owned()
    }

    /// The ARN of queue `name`.
    pub fn queue_arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{MOTO_REGION}:123456789012:{name}")
    }

    /// Sends `body` to the queue at `url` with one string attribute per pair.
    pub async fn send_message(&self, url: &str, body: &str, attributes: &[(&str, &str)]) {
        let attributes: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    json!({"DataType": "String", "StringValue": v}),
                )
            })
            .collect();
        self.sqs(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": body, "MessageAttributes": attributes}),
        )
        .await;
    }

    /// Messages in the queue at `url`, visible and in flight (SQS's approximate counts,
    /// exact on moto).
    pub async fn queue_depth(&self, url: &str) -> (u64, u64) {
        let reply = self
            .sqs(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": ["All"]}),
            )
            .await;
        let count = |k: &str| {
            reply["Attributes"][k]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            count("ApproximateNumberOfMessages"),
            count("ApproximateNumberOfMessagesNotVisible"),
        )
    }

    /// One S3 REST call, path style; panics unless it succeeds.
    async fn s3(&self, method: reqwest::Method, path: &str, body: Vec<u8>) {
        let response = self
            .http
            .request(method.clone(), format!("{}/{path}", self.url))
            .header("authorization", auth("s3"))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto S3 {method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "moto S3 {method} {path}: {status}: {text}"
        );
    }

    /// Creates bucket `name` that notifies the queue `queue` of `events` (e.g.
    /// `s3:ObjectCreated:*`).
    pub async fn create_bucket_notifying(&self, name: &str, queue: &str, events: &[&str]) {
        self.s3(reqwest::Method::PUT, name, Vec::new()).await;
        let events: String = events
            .iter()
            .map(|e| format!("<Event>{e}</Event>"))
            .collect();
        let config = format!(
            "<NotificationConfiguration><QueueConfiguration><Id>triggerd</Id><Queue>{}</Queue>{events}</QueueConfiguration></NotificationConfiguration>",
            self.queue_arn(queue)
        );
        self.s3(
            reqwest::Method::PUT,
            &format!("{name}?notification"),
            config.into_bytes(),
        )
        .await;
    }

    /// Writes object `key` into `bucket`.
    pub async fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        self.s3(
            reqwest::Method::PUT,
            &format!("{bucket}/{key}"),
            body.to_vec(),
        )
        .await;
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
