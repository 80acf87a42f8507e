//! Manifest loading: YAML files and directories into typed EventSource and Sensor documents,
//! with every error located by file, line, column and field path.

mod common;
mod error;
mod eventsource;
mod k8s;
mod sensor;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub use common::{
    Amount, BasicAuth, ClientTls, IntOrString, KafkaSasl, NatsAuth, ObjectMeta, ScriptSource,
    SecretRef,
};
pub use error::{hint_for_field, ManifestError, ManifestErrors, Position};
pub use eventsource::{
    AmqpConsume, AmqpEvent, AmqpExchangeDeclare, AmqpNoWait, AmqpQueueDeclare, CalendarEvent,
    EventSourceSpec, JetStreamConsumer, KafkaConsumerGroup, KafkaEvent, MqttEvent, NatsEvent,
    ResourceEvent, ResourceFilter, ResourceSelector, S3Filter, S3KeyFilter, SignatureAlgorithm,
    SignatureEncoding, SignatureProvider, SourceFilter, SqsEvent, WebhookEvent, WebhookSignature,
};
pub use k8s::{
    ArgoWorkflowTrigger, ArtifactLocation, ConfigMapKey, FileArtifact, K8sPolicy, K8sTrigger,
};
pub use sensor::{
    AmqpProperties, AmqpTrigger, AwsLambdaTrigger, Backoff, ConditionsReset, ConditionsResetByTime,
    ContextFilter, DataFilter, Dependency, ExprFilter, Filters, HttpTrigger, KafkaTrigger,
    LogTrigger, MqttTrigger, NatsTrigger, Parameter, ParameterSource, PayloadField, Policy,
    RateLimit, SecureHeader, SensorSpec, StatusPolicy, TimeFilter, Transform, Trigger,
    TriggerTemplate, ValueFrom,
};
pub use serde_saphyr::Spanned;

/// Our own API version.
pub const API_VERSION: &str = "triggerd.io/v1alpha1";
/// Argo Events' API version, accepted unchanged in file mode.
pub const ARGO_API_VERSION: &str = "argoproj.io/v1alpha1";

/// A Kubernetes-style object with a typed spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource<S> {
    /// `triggerd.io/v1alpha1` or `argoproj.io/v1alpha1`.
    pub api_version: String,
    /// `Sensor` or `EventSource`.
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// The spec.
    pub spec: S,
    /// Status as written by a controller; ignored on load.
    #[serde(default)]
    pub status: Option<Value>,
}

/// One typed manifest.
#[derive(Debug, Clone)]
pub enum Document {
    /// An EventSource.
    EventSource(Resource<EventSourceSpec>),
    /// A Sensor.
    Sensor(Resource<SensorSpec>),
}

/// A manifest together with where it came from, so later passes can locate their errors.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The manifest.
    pub doc: Document,
    /// The same document as JSON, for parameters that rewrite parts of it.
    pub json: Value,
    /// Where it came from.
    pub origin: Origin,
}

/// The file and line range a document came from.
#[derive(Debug, Clone)]
pub struct Origin {
    /// File path as given.
    pub file: PathBuf,
    /// Lines before the document's first line in the file.
    pub line_offset: u64,
    /// The document's text, to map script positions back to file positions.
    pub text: std::sync::Arc<str>,
    /// Whether the document was read from `file` on disk (not a cluster object or an inline
    /// fragment): only then may its file references reach into `file`'s directory.
    pub on_disk: bool,
}

impl Origin {
    /// The file position of a location inside this document.
    pub fn at(&self, loc: &serde_saphyr::Location) -> Position {
        if loc.line() == 0 {
            return self.start();
        }
        Position {
            file: self.file.clone(),
            line: self.line_offset + loc.line(),
            column: loc.column(),
        }
    }

    /// The position of the document's first line.
    pub fn start(&self) -> Position {
        Position {
            file: self.file.clone(),
            line: self.line_offset + 1,
            column: 1,
        }
    }

    /// The file position of line/column `(line, column)` of a script held in `scalar`.
    ///
    /// Block scalars (`script: |`) start on the line after the indicator, at the content's
    /// indentation; inline scalars start at the value itself (after the quote, if quoted).
    pub fn script_position(
        &self,
        scalar: &serde_saphyr::Location,
        line: usize,
        column: usize,
    ) -> Position {
        let mut pos = self.at(scalar);
        if scalar.line() == 0 {
            return pos;
        }
        let line = line.max(1) as u64;
        let column = column.max(1) as u64;
        let lines: Vec<&str> = self.text.lines().collect();
        let at = |l: u64| {
            lines
                .get(l.saturating_sub(1) as usize)
                .copied()
                .unwrap_or("")
        };
        let here = at(scalar.line());
        let indicator = here.chars().nth(scalar.column().saturating_sub(1) as usize);
        match indicator {
            Some('|') | Some('>') => {
                let first = (scalar.line() + 1..=scalar.line() + 1 + lines.len() as u64)
                    .map(at)
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                let indent = (first.len() - first.trim_start().len()) as u64;
                pos.line += line;
                pos.column = indent + column;
            }
            Some('"') | Some('\'') => {
                pos.line += line - 1;
                pos.column = if line == 1 {
                    pos.column + column
                } else {
                    column
                };
            }
            _ => {
                // Plain scalars and block scalar content (the location is then the first
                // content character): every line shares the starting indentation.
                pos.line += line - 1;
                pos.column += column - 1;
            }
        }
        pos
    }

    /// Directory of the file, against which relative paths in it resolve.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or_else(|| Path::new("."))
    }

    /// The directories the document's file references may read from.
    pub fn file_roots<'a>(&'a self, library_dirs: &'a [PathBuf]) -> crate::files::FileRoots<'a> {
        crate::files::FileRoots {
            manifest_dir: self.on_disk.then(|| self.dir()),
            library_dirs,
        }
    }

    /// An error at a location of this document.
    pub fn error(
        &self,
        loc: Option<&serde_saphyr::Location>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        let position = loc.map_or_else(|| self.start(), |l| self.at(l));
        ManifestError::new(position, field, message)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Every `*.yaml`/`*.yml` file under the given paths (files are taken as given), sorted.
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files)?;
    }
    Ok(files)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let io_err = |e: std::io::Error| {
        ManifestError::new(
            Position {
                file: path.to_path_buf(),
                ..Position::default()
            },
            "",
            e.to_string(),
        )
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(io_err)?;
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if is_manifest_name(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

/// YAML files that hold manifests; `*.test.yaml` files are test cases, not manifests.
fn is_manifest_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".test.yaml")
        && !name.ends_with(".test.yml")
}

/// The largest manifest file loaded (bytes): far above any real set of Sensors and
/// EventSources (the API server stores at most 1.5 MB per object), and small enough that
/// loading it stays within a few hundred MB of memory.
pub const MAX_MANIFEST_BYTES: u64 = 8 * 1024 * 1024;

/// The most YAML documents one manifest file may hold.
pub const MAX_DOCUMENTS: usize = 1000;

/// Loads every manifest under `paths`, returning the documents that loaded and every error.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Loaded>, Vec<ManifestError>) {
    let files = match manifest_files(paths) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if size > MAX_MANIFEST_BYTES {
            errors.push(ManifestError::new(
                Position {
                    file: file.clone(),
                    ..Position::default()
                },
                "",
                format!("the file is {size} bytes; manifests of at most {MAX_MANIFEST_BYTES} bytes are loaded (split it into several files)"),
            ));
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(text) => load_documents(&file, &text, true, &mut docs, &mut errors),
            Err(e) => errors.push(ManifestError::new(
                Position {
                    file: file.clone(),
                    ..Position::default()
                },
                "",
                format!("cannot read: {e}"),
            )),
        }
    }
    (docs, errors)
}

/// Loads all documents of a text that did not come from disk (a cluster object rendered as
/// YAML, a test fixture); `file` names it in errors. Its file references may reach only the
/// library directories.
pub fn load_text(file: &Path, text: &str, docs: &mut Vec<Loaded>, errors: &mut Vec<ManifestError>) {
    load_documents(file, text, false, docs, errors);
}

/// Loads all documents of one file's text; `on_disk` when it was read from `file`.
fn load_documents(
    file: &Path,
    text: &str,
    on_disk: bool,
    docs: &mut Vec<Loaded>,
    errors: &mut Vec<ManifestError>,
) {
    let at_file = || Position {
        file: file.to_path_buf(),
        ..Position::default()
    };
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        errors.push(ManifestError::new(
            at_file(),
            "",
            format!(
                "the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are loaded",
                text.len()
            ),
        ));
        return;
    }
    let documents = split_documents(text);
    if documents.len() > MAX_DOCUMENTS {
        errors.push(ManifestError::new(
            at_file(),
            "",
            format!("the file holds {} YAML documents; at most {MAX_DOCUMENTS} are loaded (split it into several files)", documents.len()),
        ));
        return;
    }
    for (line_offset, body) in documents {
        let origin = Origin {
            file: file.to_path_buf(),
            line_offset,
            text: body.as_str().into(),
            on_disk,
        };
        match load_document(&origin, &body) {
            Ok(Some(doc)) => {
                let json = serde_saphyr::from_str(&body).unwrap_or(Value::Null);
                docs.push(Loaded { doc, json, origin })
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
}

/// Splits a multi-document YAML text at `---` lines, keeping each document's line offset.
fn split_documents(text: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0u64;
    for (i, line) in text.lines().enumerate() {
        let rest = line
            .strip_prefix("---")
            .filter(|r| r.is_empty() || r.starts_with([' ', '\t', '#']));
        if rest.is_some() || line == "..." {
            out.push((start, std::mem::take(&mut current)));
            start = i as u64 + 1;
            // Content after `--- ` on the same line opens the next document (columns shift by 4).
            let rest = rest.unwrap_or("").trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                current.push_str(rest);
                current.push('\n');
                start = i as u64;
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push((start, current));
    out.into_iter()
        .filter(|(_, body)| {
            body.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn load_document(origin: &Origin, body: &str) -> Result<Option<Document>, ManifestError> {
    let header: Header = serde_saphyr::from_str(body).map_err(|e| yaml_error(origin, "", &e))?;
    let api_version = header.api_version.unwrap_or_default();
    let kind = header.kind.unwrap_or_default();
    let ours = api_version == API_VERSION || api_version == ARGO_API_VERSION;
    match kind.as_str() {
        "Sensor" | "EventSource" if !ours => Err(origin
            .error(None, "apiVersion", format!("unsupported apiVersion {api_version:?} for {kind}"))
            .with_hint(format!("use {API_VERSION} (or {ARGO_API_VERSION} for Argo manifests)"))),
        "Sensor" => Ok(Some(Document::Sensor(typed(origin, body)?))),
        "EventSource" => Ok(Some(Document::EventSource(typed(origin, body)?))),
        "EventBus" if ours => Err(origin
            .error(None, "kind", "kind \"EventBus\" is not supported: the bus is chosen when the agent starts")
            .with_hint("remove this document; for a durable bus run `triggerd run --bus jetstream --nats-url nats://HOST:4222`")),
        "" => Err(origin
            .error(None, "kind", "missing kind")
            .with_hint("expected kind: Sensor or EventSource")),
        other => Err(origin
            .error(
                None,
                "kind",
                format!("kind {other:?} ({api_version}) is not supported: triggerd loads Sensor and EventSource manifests"),
            )
            .with_hint("apply other Kubernetes objects with kubectl; keep them out of the files given to triggerd")),
    }
}

/// Deserializes a manifest fragment (any YAML or JSON text) with located errors.
pub fn parse_fragment<T: DeserializeOwned>(
    origin: &Origin,
    body: &str,
) -> Result<T, ManifestError> {
    typed(origin, body)
}

fn typed<T: DeserializeOwned>(origin: &Origin, body: &str) -> Result<T, ManifestError> {
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str(body, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| yaml_error(origin, &path, &e))
}

fn yaml_error(origin: &Origin, path: &str, e: &serde_saphyr::Error) -> ManifestError {
    let path = if path == "." {
        String::new()
    } else {
        user_path(path)
    };
    let path = path.as_str();
    let text = e.without_snippet().to_string();
    let message = strip_location_suffix(&text);
    let mut err = origin.error(e.location().as_ref(), path, message);
    let mut segments = path.rsplit('.');
    let field = segments.next().unwrap_or("");
    let field = field.split('[').next().unwrap_or(field);
    if message.starts_with("unknown field") {
        let in_event_source = body_is_event_source(path);
        match hint_for_field(field, in_event_source) {
            Some((message, hint)) => {
                err.message = message;
                err = err.with_hint(hint);
            }
            None => {
                err =
                    err.with_hint("check the spelling; field names are case-sensitive (camelCase)")
            }
        }
    }
    err
}

/// Removes the `value` segments that `Spanned` wrappers add to serde paths, so users see
/// the path as written in their YAML (`spec.webhook.push.endpoint`).
fn user_path(path: &str) -> String {
    const SPANNED_LEAVES: &[&str] = &[
        "script",
        "scriptFile",
        "payloadScript",
        "payloadScriptFile",
        "filtersLogicalOperator",
        "dataLogicalOperator",
    ];
    let segments: Vec<&str> = path.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| segments[j]).unwrap_or("");
        let before = i.checked_sub(2).map(|j| segments[j]).unwrap_or("");
        let spanned_parent = SPANNED_LEAVES.contains(&prev)
            || (prev == "source" && (before == "k8s" || before == "argoWorkflow"))
            || before == "webhook"
            || before == "calendar"
            || (before == "resource" && i == 3 && segments[0] == "spec")
            || (prev.starts_with("data[") && before == "filters");
        if *seg == "value" && spanned_parent {
            continue;
        }
        out.push(seg);
    }
    out.join(".")
}

/// Whether a field path sits at the top of an EventSource spec (where kinds are listed).
fn body_is_event_source(path: &str) -> bool {
    path.starts_with("spec.") && path.matches('.').count() == 1 && !path.contains('[')
}

fn strip_location_suffix(text: &str) -> &str {
    let first = text.lines().next().unwrap_or(text);
    match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Vec<Loaded>, Vec<ManifestError>) {
        let mut docs = Vec::new();
        let mut errors = Vec::new();
        load_text(Path::new("t.yaml"), text, &mut docs, &mut errors);
        (docs, errors)
    }

    const SENSOR: &str = "apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: s
spec:
  dependencies:
    - name: d
      eventSourceName: es
      eventName: e
  triggers:
    - template:
        name: t
        log: {}
";

    #[test]
    fn loads_several_documents_with_offsets() {
        let text = format!("# two docs\n---\n{SENSOR}---\n{SENSOR}");
        let (docs, errors) = load(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].origin.line_offset, 2);
        assert_eq!(docs[1].origin.line_offset, 16);
    }

    #[test]
    fn unknown_field_names_line_column_and_path() {
        let text = format!("---\n{}", SENSOR.replace("eventName: e", "evntName: e"));
        let (_, errors) = load(&text);
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.field, "spec.dependencies[0].evntName");
        assert_eq!((e.position.line, e.position.column), (10, 7));
        assert!(e.hint.is_some());
    }

    #[test]
    fn every_bad_document_is_reported() {
        let bad = SENSOR.replace("name: t", "name: t\n        lua: x");
        let text = format!(
            "{bad}---\n{}",
            bad.replace("kind: Sensor", "kind: Sensor\nfoo: 1")
        );
        let (_, errors) = load(&text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].to_string().contains("Rhai"), "{}", errors[0]);
        assert_eq!(errors[1].field, "foo");
        assert_eq!(errors[1].position.line, 18);
    }

    #[test]
    fn spanned_wrappers_do_not_show_in_paths() {
        assert_eq!(
            user_path("spec.webhook.push.value.endpont"),
            "spec.webhook.push.endpont"
        );
        assert_eq!(
            user_path("spec.dependencies[0].filters.data[1].value.value[0]"),
            "spec.dependencies[0].filters.data[1].value[0]"
        );
        assert_eq!(
            user_path("spec.triggers[0].template.http.payload[0].src.value"),
            "spec.triggers[0].template.http.payload[0].src.value"
        );
        assert_eq!(
            user_path("spec.dependencies[0].filters.script.value"),
            "spec.dependencies[0].filters.script"
        );
    }

    #[test]
    fn unsupported_trigger_type_gets_hint() {
        let text = SENSOR.replace("log: {}", "slack: {}");
        let (_, errors) = load(&text);
        assert_eq!(errors[0].field, "spec.triggers[0].template.slack");
        assert!(errors[0]
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("trigger type"));
    }

    #[test]
    fn script_positions_map_to_file_lines() {
        let text = SENSOR.replace(
            "      eventName: e\n",
            "      eventName: e\n      filters:\n        script: |\n          let a = 1;\n          a +* 2\n",
        );
        let (docs, errors) = load(&format!("---\n{text}"));
        assert!(errors.is_empty(), "{errors:?}");
        let Document::Sensor(s) = &docs[0].doc else {
            panic!("not a sensor")
        };
        let script = s.spec.dependencies[0]
            .filters
            .as_ref()
            .unwrap()
            .script
            .as_ref()
            .unwrap();
        let pos = docs[0].origin.script_position(&script.referenced, 2, 3);
        assert_eq!((pos.line, pos.column), (14, 13));
        let inline = SENSOR.replace(
            "eventName: e\n",
            "eventName: e\n      filters: {script: 'x +* 1'}\n",
        );
        let (docs, _) = load(&inline);
        let Document::Sensor(s) = &docs[0].doc else {
            panic!("not a sensor")
        };
        let script = s.spec.dependencies[0]
            .filters
            .as_ref()
            .unwrap()
            .script
            .as_ref()
            .unwrap();
        let pos = docs[0].origin.script_position(&script.referenced, 1, 3);
        assert_eq!((pos.line, pos.column), (10, 28));
    }

    #[test]
    fn malformed_yaml_has_a_position() {
        let (_, errors) =
            load("apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nspec: [a\n  b: c\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].position.line >= 3, "{}", errors[0]);
    }
}
