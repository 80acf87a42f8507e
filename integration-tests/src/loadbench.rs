//! The end-to-end load benchmark: a webhook → script filter → parameters → HTTP trigger
//! sensor under load, next to a bare forwarding proxy built from the same HTTP stack, plus
//! scale checks. `cargo run --release -p integration-tests --bin loadbench` runs it in full;
//! the test suite runs its smoke mode so the harness itself stays working.
// std Mutex: short critical sections in plain code, never held across an await.
#![allow(clippy::disallowed_types)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::{free_port, webhook_source, Agent};

/// How a load run is shaped.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// How long load is applied (after a short warm-up).
    pub duration: Duration,
    /// Concurrent client connections.
    pub connections: usize,
    /// Offered events per second in total; `None` sends as fast as acks come back.
    pub rate: Option<u64>,
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Events acknowledged with 200.
    pub acked: u64,
    /// Events that reached the sink.
    pub delivered: u64,
    /// Requests that failed or were refused.
    pub errors: u64,
    /// Delivered events per second over the measured window.
    pub events_per_sec: f64,
    /// Webhook acknowledgement latency percentiles (µs).
    pub ack_p50_us: u64,
    /// 99th percentile of the acknowledgement latency (µs).
    pub ack_p99_us: u64,
    /// Event-to-sink latency percentiles (µs).
    pub e2e_p50_us: u64,
    /// 99th percentile of the event-to-sink latency (µs).
    pub e2e_p99_us: u64,
    /// Peak resident memory of the agent process (MiB), when it is one.
    pub peak_rss_mib: Option<f64>,
    /// Trigger attempts the agent retried (a retry after a lost response may deliver twice).
    pub retries: Option<f64>,
    /// Events the sink received more than once (by the sequence number each body carries).
    pub duplicates: u64,
}

/// How long the agent with 100 sensors sits idle before its idle memory is read.
pub const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// Scale figures of the agent with many sensors.
#[derive(Debug, Clone, Default)]
pub struct ScaleReport {
    /// Start of the process to `/readyz` 200 with 100 sensors and 100 endpoints.
    pub start_to_ready_ms: f64,
    /// Resident memory the moment the agent with 100 sensors is ready (MiB): start-up's
    /// transient allocations included.
    pub ready_rss_mib: f64,
    /// Resident memory of the same agent after it sat idle for [`IDLE_SETTLE`] (MiB).
    pub idle_rss_mib: f64,
    /// A 50-dependency sensor: from the last event sent to the trigger reaching the sink.
    pub fifty_deps_fire_ms: f64,
}

/// The sink every forwarded event reaches; it records the event-to-sink latency from the
/// `t` field (µs since the benchmark's clock started) of each body, and the sequence number
/// `n` to spot duplicates.
#[derive(Clone)]
pub(crate) struct SinkState {
    pub(crate) clock: Instant,
    pub(crate) latencies: Arc<Mutex<Vec<u64>>>,
    pub(crate) sent_times: Arc<Mutex<Vec<u64>>>,
}

impl SinkState {
    /// An empty record on `clock`.
    pub(crate) fn new(clock: Instant) -> Self {
        Self {
            clock,
            latencies: Arc::default(),
            sent_times: Arc::default(),
        }
    }
}

async fn sink_handler(State(s): State<SinkState>, body: Bytes) -> &'static str {
    let now = s.clock.elapsed().as_micros() as u64;
    let v = serde_json::from_slice::<Value>(&body).ok();
    let t = v.as_ref().and_then(|v| v["t"].as_u64());
    let n = v.as_ref().and_then(|v| v["n"].as_u64()).unwrap_or(0);
    // Warm-up events carry t = 0 and are not measured.
    if let Some(t) = t.filter(|t| *t > 0) {
        if let Ok(mut l) = s.latencies.lock() {
            l.push(now.saturating_sub(t));
        }
        if let Ok(mut l) = s.sent_times.lock() {
            l.push(n);
        }
    }
    "{}"
}

pub(crate) async fn start_sink(state: SinkState) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let addr = listener.local_addr().expect("sink addr");
    let app = Router::new()
        .route("/sink", post(sink_handler))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A GitHub-push-like body of about 1 KB carrying the send time `t`.
pub(crate) fn body(t: u64, n: u64) -> Vec<u8> {
    let v = json!({
        "t": t,
        "n": n,
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
        "repository": {"id": 186853002, "name": "triggerd", "full_name": "example/triggerd",
            "owner": {"login": "example", "id": 21031067}, "default_branch": "main"},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
        "head_commit": {"id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5", "message": "Fix the build",
            "timestamp": "2026-11-22T10:00:00Z", "author": {"name": "Octo Cat", "email": "octocat@example.com"},
            "modified": ["README.md", "agent/src/lib.rs"]},
        "commits": [{"id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5", "message": "Fix the build"},
                    {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Add tests"}]
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The benchmark sensor: script filter, four parameters (one a script), HTTP trigger.
fn sensor(sink: SocketAddr) -> String {
    sensor_on("hooks", "push", sink)
}

/// The benchmark sensor on `source`/`event` (events whose data has the body under `body`).
pub(crate) fn sensor_on(source: &str, event: &str, sink: SocketAddr) -> String {
    format!(
        r#"apiVersion: triggerd.io/v1alpha1
kind: Sensor
metadata:
  name: bench
spec:
  dependencies:
    - name: push
      eventSourceName: {source}
      eventName: {event}
      filters:
        script: 'event.body.ref == "refs/heads/main" && event.body.commits.len() > 0'
  triggers:
    - template:
        name: forward
        http:
          url: http://{sink}/sink
          payload:
            - src: {{dependencyName: push, dataKey: body.t, useRawData: true}}
              dest: t
            - src: {{dependencyName: push, dataKey: body.n, useRawData: true}}
              dest: n
            - src: {{dependencyName: push, dataKey: body.repository.full_name}}
              dest: repository
            - src: {{dependencyName: push, dataKey: body.after}}
              dest: revision
            - src: {{dependencyName: push, script: 'event.body.commits.len()'}}
              dest: commits
"#
    )
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Applies load to `url` and measures acks and sink arrivals.
async fn drive(url: String, cfg: &LoadConfig, sink: SinkState) -> LoadReport {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.connections)
        .build()
        .expect("client");
    let acks = Arc::new(Mutex::new(Vec::new()));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    // Warm-up: connections open, caches filled; not measured.
    for _ in 0..cfg.connections.min(64) {
        let _ = client.post(&url).body(body(0, 0)).send().await;
    }
    if let Ok(mut l) = sink.latencies.lock() {
        l.clear();
    }
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let per_connection_interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r.max(1) as f64));
    let mut tasks = Vec::new();
    for _ in 0..cfg.connections {
        let (client, url, acks, counts, clock) = (
            client.clone(),
            url.clone(),
            acks.clone(),
            counts.clone(),
            sink.clock,
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            let (mut ok, mut err) = (0u64, 0u64);
            let mut tick = per_connection_interval.map(|i| {
                let mut t = tokio::time::interval(i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let sent = Instant::now();
                let t = clock.elapsed().as_micros() as u64;
                let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body(t, n))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1;
                        local.push(sent.elapsed().as_micros() as u64);
                    }
                    _ => err += 1,
                }
            }
            if let Ok(mut a) = acks.lock() {
                a.extend(local);
            }
            if let Ok(mut c) = counts.lock() {
                c.0 += ok;
                c.1 += err;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (acked, errors) = counts.lock().map(|c| *c).unwrap_or_default();
    // Let the last accepted events reach the sink (bounded).
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while sink
        .latencies
        .lock()
        .map(|l| (l.len() as u64) < acked)
        .unwrap_or(false)
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut ack = acks.lock().map(|a| a.clone()).unwrap_or_default();
    ack.sort_unstable();
    let mut seen = sink
        .sent_times
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    seen.sort_unstable();
    let all = seen.len();
    seen.dedup();
    let duplicates = (all - seen.len()) as u64;
    let mut e2e = sink.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    e2e.sort_unstable();
    LoadReport {
        acked,
        delivered: e2e.len() as u64,
        errors,
        events_per_sec: e2e.len() as f64 / elapsed,
        ack_p50_us: percentile(&ack, 0.50),
        ack_p99_us: percentile(&ack, 0.99),
        e2e_p50_us: percentile(&e2e, 0.50),
        e2e_p99_us: percentile(&e2e, 0.99),
        peak_rss_mib: None,
        retries: None,
        duplicates,
    }
}

/// `VmHWM` (peak) or `VmRSS` (current) of a process, in MiB.
pub fn rss_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the load against triggerd (the given binary) with the benchmark sensor on the
/// embedded bus.
pub async fn run_triggerd(binary: &Path, cfg: &LoadConfig) -> LoadReport {
    run_triggerd_with(binary, cfg, &[]).await
}

/// Runs the load against triggerd with the benchmark sensor on the JetStream bus of a
/// `nats-server` started for the run (its own store, so every run starts empty).
pub async fn run_triggerd_jetstream(binary: &Path, cfg: &LoadConfig) -> LoadReport {
    let server = crate::NatsServer::start();
    let args = vec![
        "--bus".to_owned(),
        "jetstream".to_owned(),
        "--nats-url".to_owned(),
        server.url(),
        "--namespace".to_owned(),
        "bench".to_owned(),
    ];
    run_triggerd_with(binary, cfg, &args).await
}

async fn run_triggerd_with(binary: &Path, cfg: &LoadConfig, extra: &[String]) -> LoadReport {
    let clock = Instant::now();
    let sink = SinkState {
        clock,
        latencies: Arc::new(Mutex::new(Vec::new())),
        sent_times: Arc::new(Mutex::new(Vec::new())),
    };
    let sink_addr = start_sink(sink.clone()).await;
    let port = free_port();
    let agent = bench_agent(binary)
        .manifest(webhook_source("hooks", "push", port, "/push"))
        .manifest(sensor(sink_addr))
        .args(extra)
        .start()
        .await;
    let mut report = drive(agent.webhook_url(port, "/push"), cfg, sink).await;
    report.peak_rss_mib = rss_mib(agent.pid(), "VmHWM:");
    report.retries = Some(
        agent
            .metric("triggerd_trigger_retries_total", &[])
            .await
            .unwrap_or(0.0),
    );
    report
}

/// The agent as every benchmark run starts it: `binary`, quiet logs, room for bursts, no
/// deduplication window.
pub(crate) fn bench_agent(binary: &Path) -> crate::agent::AgentBuilder {
    Agent::builder()
        .binary(binary)
        .env("RUST_LOG", "warn")
        .args([
            "--bus-capacity",
            "20000",
            "--max-inflight",
            "4096",
            "--dedup-window",
            "0",
        ])
}

#[derive(Clone)]
struct ProxyState {
    client: reqwest::Client,
    target: String,
}

async fn proxy_handler(State(s): State<ProxyState>, body: Bytes) -> axum::http::StatusCode {
    match s
        .client
        .post(&s.target)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(r) => {
            let _ = r.bytes().await;
            axum::http::StatusCode::OK
        }
        Err(_) => axum::http::StatusCode::BAD_GATEWAY,
    }
}

/// Runs the same load against a bare forwarding proxy (same HTTP stack: axum in, reqwest
/// out; no bus, no script), on its own two-thread runtime like the agent's.
pub async fn run_proxy(cfg: &LoadConfig) -> LoadReport {
    let clock = Instant::now();
    let sink = SinkState {
        clock,
        latencies: Arc::new(Mutex::new(Vec::new())),
        sent_times: Arc::new(Mutex::new(Vec::new())),
    };
    let sink_addr = start_sink(sink.clone()).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let state = ProxyState {
        client: reqwest::Client::new(),
        target: format!("http://{sink_addr}/sink"),
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
            let app = Router::new()
                .route("/push", post(proxy_handler))
                .with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    drive(format!("http://{addr}/push"), cfg, sink).await
}

/// Start-up and idle memory with 100 sensors and 100 webhook endpoints, and a sensor with
/// 50 dependencies.
pub async fn scale_checks(binary: &Path) -> ScaleReport {
    let clock = Instant::now();
    let sink = SinkState {
        clock,
        latencies: Arc::new(Mutex::new(Vec::new())),
        sent_times: Arc::new(Mutex::new(Vec::new())),
    };
    let sink_addr = start_sink(sink.clone()).await;
    let port = free_port();
    let mut source = String::from("apiVersion: triggerd.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: hooks\nspec:\n  webhook:\n");
    let mut sensors = String::new();
    for i in 0..100 {
        source.push_str(&format!(
            "    e{i}:\n      port: {port}\n      endpoint: /e{i}\n"
        ));
        sensors.push_str(&format!(
            "---\napiVersion: triggerd.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: s{i}\nspec:\n  dependencies:\n    - {{name: d, eventSourceName: hooks, eventName: e{i}}}\n  triggers:\n    - template:\n        name: t\n        http: {{url: \"http://{sink_addr}/sink\"}}\n"
        ));
    }
    let agent = Agent::builder()
        .manifest(source)
        .manifest(sensors)
        .binary(binary)
        .env("RUST_LOG", "warn")
        .start()
        .await;
    let start_to_ready_ms = agent.ready_after().as_secs_f64() * 1000.0;
    let ready_rss_mib = rss_mib(agent.pid(), "VmRSS:").unwrap_or(0.0);
    // Idle means no event and no start-up work: what memory the agent keeps.
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle_rss_mib = rss_mib(agent.pid(), "VmRSS:").unwrap_or(0.0);
    drop(agent);

    let port = free_port();
    let mut source = String::from("apiVersion: triggerd.io/v1alpha1\nkind: EventSource\nmetadata:\n  name: hooks\nspec:\n  webhook:\n");
    let mut sensor = String::from("apiVersion: triggerd.io/v1alpha1\nkind: Sensor\nmetadata:\n  name: wide\nspec:\n  dependencies:\n");
    for i in 0..50 {
        source.push_str(&format!(
            "    e{i}:\n      port: {port}\n      endpoint: /e{i}\n"
        ));
        sensor.push_str(&format!(
            "    - {{name: d{i}, eventSourceName: hooks, eventName: e{i}}}\n"
        ));
    }
    sensor.push_str(&format!(
        "  triggers:\n    - template:\n        name: all\n        http:\n          url: http://{sink_addr}/sink\n          payloadScript: '#{{ t: events.d49.data.body.t }}'\n"
    ));
    let agent = Agent::builder()
        .manifest(source)
        .manifest(sensor)
        .binary(binary)
        .env("RUST_LOG", "warn")
        .start()
        .await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        let t = clock.elapsed().as_micros() as u64;
        let _ = client
            .post(agent.webhook_url(port, &format!("/e{i}")))
            .body(json!({"t": t}).to_string())
            .send()
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let fifty = loop {
        if let Some(l) = sink.latencies.lock().ok().and_then(|l| l.first().copied()) {
            break l;
        }
        if Instant::now() > deadline {
            break u64::MAX;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    ScaleReport {
        start_to_ready_ms,
        ready_rss_mib,
        idle_rss_mib,
        fifty_deps_fire_ms: fifty as f64 / 1000.0,
    }
}

/// Builds the release binary (once; cargo makes it quick when fresh) and returns its path.
pub fn release_binary() -> PathBuf {
    let root = crate::workspace_root();
    let status =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "triggerd", "--bin", "triggerd"])
            .current_dir(&root)
            .status()
            .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("release").join("triggerd")
}
