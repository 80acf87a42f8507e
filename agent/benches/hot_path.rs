//! Micro-benchmarks of the per-event hot path on a 1 KB GitHub-push-like event:
//! JSON → Rhai value, a data filter, a script filter, parameters + payload, a policy.
//! Run: `cargo bench -p triggerd --bench hot_path`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use triggerd::compile::compile_standalone;
use triggerd::event::Event;
use triggerd::event::FiredEvents;
use triggerd::manifest::{load_text, Filters, Policy};
use triggerd::plan::build_plan;
use triggerd::policy::CompiledPolicy;
use triggerd::script::{to_dynamic, Limits, ScriptHost};
use triggerd::sensor::{CompiledFilters, Logic};
use triggerd::trigger::{HttpReply, Reply, Response};

/// A GitHub push webhook event of about 1 KB, as the webhook source builds it.
fn push_event() -> Event {
    let body = json!({
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
        "created": false, "deleted": false, "forced": false,
        "repository": {"id": 186853002, "name": "triggerd", "full_name": "example/triggerd",
            "private": false, "owner": {"login": "example", "id": 21031067}, "default_branch": "main"},
        "pusher": {"name": "octocat", "email": "octocat@example.com"},
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
        "head_commit": {"id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5", "message": "Fix the build",
            "timestamp": "2026-11-22T10:00:00Z", "author": {"name": "Octo Cat", "email": "octocat@example.com"},
            "added": [], "removed": [], "modified": ["README.md", "agent/src/lib.rs"]},
        "commits": [{"id": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5", "message": "Fix the build", "distinct": true},
                    {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Add tests", "distinct": true}]
    });
    let data = json!({"header": {"Content-Type": ["application/json"], "X-Github-Event": ["push"],
        "User-Agent": ["GitHub-Hookshot/abc"]}, "body": body});
    let raw = Bytes::from(body.to_string());
    assert!(
        data.to_string().len() > 1000,
        "the event should be about 1 KB"
    );
    Event::new("github", "push", "webhook", data, raw)
}

const SENSOR: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: deploy}
spec:
  dependencies:
    - {name: push, eventSourceName: github, eventName: push}
  triggers:
    - template:
        name: deploy
        http:
          url: http://127.0.0.1:9/deploy
          payload:
            - src: {dependencyName: push, dataKey: body.repository.full_name}
              dest: repository
            - src: {dependencyName: push, dataKey: body.after}
              dest: revision
            - src: {dependencyName: push, contextKey: id}
              dest: eventId
            - src: {dependencyName: push, script: 'event.body.commits.len()'}
              dest: commits
"#;

fn filters(host: &ScriptHost, yaml: &str) -> CompiledFilters {
    compile_standalone(host, &[], yaml, |ctx, f: &Filters| {
        Some(CompiledFilters::compile(ctx, "filters", f, Logic::And))
    })
    .expect("filters compile")
}

fn hot_path(c: &mut Criterion) {
    let host = ScriptHost::new(Limits::default(), vec![]);
    let event = push_event();

    c.bench_function("json_to_rhai_value", |b| {
        b.iter(|| to_dynamic(black_box(&event.data)))
    });

    let data = filters(
        &host,
        "data:\n  - {path: body.ref, type: string, value: ['^refs/heads/(main|release)$']}\n  - {path: body.deleted, type: bool, value: ['false']}\n",
    );
    c.bench_function("data_filter", |b| {
        b.iter(|| assert!(data.evaluate(&host, Some(black_box(&event)), None).pass))
    });

    let script = filters(
        &host,
        "script: 'event.body.ref == \"refs/heads/main\" && !event.body.deleted'\n",
    );
    let ctx = to_dynamic(&event.context_json());
    c.bench_function("script_filter", |b| {
        b.iter(|| {
            assert!(
                script
                    .evaluate(&host, Some(black_box(&event)), Some(ctx.clone()))
                    .pass
            )
        })
    });

    let (mut docs, mut errors) = (Vec::new(), Vec::new());
    load_text(Path::new("bench.yaml"), SENSOR, &mut docs, &mut errors);
    assert!(errors.is_empty());
    let plan = build_plan(&docs, &host, &[]).expect("sensor compiles");
    let delivery = plan.sensors[0].triggers[0].delivery.clone();
    let shared = Arc::new(event.clone());
    c.bench_function("parameters_and_payload", |b| {
        b.iter(|| {
            let fired = FiredEvents::new(BTreeMap::from([("push".to_owned(), shared.clone())]));
            delivery
                .trigger
                .build_payload(&host, black_box(&fired), None)
                .expect("payload")
        })
    });

    let policy = compile_standalone(
        &host,
        &[],
        "script: 'if response.status >= 200 && response.status < 300 && response.body.ok { \"success\" } else { \"retry\" }'\n",
        |ctx, p: &Policy| CompiledPolicy::compile(ctx, "policy", Some(p)),
    )
    .expect("policy compiles");
    let response = Response::replied(
        Reply::new(HttpReply {
            status: 201,
            body: json!({"ok": true, "id": 42}),
            ..HttpReply::default()
        }),
        std::time::Duration::ZERO,
    );
    let events = FiredEvents::new(BTreeMap::from([("push".to_owned(), shared)]));
    c.bench_function("policy_script", |b| {
        b.iter(|| {
            policy
                .judge(&host, black_box(&response), 1, 3, &events)
                .expect("judged")
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
