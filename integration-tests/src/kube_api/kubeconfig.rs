//! Kube client configs and kubeconfig files for a bearer-token identity.

use std::path::Path;

use serde_json::{json, Value};

/// A kube client config for the plain-HTTP `server` with a bearer `token`.
pub(crate) fn config(server: &str, token: &str, namespace: &str) -> kube::Config {
    let url = server
        .parse::<axum::http::Uri>()
        .unwrap_or_else(|e| panic!("API server URL {server:?} is not a URI: {e}"));
    let mut config = kube::Config::new(url);
    config.default_namespace = namespace.to_owned();
    config.auth_info =
        serde_json::from_value(json!({ "token": token })).expect("an AuthInfo from a token");
    config
}

/// Writes a kubeconfig (as JSON, which every kubeconfig reader accepts as YAML) with one
/// context: `cluster`, a bearer `token` user named `user`, and `namespace`.
pub(crate) fn write(path: &Path, cluster: &Value, user: &str, token: &str, namespace: &str) {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "triggerd-test", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{
            "name": "triggerd-test",
            "context": {"cluster": "triggerd-test", "user": user, "namespace": namespace}
        }],
        "current-context": "triggerd-test",
    });
    let text = serde_json::to_string_pretty(&doc).expect("serialize a kubeconfig");
    std::fs::write(path, text)
        .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
}
