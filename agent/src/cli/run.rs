//! `triggerd run`: the agent in file mode.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::SourceArgs;
use crate::agent::{run as run_agent, AgentOptions};
use crate::delivery::parse_duration;
use crate::manifest::load_paths;
use crate::plan::build_plan;
use crate::script::{Limits, ScriptHost};
use crate::telemetry::LogFormat;

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9090", env = "TRIGGERD_OPS_ADDR")]
    ops_addr: SocketAddr,
    /// Address webhook servers bind to.
    #[arg(long, default_value = "0.0.0.0", env = "TRIGGERD_BIND")]
    bind: IpAddr,
    /// Events each sensor's queue holds; when full, webhooks answer 503.
    #[arg(long, default_value_t = 1024)]
    bus_capacity: usize,
    /// Events a sensor processes at once (each may run several triggers).
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// How long an accepted event id is remembered so a redelivery with the same
    /// CloudEvent id and source fires once (Go duration; 0 turns it off).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    dedup_window: std::time::Duration,
    /// Directory of mounted secrets: `<dir>/<secret name>/<key>`.
    #[arg(long, env = "TRIGGERD_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// How long shutdown waits for in-flight triggers (Go duration).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: std::time::Duration,
    /// Wall-clock limit of one script evaluation (Go duration).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    script_timeout: std::time::Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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
        let (docs, mut errors) = load_paths(&args.sources.files);
        let lib = args.sources.library_dirs();
        let limits = Limits {
            deadline: args.script_timeout,
            ..Limits::default()
        };
        let host = Arc::new(ScriptHost::new(limits, lib.clone()));
        let plan = match build_plan(&docs, &host, &lib) {
            Ok(p) if errors.is_empty() => p,
            Ok(_) => {
                report(&errors);
                return ExitCode::FAILURE;
            }
            Err(mut more) => {
                errors.append(&mut more);
                report(&errors);
                return ExitCode::FAILURE;
            }
        };
        for w in &plan.warnings {
            tracing::warn!("{w}");
        }
        if plan.sensors.is_empty() && plan.sources.is_empty() {
            tracing::warn!("no manifests found; serving only health and metrics");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_shutdown(shutdown.clone()));
        let options = AgentOptions {
            ops_addr: args.ops_addr,
            bind_host: args.bind,
            bus_capacity: args.bus_capacity,
            max_inflight: args.max_inflight,
            dedup_window: args.dedup_window,
            secrets_dir: args.secrets_dir,
            drain_timeout: args.drain_timeout,
        };
        match run_agent(plan, host, options, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn report(errors: &[crate::manifest::ManifestError]) {
    for e in errors {
        eprintln!("{e}");
    }
    eprintln!("{} error(s); not starting", errors.len());
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
