//! MQTT source and trigger against a real Mosquitto (one per test, on a free port, with
//! persistence): Argo's data shape for JSON and text messages, the EventSource filter, QoS 1
//! at least once across an agent SIGKILL, reconnection after a broker restart, credentials
//! from secrets, a full bus (messages wait at the broker, none lost), and the trigger's
//! confirmed publish, policy and dead letter.

use std::time::Duration;

use integration_tests::{
    collect_numbers, forward_sensor, free_port, run_failing_to_start, webhook_source, Agent,
    Mosquitto, Sink, DELIVERY_TIMEOUT,
};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};

const USER: &str = "plant";
const PASSWORD: &str = "m0squ1tt0-pw";

/// EventSource `plant` with one mqtt event `readings`; `extra` is appended to its fields.
fn mqtt_source(url: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: plant
spec:
  mqtt:
    readings:
      url: {url}
      topic: "{topic}"
      jsonBody: true
      connectionBackoff: {{duration: 50ms, steps: 3}}
{extra}"#
    )
}

fn json_payloads(numbers: impl IntoIterator<Item = u64>) -> Vec<Vec<u8>> {
    numbers
        .into_iter()
        .map(|n| json!({"n": n}).to_string().into_bytes())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_text_messages_arrive_in_argo_shape_and_the_filter_drops() {
    let broker = Mosquitto::start().await;
    let readings = Sink::start().await;
    let notes = Sink::start().await;
    let source = format!(
        "{}      metadata:\n        site: north\n      filter:\n        expression: \"body.celsius > 20\"\n    notes:\n      url: {}\n      topic: plant/notes\n      qos: 0\n",
        mqtt_source(&broker.url(), "plant/+/temp", ""),
        broker.url()
    );
    let agent = Agent::start(&[
        &source,
        &forward_sensor("fw-readings", "plant", "readings", &readings.url("/r")),
        &forward_sensor("fw-notes", "plant", "notes", &notes.url("/n")),
    ])
    .await;
    // Ready means subscribed. The cold reading goes first: had the filter been ignored it
    // would arrive first.
    broker
        .publish(
            None,
            "plant/boiler/temp",
            QoS::AtLeastOnce,
            &[
                br#"{"celsius": 10}"#.to_vec(),
                br#"{"celsius": 25}"#.to_vec(),
            ],
        )
        .await;
    broker
        .publish(
            None,
            "plant/notes",
            QoS::AtMostOnce,
            &[b"valve 7 is sticky".to_vec()],
        )
        .await;

    let event = agent
        .expect_request(&readings, DELIVERY_TIMEOUT)
        .await
        .json();
    assert_eq!(event["type"], "mqtt", "{event}");
    assert_eq!(event["source"], "plant");
    assert_eq!(event["subject"], "readings");
    let data = &event["data"];
    assert_eq!(data["topic"], "plant/boiler/temp", "{event}");
    assert_eq!(data["body"], json!({"celsius": 25}), "{event}");
    assert_eq!(data["metadata"], json!({"site": "north"}), "{event}");
    assert!(data["messageId"].is_u64(), "{event}");
    let note = agent.expect_request(&notes, DELIVERY_TIMEOUT).await.json();
    assert_eq!(note["data"]["topic"], "plant/notes", "{note}");
    assert_eq!(note["data"]["body"], "valve 7 is sticky", "{note}");
    assert_ne!(
        note["id"], event["id"],
        "every message has its own event id"
    );
    agent
        .wait_for_metric(
            "triggerd_source_events_filtered_total",
            &[("event_source", "plant"), ("event_name", "readings")],
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
    readings.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_messages_published_while_the_agent_is_down_arrive_after_a_restart() {
    let broker = Mosquitto::start().await;
    let sink = Sink::start().await;
    let agent = Agent::start(&[
        &mqtt_source(&broker.url(), "orders/#", "      clientId: plant-agent\n"),
        &forward_sensor("fw", "plant", "readings", &sink.url("/o")),
    ])
    .await;
    broker
        .publish(None, "orders/eu", QoS::AtLeastOnce, &json_payloads(1..=5))
        .await;
    collect_numbers(&agent, &sink, &(1..=5).collect()).await;

    agent.kill();
    // Nobody is connected: the broker queues these in the session of `plant-agent`.
    broker
        .publish(None, "orders/us", QoS::AtLeastOnce, &json_payloads(6..=40))
        .await;
    agent.restart().await;
    let received = collect_numbers(&agent, &sink, &(6..=40).collect()).await;
    assert!(received >= 35, "{received}");
    // Packet ids are reused across sessions: nothing was dropped as a duplicate.
    assert_eq!(
        agent
            .metric(
                "triggerd_events_deduplicated_total",
                &[("event_source", "plant"), ("event_name", "readings")]
            )
            .await
            .unwrap_or(0.0),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reconnects_and_resubscribes_after_a_broker_restart() {
    let mut broker = Mosquitto::start().await;
    let sink = Sink::start().await;
    // A clean session: after the restart the broker knows no subscription, so a message
    // only arrives if the agent subscribed again.
    let agent = Agent::start(&[
        &mqtt_source(&broker.url(), "line/+", "      cleanSession: true\n"),
        &forward_sensor("fw", "plant", "readings", &sink.url("/l")),
    ])
    .await;
    broker
        .publish(None, "line/1", QoS::AtLeastOnce, &json_payloads([1]))
        .await;
    collect_numbers(&agent, &sink, &[1].into()).await;

    broker.stop().await;
    broker.restart().await;
    agent
        .wait_for_stderr("the source to reconnect", DELIVERY_TIMEOUT * 2, |s| {
            s.contains("MQTT source reconnected")
        })
        .await;
    // The subscription is made right after the connection; retry the publish until the
    // new subscription takes it (each round is one confirmed publish).
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        broker
            .publish(None, "line/2", QoS::AtLeastOnce, &json_payloads([2]))
            .await;
        if let Some(r) = sink.next(Duration::from_millis(500)).await {
            assert_eq!(r.json()["data"]["body"]["n"], 2, "{}", r.text());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message after the broker restart: {}",
            agent.stderr_tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_secrets_and_a_wrong_password_fails_start_up() {
    let broker = Mosquitto::start_with_password(USER, PASSWORD).await;
    let sink = Sink::start().await;
    let auth = "      auth:\n        username: {name: mq, key: user}\n        password: {name: mq, key: password}\n";
    let agent = Agent::builder()
        .manifest(mqtt_source(&broker.url(), "secure/#", auth))
        .manifest(forward_sensor("fw", "plant", "readings", &sink.url("/s")))
        .secret("mq", "user", USER)
        .secret("mq", "password", PASSWORD)
        .start()
        .await;
    broker
        .publish(
            Some((USER, PASSWORD)),
            "secure/door",
            QoS::AtLeastOnce,
            &json_payloads([7]),
        )
        .await;
    collect_numbers(&agent, &sink, &[7].into()).await;
    assert!(
        !agent.stderr().contains(PASSWORD),
        "the password reached the log"
    );

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let auth_files = format!(
        "      auth:\n        username: {{file: {}}}\n        password: {{file: {}}}\n",
        dir.path().join("user").display(),
        wrong.display()
    );
    let manifest = mqtt_source(&broker.url(), "secure/#", &auth_files);
    let out = run_failing_to_start(&manifest, &[]);
    // The user file is missing: the start names the field.
    assert!(
        out.stderr
            .contains("EventSource plant, mqtt event readings")
            && out.stderr.contains("auth.username"),
        "{out}"
    );
    std::fs::write(dir.path().join("user"), USER).unwrap();
    let out = run_failing_to_start(&manifest, &[]);
    assert!(
        out.stderr
            .contains("EventSource plant, mqtt event readings")
            && out.stderr.contains("auth: the broker")
            && out.stderr.contains("refused"),
        "{out}"
    );
    assert!(!out.stderr.contains("not-the-password"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_start_up_naming_the_event() {
    let out = run_failing_to_start(
        &mqtt_source(&format!("tcp://127.0.0.1:{}", free_port()), "a/b", ""),
        &[],
    );
    assert!(
        out.stderr
            .contains("EventSource plant, mqtt event readings")
            && out.stderr.contains("after 3 attempt(s)"),
        "{out}"
    );
}

/// Sensor `valves`: a webhook `ops/command` publishes `{valve, open}` on
/// `plant/valve/<valve>` with `qos`, judged by `policy`, dead letters to `dlq_url`.
fn valve_sensor(url: &str, qos: u8, policy: &str, dlq_url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: valves
spec:
  dependencies:
    - name: command
      eventSourceName: ops
      eventName: command
  triggers:
    - template:
        name: actuate
        mqtt:
          url: {url}
          topic: plant/valve/unknown
          qos: {qos}
          retain: true
          parameters:
            - src:
                dependencyName: command
                script: '`plant/valve/${{event.body.valve}}`'
              dest: topic
          payload:
            - src: {{dependencyName: command, dataKey: body.valve}}
              dest: valve
            - src: {{dependencyName: command, dataKey: body.open}}
              dest: open
      retryStrategy: {{steps: 3, duration: 10ms}}
      policy:
        script: '{policy}'
      dlqTrigger:
        template:
          name: actuate-dlq
          http:
            url: {dlq_url}
"#
    )
}

fn labels(outcome: &'static str) -> [(&'static str, &'static str); 3] {
    [
        ("sensor", "valves"),
        ("trigger", "actuate"),
        ("outcome", outcome),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_publishes_confirmed_with_retain_and_the_policy_sees_topic_and_qos() {
    let broker = Mosquitto::start().await;
    let mut live = broker.subscribe("plant/valve/+").await;
    let dlq = Sink::start().await;
    let port = free_port();
    for qos in [1u8, 2] {
        let agent = Agent::start(&[
            &webhook_source("ops", "command", port, "/command"),
            &valve_sensor(
                &broker.url(),
                qos,
                &format!(
                    r#"if "error" in response {{ "fail" }} else if response.qos == {qos} && response.topic.starts_with("plant/valve/") {{ "success" }} else {{ "fail" }}"#
                ),
                &dlq.url("/dlq"),
            ),
        ])
        .await;
        let valve = format!("v{qos}");
        agent
            .post_event(
                &agent.webhook_url(port, "/command"),
                &json!({"valve": valve, "open": "yes"}),
            )
            .await;
        let (topic, payload, _) = live
            .next(DELIVERY_TIMEOUT)
            .await
            .unwrap_or_else(|| agent.fail("no message reached the subscriber"));
        assert_eq!(topic, format!("plant/valve/{valve}"));
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(payload, json!({"valve": valve, "open": "yes"}));
        agent
            .wait_for_metric(
                "triggerd_trigger_executions_total",
                &labels("success"),
                1.0,
                DELIVERY_TIMEOUT,
            )
            .await;
        agent.terminate();
        assert!(agent.wait_exit(DELIVERY_TIMEOUT).await.success());
    }
    // `retain: true`: a subscriber that comes later gets the last message as retained.
    let mut late = broker.subscribe("plant/valve/v2").await;
    let (_, payload, retain) = late
        .next(DELIVERY_TIMEOUT)
        .await
        .expect("the retained message");
    assert!(retain, "the message was not retained");
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap()["valve"],
        "v2"
    );
    dlq.expect_none(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_retried_then_dead_lettered() {
    let dlq = Sink::start().await;
    let port = free_port();
    let agent = Agent::start(&[
        &webhook_source("ops", "command", port, "/command"),
        &valve_sensor(
            &format!("tcp://127.0.0.1:{}", free_port()),
            1,
            r#"if "error" in response { "retry" } else { "success" }"#,
            &dlq.url("/dlq"),
        ),
    ])
    .await;
    agent
        .post_event(
            &agent.webhook_url(port, "/command"),
            &json!({"valve": "v9", "open": "no"}),
        )
        .await;
    let dead = agent.expect_request(&dlq, DELIVERY_TIMEOUT).await.json();
    assert_eq!(dead["trigger"], "actuate", "{dead}");
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot connect"),
        "{dead}"
    );
    agent
        .wait_for_metric(
            "triggerd_trigger_executions_total",
            &labels("failed"),
            1.0,
            DELIVERY_TIMEOUT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_taken_but_not_on_the_bus_survive_an_agent_sigkill() {
    let broker = Mosquitto::start().await;
    let sink = Sink::start().await;
    // The sink answers nothing, so the sensor cannot finish its first event; with one event
    // of room on the bus and one execution in flight the source holds the messages it was
    // sent (up to the receive maximum) without acknowledging them. Killed then, the agent
    // must lose none: the broker sends them again to the restarted session.
    sink.hold();
    let agent = Agent::builder()
        .manifest(mqtt_source(&broker.url(), "orders/#", ""))
        .manifest(forward_sensor("fw", "plant", "readings", &sink.url("/o")))
        .args(["--bus-capacity", "1", "--max-inflight", "1"])
        .start()
        .await;
    broker
        .publish(None, "orders/eu", QoS::AtLeastOnce, &json_payloads(1..=200))
        .await;
    let first = sink
        .next(DELIVERY_TIMEOUT)
        .await
        .unwrap_or_else(|| agent.fail("the first message never reached the sink"));
    assert_eq!(first.json()["data"]["body"]["n"], 1, "{}", first.text());
    agent.kill();
    sink.release();
    agent.restart().await;
    // Messages 1 (at the held sink) and 2 (queued on the bus) were accepted by the embedded
    // bus, which keeps nothing across a crash (the JetStream bus does). Every later one was
    // only taken from the broker, not acknowledged, and must arrive after the restart.
    collect_numbers(&agent, &sink, &(3..=200).collect()).await;
}
