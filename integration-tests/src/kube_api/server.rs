//! [`TestApiServer`]: the in-process Kubernetes API server, its thread and its test hooks.

#![allow(
    clippy::disallowed_types,
    reason = "the state's std Mutexes are locked briefly, never across .await"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::control::{Caller, Control, FaultSpec, RecordedRequest};
use super::handler;
use super::kubeconfig;
use super::store::Store;

/// State shared by the handler, the watch streams and the test hooks.
pub(crate) struct Shared {
    store: Mutex<Store>,
    control: Mutex<Control>,
    /// The latest resourceVersion, sent after every write: wakes the watch streams.
    pub changed: watch::Sender<u64>,
    /// Bumped by `close_watches`: every open watch stream ends.
    pub close: watch::Sender<u64>,
    pub admin_token: String,
    /// `127.0.0.1:PORT`, for `/api`'s serverAddressByClientCIDRs.
    pub address: String,
    bookmark_interval: Mutex<Duration>,
}

impl Shared {
    /// The store (a poisoned lock is taken over: a panicking test must not wedge the server).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Users, faults and the request log.
    pub fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub fn bookmark_interval(&self) -> Duration {
        *self
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// An in-process Kubernetes API server over plain HTTP on `127.0.0.1:<free port>`, with the
/// REST semantics kube-rs relies on (see the [module docs](crate::kube_api)). It runs on its
/// own thread with its own tokio runtime, so any test (sync, or on any runtime) can use it;
/// dropping it stops it and ends every open watch.
pub struct TestApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestApiServer {
    /// Starts a server with the built-in resources and the `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease` namespaces.
    pub fn start() -> TestApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind test API server on 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set the API server's listener non-blocking");
        let addr = listener.local_addr().expect("API server local addr");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            control: Mutex::new(Control::default()),
            changed: watch::Sender::new(0),
            close: watch::Sender::new(0),
            admin_token: format!("admin-{}", uuid::Uuid::new_v4().simple()),
            address: addr.to_string(),
            bookmark_interval: Mutex::new(Duration::from_secs(2)),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handler::handle)
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("kube-api-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the API server's tokio runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("register the API server's listener");
                    // Not a graceful shutdown: open watch streams would hold it up. Dropping
                    // the runtime after this returns cancels every connection.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn the API server thread");
        TestApiServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token that may do anything.
    pub fn admin_token(&self) -> &str {
        &self.shared.admin_token
    }

    /// A kube client config for this server with `token` and default namespace `namespace`.
    pub fn config(&self, token: &str, namespace: &str) -> kube::Config {
        kubeconfig::config(&self.url(), token, namespace)
    }

    /// An admin kube client (call inside the tokio runtime that will use it).
    pub fn client(&self) -> kube::Client {
        self.client_for(self.admin_token())
    }

    /// A kube client with `token` (call inside the tokio runtime that will use it).
    pub fn client_for(&self, token: &str) -> kube::Client {
        kube::Client::try_from(self.config(token, "default"))
            .expect("build a kube client for the test API server")
    }

    /// Adds a user: requests with `Bearer <token>` act as `username`, allowed everything in
    /// `namespaces` and a GET of those namespaces' own objects; anything else (other
    /// namespaces, cluster-scoped resources, lists across namespaces) is 403 Forbidden with
    /// RBAC's message. Discovery is open to every authenticated user.
    pub fn add_user(&self, token: &str, username: &str, namespaces: &[&str]) {
        self.shared.control().users.insert(
            token.to_owned(),
            Caller::User {
                name: username.to_owned(),
                namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            },
        );
    }

    /// The next `fault.times` requests matching `fault` are answered with its status code.
    pub fn inject_failure(&self, fault: FaultSpec) {
        self.shared.control().faults.push(fault);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.control().requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.control().requests.clear();
    }

    /// Ends every open watch stream (cleanly, as an API server restart or a load balancer
    /// timeout would); clients re-watch from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.close.send_modify(|epoch| *epoch += 1);
    }

    /// Forgets the watch history: every resourceVersion issued so far becomes too old, so
    /// open watches and the next watch from an old version get a 410 Expired ERROR event
    /// (clients relist).
    pub fn compact(&self) {
        let rv = {
            let mut store = self.shared.store();
            store.compact();
            store.current_rv()
        };
        self.shared.changed.send_replace(rv);
    }

    /// How often watches that allow bookmarks get one (default 2 s; a real server: ~1 min).
    pub fn set_bookmark_interval(&self, every: Duration) {
        *self
            .shared
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = every;
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.close_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
