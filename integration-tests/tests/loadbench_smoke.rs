//! Smoke mode of the load benchmark: the harness drives the agent (debug build) and a bare
//! proxy briefly, and every accepted event is delivered. Figures are for BENCHMARKS.md, not
//! asserted here: timing goals live in the benchmark.

use std::time::Duration;

use integration_tests::brokerbench::{amqp_baseline, amqp_triggerd, mqtt_baseline, mqtt_triggerd};
use integration_tests::loadbench::{run_proxy, run_triggerd, scale_checks, LoadConfig};
use integration_tests::triggerd_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_benchmark_smoke_run_delivers_every_accepted_event() {
    let cfg = LoadConfig {
        duration: Duration::from_millis(300),
        connections: 4,
        rate: None,
    };
    let triggerd = run_triggerd(triggerd_bin(), &cfg).await;
    assert!(triggerd.acked > 0, "{triggerd:?}");
    assert_eq!(triggerd.errors, 0, "{triggerd:?}");
    assert_eq!(
        triggerd.delivered, triggerd.acked,
        "every accepted event reaches the sink: {triggerd:?}"
    );
    assert!(
        triggerd.peak_rss_mib.is_some_and(|m| m > 1.0),
        "{triggerd:?}"
    );
    let proxy = run_proxy(&cfg).await;
    assert_eq!(proxy.delivered, proxy.acked, "{proxy:?}");

    let scale = scale_checks(triggerd_bin()).await;
    assert!(
        scale.start_to_ready_ms > 0.0 && scale.idle_rss_mib > 1.0,
        "{scale:?}"
    );
    assert!(
        scale.fifty_deps_fire_ms < 10_000.0,
        "the 50-dependency sensor fired: {scale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_benchmark_smoke_runs_deliver_every_published_message() {
    for report in [
        mqtt_baseline(200).await,
        mqtt_triggerd(triggerd_bin(), 200).await,
        amqp_baseline(200).await,
        amqp_triggerd(triggerd_bin(), 200).await,
    ] {
        assert_eq!(report.published, 200, "{report:?}");
        assert_eq!(
            report.delivered, 200,
            "every message reaches the sink: {report:?}"
        );
        assert_eq!(report.duplicates, 0, "{report:?}");
    }
}
