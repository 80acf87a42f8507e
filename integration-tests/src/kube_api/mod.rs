//! Kubernetes for the tests: [`KubeEnv`] gives each test a fresh namespace on a real cluster
//! (`TRIGGERD_TEST_KUBECONFIG`) or on a [`TestApiServer`], the in-repo API server used where
//! no cluster can run.
//!
//! # What the test server models
//! - Discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`, legacy
//!   types only; an `Accept` list that also allows `application/json` gets them, as on a real
//!   server), built-in `v1` namespaces, configmaps, secrets, serviceaccounts, events,
//!   `apps/v1` deployments, `coordination.k8s.io/v1` leases, and any resource registered by
//!   POSTing an `apiextensions.k8s.io/v1` CustomResourceDefinition (Established and
//!   NamesAccepted at once; deleting the CRD deletes its objects).
//! - GET, LIST (`limit`/`continue`, label and field selectors), POST (`generateName`),
//!   PUT (`resourceVersion` preconditions: 409 Conflict; CRs need a resourceVersion: 422),
//!   DELETE (of one object or a collection), PATCH as merge, JSON, strategic merge
//!   (built-in kinds; 415 for CRs) and server-side apply, `dryRun=All`, the status
//!   subresource, uid/resourceVersion/creationTimestamp/generation, a Secret's `stringData`,
//!   namespace existence and mismatch checks, RFC 1123 names, all with the real `Status`
//!   error bodies.
//! - WATCH with resourceVersion resume, 410 Expired from a bounded history, bookmarks,
//!   `sendInitialEvents`, `timeoutSeconds`, selectors (objects entering/leaving the selection
//!   are ADDED/DELETED).
//! - Bearer-token users limited to namespaces (403 with RBAC's message), 401 without one,
//!   injected failures and a request log.
//! - ServiceAccount tokens (TokenRequest) authorized by RBAC: the namespace's Roles and
//!   RoleBindings, rule by rule (verbs, API groups, resources and subresources,
//!   resourceNames, `*`), denied with the real 403 Forbidden Status (see `rbac`).
//!
//! # What it does not
//! Managed fields and apply conflicts (apply merges; see `patch`), finalizers and graceful
//! deletion (DELETE removes at once; deleting a namespace is immediate), defaulting and
//! schema validation (objects are stored as sent), conversion between CRD versions (only
//! `apiVersion` changes), ClusterRoles and ClusterRoleBindings (a ServiceAccount gets only
//! what Roles of the request's namespace grant; other users every verb on every resource of
//! their namespaces), field selectors beyond `metadata.name`/`metadata.namespace`, the
//! TokenRequest API, aggregated discovery, protobuf, TLS.

mod control;
mod discovery;
mod env;
mod handler;
mod kubeconfig;
mod objects;
mod patch;
mod rbac;
mod resource;
mod route;
mod selector;
mod server;
mod status;
mod store;
mod strategic;
mod watch;

pub use control::{FaultSpec, RecordedRequest};
pub use env::{KubeEnv, CRD_LABEL, KUBECONFIG_ENV};
pub use server::TestApiServer;
