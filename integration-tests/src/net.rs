//! Ports and HTTP clients.

use std::fs::File;
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a test waits for something the agent should do promptly (a trigger to
/// reach a sink, a metric to move). Generous: debug builds on 2 busy cores.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where test processes hand out ports: below Linux's default ephemeral range (32768–60999),
/// so neither a port-0 bind nor an outgoing connection of any process can take one of them
/// between [`free_port`] returning it and the server under test binding it.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// The port locks this process holds (until it exits), so no other test process is handed
/// the same port.
#[allow(
    clippy::disallowed_types,
    reason = "a plain list of held locks, never touched across an .await"
)]
static HELD: OnceLock<std::sync::Mutex<Vec<File>>> = OnceLock::new();

/// A port on 127.0.0.1 reserved for this test process: outside the ephemeral range, free when
/// checked, and locked (a file lock per port under the temp dir) against every other process
/// that uses this function, so parallel tests never race on one port.
#[allow(
    clippy::disallowed_types,
    reason = "a plain list of held locks, never touched across an .await"
)]
pub fn free_port() -> u16 {
    let dir = std::env::temp_dir().join("triggerd-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock dir");
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let start = rand::random_range(0..span);
    for offset in 0..span {
        let port = PORT_RANGE.start + (start + offset) % span;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .expect("open a port lock file");
        if lock.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(lock);
        return port;
    }
    panic!("no free port in {PORT_RANGE:?} on 127.0.0.1");
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
