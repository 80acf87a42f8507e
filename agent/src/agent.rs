//! Wiring: builds the bus, starts sources and sensors from a plan, and drains them on stop.
//! The ops server and metrics outlive plans, so a reload keeps counters and health.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::sync::OnceCell;

use crate::bus::BusBuilder;
use crate::cluster::{Cluster, ClusterOptions};
use crate::delivery::DeliveryContext;
use crate::plan::Plan;
use crate::script::ScriptHost;
use crate::sensor::SensorContext;
use crate::source::{start_sources, Clock, SourceContext};
use crate::telemetry::{Metrics, Readiness};
use crate::trigger::PrepareContext;

/// Run-time settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub ops_addr: SocketAddr,
    /// Address webhook servers bind to.
    pub bind_host: IpAddr,
    /// Events each sensor's bus queue holds.
    pub bus_capacity: usize,
    /// How long an accepted event id is remembered to drop duplicates (zero: off).
    pub dedup_window: Duration,
    /// Events a sensor processes at once.
    pub max_inflight: usize,
    /// Where mounted secrets live.
    pub secrets_dir: Option<PathBuf>,
    /// How long shutdown waits for in-flight triggers.
    pub drain_timeout: Duration,
    /// How to reach the Kubernetes API, when a plan needs it.
    pub cluster: ClusterOptions,
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
}

impl Shared {
    /// Metrics and readiness for a new process; no cluster connection yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::new(Readiness::default()),
            cluster: Arc::new(OnceCell::new()),
        }
    }

    /// The cluster connection if `plan` needs one (made on first use).
    async fn cluster_for(
        &self,
        plan: &Plan,
        options: &ClusterOptions,
    ) -> anyhow::Result<Option<Cluster>> {
        if !plan.needs_cluster() {
            return Ok(None);
        }
        let cluster = self
            .cluster
            .get_or_try_init(|| Cluster::connect(options, self.metrics.clone()))
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
    let mut bus = BusBuilder::new(options.bus_capacity).dedup_window(options.dedup_window);
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
    };
    let cluster = shared.cluster_for(&plan, &options.cluster).await?;
    // Clients that need secrets (awsLambda) are built before any event arrives, so a
    // missing secret stops the start as a missing webhook token does.
    let prepare = PrepareContext {
        secrets_dir: options.secrets_dir.as_deref(),
        cluster: cluster.as_ref(),
    };
    for sensor in &plan.sensors {
        for t in &sensor.triggers {
            t.trigger.prepare(&prepare).await?;
        }
    }
    let mut sensor_tasks = Vec::new();
    for sensor in &plan.sensors {
        let queue = bus.subscribe(sensor.subscriptions());
        sensor_tasks.push(tokio::spawn(sensor.clone().run(sensor_ctx.clone(), queue)));
    }
    let source_ctx = SourceContext {
        bus: bus.build(),
        metrics: shared.metrics.clone(),
        shutdown: stop.clone(),
        clock: Clock::System,
        secrets_dir: options.secrets_dir.clone(),
        bind_host: options.bind_host,
        host,
        cluster,
    };
    let started = start_sources(&plan.sources, &source_ctx).await;
    // From here on the sources hold the only bus handles: when they stop, sensor queues
    // close after draining what was accepted.
    drop(source_ctx);
    let sources = match started {
        Ok(s) => s,
        Err(e) => {
            abort.cancel();
            return Err(e);
        }
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
