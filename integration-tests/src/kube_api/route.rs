//! What a request path names: a discovery document or a resource (collection, object or
//! subresource), and the Kubernetes verb of the request.

use axum::http::Method;

use super::resource::ResourceType;
use super::status::ApiError;
use super::store::Store;

/// A resolved path.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// `/version`, `/healthz`, `/readyz`, `/livez`: served without authentication.
    Public(&'static str),
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    Resources { group: String, version: String },
    /// A resource request.
    Resource(ResourceRequest),
}

/// A request for a resource collection, object or subresource.
#[derive(Debug, Clone)]
pub(crate) struct ResourceRequest {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl ResourceRequest {
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`), or `None` for a method the resource does not take.
    pub fn verb(&self, method: &Method, watch: bool) -> Option<&'static str> {
        let named = self.name.is_some();
        Some(match *method {
            Method::GET if named => "get",
            Method::GET if watch => "watch",
            Method::GET => "list",
            Method::POST if !named => "create",
            Method::POST if self.subresource.as_deref() == Some("token") => "create",
            Method::PUT if named => "update",
            Method::PATCH if named => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => return None,
        })
    }
}

/// Resolves `path` against the types `store` serves.
pub(crate) fn resolve(store: &Store, path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Target::Public("version")),
        ["healthz"] | ["readyz"] | ["livez"] => return Ok(Target::Public("ok")),
        ["api"] => return Ok(Target::CoreVersions),
        ["apis"] => return Ok(Target::Groups),
        ["apis", group] => return Ok(Target::Group((*group).to_owned())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    if rest.is_empty() {
        return Ok(Target::Resources {
            group: group.to_owned(),
            version: version.to_owned(),
        });
    }
    let namespaced = match rest {
        ["namespaces", ns, plural, tail @ ..] => store
            .find(group, version, plural)
            .filter(|t| t.namespaced)
            .map(|t| (t.clone(), Some((*ns).to_owned()), tail)),
        _ => None,
    };
    let (rt, namespace, tail) = match namespaced {
        Some(found) => found,
        None => {
            let rt = store
                .find(group, version, rest[0])
                .ok_or_else(ApiError::no_route)?;
            // A namespaced type without a namespace is only a collection (list/watch across
            // all namespaces).
            if rt.namespaced && rest.len() > 1 {
                return Err(ApiError::no_route());
            }
            (rt.clone(), None, &rest[1..])
        }
    };
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] if *sub == "status" && rt.status => {
            (Some((*name).to_owned()), Some("status".to_owned()))
        }
        [name, "token"] if rt.group.is_empty() && rt.plural == "serviceaccounts" => {
            (Some((*name).to_owned()), Some("token".to_owned()))
        }
        _ => return Err(ApiError::no_route()),
    };
    Ok(Target::Resource(ResourceRequest {
        rt,
        namespace,
        name,
        subresource,
    }))
}
