//! A redelivery the NATS server no longer counts as one: after nats-server is killed, the
//! consumer state it had not yet written is lost, so events the agent already handled and
//! acknowledged come back as first deliveries. The agent still fires each only once
//! (within `--dedup-window`), because it remembers what it finished by event, not by the
//! server's delivery count.

use std::time::Duration;

use integration_tests::{forwarding_agent, free_port, JetStreamProbe, NatsServer, Sink};
use serde_json::json;

const NAMESPACE: &str = "redelivery";
const SENSOR: &str = "forward";
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handled_event_delivered_again_as_new_fires_once() {
    let server = NatsServer::start();
    let sink = Sink::start().await;
    let port = free_port();
    // Limits retention keeps acknowledged messages on the stream, so the test can read
    // the handled one back.
    let agent = forwarding_agent(&server, NAMESPACE, SENSOR, port, &sink.url("/n"))
        .args(["--jetstream-retention", "limits"])
        .start()
        .await;
    let probe = JetStreamProbe::connect(&server, NAMESPACE).await;
    agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({"n": 1}))
        .await;
    agent.expect_request(&sink, TIMEOUT).await;
    probe
        .wait_settled(SENSOR, TIMEOUT)
        .await
        .unwrap_or_else(|err| agent.fail(err));

    probe
        .republish_as_new(1)
        .await
        .unwrap_or_else(|err| agent.fail(err));
    // Settled again: the second message was delivered and acknowledged, and a trigger it
    // fired would have reached the sink before the acknowledgement.
    probe
        .wait_consumer(SENSOR, "took the republished message", TIMEOUT, |info| {
            info.delivered.stream_sequence >= 2
                && info.num_pending == 0
                && info.num_ack_pending == 0
        })
        .await
        .unwrap_or_else(|err| agent.fail(err));
    assert_eq!(sink.count(), 1, "the handled event fired again");
}
