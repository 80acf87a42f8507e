//! Test-only controls of the server: users and what they may do, injected failures and the
//! request log.

use std::collections::HashMap;

use super::rbac;
use super::resource::ResourceType;
use super::status::ApiError;
use super::store::Store;

/// A failure the server answers instead of handling the next matching requests.
#[derive(Debug, Clone)]
pub struct FaultSpec {
    /// HTTP method (`GET`, `PATCH`, ...) or Kubernetes verb (`list`, `watch`, `create`, ...)
    /// to match, case-insensitive; `None` matches any.
    pub method: Option<String>,
    /// Resource plural (`configmaps`, `workflows`) to match; `None` matches any request,
    /// discovery included.
    pub resource: Option<String>,
    /// The status code to answer, with the reason a real server gives it (500 InternalError,
    /// 429 TooManyRequests, 503 ServiceUnavailable, ...).
    pub status: u16,
    /// How many matching requests fail.
    pub times: usize,
    /// `Retry-After` seconds (also in the Status `details.retryAfterSeconds`).
    pub retry_after: Option<u32>,
}

impl Default for FaultSpec {
    fn default() -> FaultSpec {
        FaultSpec {
            method: None,
            resource: None,
            status: 500,
            times: 1,
            retry_after: None,
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The authenticated user's name (`None`: not authenticated).
    pub user: Option<String>,
    /// The status code answered (for a watch: when the stream started).
    pub status: u16,
}

impl RecordedRequest {
    /// The value of query parameter `name` (percent-decoding not applied).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Admin,
    User {
        name: String,
        namespaces: Vec<String>,
    },
    /// A ServiceAccount token (TokenRequest): RBAC Roles and RoleBindings decide.
    ServiceAccount {
        user: String,
        namespace: String,
        name: String,
    },
}

impl Caller {
    /// The user name recorded in the request log.
    pub fn name(&self) -> &str {
        match self {
            Caller::Admin => "admin",
            Caller::User { name, .. } => name,
            Caller::ServiceAccount { user, .. } => user,
        }
    }
}

/// A resource request to authorize.
pub(crate) struct Access<'a> {
    pub verb: &'a str,
    pub rt: &'a ResourceType,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
}

impl Caller {
    /// Admin may do anything; a user may do anything in its namespaces and GET those
    /// namespaces' objects; a ServiceAccount what its namespace's Roles grant it (see
    /// `rbac`). Denials read like RBAC's.
    pub fn authorize(&self, access: &Access<'_>, store: &Store) -> Result<(), ApiError> {
        let (name, allowed) = match self {
            Caller::Admin => return Ok(()),
            Caller::User { name, namespaces } => {
                let own = |ns: &str| namespaces.iter().any(|n| n == ns);
                let allowed = if access.rt.namespaced {
                    access.namespace.is_some_and(own)
                } else {
                    access.rt.group.is_empty()
                        && access.rt.plural == "namespaces"
                        && access.verb == "get"
                        && access.subresource.is_none()
                        && access.name.is_some_and(own)
                };
                (name, allowed)
            }
            Caller::ServiceAccount {
                user,
                namespace,
                name,
            } => (user, rbac::allows(store, namespace, name, access)),
        };
        if allowed {
            return Ok(());
        }
        let resource = match access.subresource {
            Some(sub) => format!("{}/{sub}", access.rt.plural),
            None => access.rt.plural.clone(),
        };
        let scope = match access.namespace.filter(|_| access.rt.namespaced) {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let why = format!(
            "User \"{name}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            access.verb, access.rt.group
        );
        Err(ApiError::forbidden(access.rt, access.name, why))
    }
}

/// Users, faults and the request log.
#[derive(Default)]
pub(crate) struct Control {
    pub users: HashMap<String, Caller>,
    pub faults: Vec<FaultSpec>,
    pub requests: Vec<RecordedRequest>,
}

impl Control {
    /// Takes one use of the first fault matching the request, if any.
    pub fn take_fault(
        &mut self,
        method: &str,
        verb: Option<&str>,
        plural: Option<&str>,
    ) -> Option<ApiError> {
        let index = self.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_deref().is_none_or(|m| {
                    m.eq_ignore_ascii_case(method)
                        || verb.is_some_and(|v| m.eq_ignore_ascii_case(v))
                })
                && f.resource.as_deref().is_none_or(|r| Some(r) == plural)
        })?;
        let fault = &mut self.faults[index];
        fault.times -= 1;
        let err = ApiError::for_code(fault.status, fault.retry_after);
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(err)
    }
}
