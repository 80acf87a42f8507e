//! The API server's error answers: a `meta/v1` `Status` body with the real reasons, codes and
//! message wording, so clients (kube's `Error::Api`) see what a real server would send.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::resource::ResourceType;

/// A failed request, answered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: keeps `Result<_, ApiError>` small.
    pub details: Option<Box<Value>>,
    /// `Retry-After` header (seconds), for 429 and friends.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> ApiError {
        self.details = Some(Box::new(details(rt, name)));
        self
    }

    /// 404: `configmaps "x" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.group_resource()),
        )
        .with_details(rt, name)
    }

    /// 404 for a namespace that does not exist (create in a missing namespace).
    pub fn namespace_not_found(namespace: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_raw_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    /// 404 for a path that names no known resource.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_raw_details(json!({}))
    }

    /// 409: `configmaps "x" already exists`.
    pub fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.group_resource()),
        )
        .with_details(rt, name)
    }

    /// 409: the optimistic-concurrency failure of an update with a stale `resourceVersion`.
    pub fn conflict(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.group_resource()
            ),
        )
        .with_details(rt, name)
    }

    /// 422: `<resource> "x" is invalid: <field>: <what>`, with one cause.
    pub fn invalid(rt: &ResourceType, name: &str, field: &str, what: &str) -> ApiError {
        let mut err = ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {field}: {what}",
                rt.qualified_kind()
            ),
        );
        let mut d = details(rt, name);
        // Invalid errors name the kind (not the plural) in details, as the real server does.
        d["kind"] = json!(rt.kind);
        d["causes"] = json!([{"reason": "FieldValueInvalid", "message": what, "field": field}]);
        err.details = Some(Box::new(d));
        err
    }

    /// 422 without a resource.
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "Invalid", message)
    }

    /// 422 for a JSON patch that does not apply (e.g. a failed `test` op), worded like the
    /// real server; the patch library's error is the cause.
    pub fn patch_rejected(cause: impl Into<String>) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_raw_details(
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": cause.into()}]}),
        )
    }

    /// 422 for invalid request options, e.g. `PatchOptions` `fieldManager` missing on apply.
    pub fn invalid_options(options: &str, field: &str, what: &str) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!("{options}.meta.k8s.io \"\" is invalid: {field}: {what}"),
        )
        .with_raw_details(json!({
            "group": "meta.k8s.io",
            "kind": options,
            "causes": [{"reason": "FieldValueRequired", "message": what, "field": field}],
        }))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized (no or unknown bearer token).
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 with the authorizer's message, as RBAC denials read.
    pub fn forbidden(rt: &ResourceType, name: Option<&str>, why: String) -> ApiError {
        let gr = rt.group_resource();
        let message = match name {
            Some(name) => format!("{gr} \"{name}\" is forbidden: {why}"),
            None => format!("{gr} is forbidden: {why}"),
        };
        ApiError::new(403, "Forbidden", message).with_details(rt, name.unwrap_or(""))
    }

    /// 415 for a patch type the resource does not accept.
    pub fn unsupported_media_type(accepted: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
        )
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 406 for an Accept header that allows no type this server produces.
    pub fn not_acceptable() -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json",
        )
    }

    /// 410 `Expired`: a watch from a `resourceVersion` older than the retained history.
    pub fn too_old(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
        .with_raw_details(json!({"causes": [{"message": "injected failure"}]}))
    }

    /// Any status code with the reason a real server uses for it (fault injection).
    pub fn for_code(code: u16, retry_after: Option<u32>) -> ApiError {
        let mut err = match code {
            500 => return ApiError::internal("injected failure"),
            400 => ApiError::bad_request("injected failure"),
            401 => ApiError::unauthorized(),
            403 => ApiError::new(403, "Forbidden", "injected failure"),
            404 => ApiError::new(404, "NotFound", "injected failure"),
            409 => ApiError::new(409, "Conflict", "injected failure"),
            410 => ApiError::new(410, "Expired", "injected failure"),
            422 => ApiError::new(422, "Invalid", "injected failure"),
            429 => ApiError::new(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            503 => ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ApiError::new(504, "Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
            _ => ApiError::new(code, "InternalError", format!("injected failure ({code})")),
        };
        if let Some(secs) = retry_after {
            err.retry_after = Some(secs);
            err.details = Some(Box::new(json!({"retryAfterSeconds": secs})));
        }
        err
    }

    fn with_raw_details(mut self, details: Value) -> ApiError {
        self.details = Some(Box::new(details));
        self
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        status.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            status.insert("details".into(), Value::clone(d));
        }
        status.insert("code".into(), json!(self.code));
        Value::Object(status)
    }
}

/// `details` of a Status about one object: name, group (omitted for the core group) and the
/// resource's plural as `kind`, as the real server fills them.
fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !rt.group.is_empty() {
        d.insert("group".into(), json!(rt.group));
    }
    d.insert("kind".into(), json!(rt.plural));
    Value::Object(d)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
