//! Load and validation errors that point at a file, line, column and field path.

use std::fmt;
use std::path::PathBuf;

/// Where in a manifest file something is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// File the manifest came from.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
}

/// One problem found while loading or compiling manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// Where the problem is.
    pub position: Position,
    /// Field path inside the document, e.g. `spec.dependencies[0].filters.script`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// One line on how to fix it, when we know.
    pub hint: Option<String>,
}

impl ManifestError {
    /// An error at a position and field.
    pub fn new(position: Position, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            position,
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.position;
        write!(f, "{}:{}:{}: ", p.file.display(), p.line, p.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

/// Every error found in a load, so a user fixes them all in one round.
#[derive(Debug, Default)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// The message and a one-line hint for a field we know about but do not accept.
/// `in_event_source` tells event source kinds (`spec.kafka` of an EventSource) from trigger
/// types of the same name.
pub fn hint_for_field(field: &str, in_event_source: bool) -> Option<(String, &'static str)> {
    const SOURCE_KINDS: &[&str] = &[
        "github",
        "gitlab",
        "bitbucket",
        "bitbucketserver",
        "sns",
        "redis",
        "redisStream",
        "file",
        "sftp",
        "hdfs",
        "minio",
        "pubSub",
        "generic",
        "nsq",
        "emitter",
        "slack",
        "stripe",
        "storageGrid",
        "gerrit",
        "azureQueueStorage",
        "azureEventsHub",
        "azureServiceBus",
        "pulsar",
    ];
    const TRIGGER_TYPES: &[&str] = &[
        "slack",
        "custom",
        "openWhisk",
        "openwhisk",
        "azureEventHubs",
        "azureServiceBus",
        "pulsar",
        "email",
    ];
    let unsupported = |what: &str| format!("{what} {field:?} is not supported");
    if in_event_source && field == "minio" {
        return Some((
            unsupported("event source kind"),
            "point MinIO's bucket notifications at an SQS-compatible queue (or AWS SQS) and use an sqs event with `s3: {bucket, events, filter}`",
        ));
    }
    if in_event_source && SOURCE_KINDS.contains(&field) {
        return Some((
            unsupported("event source kind"),
            "supported event source kinds: webhook, calendar, nats, kafka, mqtt, amqp, sqs, resource",
        ));
    }
    if in_event_source && field == "type" {
        return Some((
            "`spec.type` is the Argo Events v0.x EventSource format, which is not supported".into(),
            "put each event under `spec.<kind>.<event name>`, e.g. `spec.webhook.example`",
        ));
    }
    if !in_event_source && TRIGGER_TYPES.contains(&field) {
        return Some((
            unsupported("trigger type"),
            "supported trigger types: http, awsLambda, nats, kafka, k8s, argoWorkflow, log",
        ));
    }
    let hint = match field {
        "dataTemplate" | "contextTemplate" => {
            "Go templates are not supported; use `src.script` (Rhai), e.g. `script: 'event.body.name'`"
        }
        "lua" => "Lua is not supported; rewrite it in Rhai, e.g. `script: 'event.body.x == 1'`",
        "template" => "Go templates are not supported; compute the value in `filters.script` (Rhai) instead",
        "serverCertSecret" | "serverKeySecret" => {
            "webhook TLS is not supported yet; terminate TLS in front of the agent"
        }
        "persistence" => "calendar persistence is not supported yet",
        _ => return None,
    };
    Some((unsupported("field"), hint))
}
