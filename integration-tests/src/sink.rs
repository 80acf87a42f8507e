//! A recording HTTP server that plays a trigger's target.

#![allow(
    clippy::disallowed_types,
    reason = "the reply queue's std Mutex is locked briefly and never across .await"
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot, watch};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// The body as JSON; panics (showing the body) when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{} {} body is not JSON ({err}): {}",
                self.method,
                self.path,
                self.text()
            )
        })
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    requests: mpsc::UnboundedSender<Request>,
    replies: Mutex<VecDeque<(u16, String)>>,
    /// `true` while requests are held (recorded, but not answered).
    hold: watch::Sender<bool>,
    received: AtomicUsize,
}

/// An HTTP server on `127.0.0.1:0` that records every request (any method, any path)
/// and answers from a scripted queue of `(status, body)` replies; `200 {}` once the
/// queue is empty. While held ([`Sink::hold`]) it records requests as they arrive but
/// answers none until [`Sink::release`].
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Sink {
    /// Start a sink on the current tokio runtime.
    pub async fn start() -> Sink {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            requests: tx,
            replies: Mutex::new(VecDeque::new()),
            hold: watch::Sender::new(false),
            received: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let (addr, shutdown) = crate::net::serve_loopback(app, "sink").await;
        Sink {
            addr,
            shared,
            requests: tokio::sync::Mutex::new(rx),
            shutdown: Some(shutdown),
        }
    }

    /// The port it listens on (for a front such as [`crate::TlsProxy`]).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queue a reply for the next request that finds the queue non-empty.
    pub fn reply(&self, status: u16, body: impl Into<String>) -> &Self {
        self.shared
            .replies
            .lock()
            .expect("sink replies lock")
            .push_back((status, body.into()));
        self
    }

    /// Record requests from now on, but answer none until [`Sink::release`].
    pub fn hold(&self) {
        self.shared.hold.send_replace(true);
    }

    /// Answer every held request, and all later ones at once.
    pub fn release(&self) {
        self.shared.hold.send_replace(false);
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// The next recorded request, waiting at most `timeout`. `None` on timeout.
    pub async fn next(&self, timeout: Duration) -> Option<Request> {
        let mut requests = self.requests.lock().await;
        tokio::time::timeout(timeout, requests.recv())
            .await
            .ok()
            .flatten()
    }

    /// Bounded negative check: panic if a request arrives within `within`.
    ///
    /// This is the one place a fixed wait is allowed (absence needs a bound); keep
    /// `within` short and prefer asserting on metrics after a later positive event.
    pub async fn expect_none(&self, within: Duration) {
        if let Some(request) = self.next(within).await {
            panic!(
                "expected no request at {} within {within:?}, got {} {}: {}",
                self.addr,
                request.method,
                request.path,
                request.text()
            );
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.release();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    // Take the reply in arrival order, before any holding.
    let (status, body) = shared
        .replies
        .lock()
        .expect("sink replies lock")
        .pop_front()
        .unwrap_or_else(|| (200, "{}".to_owned()));
    shared.received.fetch_add(1, Ordering::SeqCst);
    let _ = shared.requests.send(request);
    // Recorded first, so a test sees the request while it is still in flight.
    let mut hold = shared.hold.subscribe();
    let _ = hold.wait_for(|held| !*held).await;

    let status = StatusCode::from_u16(status).expect("valid scripted status");
    let content_type = if serde_json::from_str::<serde_json::Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Waits until `sink` received a forwarded event for every number in `want` (the number at
/// `data.body.n`); duplicates are allowed (at least once). Returns how many requests came;
/// fails with the missing numbers and the agent's log at the deadline.
pub async fn collect_numbers(
    agent: &crate::Agent,
    sink: &Sink,
    want: &std::collections::BTreeSet<u64>,
) -> usize {
    let deadline = tokio::time::Instant::now() + crate::DELIVERY_TIMEOUT * 2;
    let mut seen = std::collections::BTreeSet::new();
    let mut received = 0;
    while !want.is_subset(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(request) = sink.next(left).await else {
            let missing: Vec<_> = want.difference(&seen).collect();
            agent.fail(format_args!("messages never arrived: {missing:?}"));
        };
        let body = request.json();
        let n = body["data"]["body"]["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("no number in {body}"));
        seen.insert(n);
        received += 1;
    }
    received
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Sink;
    use crate::http_client;

    const WAIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn records_requests_and_plays_scripted_replies() {
        let sink = Sink::start().await;
        sink.reply(500, "oops").reply(201, r#"{"ok":true}"#);
        let client = http_client();
        let statuses = [500, 201, 200];
        for (n, expected) in statuses.into_iter().enumerate() {
            let response = client
                .post(sink.url("/hook?x=1"))
                .header("x-test", "yes")
                .body(format!(r#"{{"n":{n}}}"#))
                .send()
                .await
                .expect("POST sink");
            assert_eq!(response.status().as_u16(), expected);
        }
        for n in 0..3 {
            let request = sink.next(WAIT).await.expect("recorded request");
            assert_eq!(request.method, "POST");
            assert_eq!(request.path, "/hook");
            assert_eq!(request.query.as_deref(), Some("x=1"));
            assert_eq!(request.header("X-Test"), Some("yes"));
            assert_eq!(request.json()["n"], n);
        }
        assert_eq!(sink.count(), 3);
        sink.expect_none(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn held_requests_are_recorded_but_answered_only_after_release() {
        let sink = Sink::start().await;
        sink.hold();
        let url = sink.url("/slow");
        let call = tokio::spawn(async move { http_client().get(url).send().await });
        let request = sink.next(WAIT).await.expect("held request is recorded");
        assert_eq!(request.path, "/slow");
        assert!(!call.is_finished(), "a held request must not be answered");
        sink.release();
        let response = tokio::time::timeout(WAIT, call)
            .await
            .expect("answered after release")
            .expect("task")
            .expect("GET sink");
        assert_eq!(response.status().as_u16(), 200);
    }
}
