//! The validation pass: turns loaded manifests into runnable sources and sensors, compiling
//! every script and collecting every error with its position.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::compile::CompileContext;
use crate::manifest::{Document, Loaded, ManifestError, Origin};
use crate::script::ScriptHost;
use crate::sensor::{compile_sensor, CompiledSensor};
use crate::source::{compile_event_source, SourceSpec};

/// Everything needed to run: compiled sensors and source specs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Event sources, one entry per event.
    pub sources: Vec<SourceSpec>,
    /// Sensors with compiled scripts.
    pub sensors: Vec<Arc<CompiledSensor>>,
    /// Problems that do not stop the agent (e.g. a dependency no loaded source produces).
    pub warnings: Vec<ManifestError>,
}

impl Plan {
    /// Whether any trigger or source talks to the Kubernetes API.
    pub fn needs_cluster(&self) -> bool {
        self.sources.iter().any(SourceSpec::needs_cluster)
            || self
                .sensors
                .iter()
                .any(|s| s.triggers.iter().any(|t| t.delivery.needs_cluster()))
    }
}

/// Compiles every document; returns the plan, or every error found.
pub fn build_plan(
    docs: &[Loaded],
    host: &ScriptHost,
    library_dirs: &[PathBuf],
) -> Result<Plan, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let mut sources = Vec::new();
    let mut sensors = Vec::new();
    let mut names: BTreeMap<(&str, &str), &Origin> = BTreeMap::new();
    for loaded in docs {
        let (kind, name) = match &loaded.doc {
            Document::Sensor(s) => ("Sensor", s.metadata.name.as_str()),
            Document::EventSource(s) => ("EventSource", s.metadata.name.as_str()),
        };
        if let Some(first) = names.insert((kind, name), &loaded.origin) {
            errors.push(
                loaded
                    .origin
                    .error(
                        None,
                        "metadata.name",
                        format!("duplicate {kind} name {name:?}"),
                    )
                    .with_hint(format!(
                        "first defined at {}:{}",
                        first.file.display(),
                        first.line_offset + 1
                    )),
            );
        }
        let mut ctx = CompileContext {
            host,
            origin: &loaded.origin,
            library_dirs,
            errors: &mut errors,
        };
        match &loaded.doc {
            Document::Sensor(s) => {
                if let Some(sensor) =
                    compile_sensor(&mut ctx, &s.metadata.name, &s.spec, &loaded.json)
                {
                    sensors.push(Arc::new(sensor));
                }
            }
            Document::EventSource(es) => {
                sources.extend(compile_event_source(&mut ctx, &es.metadata.name, &es.spec))
            }
        }
    }
    check_webhook_routes(docs, &sources, &mut errors);
    let mut warnings = unproduced_dependencies(docs, &sources);
    warnings.extend(at_most_once_consumers(docs));
    if errors.is_empty() {
        Ok(Plan {
            sources,
            sensors,
            warnings,
        })
    } else {
        Err(errors)
    }
}

/// Dependencies on events that no loaded EventSource produces: they would never fire.
fn unproduced_dependencies(docs: &[Loaded], sources: &[SourceSpec]) -> Vec<ManifestError> {
    let produced: HashSet<(&str, &str)> = sources
        .iter()
        .map(|s| (s.event_source.as_str(), s.event_name.as_str()))
        .collect();
    let mut warnings = Vec::new();
    for loaded in docs {
        let Document::Sensor(s) = &loaded.doc else {
            continue;
        };
        for (i, d) in s.spec.dependencies.iter().enumerate() {
            if !produced.contains(&(d.event_source_name.as_str(), d.event_name.as_str())) {
                warnings.push(
                    loaded
                        .origin
                        .error(
                            None,
                            format!("spec.dependencies[{i}]"),
                            format!(
                                "no loaded EventSource produces {}/{}; dependency {:?} will never be met",
                                d.event_source_name, d.event_name, d.name
                            ),
                        )
                        .with_hint("check eventSourceName and eventName, or load the EventSource too"),
                );
            }
        }
    }
    warnings
}

/// AMQP events that acknowledge on arrival (`consume.autoAck: true`): a crash or a refusing
/// bus loses what was in flight. Allowed, as Argo's examples use it, but said.
fn at_most_once_consumers(docs: &[Loaded]) -> Vec<ManifestError> {
    let mut warnings = Vec::new();
    for loaded in docs {
        let Document::EventSource(es) = &loaded.doc else {
            continue;
        };
        for (name, event) in &es.spec.amqp {
            let auto_ack = event
                .value
                .consume
                .as_ref()
                .and_then(|c| c.auto_ack)
                .unwrap_or(false);
            if auto_ack {
                warnings.push(
                    loaded
                        .origin
                        .error(
                            Some(&event.referenced),
                            format!("spec.amqp.{name}.consume.autoAck"),
                            "autoAck acknowledges each message when it arrives, before the bus took its event: messages in flight are lost if the agent stops or the bus refuses them (at most once)",
                        )
                        .with_hint("remove autoAck (or set it to false) to acknowledge after the bus accepted the event (at least once)"),
                );
            }
        }
    }
    warnings
}

/// Two webhook events may not claim the same port and endpoint, and the events of one port
/// all serve TLS with the same certificate or all serve plain HTTP.
fn check_webhook_routes(docs: &[Loaded], sources: &[SourceSpec], errors: &mut Vec<ManifestError>) {
    let mut seen = HashSet::new();
    let mut tls_of_port = std::collections::HashMap::new();
    for spec in sources {
        let Some(w) = spec.webhook() else { continue };
        let origin = || {
            docs.iter()
                .find(|d| matches!(&d.doc, Document::EventSource(es) if es.metadata.name == spec.event_source))
                .map(|d| d.origin.start())
                .unwrap_or_default()
        };
        let (port, endpoint) = (w.port, w.endpoint.as_str());
        if !seen.insert((port, endpoint.to_owned())) {
            errors.push(ManifestError::new(
                origin(),
                format!("spec.webhook.{}", spec.event_name),
                format!("port {port} endpoint {endpoint} is already used by another webhook event"),
            ));
        }
        let first = tls_of_port.entry(port).or_insert(&w.tls);
        if *first != &w.tls {
            errors.push(
                ManifestError::new(
                    origin(),
                    format!("spec.webhook.{}.serverCertSecret", spec.event_name),
                    format!("port {port} is shared with a webhook event that serves it differently (TLS or not, or another certificate)"),
                )
                .with_hint("give every event of a port the same serverCertSecret and serverKeySecret, or use another port"),
            );
        }
    }
}
