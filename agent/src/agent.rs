//! Wiring: builds the bus, starts sources, sensors and the ops server from a plan, and shuts
//! down gracefully.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::BusBuilder;
use crate::delivery::DeliveryContext;
use crate::plan::Plan;
use crate::script::ScriptHost;
use crate::sensor::SensorContext;
use crate::source::{start_sources, Clock, SourceContext};
use crate::telemetry::{serve_ops, Metrics, Readiness};

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
}

/// Runs the plan until `shutdown` is cancelled, then drains.
pub async fn run(
    plan: Plan,
    host: Arc<ScriptHost>,
    options: AgentOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(Readiness::default());
    let ops_stop = CancellationToken::new();
    let ops = serve_ops(
        options.ops_addr,
        metrics.clone(),
        ready.clone(),
        ops_stop.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("ops server: cannot listen on {}: {e}", options.ops_addr))?;

    let mut bus = BusBuilder::new(options.bus_capacity).dedup_window(options.dedup_window);
    let tasks = TaskTracker::new();
    let abort = CancellationToken::new();
    let sensor_ctx = SensorContext {
        delivery: DeliveryContext {
            host,
            metrics: metrics.clone(),
        },
        max_inflight: options.max_inflight,
        tasks: tasks.clone(),
        abort: abort.clone(),
    };
    let mut sensor_tasks = Vec::new();
    for sensor in &plan.sensors {
        let queue = bus.subscribe(sensor.subscriptions());
        sensor_tasks.push(tokio::spawn(sensor.clone().run(sensor_ctx.clone(), queue)));
    }
    let source_ctx = SourceContext {
        bus: bus.build(),
        metrics,
        shutdown: shutdown.clone(),
        clock: Clock::System,
        secrets_dir: options.secrets_dir.clone(),
        bind_host: options.bind_host,
    };
    let sources = match start_sources(&plan.sources, &source_ctx).await {
        Ok(s) => s,
        Err(e) => {
            ops_stop.cancel();
            return Err(e);
        }
    };
    // Sources hold the only bus handles from here on: when they stop, sensor queues close
    // after draining what was accepted.
    drop(source_ctx);
    ready.set(true);
    tracing::info!(
        sensors = plan.sensors.len(),
        sources = plan.sources.len(),
        ops = %options.ops_addr,
        "triggerd ready"
    );

    shutdown.cancelled().await;
    ready.set(false);
    tracing::info!(
        "shutting down: sources stopped, draining accepted events and in-flight triggers"
    );
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
        tracing::warn!(timeout = ?options.drain_timeout, in_flight = tasks.len(), "drain timeout: in-flight triggers abandoned");
    } else {
        tracing::info!("all in-flight triggers finished");
    }
    ops_stop.cancel();
    let _ = ops.await;
    Ok(())
}
