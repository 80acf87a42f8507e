//! The webhook source: HTTP endpoints that turn requests into events.
//!
//! Endpoints are literal paths a request must match exactly. Replies: 200 `{"id": …}` once
//! the bus accepted the event; 401 for a missing or wrong bearer token or body signature;
//! 404 for another path; 405 for another method; 408 for a body not received within the
//! body timeout; 413 for a body over `maxPayloadSize` (whatever its content type); 503
//! with `Retry-After` when the bus is full or closing. Connections are served within the
//! webhook listeners' shared limits (`telemetry::ServerLimits`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use super::webhook_auth::{Refusal, SenderAuth, SignatureSpec};
use super::webhook_tls::{ServerTls, ServerTlsRefs};
use super::{SourceContext, SourceKind, SourceSpec};
use crate::bus::Published;
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{SecretRef, Spanned, WebhookEvent};
use crate::telemetry::SourceTelemetry;

/// Default `maxPayloadSize`: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u64 = 1024 * 1024;

/// A compiled webhook event.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Port.
    pub port: u16,
    /// Path.
    pub endpoint: String,
    /// Accepted method.
    pub method: Method,
    /// Bearer token reference.
    pub auth: Option<SecretRef>,
    /// The sender's token or body signature (boxed: rarely set, and large).
    pub signature: Option<Box<SignatureSpec>>,
    /// HTTPS certificate and key, when the port serves TLS (boxed: rarely set).
    pub tls: Option<Box<ServerTlsRefs>>,
    /// Largest body in bytes.
    pub max_payload: u64,
}

impl WebhookConfig {
    /// Checks one webhook event.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        w: &Spanned<WebhookEvent>,
    ) -> Option<Self> {
        let loc = Some(&w.referenced);
        let w = &w.value;
        let port = match w.port.as_string().trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                ctx.error(
                    loc,
                    format!("{field}.port"),
                    format!("invalid port {:?}", w.port.as_string()),
                );
                return None;
            }
        };
        if let Err(problem) = check_endpoint(&w.endpoint) {
            ctx.error_with_hint(
                loc,
                format!("{field}.endpoint"),
                format!("endpoint {:?} {problem}", w.endpoint),
                "a literal path such as /push; requests must match it exactly",
            );
            return None;
        }
        let method = match Method::from_bytes(
            w.method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        ) {
            Ok(m) => m,
            Err(_) => {
                ctx.error(
                    loc,
                    format!("{field}.method"),
                    format!("invalid method {:?}", w.method),
                );
                return None;
            }
        };
        let signature = match &w.signature {
            Some(s) => Some(Box::new(SignatureSpec::compile(
                ctx,
                loc,
                &format!("{field}.signature"),
                s,
            )?)),
            None => None,
        };
        let tls = ServerTlsRefs::compile(
            ctx,
            loc,
            field,
            w.server_cert_secret.as_ref(),
            w.server_key_secret.as_ref(),
        )?;
        if w.max_payload_size == Some(0) {
            ctx.error(
                loc,
                format!("{field}.maxPayloadSize"),
                "must be greater than 0",
            );
            return None;
        }
        Some(Self {
            port,
            endpoint: w.endpoint.clone(),
            method,
            auth: w.auth_secret.clone(),
            signature,
            tls,
            max_payload: w.max_payload_size.unwrap_or(DEFAULT_MAX_PAYLOAD),
        })
    }
}

impl super::Section for WebhookConfig {
    const KEY: &'static str = "webhook";
    type Manifest = WebhookEvent;

    fn shared(event: &WebhookEvent) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<WebhookEvent>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(super::SourceKind::Webhook)
    }
}

/// The longest endpoint path accepted.
const MAX_ENDPOINT_LEN: usize = 1024;

/// Why an endpoint is not a literal request path. Endpoints match exactly (as in Argo), so
/// router syntax (`{id}`, `:id`, `*rest`) is refused rather than taken literally by surprise.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    if !endpoint.starts_with('/') {
        return Err("must start with /");
    }
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err("is longer than 1024 bytes");
    }
    if endpoint.contains(['{', '}']) || endpoint.split('/').any(|s| s.starts_with([':', '*'])) {
        return Err("uses path parameters, which are not supported");
    }
    if endpoint.contains(['?', '#']) {
        return Err("must be a path without a query or fragment");
    }
    match endpoint.parse::<axum::http::uri::PathAndQuery>() {
        Ok(p) if p.path() == endpoint => Ok(()),
        _ => Err("is not a valid URL path (spaces and control characters must be percent-encoded)"),
    }
}

/// The webhook events of one port, by exact request path.
type Routes = Arc<HashMap<String, Arc<Endpoint>>>;

struct Endpoint {
    config: WebhookConfig,
    shared: super::SharedSettings,
    auth: SenderAuth,
    telemetry: SourceTelemetry,
    ctx: SourceContext,
}

/// Binds one server per port and serves every webhook event on it.
pub(super) async fn start(
    specs: &[SourceSpec],
    ctx: &SourceContext,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut by_port: BTreeMap<u16, Vec<(&SourceSpec, &WebhookConfig)>> = BTreeMap::new();
    for spec in specs {
        if let SourceKind::Webhook(w) = &spec.kind {
            by_port.entry(w.port).or_default().push((spec, w));
        }
    }
    let mut handles = Vec::new();
    for (port, events) in by_port {
        let mut routes = HashMap::new();
        let mut tls_refs = None;
        // Who listens on this port, for errors: `EventSource es, webhook event ev (/path)`.
        let owners = events
            .iter()
            .map(|(spec, w)| {
                format!(
                    "EventSource {}, webhook event {} ({})",
                    spec.event_source, spec.event_name, w.endpoint
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        for (spec, w) in events {
            let what = format!("webhook {}/{}", spec.event_source, spec.event_name);
            let auth = SenderAuth::start(
                w.auth.as_ref(),
                w.signature.as_deref(),
                &ctx.secrets,
                &what,
                &ctx.shutdown,
            )
            .await
            .map_err(|(field, e)| anyhow::anyhow!("{what}: {field}: {e}"))?;
            tls_refs = tls_refs.or(w.tls.as_deref());
            let endpoint = Arc::new(Endpoint {
                config: w.clone(),
                shared: spec.shared.clone(),
                auth,
                telemetry: SourceTelemetry::new(&ctx.metrics, &spec.event_source, &spec.event_name),
                ctx: ctx.clone(),
            });
            routes.insert(w.endpoint.clone(), endpoint);
        }
        let tls = match tls_refs {
            Some(refs) => Some(
                ServerTls::start(refs, &ctx.secrets, port, &ctx.shutdown)
                    .await
                    .map_err(|e| anyhow::anyhow!("webhook port {port}: {e}"))?,
            ),
            None => None,
        };
        let router = Router::new()
            .fallback(dispatch)
            .with_state(Routes::new(routes));
        let addr = SocketAddr::new(ctx.bind_host, port);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another process, or another agent, already listens there; choose another port)"
            } else {
                ""
            };
            anyhow::anyhow!("{owners}: cannot listen on {addr}: {e}{hint}")
        })?;
        tracing::info!(%addr, tls = tls.is_some(), "webhook server listening");
        handles.push(crate::telemetry::spawn_server(
            &format!("webhook:{port}"),
            listener,
            router,
            ctx.http_limits.clone(),
            tls.map(|t| t.acceptor()),
            &ctx.metrics,
            ctx.shutdown.clone(),
        ));
    }
    Ok(handles)
}

fn reply(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Hands a request to the event whose endpoint is its path; 404 for any other path.
async fn dispatch(
    State(routes): State<Routes>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match routes.get(uri.path()) {
        Some(ep) => handle(ep, method, uri, headers, body).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn handle(
    ep: &Endpoint,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reject = |status: StatusCode, message: &str| {
        ep.telemetry.rejected(&status, message);
        reply(status, message)
    };
    if method != ep.config.method {
        let mut r = reject(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        if let Ok(v) = ep.config.method.as_str().parse() {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return r;
    }
    if let Err(refusal) = ep.auth.check_headers(&headers) {
        let mut r = reject(StatusCode::UNAUTHORIZED, refusal.message());
        if refusal == Refusal::Token {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        return r;
    }
    let limit = ep.config.max_payload;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    }
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(ep.ctx.http_limits.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return reject(StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
        Err(_) => {
            return reject(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )
        }
    };
    if let Err(refusal) = ep.auth.check_body(&headers, &bytes, ep.ctx.clock.now()) {
        return reject(StatusCode::UNAUTHORIZED, refusal.message());
    }
    let event = build_event(ep, &method, uri.query(), &headers, bytes);
    let id = event.id.clone();
    if !ep
        .ctx
        .passes(&ep.telemetry, ep.shared.filter.as_ref(), &event)
    {
        return (StatusCode::OK, Json(json!({ "id": id, "filtered": true }))).into_response();
    }
    match ep.ctx.bus.offer(event).await {
        Ok(Published::Duplicate) => {
            ep.telemetry.deduplicated(&id);
            (StatusCode::OK, Json(json!({ "id": id }))).into_response()
        }
        Ok(Published::Accepted) => {
            ep.telemetry.received(&id);
            (StatusCode::OK, Json(json!({ "id": id }))).into_response()
        }
        Err(e) => {
            ep.telemetry.refused_by_bus(&id, &e);
            let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(e.retry_after_secs()),
            );
            r
        }
    }
}

/// Argo's webhook event data: `{header: {Name: [values]}, body}`; the body is parsed JSON, or
/// the raw text when it is not JSON. Bearer tokens are masked.
fn build_event(
    ep: &Endpoint,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Event {
    let mut event = request_event(
        ep.telemetry.event_source(),
        ep.telemetry.event_name(),
        method,
        query,
        headers,
        bytes,
    );
    for (k, v) in &ep.shared.metadata {
        event
            .extensions
            .insert(k.to_ascii_lowercase(), v.clone().into());
    }
    event
}

/// The event an accepted request to webhook event `event_name` of EventSource
/// `event_source` makes, whatever its headers and body hold (a binary or structured
/// CloudEvent keeps its attributes). Public for the fuzz targets (`testing::fuzz`).
pub fn request_event(
    event_source: &str,
    event_name: &str,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Event {
    let structured = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/cloudevents+json"));
    let incoming = if structured {
        serde_json::from_slice::<cloudevents::Event>(&bytes).ok()
    } else {
        None
    };
    let body = match &incoming {
        Some(ce) => cloudevent_data(ce),
        None => request_body(method, query, &bytes),
    };
    let mut data = Map::new();
    data.insert("header".into(), header_map(headers));
    data.insert("body".into(), body);
    let mut event = Event::new(
        event_source,
        event_name,
        "webhook",
        Value::Object(data),
        bytes,
    );
    match &incoming {
        Some(ce) => keep_structured_attributes(&mut event, ce),
        None => keep_binary_attributes(&mut event, headers),
    }
    event
}

/// Request headers as Argo shows them: canonical names, each with a list of values; bearer
/// tokens masked.
fn header_map(headers: &HeaderMap) -> Value {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, value) in headers {
        let shown = if name == header::AUTHORIZATION {
            "******".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        map.entry(canonical_header(name.as_str()))
            .or_default()
            .push(Value::String(shown));
    }
    serde_json::to_value(map).unwrap_or(Value::Null)
}

/// The event `body`, as Argo's webhook builds it: a GET carries its query parameters as
/// `{name: [values]}` (`{}` without any); other methods carry the parsed JSON body, else its
/// raw text, else null when empty.
pub fn request_body(method: &Method, query: Option<&str>, bytes: &[u8]) -> Value {
    if method == Method::GET {
        let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
            .unwrap_or_default()
        {
            map.entry(k).or_default().push(Value::String(v));
        }
        return serde_json::to_value(map).unwrap_or(Value::Null);
    }
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The data of a structured-mode CloudEvent as JSON.
fn cloudevent_data(ce: &cloudevents::Event) -> Value {
    match ce.data() {
        Some(cloudevents::Data::Json(v)) => v.clone(),
        Some(cloudevents::Data::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(cloudevents::Data::Binary(b)) => {
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        None => Value::Null,
    }
}

/// A structured-mode CloudEvent keeps its id, time and extensions (e.g. `traceparent`); its
/// own source, type and subject are kept as `originalsource`/`originaltype`/`originalsubject`
/// because `source`/`subject` name the EventSource and event that received it.
fn keep_structured_attributes(event: &mut Event, ce: &cloudevents::Event) {
    use cloudevents::AttributesReader;
    event.id = ce.id().to_owned();
    if let Some(t) = ce.time() {
        event.time = *t;
    }
    event
        .extensions
        .insert("originalsource".into(), ce.source().to_string().into());
    event
        .extensions
        .insert("originaltype".into(), ce.ty().into());
    if let Some(s) = ce.subject() {
        event.extensions.insert("originalsubject".into(), s.into());
    }
    for (k, v) in ce.iter_extensions() {
        event.extensions.insert(k.to_owned(), v.to_string().into());
    }
}

/// A binary-mode CloudEvent (`ce-*` headers) keeps its id, time and extensions.
fn keep_binary_attributes(event: &mut Event, headers: &HeaderMap) {
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            if name.as_str() == "traceparent" || name.as_str() == "tracestate" {
                if let Ok(v) = value.to_str() {
                    event.extensions.insert(name.as_str().to_owned(), v.into());
                }
            }
            continue;
        };
        let Ok(v) = value.to_str() else { continue };
        match attr {
            "id" if !v.is_empty() => event.id = v.to_owned(),
            "time" => {
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
                    event.time = t.with_timezone(&chrono::Utc);
                }
            }
            "specversion" | "id" => {}
            "source" | "type" | "subject" => {
                event.extensions.insert(format!("original{attr}"), v.into());
            }
            other => {
                event.extensions.insert(other.to_owned(), v.into());
            }
        }
    }
}

/// Go's canonical header form (`content-type` → `Content-Type`), as Argo shows headers.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => format!(
                    "{}{}",
                    f.to_ascii_uppercase(),
                    c.as_str().to_ascii_lowercase()
                ),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_canonical() {
        assert_eq!(
            canonical_header("x-hub-signature-256"),
            "X-Hub-Signature-256"
        );
        assert_eq!(canonical_header("content-type"), "Content-Type");
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            config: WebhookConfig {
                port: 1,
                endpoint: "/e".into(),
                method: Method::POST,
                auth: None,
                signature: None,
                tls: None,
                max_payload: DEFAULT_MAX_PAYLOAD,
            },
            shared: super::super::SharedSettings::default(),
            auth: SenderAuth::default(),
            telemetry: SourceTelemetry::new(&crate::telemetry::Metrics::new(), "es", "e"),
            ctx: SourceContext {
                bus: crate::bus::BusBuilder::new(1).build(),
                metrics: std::sync::Arc::new(crate::telemetry::Metrics::new()),
                shutdown: tokio_util::sync::CancellationToken::new(),
                clock: super::super::Clock::System,
                secrets: crate::secret::SecretStore::default(),
                http_limits: crate::telemetry::ServerLimits::ops(),
                cluster: None,
                bind_host: std::net::Ipv4Addr::LOCALHOST.into(),
                host: std::sync::Arc::new(crate::script::ScriptHost::new(
                    Default::default(),
                    vec![],
                )),
            },
        }
    }

    #[test]
    fn plain_bodies_keep_json_or_text_and_mask_tokens() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        let e = build_event(
            &endpoint(),
            &Method::POST,
            None,
            &h,
            Bytes::from_static(b"{\"a\":1}"),
        );
        assert_eq!(e.data["body"]["a"], 1);
        assert_eq!(e.data["header"]["Authorization"][0], "******");
        assert!(!e.data.to_string().contains("secret"));
        let e = build_event(
            &endpoint(),
            &Method::POST,
            None,
            &HeaderMap::new(),
            Bytes::from_static(b"a=1&b=2"),
        );
        assert_eq!(e.data["body"], "a=1&b=2");
    }

    #[test]
    fn a_get_carries_its_query() {
        let body = request_body(&Method::GET, Some("aaa=b%20b&ccc=d%20d&aaa=x"), b"");
        assert_eq!(
            body,
            serde_json::json!({"aaa": ["b b", "x"], "ccc": ["d d"]})
        );
        assert_eq!(request_body(&Method::GET, None, b""), serde_json::json!({}));
        assert_eq!(request_body(&Method::POST, None, b""), Value::Null);
    }

    #[test]
    fn cloudevents_keep_their_id_and_trace_context() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/cloudevents+json".parse().unwrap(),
        );
        let body = r#"{"specversion":"1.0","id":"abc","source":"/ci","type":"build.done",
            "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":{"ok":true}}"#;
        let e = build_event(&endpoint(), &Method::POST, None, &h, Bytes::from(body));
        assert_eq!(e.id, "abc");
        assert_eq!(e.data["body"]["ok"], true);
        assert_eq!(e.extensions["originaltype"], "build.done");
        assert!(e.extensions["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-0af7"));
        let mut h = HeaderMap::new();
        h.insert("ce-id", "xyz".parse().unwrap());
        h.insert("ce-type", "t".parse().unwrap());
        h.insert("traceparent", "00-1-2-01".parse().unwrap());
        let e = build_event(
            &endpoint(),
            &Method::POST,
            None,
            &h,
            Bytes::from_static(b"{}"),
        );
        assert_eq!(e.id, "xyz");
        assert_eq!(e.extensions["originaltype"], "t");
        assert_eq!(e.extensions["traceparent"], "00-1-2-01");
    }
}
