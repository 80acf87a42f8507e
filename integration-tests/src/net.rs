//! Ports and HTTP clients.

use std::net::TcpListener;
use std::time::Duration;

/// How long a test waits for something the agent should do promptly (a trigger to
/// reach a sink, a metric to move). Generous: debug builds on 2 busy cores.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, drop it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An HTTP client for talking to the agent: no proxy, bounded per-request time.
///
/// Create one per test (a client's connection pool belongs to the tokio runtime that
/// used it first, and every `#[tokio::test]` has its own runtime).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

/// Serves `app` on a free port of 127.0.0.1 on the current tokio runtime until the returned
/// sender is used or dropped; returns the address and that sender. The test sinks use it.
pub async fn serve_loopback(
    app: axum::Router,
    what: &str,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what} on 127.0.0.1:0: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} local addr: {e}"));
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await;
    });
    (addr, shutdown)
}
