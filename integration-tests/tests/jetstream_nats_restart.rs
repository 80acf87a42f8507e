//! The JetStream bus across a NATS outage: while `nats-server` is down the webhook answers
//! 503 with `Retry-After` and the agent is not ready; once the server is back (same port,
//! same store) the load resumes, and every event answered 200, before or after, reaches
//! the sink.

use std::time::Duration;

use integration_tests::{
    forwarding_agent, free_port, Agent, JetStreamProbe, Load, NatsServer, TallySink,
};
use serde_json::json;
use tokio::time::Instant;

const NAMESPACE: &str = "outage";
const SENSOR: &str = "forward";
const EVENTS: u64 = 2_000;
const CLIENTS: usize = 4;
/// The contract: with NATS down, the webhook answers 503 "within a few seconds".
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(10);
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `/readyz` (every 20 ms, at most `timeout`) until its status is (or, with
/// `ready == false`, is not) 200.
async fn wait_readiness(agent: &Agent, ready: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while (agent.ops_status("/readyz").await == 200) != ready {
        if Instant::now() >= deadline {
            agent.fail(format_args!(
                "/readyz did not turn {} within {timeout:?}",
                if ready { "ready" } else { "unready" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_503_while_nats_is_down_and_nothing_accepted_is_lost() {
    let mut server = NatsServer::start();
    let sink = TallySink::start(usize::try_from(EVENTS).expect("fits")).await;
    let port = free_port();
    let agent = forwarding_agent(&server, NAMESPACE, SENSOR, port, &sink.url("/n"))
        .start()
        .await;
    let url = agent.webhook_url(port, "/push");
    let load = Load::start(std::slice::from_ref(&url), 0..EVENTS, CLIENTS);
    load.wait_accepted(usize::try_from(EVENTS / 4).expect("fits"), PHASE_TIMEOUT)
        .await
        .unwrap_or_else(|err| agent.fail(err));

    server.stop().await;
    let stopped = Instant::now();
    let accepted_before = load.accepted();
    // Nothing can acknowledge a publish now, so no reply may be 200; the first 503 must
    // come within a few seconds. The probe's body has no sequence number (the sink
    // counts it as unreadable should it ever be delivered).
    let retry_after = loop {
        let attempt = agent
            .http()
            .post(&url)
            .json(&json!({"probe": true}))
            .send()
            .await;
        match attempt {
            Ok(reply) if reply.status() == 503 => {
                break reply
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap_or_default().to_owned());
            }
            Ok(reply) if reply.status() == 200 => agent.fail(format_args!(
                "200 with nats-server down ({:?} after the stop): no publish can have been \
                 acknowledged",
                stopped.elapsed()
            )),
            Ok(_) | Err(_) => {}
        }
        if stopped.elapsed() > UNAVAILABLE_WITHIN {
            agent.fail(format_args!(
                "no 503 within {UNAVAILABLE_WITHIN:?} of the nats-server stop (last: {attempt:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let unavailable_after = stopped.elapsed();
    assert!(
        retry_after.is_some_and(|value| !value.is_empty()),
        "a 503 needs a Retry-After header"
    );
    wait_readiness(&agent, false, UNAVAILABLE_WITHIN).await;

    server.restart();
    wait_readiness(&agent, true, PHASE_TIMEOUT).await;
    let report = load.finish(PHASE_TIMEOUT).await;
    println!("load: {report:?}");
    println!(
        "503 after {unavailable_after:?} of outage; {accepted_before} events accepted before \
         the stop, {} after",
        report.accepted - accepted_before
    );
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
    let probe = JetStreamProbe::connect(&server, NAMESPACE).await;
    probe
        .wait_settled(SENSOR, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|err| agent.fail(err));
    println!(
        "{} sink requests, {} duplicates, {} retries after uncertain attempts",
        sink.requests(),
        sink.duplicates(),
        report.maybe_accepted_retries()
    );
}
