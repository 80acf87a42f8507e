//! The one HTTP handler: authenticate, maybe fail on purpose, resolve the path, authorize,
//! then serve discovery or the resource verb; every request is logged with its answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::control::{Access, Caller, RecordedRequest};
use super::discovery;
use super::patch::PatchKind;
use super::route::{resolve, ResourceRequest, Target};
use super::selector::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::status::ApiError;
use super::store::Selection;
use super::watch::{self, WatchRequest};

type Params = HashMap<String, String>;

/// Handles any request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let accept = header_text(header::ACCEPT);
    let caller = authenticate(&shared, header_text(header::AUTHORIZATION).as_deref());
    let params: Params = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let request = Request {
        method: &method,
        path: uri.path(),
        params: &params,
        content_type: content_type.as_deref(),
        accept: accept.as_deref(),
        body: &body,
    };
    let response = match serve(&shared, caller.as_ref(), &request) {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    shared.control().requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        content_type,
        user: caller.as_ref().map(|c| c.name().to_owned()),
        status: response.status().as_u16(),
    });
    response
}

struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    params: &'a Params,
    content_type: Option<&'a str>,
    accept: Option<&'a str>,
    body: &'a [u8],
}

impl Request<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }
}

fn authenticate(shared: &Shared, authorization: Option<&str>) -> Option<Caller> {
    let token = authorization?.strip_prefix("Bearer ")?.trim();
    if token == shared.admin_token {
        return Some(Caller::Admin);
    }
    shared.control().users.get(token).cloned()
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn serve(
    shared: &Arc<Shared>,
    caller: Option<&Caller>,
    req: &Request<'_>,
) -> Result<Response, ApiError> {
    let target = resolve(&shared.store(), req.path);
    if let Ok(Target::Public(what)) = &target {
        return Ok(match *what {
            "version" => json_response(StatusCode::OK, &discovery::version()),
            _ => (StatusCode::OK, "ok").into_response(),
        });
    }
    let caller = caller.ok_or_else(ApiError::unauthorized)?;
    let watch = req.flag("watch");
    let (verb, plural) = match &target {
        Ok(Target::Resource(r)) => (r.verb(req.method, watch), Some(r.rt.plural.as_str())),
        _ => (None, None),
    };
    if let Some(err) = shared
        .control()
        .take_fault(req.method.as_str(), verb, plural)
    {
        return Err(err);
    }
    let target = target?;
    if *req.method != Method::GET && !matches!(target, Target::Resource(_)) {
        return Err(ApiError::method_not_allowed(req.method.as_str()));
    }
    let store = shared.store();
    let types = store.types();
    let doc = match target {
        Target::Public(_) => None,
        Target::CoreVersions => {
            discovery::accepts_plain_json(req.accept)?;
            Some(discovery::core_versions(&shared.address))
        }
        Target::Groups => {
            discovery::accepts_plain_json(req.accept)?;
            Some(discovery::groups(types))
        }
        Target::Group(group) => discovery::group(types, &group),
        Target::Resources { group, version } => discovery::resources(types, &group, &version),
        Target::Resource(r) => {
            let verb = verb.ok_or_else(|| ApiError::method_not_allowed(req.method.as_str()))?;
            let access = Access {
                verb,
                rt: &r.rt,
                namespace: r.namespace.as_deref(),
                name: r.name.as_deref(),
                subresource: r.subresource.as_deref(),
            };
            caller.authorize(&access, &store)?;
            drop(store);
            return resource(shared, req, &r, verb);
        }
    };
    doc.map(|d| json_response(StatusCode::OK, &d))
        .ok_or_else(ApiError::no_route)
}

fn selection(req: &Request<'_>, r: &ResourceRequest) -> Result<Selection, ApiError> {
    Ok(Selection {
        namespace: r.namespace.clone(),
        labels: LabelSelector::parse(req.param("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(req.param("fieldSelector").unwrap_or(""), &r.rt)?,
    })
}

fn parse_object(req: &Request<'_>) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(req.body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(req.body)
        .map_err(|e| ApiError::bad_request(format!("the body of the request is not UTF-8: {e}")))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

fn resource(
    shared: &Arc<Shared>,
    req: &Request<'_>,
    r: &ResourceRequest,
    verb: &str,
) -> Result<Response, ApiError> {
    let rt = &r.rt;
    let ns = r.namespace.as_deref();
    let name = r.name.as_deref().unwrap_or("");
    let sub = r.subresource.as_deref();
    if verb == "watch" {
        let timeout = req
            .param("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        return watch::start(
            shared.clone(),
            WatchRequest {
                rt: rt.clone(),
                selection: selection(req, r)?,
                resource_version: req.param("resourceVersion").map(str::to_owned),
                send_initial_events: req.flag("sendInitialEvents"),
                resource_version_match: req.param("resourceVersionMatch").map(str::to_owned),
                bookmarks: req.flag("allowWatchBookmarks"),
                timeout,
            },
        );
    }
    if sub == Some("token") {
        return token_request(shared, req, r);
    }
    let mut store = shared.store();
    let (code, value) = match verb {
        "get" => (StatusCode::OK, store.get(rt, ns, name)?),
        "list" => {
            let limit = req.param("limit").and_then(|l| l.parse::<usize>().ok());
            (
                StatusCode::OK,
                store.list(rt, &selection(req, r)?, limit, req.param("continue"))?,
            )
        }
        "create" => (
            StatusCode::CREATED,
            store.create(rt, ns, parse_object(req)?, req.dry_run())?,
        ),
        "update" => (
            StatusCode::OK,
            store.update(rt, ns, name, sub, parse_object(req)?, req.dry_run())?,
        ),
        "patch" => {
            let kind = PatchKind::for_request(req.content_type, rt)?;
            let (obj, created) = store.patch(
                rt,
                ns,
                name,
                sub,
                kind,
                req.body,
                req.param("fieldManager"),
                req.dry_run(),
            )?;
            (
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                obj,
            )
        }
        "delete" => (StatusCode::OK, store.delete(rt, ns, name, req.dry_run())?),
        "deletecollection" => (
            StatusCode::OK,
            store.delete_collection(rt, &selection(req, r)?)?,
        ),
        other => return Err(ApiError::method_not_allowed(other)),
    };
    let rv = store.current_rv();
    drop(store);
    shared.changed.send_replace(rv);
    Ok(json_response(code, &value))
}

/// `POST .../serviceaccounts/{name}/token`: mints a token for the ServiceAccount, which then
/// acts as `system:serviceaccount:<namespace>:<name>`, with what RBAC grants it there.
fn token_request(
    shared: &Arc<Shared>,
    req: &Request<'_>,
    r: &ResourceRequest,
) -> Result<Response, ApiError> {
    let ns = r.namespace.as_deref().unwrap_or("");
    let name = r.name.as_deref().unwrap_or("");
    shared.store().get(&r.rt, Some(ns), name)?;
    let mut request = parse_object(req)?;
    let seconds = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
    shared.control().users.insert(
        token.clone(),
        Caller::ServiceAccount {
            user: format!("system:serviceaccount:{ns}:{name}"),
            namespace: ns.to_owned(),
            name: name.to_owned(),
        },
    );
    let expires = chrono::Utc::now() + chrono::Duration::seconds(seconds);
    request["apiVersion"] = serde_json::json!("authentication.k8s.io/v1");
    request["kind"] = serde_json::json!("TokenRequest");
    request["metadata"] = serde_json::json!({"name": name, "namespace": ns});
    request["status"] = serde_json::json!({
        "token": token,
        "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    Ok(json_response(StatusCode::CREATED, &request))
}
