//! `cargo run --release -p integration-tests --bin loadbench [-- --smoke] [--seconds N]
//! [--connections N] [--rate N] [--binary PATH] [--messages N] [--brokers-only]`: the
//! end-to-end load benchmark (see BENCHMARKS.md). The full run also measures the agent on a
//! JetStream bus (a local `nats-server`) and its MQTT and AMQP sources through a private
//! Mosquitto and RabbitMQ, each beside the broker's own rate with a plain consumer
//! (`--messages` per run, default 8000; `--brokers-only` runs just those). `--binary`
//! measures that triggerd build (e.g. an older commit's) instead of building the workspace's.

use std::time::Duration;

use integration_tests::brokerbench::{
    amqp_baseline, amqp_triggerd, mqtt_baseline, mqtt_triggerd, BrokerReport,
};
use integration_tests::loadbench::{
    release_binary, run_proxy, run_triggerd, run_triggerd_jetstream, scale_checks, LoadConfig,
    LoadReport, IDLE_SETTLE,
};

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The `--binary PATH` argument, when given.
fn binary_arg() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--binary")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
}

fn row(name: &str, r: &LoadReport) {
    println!(
        "| {name} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.events_per_sec,
        r.ack_p50_us,
        r.ack_p99_us,
        r.e2e_p50_us,
        r.e2e_p99_us,
        r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
        r.delivered,
        r.errors,
        r.duplicates
    );
}

fn broker_row(name: &str, r: &BrokerReport) {
    println!(
        "| {name} | {:.0} | {} | {} | {} | {} | {} |",
        r.per_sec, r.e2e_p50_us, r.e2e_p99_us, r.published, r.delivered, r.duplicates
    );
}

/// MQTT and AMQP through their brokers, each beside the broker's own rate.
async fn brokers(binary: &std::path::Path, messages: u64) {
    println!("\nthrough brokers, {messages} messages of 1 KB per run:\n");
    println!(
        "| run | delivered/s | e2e p50 µs | e2e p99 µs | published | delivered | duplicates |"
    );
    println!("|---|---|---|---|---|---|---|");
    broker_row(
        "Mosquitto, plain QoS 1 subscriber",
        &mqtt_baseline(messages).await,
    );
    broker_row(
        "triggerd mqtt source (QoS 1)",
        &mqtt_triggerd(binary, messages).await,
    );
    broker_row(
        "RabbitMQ, plain consumer (acks, prefetch 64)",
        &amqp_baseline(messages).await,
    );
    broker_row(
        "triggerd amqp source (acks, prefetch 64)",
        &amqp_triggerd(binary, messages).await,
    );
}

#[tokio::main]
async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let seconds = arg("--seconds").unwrap_or(if smoke { 1 } else { 10 });
    let connections = arg("--connections").unwrap_or(64) as usize;
    let rate = arg("--rate").unwrap_or(5000);
    let binary = binary_arg().unwrap_or_else(release_binary);
    println!("triggerd binary: {}", binary.display());
    let messages = arg("--messages").unwrap_or(8_000);
    if std::env::args().any(|a| a == "--brokers-only") {
        brokers(&binary, messages).await;
        return;
    }
    let max = LoadConfig {
        duration: Duration::from_secs(seconds),
        connections,
        rate: None,
    };
    let paced = LoadConfig {
        duration: Duration::from_secs(seconds),
        connections: 32,
        rate: Some(rate),
    };

    println!("| run | events/s | ack p50 µs | ack p99 µs | e2e p50 µs | e2e p99 µs | peak RSS MiB | delivered | errors | duplicates |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let proxy = run_proxy(&max).await;
    row("bare proxy, max", &proxy);
    let triggerd = run_triggerd(&binary, &max).await;
    row("triggerd, max", &triggerd);
    let paced_run = run_triggerd(&binary, &paced).await;
    row(&format!("triggerd, {rate}/s offered"), &paced_run);
    if !smoke {
        let durable = run_triggerd_jetstream(&binary, &max).await;
        row("triggerd on JetStream, max", &durable);
        let durable_paced = run_triggerd_jetstream(&binary, &paced).await;
        row(
            &format!("triggerd on JetStream, {rate}/s offered"),
            &durable_paced,
        );
    }
    if !smoke {
        brokers(&binary, messages).await;
    }
    let ratio = if proxy.events_per_sec > 0.0 {
        triggerd.events_per_sec / proxy.events_per_sec
    } else {
        0.0
    };
    println!("\ntriggerd / bare proxy throughput: {ratio:.2}");

    let scale = scale_checks(&binary).await;
    println!(
        "\nscale: start to ready with 100 sensors {:.1} ms; RSS with 100 sensors {:.1} MiB at ready, {:.1} MiB idle ({}s later); 50-dependency sensor fires {:.2} ms after its last event",
        scale.start_to_ready_ms,
        scale.ready_rss_mib,
        scale.idle_rss_mib,
        IDLE_SETTLE.as_secs(),
        scale.fifty_deps_fire_ms
    );
}
