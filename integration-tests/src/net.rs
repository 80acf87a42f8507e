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
