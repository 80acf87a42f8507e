//! [`KubeEnv`]: one test's Kubernetes, a real cluster or a [`TestApiServer`].

#![allow(
    clippy::disallowed_types,
    reason = "the cleanup list's std Mutex is locked briefly, never across .await"
)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::kubeconfig;
use super::server::TestApiServer;
use crate::binary::workspace_root;

/// Names a kubeconfig of a real cluster to run the Kubernetes tests against (its current
/// context's identity is the tests' admin). Unset: each test starts a [`TestApiServer`].
pub const KUBECONFIG_ENV: &str = "TRIGGERD_TEST_KUBECONFIG";

/// The label (`key`, `value`) on everything the tests create that may outlive a test on a
/// real cluster (CRDs, namespaces): remove leftovers with
/// `kubectl delete crd,namespace -l app.kubernetes.io/managed-by=triggerd-tests`.
pub const CRD_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "triggerd-tests");

/// The agent's identity: ServiceAccount, Role and RoleBinding `triggerd` from the deployment
/// base, `manifests/deploy/base/`.
const AGENT_SA: &str = "triggerd";
const RBAC_MANIFESTS: [&str; 3] = [
    "manifests/deploy/base/serviceaccount.yaml",
    "manifests/deploy/base/role.yaml",
    "manifests/deploy/base/rolebinding.yaml",
];

/// How long a CRD may take to become Established on a real cluster.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's Kubernetes: a fresh namespace `triggerd-test-<random>` on the cluster named by
/// `TRIGGERD_TEST_KUBECONFIG`, or on a [`TestApiServer`] started for the test.
///
/// On a real cluster the namespaces it created are deleted when it is dropped (best effort,
/// from a helper thread; failures are printed, never panics). CRDs are cluster-wide and
/// shared by tests running in parallel processes, so [`KubeEnv::install_crd`] never deletes
/// them: they stay installed, labelled [`CRD_LABEL`] (see there for the cleanup command).
pub struct KubeEnv {
    server: Option<TestApiServer>,
    admin: kube::Config,
    client: kube::Client,
    namespace: String,
    /// Namespaces to delete on drop (real cluster only).
    created: Mutex<Vec<String>>,
    dir: TempDir,
}

impl KubeEnv {
    /// Connects to the real cluster when `TRIGGERD_TEST_KUBECONFIG` is set, else starts a
    /// test server; either way creates the test's namespace.
    pub async fn start() -> KubeEnv {
        let (server, admin) = match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
                    panic!("{KUBECONFIG_ENV}={}: {e}", Path::new(&path).display())
                });
                let config =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .unwrap_or_else(|e| {
                            panic!("{KUBECONFIG_ENV}: cannot build a client config: {e}")
                        });
                (None, config)
            }
            None => {
                let server = TestApiServer::start();
                let config = server.config(server.admin_token(), "default");
                (Some(server), config)
            }
        };
        let client = kube::Client::try_from(admin.clone()).expect("build the admin kube client");
        let dir = tempfile::Builder::new()
            .prefix("triggerd-kube-")
            .tempdir()
            .expect("create the KubeEnv temp dir");
        let namespace = create_namespace(&client).await;
        KubeEnv {
            server,
            admin,
            client,
            created: Mutex::new(vec![namespace.clone()]),
            namespace,
            dir,
        }
    }

    /// Whether this runs against a real cluster.
    pub fn is_real_cluster(&self) -> bool {
        self.server.is_none()
    }

    /// The test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// An admin client, for the test's own setup and assertions.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The test server, for test-server-only hooks (`None` on a real cluster).
    pub fn server(&self) -> Option<&TestApiServer> {
        self.server.as_ref()
    }

    /// A second fresh namespace (deleted with the first), for "other namespace" tests.
    pub async fn extra_namespace(&self) -> String {
        let name = create_namespace(&self.client).await;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        name
    }

    /// Creates the CRD in the YAML file at `path` (relative to the workspace root, e.g.
    /// `manifests/test/workflow-crd.yaml`), labelled [`CRD_LABEL`]; one that already exists
    /// is fine. Waits (bounded) until it is Established. Never deleted by the tests.
    pub async fn install_crd(&self, path: &str) {
        let file = workspace_root().join(path);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut doc: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        doc["metadata"]["labels"][CRD_LABEL.0] = json!(CRD_LABEL.1);
        let crd: CustomResourceDefinition = serde_json::from_value(doc)
            .unwrap_or_else(|e| panic!("{} is not a CRD: {e}", file.display()));
        let name = crd.metadata.name.clone().unwrap_or_default();
        let api = Api::<CustomResourceDefinition>::all(self.client());
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("create CRD {name} from {}: {e}", file.display()),
        }
        let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
        loop {
            let crd = api
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("get CRD {name}: {e}"));
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "CRD {name} not Established within {ESTABLISH_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a kubeconfig for the agent under test and returns its path (in the env's temp
    /// dir). Its identity is ServiceAccount `triggerd` of [`KubeEnv::namespace`], set up from
    /// `manifests/deploy/base/` (ServiceAccount, least-privilege Role, RoleBinding), with a
    /// token from the TokenRequest API; the context's namespace is the test's namespace. The
    /// Role's rules apply, on a real cluster and on the test server alike.
    pub async fn agent_kubeconfig(&self) -> PathBuf {
        for manifest in RBAC_MANIFESTS {
            self.apply_manifest(manifest).await;
        }
        let request: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 3600}
        }))
        .expect("a TokenRequest object");
        let token: TokenRequest = Api::<ServiceAccount>::namespaced(self.client(), &self.namespace)
            .create_subresource("token", AGENT_SA, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for serviceaccount {AGENT_SA}: {e}"));
        let token = token
            .status
            .map(|s| s.token)
            .unwrap_or_default()
            .unwrap_or_default();
        assert!(!token.is_empty(), "TokenRequest returned no token");
        let cluster = self.cluster_entry();
        let path = self
            .dir
            .path()
            .join(format!("agent-{}.kubeconfig", self.namespace));
        let user = format!("system:serviceaccount:{}:{AGENT_SA}", self.namespace);
        kubeconfig::write(&path, &cluster, &user, &token, &self.namespace);
        path
    }

    /// Writes a kubeconfig for the test's cluster and namespace with an arbitrary bearer
    /// `token` (e.g. a bogus one, for 401 tests) and returns its path.
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!(
            "token-{}.kubeconfig",
            uuid::Uuid::new_v4().simple()
        ));
        kubeconfig::write(
            &path,
            &self.cluster_entry(),
            "triggerd-test-user",
            token,
            &self.namespace,
        );
        path
    }

    /// A client acting with the identity in `kubeconfig` (e.g. [`KubeEnv::agent_kubeconfig`]).
    pub async fn client_from_kubeconfig(kubeconfig: &Path) -> kube::Client {
        let parsed = Kubeconfig::read_from(kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("client config from {}: {e}", kubeconfig.display()));
        kube::Client::try_from(config).expect("build a kube client from a kubeconfig")
    }

    /// The kubeconfig `cluster` entry the admin uses (server URL and CA).
    fn cluster_entry(&self) -> Value {
        if let Some(server) = &self.server {
            return json!({"server": server.url()});
        }
        let path = std::env::var_os(KUBECONFIG_ENV).unwrap_or_default();
        let kubeconfig =
            Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}: {e}"));
        let context = kubeconfig.current_context.clone().unwrap_or_default();
        let cluster_name = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .unwrap_or_else(|| panic!("{KUBECONFIG_ENV}: no current context"));
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.clone())
            .unwrap_or_else(|| panic!("{KUBECONFIG_ENV}: no cluster {cluster_name}"));
        serde_json::to_value(cluster).expect("serialize a kubeconfig cluster")
    }

    /// Creates the object in a YAML manifest in the test's namespace (a RoleBinding's
    /// ServiceAccount subjects are bound to the test's namespace).
    async fn apply_manifest(&self, path: &str) {
        let file = workspace_root().join(path);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let mut doc: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
            for subject in subjects {
                subject["namespace"] = json!(self.namespace);
            }
        }
        let obj: DynamicObject =
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let types = obj
            .types
            .clone()
            .unwrap_or_else(|| panic!("{}: no apiVersion/kind", file.display()));
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), types.api_version.clone()),
        };
        let resource = ApiResource {
            group,
            version,
            api_version: types.api_version.clone(),
            kind: types.kind.clone(),
            plural: format!("{}s", types.kind.to_lowercase()),
        };
        Api::<DynamicObject>::namespaced_with(self.client(), &self.namespace, &resource)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {} from {}: {e}", types.kind, file.display()));
    }
}

/// Creates a fresh `triggerd-test-<random>` namespace labelled [`CRD_LABEL`].
async fn create_namespace(client: &kube::Client) -> String {
    let name = format!(
        "triggerd-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {CRD_LABEL.0: CRD_LABEL.1}}
    }))
    .expect("a Namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        if self.server.is_some() {
            return; // the test server goes with everything in it
        }
        let namespaces =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        if namespaces.is_empty() {
            return;
        }
        // The test's runtime may be gone or be the one running this drop: delete from a thread
        // with its own runtime, and wait for it a bounded time.
        let config = self.admin.clone();
        let (done, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kube-env-cleanup".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(async {
                            let client =
                                kube::Client::try_from(config).map_err(|e| e.to_string())?;
                            let api = Api::<Namespace>::all(client);
                            for ns in &namespaces {
                                if let Err(e) = api.delete(ns, &DeleteParams::background()).await {
                                    eprintln!("KubeEnv: could not delete namespace {ns}: {e}");
                                }
                            }
                            Ok::<(), String>(())
                        })
                    });
                let _ = done.send(result);
            });
        match spawned {
            Ok(_) => match finished.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("KubeEnv: namespace cleanup failed: {e}"),
                Err(_) => eprintln!("KubeEnv: namespace cleanup did not finish within 20s"),
            },
            Err(e) => eprintln!("KubeEnv: cannot start the namespace cleanup thread: {e}"),
        }
    }
}
