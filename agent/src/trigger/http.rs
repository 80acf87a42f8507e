//! The HTTP trigger: sends the payload as a JSON request.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use rhai::{Dynamic, Map};
use serde::Deserialize;
use serde_json::Value;

use super::compile::{compile_params, payload_builder, KindInput, KindParts};
use super::http_credentials::{Credentials, Resolved, TlsMaterial};
use super::prepare::KindError;
use super::response::{duration_ms, status_outcome};
use super::stub::{status_json, status_stub, StubMisuse, StubResponse, StubShape, StubSpec};
use super::{compile::parameterized, BuildError, Call, CompiledParameter, Invocation, Outcome};
use super::{PrepareContext, PrepareFailure};
use super::{Reply, ReplyShape, Response, TriggerError, TriggerKind};
use super::{Shape, TriggerTarget};
use crate::compile::CompileContext;
use crate::event::FiredEvents;
use crate::manifest::{HttpTrigger, ScriptSource};
use crate::script::{to_dynamic, ScriptHost};
use crate::secret::{mask_url, SecretStore};

/// Default request timeout when the manifest sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The request fields that parameters may change.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestSpec {
    /// Target URL.
    pub url: String,
    /// Method (default POST).
    #[serde(default)]
    pub method: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout in seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl HttpRequestSpec {
    /// Checks the spec and returns why it is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if let Err(e) = reqwest::Url::parse(&self.url) {
            return Some(format!("invalid url {:?}: {e}", mask_url(&self.url)));
        }
        if let Some(m) = &self.method {
            if Method::from_bytes(m.to_ascii_uppercase().as_bytes()).is_err() {
                return Some(format!("invalid method {m:?}"));
            }
        }
        for (k, v) in &self.headers {
            if HeaderName::from_bytes(k.as_bytes()).is_err() || HeaderValue::from_str(v).is_err() {
                return Some(format!("invalid header {k:?}"));
            }
        }
        None
    }
}

/// Compiles an `http` spec: the client (certificate verification fixed at load), the
/// request (parameters may change any of its fields) and the payload.
pub(super) fn compile(
    ctx: &mut CompileContext<'_>,
    h: &HttpTrigger,
    input: &KindInput<'_>,
) -> Option<KindParts> {
    let f = format!("{}.http", input.tfield);
    let params = compile_params(
        ctx,
        &format!("{f}.parameters"),
        &h.parameters,
        input.dependencies,
    );
    let payload = payload_builder(
        ctx,
        &f,
        &h.payload,
        ScriptSource::from_fields(&h.payload_script, &h.payload_script_file),
        input.dependencies,
    );
    let credentials = Credentials::compile(ctx, &f, h)?;
    let insecure = h.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
    let target = match HttpTarget::new(insecure).map(|t| t.with_credentials(credentials)) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            ctx.error(None, f, format!("cannot build HTTP client: {e}"));
            return None;
        }
    };
    let spec = HttpRequestSpec {
        url: h.url.clone(),
        method: h.method.clone(),
        headers: h.headers.clone(),
        timeout: h.timeout,
    };
    let parameterized = !h.parameters.is_empty() || input.template_parameterized();
    let static_ok = match spec.problem() {
        Some(p) if !parameterized => {
            ctx.error(None, format!("{f}.url"), p);
            return None;
        }
        Some(_) => false,
        None => true,
    };
    let fixed = (static_ok && !parameterized).then(|| {
        Invocation::new(HttpCall {
            target: target.clone(),
            spec,
        })
    });
    Some(KindParts {
        kind: TriggerKind::Http(target),
        params: params?,
        payload: payload?,
        fixed,
    })
}

/// An HTTP trigger with its connection pool and the credentials it sends.
#[derive(Debug)]
pub struct HttpTarget {
    client: reqwest::Client,
    insecure: bool,
    credentials: Option<Credentials>,
    /// Where credentials are read from, set when the plan starts.
    secrets: OnceLock<SecretStore>,
    /// The client built for the TLS material last read (hash of the material, client).
    #[allow(clippy::disallowed_types)] // never held across an await
    tls_client: std::sync::Mutex<Option<(u64, reqwest::Client)>>,
}

/// One client per verification mode, shared by every http trigger of the process: building a
/// client loads the TLS roots (milliseconds each, and memory for each copy), and one pool
/// reuses connections across triggers that call the same host.
fn shared_client(insecure: bool) -> Result<reqwest::Client, String> {
    static VERIFYING: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static INSECURE: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let cell = if insecure { &INSECURE } else { &VERIFYING };
    cell.get_or_init(|| client_builder(insecure).build().map_err(|e| e.to_string()))
        .clone()
}

fn client_builder(insecure: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .user_agent(concat!("triggerd/", env!("CARGO_PKG_VERSION")))
}

/// A client of its own for a trigger's `tls` material: only its CA is trusted (as Argo sets
/// the CA pool), and it presents its client certificate. The error never holds the PEM text.
fn tls_client(insecure: bool, material: &TlsMaterial) -> Result<reqwest::Client, String> {
    let mut builder = client_builder(insecure);
    if let Some(ca) = &material.ca {
        let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .map_err(|_| "tls.caCertSecret is not a PEM certificate bundle".to_owned())?;
        if certs.is_empty() {
            return Err("tls.caCertSecret holds no certificate".into());
        }
        builder = builder.tls_certs_only(certs);
    }
    if let Some(identity) = &material.identity {
        let identity = reqwest::Identity::from_pem(identity.as_bytes()).map_err(|_| {
            "tls.clientCertSecret and tls.clientKeySecret are not a PEM certificate and key"
                .to_owned()
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the TLS client: {}", e.without_url()))
}

impl HttpTarget {
    /// A target on the shared client of its mode; certificate verification stays on unless
    /// `insecure` is set.
    pub fn new(insecure: bool) -> Result<Self, String> {
        Ok(Self {
            client: shared_client(insecure)?,
            insecure,
            credentials: None,
            secrets: OnceLock::new(),
            tls_client: Default::default(),
        })
    }

    fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The client for this attempt: the shared one, or the one built for the TLS material
    /// just read (built again when the material changed).
    fn client_for(&self, resolved: Option<&Resolved>) -> Result<reqwest::Client, String> {
        let Some(material) = resolved.and_then(|r| r.tls.as_ref()) else {
            return Ok(self.client.clone());
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        material.hash(&mut hasher);
        let key = hasher.finish();
        if let Some((k, c)) = self.tls_client.lock().ok().and_then(|g| g.clone()) {
            if k == key {
                return Ok(c);
            }
        }
        let client = tls_client(self.insecure, material)?;
        if let Ok(mut g) = self.tls_client.lock() {
            *g = Some((key, client.clone()));
        }
        Ok(client)
    }

    /// Reads the credentials of one attempt.
    async fn credentials(&self) -> Result<Option<Resolved>, TriggerError> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let store = self.secrets.get().cloned().unwrap_or_default();
        match credentials.resolve(&store).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => Err(TriggerError::new(e.to_string(), e.is_retryable()).caused_by(e)),
        }
    }

    /// Sends one request.
    pub async fn execute(&self, spec: &HttpRequestSpec, payload: &Value) -> Response {
        let started = tokio::time::Instant::now();
        let resolved = match self.credentials().await {
            Ok(r) => r,
            Err(e) => return Response::failed(e, started.elapsed()),
        };
        let client = match self.client_for(resolved.as_ref()) {
            Ok(c) => c,
            Err(e) => return Response::failed(TriggerError::permanent(e), started.elapsed()),
        };
        let method = spec
            .method
            .as_deref()
            .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or(Method::POST))
            .unwrap_or(Method::POST);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &spec.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        if let Some(r) = &resolved {
            for (k, v) in &r.headers {
                headers.insert(k.clone(), v.clone());
            }
        }
        let body = match payload {
            Value::Null if method == Method::GET => Vec::new(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        };
        let timeout = spec.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let sent = client
            .request(method, &spec.url)
            .headers(headers)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let retryable = !e.is_builder();
                let e = e.without_url();
                return Response::failed(
                    TriggerError::new(transport_message(&e), retryable).caused_by(e),
                    started.elapsed(),
                );
            }
        };
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let e = e.without_url();
                return Response::failed(
                    TriggerError::retryable(format!(
                        "reading response body: {}",
                        transport_message(&e)
                    ))
                    .caused_by(e),
                    started.elapsed(),
                );
            }
        };
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        // A server that echoes the request (or leaks a credential) must not put it into
        // logs, dead letters or reports.
        let (headers, body) = match &resolved {
            Some(r) => (
                headers.into_iter().map(|(k, v)| (k, r.mask(&v))).collect(),
                r.mask_json(body),
            ),
            None => (headers, body),
        };
        Response::replied(
            Reply::new(HttpReply {
                status,
                headers,
                body,
            }),
            started.elapsed(),
        )
    }
}

impl TriggerTarget for HttpTarget {
    /// The request of one execution: the template's `http` section after parameters.
    fn invocation(
        self: Arc<Self>,
        template: &Value,
        params: &[CompiledParameter],
        host: &ScriptHost,
        events: &FiredEvents,
    ) -> Result<Invocation, BuildError> {
        let spec = parameterized(
            template,
            "http",
            params,
            host,
            events,
            HttpRequestSpec::problem,
        )?;
        Ok(Invocation::new(HttpCall { target: self, spec }))
    }

    /// Notes where credentials come from and reads them once, so a missing secret or an
    /// unusable certificate stops the start, as a missing webhook token does.
    fn prepare<'a>(
        &'a self,
        ctx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<(), PrepareFailure>> {
        Box::pin(async move {
            if self.credentials.is_none() {
                return Ok(());
            }
            let _ = self.secrets.set(ctx.secrets.clone());
            let resolved = self
                .credentials()
                .await
                .map_err(|e| KindError::boxed("http", e))?;
            self.client_for(resolved.as_ref())
                .map_err(|e| KindError::boxed("http", TriggerError::permanent(e)))?;
            Ok(())
        })
    }

    fn stub_shape(&self) -> Shape {
        Shape::new(HttpStub)
    }
}

/// One HTTP request to send.
#[derive(Debug)]
struct HttpCall {
    target: Arc<HttpTarget>,
    spec: HttpRequestSpec,
}

impl Call for HttpCall {
    fn attempt<'a>(&'a self, payload: &'a Value) -> BoxFuture<'a, Response> {
        Box::pin(self.target.execute(&self.spec, payload))
    }

    /// `{type: http, url, method, headers, timeout?}`, the method upper-cased (POST when
    /// not given).
    fn to_json(&self) -> Value {
        let spec = &self.spec;
        let mut out = serde_json::Map::new();
        out.insert("type".into(), "http".into());
        out.insert("url".into(), mask_url(&spec.url).into_owned().into());
        out.insert(
            "method".into(),
            spec.method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .into(),
        );
        out.insert("headers".into(), serde_json::json!(spec.headers));
        if let Some(t) = spec.timeout {
            out.insert("timeout".into(), t.into());
        }
        if let Some(c) = &self.target.credentials {
            out.insert("credentials".into(), c.to_json());
        }
        Value::Object(out)
    }
}

/// What an HTTP target answered; policies see `#{status, headers, body, duration_ms}`.
#[derive(Debug, Clone, Default)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// Body, parsed as JSON when it is JSON, else a string.
    pub body: Value,
}

impl HttpReply {
    /// A reply with only a status.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }
}

impl ReplyShape for HttpReply {
    fn to_dynamic(&self, duration: Duration) -> Dynamic {
        let mut map = Map::new();
        map.insert("status".into(), i64::from(self.status).into());
        let headers: Map = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.clone().into()))
            .collect();
        map.insert("headers".into(), headers.into());
        map.insert("body".into(), to_dynamic(&self.body));
        map.insert("duration_ms".into(), duration_ms(duration).into());
        map.into()
    }

    /// 2xx (or `allow`) succeeds; 5xx and 429 retry, after `Retry-After` seconds when
    /// given; other statuses fail.
    fn default_outcome(&self, allow: Option<&[u16]>) -> Outcome {
        let retry_after = self
            .headers
            .get("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        status_outcome(self.status, allow, "", retry_after)
    }

    fn summary(&self) -> String {
        format!("status {}", self.status)
    }
}

/// Stubs of http (and log) triggers: `{status, headers?, body?}` or `{error}`.
#[derive(Debug, Clone, Copy)]
pub struct HttpStub;

impl StubShape for HttpStub {
    fn name(&self) -> String {
        "http".into()
    }

    fn parse(&self, spec: &StubSpec) -> Result<StubResponse, StubMisuse> {
        if spec.function_error.is_some() || spec.payload.is_some() {
            let name = if spec.payload.is_some() {
                "payload"
            } else {
                "functionError"
            };
            return Err(
                StubMisuse::new(Some(name), format!("`{name}` is for awsLambda triggers"))
                    .hint("http and log triggers take status, body, headers or error"),
            );
        }
        status_stub(spec, false)
    }

    fn reply(&self, stub: &StubResponse) -> Reply {
        Reply::new(HttpReply {
            status: stub.status,
            headers: stub
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: stub.body.clone(),
        })
    }

    fn to_json(&self, stub: &StubResponse) -> Value {
        let headers =
            (!stub.headers.is_empty()).then(|| ("headers", serde_json::json!(stub.headers)));
        status_json(stub, headers, "body")
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if timeout {
        msg.push_str(" (timeout)");
    }
    msg
}
