//! Singleton sources on the JetStream bus: two replicas with the same calendar run it on one
//! replica only (the lease holder); when that replica dies, the other takes the lease and
//! the calendar keeps ticking there.

use std::time::Duration;

use integration_tests::{jetstream_bus_args, Agent, NatsServer};
use tokio::time::Instant;

const NAMESPACE: &str = "lease";
const LEASE_TTL: &str = "3s";
/// Longest wait for a tick on the new leader: the dead leader's lease expires (3 s), the
/// other replica's next attempt comes within a third of that, then the next tick (1 s).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);

const MANIFESTS: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: clock
spec:
  calendar:
    tick:
      interval: 1s
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: ticks
spec:
  dependencies:
    - name: tick
      eventSourceName: clock
      eventName: tick
  triggers:
    - template:
        name: log
        log: {}
"#;

async fn replica(server: &NatsServer, id: &str) -> Agent {
    Agent::builder()
        .manifest(MANIFESTS)
        .args(jetstream_bus_args(&server.url(), NAMESPACE))
        .args(["--replica-id", id, "--lease-ttl", LEASE_TTL])
        .start()
        .await
}

/// Ticks `agent`'s calendar has published.
async fn ticks(agent: &Agent) -> f64 {
    agent
        .metric(
            "triggerd_events_received_total",
            &[("event_source", "clock"), ("event_name", "tick")],
        )
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_runs_on_the_lease_holder_only_and_moves_when_it_dies() {
    let server = NatsServer::start();
    let a = replica(&server, "replica-a").await;
    let b = replica(&server, "replica-b").await;

    // Wait until one of them has ticked three times.
    let deadline = Instant::now() + TAKEOVER_TIMEOUT;
    let (leader, follower) = loop {
        let (ta, tb) = (ticks(&a).await, ticks(&b).await);
        if ta >= 3.0 {
            break (&a, &b);
        }
        if tb >= 3.0 {
            break (&b, &a);
        }
        if Instant::now() > deadline {
            a.fail(format_args!(
                "no replica ticked 3 times within {TAKEOVER_TIMEOUT:?} (a {ta}, b {tb})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let idle = ticks(follower).await;
    if idle != 0.0 {
        follower.fail(format_args!(
            "both replicas ran the calendar: the follower published {idle} ticks"
        ));
    }

    leader.kill();
    let deadline = Instant::now() + TAKEOVER_TIMEOUT;
    while ticks(follower).await < 1.0 {
        if Instant::now() > deadline {
            follower.fail(format_args!(
                "the surviving replica did not take over the calendar within {TAKEOVER_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
