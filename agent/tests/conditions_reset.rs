//! `conditionsReset.byTime` forgets dependencies that arrived without completing the
//! condition, on a cron schedule in a time zone. Runs on tokio's paused clock with a
//! virtual wall clock, so an hour passes instantly.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triggerd::bus::BusBuilder;
use triggerd::clock::Clock;
use triggerd::delivery::DeliveryContext;
use triggerd::event::Event;
use triggerd::manifest::load_text;
use triggerd::plan::build_plan;
use triggerd::script::{Limits, ScriptHost};
use triggerd::sensor::SensorContext;
use triggerd::telemetry::{trigger_labels, DependencyLabels, Metrics, OutcomeLabels};

const SENSOR: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: pair
spec:
  dependencies:
    - {name: a, eventSourceName: s, eventName: a}
    - {name: b, eventSourceName: s, eventName: b}
  triggers:
    - template:
        name: both
        conditions: "a && b"
        conditionsReset:
          - byTime: {cron: "0 * * * *", timezone: Europe/Berlin}
        log: {}
"#;

fn event(name: &str) -> Event {
    Event::new("s", name, "test", json!({}), Bytes::new())
}

/// Lets the sensor task run until `done` holds (bounded; time does not move meanwhile).
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the sensor did not get there");
}

#[tokio::test(start_paused = true)]
async fn partial_state_is_forgotten_at_the_reset_time() {
    let (mut docs, mut errors) = (Vec::new(), Vec::new());
    load_text(Path::new("pair.yaml"), SENSOR, &mut docs, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let host = Arc::new(ScriptHost::new(Limits::default(), vec![]));
    let plan = build_plan(&docs, &host, &[]).expect("valid sensor");
    let sensor = plan.sensors[0].clone();

    let metrics = Arc::new(Metrics::new());
    let mut bus = BusBuilder::new(16);
    let queue = bus.subscribe(sensor.subscriptions());
    let bus = bus.build();
    let tasks = TaskTracker::new();
    let ctx = SensorContext {
        delivery: DeliveryContext {
            host,
            metrics: metrics.clone(),
            executor: triggerd::delivery::Executor::Live,
        },
        max_inflight: 8,
        tasks: tasks.clone(),
        abort: CancellationToken::new(),
        // 10:30 in Berlin: the next reset is at 11:00 Berlin time.
        clock: Clock::starting_at(Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap()),
        durable: None,
    };
    let running = tokio::spawn(sensor.run(ctx, queue));
    let fired = {
        let metrics = metrics.clone();
        move || {
            metrics
                .trigger_executions
                .get_or_create(&OutcomeLabels {
                    sensor: "pair".into(),
                    trigger: "both".into(),
                    outcome: "success".into(),
                })
                .get()
        }
    };

    let accepted = |dep: &str| {
        metrics
            .events_accepted
            .get_or_create(&DependencyLabels {
                sensor: "pair".into(),
                dependency: dep.into(),
            })
            .get()
    };
    let resets = || {
        metrics
            .condition_resets
            .get_or_create(&trigger_labels("pair", "both"))
            .get()
    };

    bus.publish(event("a")).await.unwrap();
    settle(|| accepted("a") == 1).await;
    // Past 11:00 Berlin time: `a` is forgotten.
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    settle(|| resets() == 1).await;
    // So `b` alone does not complete the condition.
    bus.publish(event("b")).await.unwrap();
    settle(|| accepted("b") == 1).await;
    assert_eq!(fired(), 0, "a was reset before b arrived");
    // A fresh `a` completes it with the remembered `b`.
    bus.publish(event("a")).await.unwrap();
    settle(|| fired() == 1).await;

    drop(bus);
    running.await.unwrap();
    tasks.close();
    tasks.wait().await;
}
