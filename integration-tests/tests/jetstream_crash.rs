//! Crash test of the JetStream bus: 10,000 webhook events while the agent is killed with
//! SIGKILL twice and restarted; every accepted event reaches the HTTP sink, and the
//! duplicates stay within what was in flight at the kills.

use std::time::Duration;

use integration_tests::{
    forward_sensor, forwarding_agent, free_port, webhook_source, Agent, JetStreamProbe, Load,
    NatsServer, TallySink,
};
use serde_json::json;

const NAMESPACE: &str = "crash";
/// The sensor, and so the durable consumer, under test.
const SENSOR: &str = "forward";
const EVENTS: u64 = 10_000;
/// Concurrent clients of the load.
const CLIENTS: usize = 8;
/// The agent is killed once this many tenths of the events were accepted, at each step.
const KILL_AT_TENTHS: [u64; 2] = [3, 6];
/// How long one load phase (up to the next kill, or to the end) may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long redeliveries (one ack wait after the last restart) may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the events stream's consumer held when the agent was killed.
#[derive(Debug)]
struct AtKill {
    /// Delivered but not acknowledged: the events a restarted agent gets again.
    ack_pending: usize,
    /// Not delivered yet.
    pending: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_agent_loses_no_accepted_event_and_duplicates_stay_within_the_in_flight() {
    let server = NatsServer::start();
    let sink = TallySink::start(usize::try_from(EVENTS).expect("fits")).await;
    let port = free_port();
    let agent = forwarding_agent(&server, NAMESPACE, SENSOR, port, &sink.url("/n"))
        .start()
        .await;
    let probe = JetStreamProbe::connect(&server, NAMESPACE).await;
    let load = Load::start(&[agent.webhook_url(port, "/push")], 0..EVENTS, CLIENTS);

    let mut kills = Vec::new();
    for tenths in KILL_AT_TENTHS {
        let accepted = usize::try_from(EVENTS * tenths / 10).expect("fits");
        load.wait_accepted(accepted, PHASE_TIMEOUT)
            .await
            .unwrap_or_else(|err| agent.fail(err));
        agent.kill();
        // The process is reaped: no acknowledgement can come from it any more, so what the
        // consumer holds as unacknowledged now is exactly what will be delivered again.
        let info = probe
            .consumer(SENSOR)
            .await
            .unwrap_or_else(|err| agent.fail(err));
        kills.push(AtKill {
            ack_pending: info.num_ack_pending,
            pending: info.num_pending,
        });
        agent.restart().await;
    }

    let report = load.finish(PHASE_TIMEOUT).await;
    println!("load: {report:?}");
    println!("consumer at the kills: {kills:?}");
    if !report.missing.is_empty() || report.unexpected > 0 {
        agent.fail(format_args!(
            "the load did not complete: {} events never accepted, unexpected replies {:?}",
            report.missing.len(),
            report.unexpected_samples
        ));
    }
    sink.wait_for_all(0..EVENTS, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|err| agent.fail(err));
    // Every redelivery has happened once the consumer has nothing pending or unacked.
    probe
        .wait_settled(SENSOR, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|err| agent.fail(err));

    // A duplicate at the sink has one of two causes, each counted here:
    // - the client retried an event whose earlier attempt the agent may have accepted
    //   (reset, timeout, error status: everything but a refused connection); the retry is
    //   a new event with a new id, so at most one extra delivery per such attempt;
    // - the agent was killed after the trigger fired but before JetStream had its ack; the
    //   event was then unacknowledged at the kill, and is redelivered once per kill.
    // Deduplication by event id does not survive the kill, so nothing else removes them,
    // and in the normal case (no crash, no uncertain retry) no duplicate arises at all.
    let in_flight: usize = kills.iter().map(|kill| kill.ack_pending).sum();
    let bound = report.maybe_accepted_retries() + in_flight;
    let duplicates = sink.duplicates();
    println!(
        "{EVENTS} events, {} sink requests, {duplicates} duplicates; bound {bound} = \
         {} client retries after uncertain attempts + {in_flight} unacknowledged at the kills",
        sink.requests(),
        report.maybe_accepted_retries()
    );
    assert_eq!(
        sink.unreadable(),
        0,
        "sink requests without a sequence number"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates exceed the in-flight bound {bound}"
    );
    // The kills must have hit work in progress: requests the agent was answering, or
    // events its sensor had not acknowledged or not received yet.
    assert!(
        report.uncertain > 0
            || kills
                .iter()
                .any(|kill| kill.ack_pending > 0 || kill.pending > 0),
        "no kill interrupted any work ({kills:?}, {report:?}): the test proved nothing"
    );
    assert_eq!(
        agent
            .metric(
                "triggerd_trigger_executions_total",
                &[("sensor", SENSOR), ("outcome", "failed")]
            )
            .await
            .unwrap_or(0.0),
        0.0,
        "no trigger may fail against a healthy sink"
    );
}

/// The harness itself: a killed agent frees its ports, and a restarted one listens on
/// the same webhook and ops ports with the same manifests (embedded bus, no NATS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_restarts_a_killed_agent_on_the_same_ports() {
    let sink = integration_tests::Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("hooks", "push", port, "/push"),
        &forward_sensor(SENSOR, "hooks", "push", &sink.url("/n")),
    ])
    .await;
    let url = agent.webhook_url(port, "/push");
    let ops = agent.ops_url("/readyz");
    let first_pid = agent.pid();

    agent.kill();
    assert!(agent.try_exit_status().is_some(), "kill reaps the process");
    assert!(
        agent
            .http()
            .post(&url)
            .json(&json!({}))
            .send()
            .await
            .is_err(),
        "the killed agent's webhook port still answers"
    );
    agent.restart().await;
    assert_ne!(agent.pid(), first_pid);
    assert_eq!(agent.ops_url("/readyz"), ops, "same ops port");
    let id = agent.post_event(&url, &json!({"n": 1})).await;
    let request = agent
        .expect_request(&sink, integration_tests::DELIVERY_TIMEOUT)
        .await;
    assert_eq!(request.json()["id"], json!(id));
    assert!(
        agent.stderr().contains("=== test harness: restart ==="),
        "the output of both runs is kept"
    );
}
