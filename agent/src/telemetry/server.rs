//! HTTP/1 serving with limits, for the ops port and the webhook listeners: a connection
//! budget (a connection over it is answered 503 and closed at once, so idle or slow clients
//! cannot use up the process's file descriptors), a header-read timeout that also closes
//! idle keep-alive connections, and a bounded graceful shutdown. The ops port has its own
//! budget, so webhook clients can never make `/healthz` unreachable.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::ListenerLabels;
use super::Metrics;

/// Connections the ops port serves at once.
pub const OPS_MAX_CONNECTIONS: usize = 64;

/// How long accepting waits after a failure (e.g. out of file descriptors) before trying
/// again, so a full descriptor table does not spin the accept loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What a client over the budget is told before its connection is closed.
const OVER_BUDGET_REPLY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

/// The limits of one set of listeners (the webhooks share one; the ops port has its own).
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served at once, over every listener that shares these limits.
    budget: Arc<Semaphore>,
    /// The budget's size, for logs.
    max_connections: usize,
    /// How long a client may take to send a request's headers, and how long a
    /// keep-alive connection may stay idle between requests.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (webhooks).
    pub body_timeout: Duration,
}

impl ServerLimits {
    /// Limits allowing `max_connections` at once (at least 1).
    pub fn new(max_connections: usize, header_timeout: Duration, body_timeout: Duration) -> Self {
        let max_connections = max_connections.max(1);
        Self {
            budget: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            header_timeout,
            body_timeout,
        }
    }

    /// The ops port's limits.
    pub fn ops() -> Self {
        Self::new(
            OPS_MAX_CONNECTIONS,
            Duration::from_secs(10),
            Duration::from_secs(10),
        )
    }
}

/// Counts and logs what one listener refused or timed out.
#[derive(Clone)]
struct ListenerTelemetry {
    name: Arc<str>,
    refused: Counter,
    timed_out: Counter,
}

impl ListenerTelemetry {
    fn new(metrics: &Metrics, name: &str) -> Self {
        let labels = ListenerLabels {
            listener: name.to_owned(),
        };
        Self {
            name: name.into(),
            refused: metrics.connections_refused.get_or_create(&labels).clone(),
            timed_out: metrics.connections_timed_out.get_or_create(&labels).clone(),
        }
    }

    fn refused(&self, max: usize) {
        self.refused.inc();
        tracing::debug!(listener = %self.name, max_connections = max, "connection refused: too many open connections");
    }

    fn timed_out(&self) {
        self.timed_out.inc();
        tracing::debug!(listener = %self.name, "connection closed: headers not received in time or idle too long");
    }

    fn handshake_failed(&self, error: &std::io::Error) {
        tracing::debug!(listener = %self.name, %error, "TLS handshake failed");
    }

    fn accept_failed(&self, error: &std::io::Error) {
        tracing::warn!(listener = %self.name, %error, "cannot accept a connection; retrying");
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled, then lets
/// requests in progress finish for at most the header and body timeouts.
pub fn spawn_server(
    name: &str,
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let telemetry = ListenerTelemetry::new(metrics, name);
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let graceful = GracefulShutdown::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = shutdown.cancelled() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    telemetry.accept_failed(&e);
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            let Ok(permit) = limits.budget.clone().try_acquire_owned() else {
                // Best effort: the socket buffer of a fresh connection has room for it.
                let _ = stream.try_write(OVER_BUDGET_REPLY);
                telemetry.refused(limits.max_connections);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let (http, watcher, telemetry) = (http.clone(), graceful.watcher(), telemetry.clone());
            let (tls, handshake_timeout) = (tls.clone(), limits.header_timeout);
            tokio::spawn(async move {
                let served = match tls {
                    None => {
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls_stream)) => {
                                watcher
                                    .watch(http.serve_connection(TokioIo::new(tls_stream), service))
                                    .await
                            }
                            Ok(Err(e)) => {
                                telemetry.handshake_failed(&e);
                                Ok(())
                            }
                            Err(_) => {
                                telemetry.timed_out();
                                Ok(())
                            }
                        }
                    }
                };
                if let Err(e) = served {
                    if e.is_timeout() {
                        telemetry.timed_out();
                    }
                }
                drop(permit);
            });
        }
        drop(listener);
        let grace = limits.header_timeout + limits.body_timeout;
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => {
                tracing::debug!(listener = %telemetry.name, "connections still open at shutdown were closed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Upper bound for a test step that should happen within milliseconds; reaching it
    /// fails the test instead of hanging it.
    const GUARD: Duration = Duration::from_secs(10);

    async fn start(
        limits: ServerLimits,
    ) -> (std::net::SocketAddr, Arc<Metrics>, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let router = Router::new().route("/", get(|| async { "ok" }));
        spawn_server(
            "test",
            listener,
            router,
            limits,
            None,
            &metrics,
            stop.clone(),
        );
        (addr, metrics, stop)
    }

    async fn read_to_end(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(GUARD, stream.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_connection_over_the_budget_gets_503_while_others_are_served() {
        let (addr, metrics, _stop) = start(ServerLimits::new(
            1,
            Duration::from_secs(30),
            Duration::from_secs(30),
        ))
        .await;
        // The first connection holds the only slot (idle, within its header timeout).
        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(GUARD, held.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let mut over = TcpStream::connect(addr).await.unwrap();
        let reply = read_to_end(&mut over).await;
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        assert!(metrics
            .encode()
            .contains("triggerd_http_connections_refused_total{listener=\"test\"} 1"));
        // Once the first leaves, a new connection is served.
        drop(held);
        let served = loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let reply = read_to_end(&mut s).await;
            if reply.starts_with("HTTP/1.1 200") {
                break reply;
            }
            // The server may not have seen the first connection close yet.
            tokio::task::yield_now().await;
        };
        assert!(served.ends_with("ok"));
    }

    #[tokio::test]
    async fn idle_and_silent_connections_are_closed_after_the_header_timeout() {
        let (addr, metrics, _stop) = start(ServerLimits::new(
            8,
            Duration::from_millis(100),
            Duration::from_secs(1),
        ))
        .await;
        // Silent from the start.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_to_end(&mut silent).await, "");
        // Idle after one request on a keep-alive connection.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let reply = read_to_end(&mut idle).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        // Both closes are counted (the count follows the close by a moment).
        let counted = "triggerd_http_connections_timed_out_total{listener=\"test\"} 2";
        tokio::time::timeout(GUARD, async {
            while !metrics.encode().contains(counted) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both timeouts counted");
    }
}
