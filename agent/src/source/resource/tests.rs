//! Compilation of `spec.resource` events, and the event a change becomes.

use std::path::Path;

use kube::api::DynamicObject;
use serde_json::json;

use super::watch::{change_event, dropped_by, event_id, event_time};
use super::*;
use crate::compile::CompileContext;
use crate::manifest::{load_text, Document, ManifestError};
use crate::script::ScriptHost;
use crate::source::{compile_event_source, SourceSpec};

/// The compiled sources of one EventSource document (the source layer's part of a plan).
struct Plan {
    sources: Vec<SourceSpec>,
}

impl Plan {
    fn needs_cluster(&self) -> bool {
        self.sources.iter().any(SourceSpec::needs_cluster)
    }
}

fn plan_of(resource: &str) -> Result<Plan, Vec<ManifestError>> {
    let text = format!(
        "apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: k8s
spec:
  resource:
    pods:
{resource}"
    );
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    load_text(Path::new("es.yaml"), &text, &mut docs, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let host = ScriptHost::new(Default::default(), vec![]);
    let mut sources = Vec::new();
    for loaded in &docs {
        let Document::EventSource(es) = &loaded.doc else {
            continue;
        };
        let mut ctx = CompileContext {
            host: &host,
            origin: &loaded.origin,
            library_dirs: &[],
            errors: &mut errors,
        };
        sources.extend(compile_event_source(&mut ctx, &es.metadata.name, &es.spec));
    }
    if errors.is_empty() {
        Ok(Plan { sources })
    } else {
        Err(errors)
    }
}

fn errors_of(resource: &str) -> Vec<ManifestError> {
    match plan_of(resource) {
        Ok(_) => panic!("compiled, expected errors"),
        Err(e) => e,
    }
}

fn spec_of(resource: &str) -> crate::source::SourceSpec {
    let plan = plan_of(resource).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(plan.needs_cluster(), "a resource source needs the cluster");
    plan.sources[0].clone()
}

fn config_of(resource: &str) -> ResourceConfig {
    match spec_of(resource).kind {
        crate::source::SourceKind::Resource(c) => *c,
        other => panic!("not a resource source: {other:?}"),
    }
}

#[test]
fn argo_fields_compile() {
    let spec = spec_of(
        "      namespace: \"\"
      group: apps
      version: v1
      resource: deployments
      eventTypes: [UPDATE, ADD, ADD]
      filter:
        prefix: web-
        labels:
          - key: app
            operation: ==
            value: web
          - key: tier
            operation: in
            value: front,back
          - key: canary
            operation: '!'
        fields:
          - key: spec.template.spec.serviceAccountName
            operation: '!='
            value: ^default$
        createdBy: 2024-05-01T00:00:00Z
        afterStart: true
        expression: type == \"ADD\"
      metadata:
        Team: payments
",
    );
    let crate::source::SourceKind::Resource(c) = &spec.kind else {
        panic!("not a resource source")
    };
    assert_eq!(c.namespace, None);
    assert_eq!((c.group.as_str(), c.version.as_str()), ("apps", "v1"));
    assert_eq!(c.resource, "deployments");
    assert_eq!(
        c.event_types,
        vec![ResourceEventType::Add, ResourceEventType::Update]
    );
    assert!(!c.publishes(ResourceEventType::Delete));
    assert_eq!(
        c.label_selector.as_deref(),
        Some("app=web,tier in (front,back),!canary")
    );
    assert_eq!(c.fields.len(), 1);
    assert!(c.fields[0].negate);
    assert_eq!(
        c.created_by.map(|t| t.to_rfc3339()),
        Some("2024-05-01T00:00:00+00:00".into())
    );
    assert!(c.after_start);
    assert!(spec.filter().is_some());
}

#[test]
fn core_group_is_the_default() {
    let c = config_of("      version: v1\n      resource: pods\n      eventTypes: [DELETE]\n");
    assert_eq!(c.group, "");
    assert_eq!(c.label_selector, None);
}

#[test]
fn bad_event_type_value_is_located() {
    let errors = errors_of("      version: v1\n      resource: pods\n      eventTypes:\n        - ADD\n        - CREATE\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.field, "spec.resource.pods.eventTypes[1]");
    assert!(e.message.contains("unknown event type \"CREATE\""), "{e}");
    assert_eq!(e.position.line, 12, "{e}");
    assert!(e
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("ADD, UPDATE and DELETE"));
}

#[test]
fn missing_version_and_event_types_are_required() {
    let errors = errors_of("      resource: pods\n");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.resource.pods.version",
            "spec.resource.pods.eventTypes"
        ],
        "{errors:?}"
    );
    assert!(errors[0].message.contains("version is required"));
    assert!(errors[0].hint.as_deref().unwrap_or("").contains("v1"));
    let empty = errors_of("      version: v1\n      resource: pods\n      eventTypes: []\n");
    assert!(
        empty[0].message.contains("eventTypes is empty"),
        "{empty:?}"
    );
}

#[test]
fn cluster_field_is_rejected_with_a_hint() {
    let errors = errors_of(
        "      version: v1\n      resource: pods\n      eventTypes: [ADD]\n      cluster: other\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.resource.pods.cluster");
    assert_eq!(errors[0].position.line, 11);
    assert!(errors[0]
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("cluster the agent is connected to"));
}

#[test]
fn unknown_fields_name_file_line_and_path() {
    let errors = errors_of(
        "      version: v1\n      resource: pods\n      eventTypes: [ADD]\n      filter:\n        prefx: a\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.field, "spec.resource.pods.filter.prefx");
    assert_eq!(e.position.file, Path::new("es.yaml"));
    assert_eq!(e.position.line, 12);
}

#[test]
fn bad_values_are_each_reported() {
    let errors = errors_of(
        "      version: apps/v1
      resource: Deployment
      eventTypes: [ADD]
      filter:
        labels:
          - key: app
            operation: exists
            value: web
        fields:
          - key: metadata.name
            operation: in
            value: a
        createdBy: yesterday
",
    );
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.resource.pods.version",
            "spec.resource.pods.resource",
            "spec.resource.pods.filter.labels[0]",
            "spec.resource.pods.filter.fields[0]",
            "spec.resource.pods.filter.createdBy",
        ],
        "{errors:?}"
    );
}

#[test]
fn resource_is_now_a_supported_kind() {
    let (message, hint) = crate::manifest::hint_for_field("github", true).unwrap();
    assert!(message.contains("not supported"));
    assert!(hint.contains("resource"));
    assert!(crate::manifest::hint_for_field("resource", true).is_none());
}

fn pod(uid: &str, rv: &str, extra: serde_json::Value) -> DynamicObject {
    let mut o = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "team",
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": "2024-05-01T10:00:00Z"
        }
    });
    if let (Some(m), Some(e)) = (o["metadata"].as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    serde_json::from_value(o).unwrap()
}

#[test]
fn ids_are_stable_per_change_and_distinct_across_changes() {
    let add = event_id("es", "pods", "u1", "7", ResourceEventType::Add);
    assert_eq!(
        add,
        event_id("es", "pods", "u1", "7", ResourceEventType::Add)
    );
    assert_ne!(
        add,
        event_id("es", "pods", "u1", "7", ResourceEventType::Update)
    );
    assert_ne!(
        add,
        event_id("es", "pods", "u1", "8", ResourceEventType::Add)
    );
    assert_ne!(
        add,
        event_id("es", "other", "u1", "7", ResourceEventType::Add)
    );
}

#[test]
fn event_times_follow_argo() {
    let created = "2024-05-01T10:00:00Z";
    let o = pod(
        "u1",
        "7",
        json!({
            "managedFields": [
                {"manager": "kubectl", "operation": "Update", "time": "2024-05-02T08:00:00Z"},
                {"manager": "ssa", "operation": "Apply", "time": "2024-05-03T08:00:00Z"}
            ],
            "deletionTimestamp": "2024-05-04T00:00:00Z"
        }),
    );
    let at = |t| event_time(&o, t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(at(ResourceEventType::Add), created);
    // The newest *Update* entry counts, not server-side apply.
    assert_eq!(at(ResourceEventType::Update), "2024-05-02T08:00:00Z");
    assert_eq!(at(ResourceEventType::Delete), "2024-05-04T00:00:00Z");
    let plain = pod("u2", "1", json!({}));
    assert_eq!(
        event_time(&plain, ResourceEventType::Update)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        created
    );
}

fn labels() -> crate::telemetry::SourceTelemetry {
    crate::telemetry::SourceTelemetry::new(&crate::telemetry::Metrics::new(), "k8s", "pods")
}

#[test]
fn event_data_is_argos_resource_event_data() {
    let spec = spec_of(
        "      version: v1\n      resource: pods\n      eventTypes: [UPDATE]\n      metadata: {Team: payments}\n",
    );
    let crate::source::SourceKind::Resource(c) = &spec.kind else {
        panic!("not a resource source")
    };
    let mut metadata = spec.shared.metadata.clone();
    let old = pod("u1", "6", json!({}));
    let new = pod("u1", "7", json!({"labels": {"app": "web"}}));
    let at = event_time(&new, ResourceEventType::Update);
    let e = change_event(
        c,
        &metadata,
        &labels(),
        ResourceEventType::Update,
        &new,
        Some(&old),
        at,
    );
    assert_eq!(
        (e.source.as_str(), e.subject.as_str(), e.kind.as_str()),
        ("k8s", "pods", "resource")
    );
    assert_eq!(
        e.id,
        event_id("k8s", "pods", "u1", "7", ResourceEventType::Update)
    );
    assert_eq!(e.extensions["eventtype"], "UPDATE");
    assert_eq!(e.extensions["team"], "payments");
    assert_eq!(e.data["type"], "UPDATE");
    assert_eq!(e.data["body"]["metadata"]["labels"]["app"], "web");
    assert_eq!(e.data["body"]["kind"], "Pod");
    assert_eq!(e.data["oldBody"]["metadata"]["resourceVersion"], "6");
    assert_eq!(
        (&e.data["group"], &e.data["version"], &e.data["resource"]),
        (&json!(""), &json!("v1"), &json!("pods"))
    );
    assert_eq!(e.data["metadata"], json!({"Team": "payments"}));
    assert!(e.raw_is_data);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&e.raw).unwrap(),
        e.data
    );
    // ADD and DELETE have no previous body; without metadata the key is left out, as in Argo.
    metadata.clear();
    let added = change_event(
        c,
        &metadata,
        &labels(),
        ResourceEventType::Add,
        &new,
        None,
        at,
    );
    assert_eq!(added.data["oldBody"], serde_json::Value::Null);
    assert!(added.data.get("metadata").is_none());
}

#[test]
fn resource_filters_drop_changes_before_publishing() {
    let c = config_of(
        "      version: v1
      resource: pods
      eventTypes: [ADD]
      filter:
        prefix: web-
        createdBy: 2024-06-01T00:00:00Z
        afterStart: true
        fields:
          - key: metadata.namespace
            value: ^team$
",
    );
    let started = "2024-04-01T00:00:00Z".parse().unwrap();
    let o = pod("u1", "1", json!({}));
    let at = event_time(&o, ResourceEventType::Add);
    assert_eq!(dropped_by(&c, started, &o, at), None);
    // Created before the source started.
    let later = "2024-05-02T00:00:00Z".parse().unwrap();
    assert_eq!(dropped_by(&c, later, &o, at), Some("afterStart"));
    // Created after createdBy.
    let young = pod(
        "u2",
        "1",
        json!({"creationTimestamp": "2024-07-01T00:00:00Z"}),
    );
    let at_young = event_time(&young, ResourceEventType::Add);
    assert_eq!(dropped_by(&c, started, &young, at_young), Some("createdBy"));
    let other = pod("u3", "1", json!({"name": "db-1"}));
    assert_eq!(dropped_by(&c, started, &other, at), Some("name prefix"));
    let elsewhere = pod("u4", "1", json!({"namespace": "team-b"}));
    assert_eq!(dropped_by(&c, started, &elsewhere, at), Some("fields"));
}
