//! Calendar source: interval ticks fire triggers with the tick's time as data.

use integration_tests::{Agent, Sink, DELIVERY_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_ticks_fire_the_trigger() {
    let sink = Sink::start().await;
    let manifests = format!(
        r#"apiVersion: argoproj.io/v1alpha1
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
  name: ticker
spec:
  dependencies:
    - name: tick
      eventSourceName: clock
      eventName: tick
  triggers:
    - template:
        name: forward
        http:
          url: {}
          method: POST
"#,
        sink.url("/tick")
    );
    let agent = Agent::start(&[&manifests]).await;

    let first = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_eq!(first["source"], "clock", "{first}");
    assert_eq!(first["subject"], "tick", "{first}");
    assert_eq!(first["type"], "calendar", "{first}");
    assert!(
        first["data"]["eventTime"]
            .as_str()
            .is_some_and(|time| !time.is_empty()),
        "calendar data carries eventTime: {first}"
    );
    // It keeps ticking: a second, distinct event.
    let second = agent.expect_request(&sink, DELIVERY_TIMEOUT).await.json();
    assert_ne!(first["id"], second["id"], "each tick is a new event");
    assert_ne!(
        first["data"]["eventTime"], second["data"]["eventTime"],
        "each tick has its own time"
    );
}
