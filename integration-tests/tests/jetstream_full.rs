//! A full events stream (discard policy "new", the default): the webhook answers 503 with
//! `Retry-After` instead of dropping anything, and every event it did accept is delivered
//! once the sensor catches up.

use std::collections::BTreeSet;

use integration_tests::{
    forwarding_agent, free_port, JetStreamProbe, NatsServer, Sink, DELIVERY_TIMEOUT,
};
use serde_json::{json, Value};

const NAMESPACE: &str = "full";
const SENSOR: &str = "held";
/// Room for a handful of ~1 KB events.
const MAX_BYTES: &str = "6000";
/// Events offered: far more than the stream holds.
const OFFERED: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_new_events_and_keeps_the_accepted_ones() {
    let server = NatsServer::start();
    let sink = Sink::start().await;
    let port = free_port();
    let agent = forwarding_agent(&server, NAMESPACE, SENSOR, port, &sink.url("/held"))
        .args(["--jetstream-max-bytes", MAX_BYTES])
        .start()
        .await;
    let probe = JetStreamProbe::connect(&server, NAMESPACE).await;
    let url = agent.webhook_url(port, "/push");
    let client = reqwest::Client::new();
    let pad = "x".repeat(900);

    // The sink answers nothing yet: accepted events stay unacknowledged on the stream.
    sink.hold();
    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for n in 0..OFFERED {
        let response = client
            .post(&url)
            .json(&json!({"n": n, "pad": pad}))
            .send()
            .await
            .unwrap_or_else(|e| agent.fail(format_args!("POST {url}: {e}")));
        match response.status().as_u16() {
            200 => {
                accepted.insert(n);
            }
            503 => {
                if response.headers().get("retry-after").is_none() {
                    agent.fail("503 without Retry-After");
                }
                refused += 1;
            }
            other => agent.fail(format_args!("unexpected status {other}")),
        }
    }
    println!("{} accepted, {refused} refused", accepted.len());
    if refused == 0 || accepted.is_empty() {
        agent.fail(format_args!(
            "expected some events accepted and the rest refused once the stream was full \
             ({} accepted, {refused} refused)",
            accepted.len()
        ));
    }

    sink.release();
    if let Err(e) = probe.wait_settled(SENSOR, DELIVERY_TIMEOUT).await {
        agent.fail(e);
    }
    let mut delivered = BTreeSet::new();
    while let Some(request) = sink.next(std::time::Duration::from_millis(200)).await {
        let body: Value = request.json();
        if let Some(n) = body["data"]["body"]["n"].as_u64() {
            delivered.insert(n);
        }
    }
    assert_eq!(
        delivered, accepted,
        "every accepted event, and only those, must reach the sink"
    );
}
