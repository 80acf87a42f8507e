//! Wiring: builds the bus, starts sources and sensors from a plan, and drains them on stop.
//! The ops server and metrics outlive plans, so a reload keeps counters and health.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::sync::OnceCell;

use crate::bus::jetstream::{JetStreamBus, JetStreamOptions};
use crate::bus::{Bus, BusBuilder, Subscription};
use crate::cluster::{Cluster, ClusterOptions, ObjectKeysApi};
use crate::delivery::DeliveryContext;
use crate::plan::Plan;
use crate::script::ScriptHost;
use crate::secret::SecretStore;
use crate::sensor::SensorContext;
use crate::source::{start_sources, Clock, SourceContext, SourceSpec};
use crate::telemetry::{Metrics, Readiness};
use crate::trigger::PrepareContext;

/// Run-time settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub ops_addr: SocketAddr,
    /// Address webhook servers bind to.
    pub bind_host: IpAddr,
    /// Connection budget and timeouts every webhook listener shares (kept across reloads).
    pub webhook_limits: crate::telemetry::ServerLimits,
    /// Events each sensor's bus queue holds.
    pub bus_capacity: usize,
    /// How long an accepted event id is remembered to drop duplicates (zero: off).
    pub dedup_window: Duration,
    /// Events a sensor processes at once.
    pub max_inflight: usize,
    /// Where mounted secrets live.
    pub secrets_dir: Option<PathBuf>,
    /// Whether credentials that triggers read while running (the http trigger's
    /// `basicAuth`, `secureHeaders`, `bearerToken`, `tls`) come from the namespace's
    /// Kubernetes Secrets (cluster mode without `--secrets-dir`).
    pub cluster_secrets: bool,
    /// How long shutdown waits for in-flight triggers.
    pub drain_timeout: Duration,
    /// How to reach the Kubernetes API, when a plan needs it.
    pub cluster: ClusterOptions,
    /// Which bus carries events from sources to sensors.
    pub bus: BusChoice,
}

/// The bus between sources and sensors.
#[derive(Debug, Clone)]
pub enum BusChoice {
    /// In-process queues: nothing survives the process (file mode's default).
    Embedded,
    /// NATS JetStream: durable, at-least-once, shared by replicas.
    JetStream(JetStreamOptions),
}

/// What outlives one plan: metrics and readiness.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness flag served on `/readyz`.
    pub ready: Arc<Readiness>,
    /// The Kubernetes API connection, made when the first plan that needs it starts.
    pub cluster: Arc<OnceCell<Cluster>>,
    /// The JetStream bus connection, made when the first plan starts (kept across reloads).
    pub jetstream: Arc<OnceCell<JetStreamBus>>,
}

impl Shared {
    /// Metrics and readiness for a new process; no cluster connection yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::new(Readiness::default()),
            cluster: Arc::new(OnceCell::new()),
            jetstream: Arc::new(OnceCell::new()),
        }
    }

    /// The JetStream bus when `choice` asks for it (connected on first use).
    async fn jetstream_for(&self, choice: &BusChoice) -> anyhow::Result<Option<JetStreamBus>> {
        let BusChoice::JetStream(options) = choice else {
            return Ok(None);
        };
        let bus = self
            .jetstream
            .get_or_try_init(|| {
                let ready = self.ready.clone();
                JetStreamBus::connect(options.clone(), move |up| ready.set_bus_up(up))
            })
            .await?;
        Ok(Some(bus.clone()))
    }

    /// The cluster connection if `plan` needs one (made on first use).
    async fn cluster_for(
        &self,
        plan: &Plan,
        options: &AgentOptions,
    ) -> anyhow::Result<Option<Cluster>> {
        if !plan.needs_cluster() && !options.cluster_secrets {
            return Ok(None);
        }
        let cluster = self
            .cluster
            .get_or_try_init(|| Cluster::connect(&options.cluster, self.metrics.clone()))
            .await?;
        Ok(Some(cluster.clone()))
    }
}

/// Runs one plan until `stop` is cancelled, then stops its sources and drains: events the
/// bus accepted are still processed and in-flight triggers finish (up to the drain timeout).
/// `reloaded` counts a successful reload once the plan is serving.
pub async fn run_plan(
    plan: Plan,
    host: Arc<ScriptHost>,
    options: &AgentOptions,
    shared: &Shared,
    stop: CancellationToken,
    reloaded: bool,
) -> anyhow::Result<()> {
    let jetstream = shared.jetstream_for(&options.bus).await?;
    let tasks = TaskTracker::new();
    let abort = CancellationToken::new();
    let sensor_ctx = SensorContext {
        delivery: DeliveryContext {
            host: host.clone(),
            metrics: shared.metrics.clone(),
            executor: crate::delivery::Executor::Live,
        },
        max_inflight: options.max_inflight,
        tasks: tasks.clone(),
        abort: abort.clone(),
        clock: Clock::System,
        durable: jetstream.as_ref().map(JetStreamBus::durable),
    };
    let cluster = shared.cluster_for(&plan, options).await?;
    // Clients that need secrets are built before any event arrives, so a
    // missing secret stops the start as a missing webhook token does.
    let secrets = match (&cluster, options.cluster_secrets) {
        (Some(c), true) => SecretStore::cluster(Arc::new(ObjectKeysApi::new(c.clone()))),
        _ => SecretStore::files(options.secrets_dir.clone()),
    };
    let prepare = PrepareContext {
        secrets: &secrets,
        cluster: cluster.as_ref(),
    };
    for sensor in &plan.sensors {
        for t in &sensor.triggers {
            t.delivery.prepare(&prepare).await?;
        }
    }
    // Cancelled once the sources stopped: JetStream consumers then stop fetching (the
    // embedded queues close by themselves when the last source drops its bus handle).
    let consume_stop = CancellationToken::new();
    // A start that fails part-way stops the sensors already running.
    let failed = |e: anyhow::Error| {
        consume_stop.cancel();
        abort.cancel();
        Err(e)
    };
    let (bus, sensor_tasks) = match start_sensors(
        &plan,
        jetstream.as_ref(),
        options,
        &sensor_ctx,
        &consume_stop,
    )
    .await
    {
        Ok(started) => started,
        Err(e) => return failed(e),
    };
    let source_ctx = SourceContext {
        bus,
        metrics: shared.metrics.clone(),
        shutdown: stop.clone(),
        clock: Clock::System,
        secrets,
        bind_host: options.bind_host,
        http_limits: options.webhook_limits.clone(),
        host,
        cluster,
    };
    // On JetStream, sources that must not run twice (calendars, watches, core NATS
    // subscriptions) run only on the replica holding the lease.
    let (singletons, everywhere): (Vec<SourceSpec>, Vec<SourceSpec>) = match &jetstream {
        Some(_) => plan
            .sources
            .iter()
            .cloned()
            .partition(SourceSpec::is_singleton),
        None => (Vec::new(), plan.sources.clone()),
    };
    let started = start_sources(&everywhere, &source_ctx).await;
    let leaders: Vec<_> = match &jetstream {
        Some(js) if started.is_ok() => singletons
            .into_iter()
            .map(|spec| {
                tokio::spawn(run_singleton(
                    js.clone(),
                    spec,
                    source_ctx.clone(),
                    stop.clone(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    // From here on the sources hold the only bus handles: when they stop, sensor queues
    // close after draining what was accepted.
    drop(source_ctx);
    let sources = match started {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    shared.ready.set(true);
    if reloaded {
        shared.metrics.reload(true);
    }
    tracing::info!(
        sensors = plan.sensors.len(),
        sources = plan.sources.len(),
        ops = %options.ops_addr,
        "triggerd ready"
    );

    stop.cancelled().await;
    shared.ready.set(false);
    tracing::info!("stopping: sources closed, draining accepted events and in-flight triggers");
    for s in sources {
        let _ = s.await;
    }
    for l in leaders {
        let _ = l.await;
    }
    consume_stop.cancel();
    let drained = tokio::time::timeout(options.drain_timeout, async {
        for t in sensor_tasks {
            let _ = t.await;
        }
        tasks.close();
        tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        abort.cancel();
        tracing::warn!(
            timeout = ?options.drain_timeout,
            in_flight = tasks.len(),
            "drain timeout: in-flight triggers abandoned"
        );
    } else {
        tracing::info!("all in-flight triggers finished");
    }
    Ok(())
}

/// Subscribes every sensor of `plan` and starts it; returns the bus sources publish to.
async fn start_sensors(
    plan: &Plan,
    jetstream: Option<&JetStreamBus>,
    options: &AgentOptions,
    ctx: &SensorContext,
    consume_stop: &CancellationToken,
) -> anyhow::Result<(Arc<Bus>, Vec<tokio::task::JoinHandle<()>>)> {
    let mut tasks = Vec::new();
    let Some(js) = jetstream else {
        let mut bus = BusBuilder::new(options.bus_capacity).dedup_window(options.dedup_window);
        for sensor in &plan.sensors {
            let queue = bus.subscribe(sensor.subscriptions());
            tasks.push(tokio::spawn(sensor.clone().run(ctx.clone(), queue)));
        }
        return Ok((bus.build(), tasks));
    };
    for sensor in &plan.sensors {
        let consumer = js
            .consumer(&sensor.name, options.max_inflight, consume_stop.clone())
            .await?;
        let queue = Subscription::JetStream(Box::new(consumer));
        tasks.push(tokio::spawn(sensor.clone().run(ctx.clone(), queue)));
    }
    let routes = plan
        .sensors
        .iter()
        .flat_map(|s| s.subscriptions().map(move |key| (key, s.name.as_str())));
    Ok((Arc::new(Bus::JetStream(js.publisher(routes))), tasks))
}

/// Pause before singleton sources that failed to start are tried again.
const SINGLETON_RETRY: Duration = Duration::from_secs(5);

/// Runs one singleton source while this replica holds its lease (one lease per source, so
/// plans that come and go independently never compete for each other's), stopping it when
/// the lease is lost, until `stop`.
async fn run_singleton(
    js: JetStreamBus,
    spec: SourceSpec,
    ctx: SourceContext,
    stop: CancellationToken,
) {
    let key = format!("source/{}/{}", spec.event_source, spec.event_name);
    let mut leads = js.lease(&key).run(stop.clone());
    let specs = [spec];
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = leads.wait_for(|l| *l) => if changed.is_err() { return },
        }
        let term = stop.child_token();
        let ctx = SourceContext {
            shutdown: term.clone(),
            ..ctx.clone()
        };
        let handles = match start_sources(&specs, &ctx).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "singleton source failed to start; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(SINGLETON_RETRY) => continue,
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            _ = leads.wait_for(|l| !*l) => {}
        }
        term.cancel();
        for h in handles {
            let _ = h.await;
        }
    }
}
