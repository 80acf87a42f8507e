//! The deployment manifests in `manifests/deploy/` say what the README promises: every file
//! the kustomizations name exists and parses, and the agent's container runs `run --kube`
//! as non-root on a read-only root filesystem with probes on the ops port.

use integration_tests::workspace_root;
use serde_json::Value;

fn yaml(path: &str) -> Value {
    let file = workspace_root().join(path);
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn the_base_names_existing_objects_of_the_expected_kinds() {
    let kustomization = yaml("manifests/deploy/base/kustomization.yaml");
    let kinds: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            let path = format!("manifests/deploy/base/{}", r.as_str().expect("a path"));
            yaml(&path)["kind"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service"
        ]
    );
    let overlay = yaml("manifests/deploy/overlays/jetstream/kustomization.yaml");
    assert_eq!(overlay["resources"][0], "../../base");
    let patch = overlay["patches"][0]["patch"].as_str().unwrap_or("");
    assert!(
        patch.contains("--bus=jetstream") && patch.contains("--nats-url="),
        "{patch}"
    );
}

#[test]
fn the_agent_runs_unprivileged_with_probes_on_the_ops_port() {
    let deployment = yaml("manifests/deploy/base/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "triggerd");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(&args[..2], ["run", "--kube"]);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    let ops = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "ops")
        .expect("an ops port");
    assert_eq!(ops["containerPort"], 9090);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "ops");
    }
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());
    let env = container["env"].as_array().expect("env");
    assert!(env.iter().any(|e| e["name"] == "TRIGGERD_NAMESPACE"
        && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"));

    let service = yaml("manifests/deploy/base/service.yaml");
    let targets: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["targetPort"].as_str())
        .collect();
    assert_eq!(targets, ["webhook", "ops"]);
}
