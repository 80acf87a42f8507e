//! A trigger that runs longer than the JetStream ack wait: the agent keeps the event
//! "in progress", so it is not delivered again while the trigger still runs, and it is
//! acknowledged once the trigger succeeded.

use std::time::Duration;

use integration_tests::{
    forwarding_agent, free_port, JetStreamProbe, NatsServer, Sink, DELIVERY_TIMEOUT,
};
use serde_json::json;

const NAMESPACE: &str = "progress";
const SENSOR: &str = "slow";
/// Longer than two ack waits (2 s, see `jetstream_bus_args`): without in-progress
/// acknowledgements the event would be delivered again, and fire again, within it.
const HELD_FOR: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_longer_than_the_ack_wait_fires_once() {
    let server = NatsServer::start();
    let sink = Sink::start().await;
    let port = free_port();
    let agent = forwarding_agent(&server, NAMESPACE, SENSOR, port, &sink.url("/slow"))
        .start()
        .await;
    let probe = JetStreamProbe::connect(&server, NAMESPACE).await;

    sink.hold();
    agent
        .post_event(&agent.webhook_url(port, "/push"), &json!({"n": 1}))
        .await;
    if sink.next(DELIVERY_TIMEOUT).await.is_none() {
        agent.fail("the trigger never called the sink");
    }
    // The trigger is now waiting on the held sink; a redelivery would call it again.
    sink.expect_none(HELD_FOR).await;
    let info = probe
        .consumer(SENSOR)
        .await
        .unwrap_or_else(|e| agent.fail(e));
    if info.num_redelivered != 0 || info.num_ack_pending != 1 {
        agent.fail(format_args!(
            "while the trigger runs the event must stay delivered once and unacknowledged: \
             {} redelivered, {} awaiting acknowledgement",
            info.num_redelivered, info.num_ack_pending
        ));
    }

    sink.release();
    if let Err(e) = probe.wait_settled(SENSOR, DELIVERY_TIMEOUT).await {
        agent.fail(e);
    }
    assert_eq!(sink.count(), 1, "the slow trigger fired more than once");
}
