//! `triggerd run`: the agent in file mode, reloading when manifests or scripts change, or in
//! cluster mode (`--kube`), running the Sensor and EventSource objects of its namespace.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::watch::Fingerprint;
use super::JetStreamArgs;
use super::SourceArgs;
use crate::agent::{run_plan, AgentOptions, BusChoice, Shared};
use crate::backoff::parse_duration;
use crate::bus::jetstream::{Discard, JetStreamOptions, Retention};
use crate::cluster::leader::LeaderOptions;
use crate::cluster::{Cluster, ClusterOptions};
use crate::controller::{run_controller, ControllerOptions};
use crate::manifest::{load_paths, ManifestError};
use crate::plan::{build_plan, Plan};
use crate::script::{Limits, ScriptHost};
use crate::telemetry::{serve_ops, LogFormat, Metrics, ServerLimits};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manifest file or directory (every *.yaml / *.yml inside, recursively); repeatable.
    /// Required unless --kube.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        required_unless_present_any = ["kube", "paths"],
        conflicts_with = "kube"
    )]
    files: Vec<PathBuf>,
    /// The same as -f: manifest files or directories given without the flag.
    #[arg(value_name = "PATH", conflicts_with = "kube")]
    paths: Vec<PathBuf>,
    /// Rhai library directory for `import` and `scriptFile`; repeatable.
    /// Default: ./scripts and ./policies when they exist.
    #[arg(long = "lib", value_name = "DIR")]
    lib: Vec<PathBuf>,
    /// Cluster mode: run the Sensor and EventSource objects (triggerd.io/v1alpha1) of the
    /// agent's namespace, reload when they change, and write their status.
    #[arg(long)]
    kube: bool,
    /// Cluster mode: how often trigger outcome counts are written to object status (Go
    /// duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    status_interval: Duration,
    /// Cluster mode with several replicas: elect a leader through a coordination.k8s.io
    /// Lease; only the leader runs singleton sources (calendars) and writes status.
    #[arg(long, conflicts_with_all = ["files", "paths"])]
    leader_elect: bool,
    /// Name of the leader election Lease in the agent's namespace.
    #[arg(long, default_value = "triggerd", value_name = "NAME")]
    lease_name: String,
    /// How long a Lease that is not renewed stays with its holder (Go duration).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090", env = "TRIGGERD_OPS_ADDR")]
    ops_addr: SocketAddr,
    /// Address webhook servers bind to.
    #[arg(long, default_value = "0.0.0.0", env = "TRIGGERD_BIND")]
    bind: IpAddr,
    /// Connections all webhook listeners serve at once (at least 1); a connection over it is answered
    /// 503 and closed, so idle clients cannot use up file descriptors (the ops port has its
    /// own budget of 64).
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// How long a webhook client may take to send a request's headers, and how long a
    /// keep-alive connection may idle between requests (Go duration).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,
    /// How long a webhook client may take to send a request's body; slower gets 408 (Go
    /// duration).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    body_timeout: Duration,
    /// Events each sensor's queue holds; when full, webhooks answer 503.
    #[arg(long, default_value_t = 1024)]
    bus_capacity: usize,
    /// Events a sensor processes at once (each may run several triggers).
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// How long an accepted event id is remembered so a redelivery with the same
    /// CloudEvent id and source fires once (Go duration; 0 turns it off).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    dedup_window: Duration,
    /// Directory of mounted secrets: `<dir>/<secret name>/<key>`.
    #[arg(long, env = "TRIGGERD_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// How long shutdown (or a reload) waits for in-flight triggers (Go duration).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Wall-clock limit of one script evaluation (Go duration).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    script_timeout: Duration,
    /// How often manifests and scripts are checked for changes (Go duration; 0 turns
    /// reloading off). A change that does not validate is logged and the running
    /// configuration stays.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// Kubeconfig for Kubernetes triggers and sources (default: KUBECONFIG,
    /// ~/.kube/config, then the in-cluster service account). Only read when a manifest
    /// needs the Kubernetes API.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The agent's namespace: where Kubernetes triggers act and resource sources watch
    /// (default: the kubeconfig context's namespace, or the service account's).
    #[arg(long, env = "TRIGGERD_NAMESPACE", value_name = "NS")]
    namespace: Option<String>,
    /// Another namespace Kubernetes triggers may act in (repeatable; `*` allows any).
    /// Without it, a trigger aimed outside the agent's namespace is refused.
    #[arg(long = "allow-namespace", value_name = "NS")]
    allow_namespaces: Vec<String>,
    #[command(flatten)]
    bus: BusArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,
}

/// Which bus carries events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BusKind {
    /// In-process queues (nothing survives the process).
    Embedded,
    /// NATS JetStream: durable, at-least-once, shared by replicas.
    Jetstream,
}

/// Bus settings of `run`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Event bus")]
struct BusArgs {
    /// The bus between sources and sensors.
    #[arg(long = "bus", value_enum, default_value_t = BusKind::Embedded, env = "TRIGGERD_BUS")]
    kind: BusKind,
    #[command(flatten)]
    jetstream: JetStreamArgs,
    /// This replica's name (JetStream lease holder and dead-letter stamp).
    /// Default: the host name and process id.
    #[arg(long, env = "TRIGGERD_REPLICA_ID", value_name = "NAME")]
    replica_id: Option<String>,
    /// How long a delivered event may stay unacknowledged before JetStream delivers it
    /// again (Go duration); long triggers send "in progress" to extend it.
    #[arg(long = "jetstream-ack-wait", default_value = "30s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// Oldest event the stream keeps (Go duration; 0: no limit).
    #[arg(long = "jetstream-max-age", default_value = "72h", value_parser = parse_duration)]
    max_age: Duration,
    /// Largest size of the events stream in bytes (-1: no limit).
    #[arg(long = "jetstream-max-bytes", default_value_t = 1 << 30, allow_negative_numbers = true)]
    max_bytes: i64,
    /// Replicas of the stream and buckets (clustered JetStream).
    #[arg(long = "jetstream-replicas", default_value_t = 1)]
    replicas: usize,
    /// How the events stream keeps events.
    #[arg(long = "jetstream-retention", value_enum, default_value_t = Retention::Workqueue)]
    retention: Retention,
    /// What a full events stream does: `new` refuses new events (webhooks answer 503),
    /// `old` drops the oldest.
    #[arg(long = "jetstream-discard", value_enum, default_value_t = Discard::New)]
    discard: Discard,
    /// How long a publish waits for JetStream's acknowledgement (Go duration).
    #[arg(long = "jetstream-publish-timeout", default_value = "3s", value_parser = parse_duration)]
    publish_timeout: Duration,
    /// How long the singleton-source lease lasts without renewal (Go duration).
    #[arg(long = "lease-ttl", default_value = "15s", value_parser = parse_duration)]
    lease_ttl: Duration,
}

impl BusArgs {
    fn choice(&self, namespace: Option<&str>, dedup_window: Duration) -> BusChoice {
        match self.kind {
            BusKind::Embedded => BusChoice::Embedded,
            BusKind::Jetstream => BusChoice::JetStream(JetStreamOptions {
                url: self.jetstream.nats_url.clone(),
                namespace: self.jetstream.namespace_or(namespace),
                replica_id: self.replica_id.clone().unwrap_or_else(default_replica_id),
                ack_wait: self.ack_wait,
                max_age: self.max_age,
                max_bytes: self.max_bytes,
                replicas: self.replicas.max(1),
                retention: self.retention,
                discard: self.discard,
                dedup_window,
                publish_timeout: self.publish_timeout,
                lease_ttl: self.lease_ttl,
            }),
        }
    }
}

/// The host name and process id: unique among replicas and restarts.
fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "triggerd".into());
    format!("{host}-{}", std::process::id())
}

impl RunArgs {
    fn sources(&self) -> SourceArgs {
        SourceArgs {
            files: self.files.clone(),
            paths: self.paths.clone(),
            lib: self.lib.clone(),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            deadline: self.script_timeout,
            ..Limits::default()
        }
    }

    fn load(&self, metrics: &Metrics) -> Result<(Plan, Arc<ScriptHost>), Vec<ManifestError>> {
        let (docs, mut errors) = load_paths(&self.sources().manifest_paths());
        let lib = self.sources().library_dirs();
        let host = Arc::new(
            ScriptHost::new(self.limits(), lib.clone())
                .with_timings(metrics.script_seconds.clone()),
        );
        match build_plan(&docs, &host, &lib) {
            Ok(plan) if errors.is_empty() => {
                for w in &plan.warnings {
                    tracing::warn!("{w}");
                }
                Ok((plan, host))
            }
            Ok(_) => Err(errors),
            Err(mut more) => {
                errors.append(&mut more);
                Err(errors)
            }
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut paths = self.sources().manifest_paths();
        paths.extend(self.sources().library_dirs());
        Fingerprint::of(&paths)
    }

    fn options(&self) -> AgentOptions {
        AgentOptions {
            ops_addr: self.ops_addr,
            bind_host: self.bind,
            webhook_limits: ServerLimits::new(
                self.max_connections,
                self.header_timeout,
                self.body_timeout,
            ),
            bus_capacity: self.bus_capacity,
            dedup_window: self.dedup_window,
            max_inflight: self.max_inflight,
            secrets_dir: self.secrets_dir.clone(),
            cluster_secrets: self.kube && self.secrets_dir.is_none(),
            drain_timeout: self.drain_timeout,
            cluster: ClusterOptions {
                kubeconfig: self.kubeconfig.clone(),
                namespace: self.namespace.clone(),
                allow_namespaces: self.allow_namespaces.clone(),
            },
            bus: self
                .bus
                .choice(self.namespace.as_deref(), self.dedup_window),
        }
    }
}

/// Loads, compiles and runs until SIGTERM or Ctrl-C.
pub fn run(args: RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let initial = if args.kube {
        None
    } else {
        Some(args.load(&metrics).map_err(|errors| {
            report(&errors);
            anyhow::anyhow!("{} error(s) in manifests; not starting", errors.len())
        })?)
    };
    let shared = Shared::new(metrics);
    let ops_stop = CancellationToken::new();
    let ops = serve_ops(
        args.ops_addr,
        shared.metrics.clone(),
        shared.ready.clone(),
        ops_stop.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("ops server: cannot listen on {}: {e}", args.ops_addr))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let result = match initial {
        Some((plan, host)) => serve_files(&args, plan, host, &shared, shutdown).await,
        None => serve_kube(&args, &shared, shutdown).await,
    };
    ops_stop.cancel();
    let _ = ops.await;
    result
}

/// Cluster mode: the namespace's Sensor and EventSource objects are the manifests.
async fn serve_kube(
    args: &RunArgs,
    shared: &Shared,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let agent = args.options();
    let cluster = Cluster::connect(&agent.cluster, shared.metrics.clone()).await?;
    // The scripts of the namespace's script ConfigMaps go first: they may override the
    // image's library.
    let scripts_dir = std::env::temp_dir().join(format!("triggerd-scripts-{}", std::process::id()));
    let mut library_dirs = vec![scripts_dir.clone()];
    library_dirs.extend(args.sources().library_dirs());
    let options = ControllerOptions {
        agent,
        library_dirs,
        limits: args.limits(),
        settle: Duration::from_millis(300),
        status_interval: args.status_interval,
        retry_delay: Duration::from_secs(10),
        leader: args.leader_elect.then(|| LeaderOptions {
            lease: args.lease_name.clone(),
            identity: replica_identity(),
            duration: args.lease_duration,
        }),
    };
    run_controller(cluster, options, shared.clone(), shutdown).await;
    let _ = std::fs::remove_dir_all(scripts_dir);
    Ok(())
}

/// The pod's name (HOSTNAME, else `triggerd`) with a random suffix: unique among replicas,
/// recognisable in the Lease.
fn replica_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "triggerd".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// File mode: runs `plan`, reloading when the watched files change.
async fn serve_files(
    args: &RunArgs,
    mut plan: Plan,
    mut host: Arc<ScriptHost>,
    shared: &Shared,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut fingerprint = args.fingerprint();
    let options = args.options();
    let mut reloaded_plan = false;
    // The configuration that ran before the last reload: a reloaded plan that cannot start
    // (a port taken meanwhile, a secret missing) gives way to it again.
    let mut previous: Option<(Plan, Arc<ScriptHost>)> = None;
    loop {
        if plan.sensors.is_empty() && plan.sources.is_empty() {
            tracing::warn!("no manifests found; serving only health and metrics");
        }
        let stop = CancellationToken::new();
        let mut running = {
            let (options, shared, stop) = (options.clone(), shared.clone(), stop.clone());
            let (plan, host) = (plan.clone(), host.clone());
            tokio::spawn(async move {
                run_plan(plan, host, &options, &shared, stop, reloaded_plan).await
            })
        };
        let reloaded = tokio::select! {
            () = shutdown.cancelled() => None,
            next = next_valid_change(args, &mut fingerprint, &shared.metrics) => Some(next),
            // The plan ends by itself only on a start-up error such as a port in use.
            done = &mut running => match (joined(done), previous.take()) {
                (Err(e), Some(before)) => {
                    tracing::error!(error = %format!("{e:#}"), "the reloaded configuration cannot start; going back to the one before");
                    shared.metrics.reload(false);
                    (plan, host) = before;
                    continue;
                }
                (done, _) => return done,
            },
        };
        stop.cancel();
        let finished = joined(running.await);
        match reloaded {
            None => return finished,
            Some((next_plan, next_host)) => {
                finished?;
                tracing::info!("manifests changed: reloaded");
                previous = Some((plan, host));
                (plan, host) = (next_plan, next_host);
                reloaded_plan = true;
            }
        }
    }
}

/// A Go duration above zero (a zero timeout would close every connection at once).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

fn joined(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.unwrap_or_else(|e| Err(anyhow::anyhow!("agent task failed: {e}")))
}

/// Waits for the watched files to change into a configuration that validates.
async fn next_valid_change(
    args: &RunArgs,
    fingerprint: &mut Fingerprint,
    metrics: &Metrics,
) -> (Plan, Arc<ScriptHost>) {
    if args.watch_interval.is_zero() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(args.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = args.fingerprint();
        if now == *fingerprint {
            continue;
        }
        *fingerprint = now;
        match args.load(metrics) {
            Ok(next) => return next,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    errors = errors.len(),
                    "manifests changed but do not validate; keeping the running configuration"
                );
                metrics.reload(false);
            }
        }
    }
}

/// Prints each error once; the summary line is the error `serve` returns.
fn report(errors: &[ManifestError]) {
    for e in errors {
        eprintln!("{e}");
    }
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
    token.cancel();
}
