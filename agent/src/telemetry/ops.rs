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

/// Binds the ops server and serves it until `shutdown` is cancelled.
pub async fn serve_ops(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let metrics_handle = metrics.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(OpsState { metrics, ready });
    tracing::info!(addr = %listener.local_addr()?, "ops server listening");
    let limits = super::ServerLimits::ops();
    Ok(super::spawn_server(
        "ops",
        listener,
        app,
        limits,
        &metrics_handle,
        shutdown,
    ))
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
