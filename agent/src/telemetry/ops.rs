//! The operations HTTP server: `/healthz`, `/readyz` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// Whether the agent is ready to take events (bus up, every source listening); changes of
/// the sources' state can be awaited (cluster mode writes object status when a plan starts
/// serving).
#[derive(Debug)]
pub struct Readiness {
    started: watch::Sender<bool>,
    bus_down: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            started: watch::channel(false).0,
            bus_down: AtomicBool::new(false),
        }
    }
}

impl Readiness {
    /// Marks the agent's sources started (or stopped).
    pub fn set(&self, ready: bool) {
        self.started.send_replace(ready);
    }

    /// Records whether the bus connection is up (a JetStream bus that lost its server
    /// makes the agent not ready until it reconnects).
    pub fn set_bus_up(&self, up: bool) {
        self.bus_down.store(!up, Ordering::SeqCst);
    }

    /// Whether the agent is ready.
    pub fn is_ready(&self) -> bool {
        *self.started.borrow() && !self.bus_down.load(Ordering::SeqCst)
    }

    /// A receiver that sees every change of the sources' state ([`Self::set`]).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }
}

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

/// Binds the ops server and serves it until `shutdown` is cancelled, on a thread and
/// runtime of its own: however busy the agent's worker threads are (a slow script, a burst
/// of events), `/healthz`, `/readyz` and `/metrics` answer at once. The returned task ends
/// when the server has stopped.
pub async fn serve_ops(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    tracing::info!(addr = %listener.local_addr()?, "ops server listening");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("triggerd-ops".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "ops server failed");
                        return;
                    }
                };
                let app = Router::new()
                    .route("/healthz", get(|| async { "ok" }))
                    .route("/readyz", get(readyz))
                    .route("/metrics", get(metrics_text))
                    .with_state(OpsState {
                        metrics: metrics.clone(),
                        ready,
                    });
                let server = super::spawn_server(
                    "ops",
                    listener,
                    app,
                    super::ServerLimits::ops(),
                    None,
                    &metrics,
                    shutdown,
                );
                let _ = server.await;
            });
            drop(stopped);
        })?;
    Ok(tokio::spawn(async move {
        let _ = on_stop.await;
    }))
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    if s.ready.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// The test's own runtime thread is blocked while a client asks `/healthz`: only a
    /// server on a thread of its own can answer.
    #[tokio::test(flavor = "current_thread")]
    async fn healthz_answers_while_the_agents_runtime_is_blocked() {
        let metrics = Arc::new(Metrics::new());
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let stop = CancellationToken::new();
        let ops = serve_ops(addr, metrics, Arc::new(Readiness::default()), stop.clone())
            .await
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            let _ = tx.send(reply);
        });
        // Blocks this runtime's only thread until the reply arrives (or the guard ends).
        let reply = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("healthz answered");
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok"),
            "{reply}"
        );
        stop.cancel();
        ops.await.unwrap();
    }
}
