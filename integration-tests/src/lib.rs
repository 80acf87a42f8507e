//! Harness for the black-box integration tests of `triggerd`.
//!
//! The tests in `tests/` only see the built binary: they write manifests into a temp
//! dir, start `triggerd run` ([`Agent`]), send events over HTTP, watch what the agent's
//! triggers send to a recording server ([`Sink`]) and read `/metrics` ([`metric`]).
//! Delivery tests under load send numbered events with a retrying client ([`Load`]),
//! count what arrives per number ([`TallySink`]), crash and restart the agent
//! ([`Agent::kill`], [`Agent::restart`]) or the NATS server ([`NatsServer::stop`]) or an
//! MQTT broker ([`Mosquitto::stop`]) or a RabbitMQ node ([`RabbitMq::stop`]) and look
//! at the JetStream bus directly ([`JetStreamProbe`]).
//! Kubernetes tests get a fresh namespace from [`KubeEnv`]: on a real cluster when
//! `TRIGGERD_TEST_KUBECONFIG` is set, else on the in-repo [`TestApiServer`] ([`kube_api`]).
//!
//! Rules the harness keeps so the suite stays fast and deterministic:
//! - every wait is bounded and polls for a condition; a timeout fails the test with the
//!   agent's captured output;
//! - the only fixed waits are the explicit negative checks ([`Sink::expect_none`],
//!   [`Agent::expect_running`]), because proving that something did *not* happen needs a
//!   bound;
//! - each test uses its own ports and temp dirs, so tests run in parallel.

mod agent;
mod binary;
pub mod brokerbench;
mod cli;
mod jetstream;
mod kafka;
pub mod kube_api;
mod load;
pub mod loadbench;
mod manifests;
mod metrics;
mod moto;
mod mqtt;
mod nats;
mod net;
pub mod rabbitmq;
mod sink;
mod tally;
mod tls_proxy;

pub use agent::{Agent, AgentBuilder};
pub use binary::{triggerd_bin, workspace_root};
pub use cli::{run_cli, run_failing_to_start, CliOutput};
pub use jetstream::{
    conditions_bucket, events_stream, forwarding_agent, jetstream_bus_args, JetStreamProbe,
};
pub use kafka::{tansu_binary, Record, Tansu, TansuSecurity};
pub use kube_api::{FaultSpec, KubeEnv, RecordedRequest, TestApiServer, CRD_LABEL, KUBECONFIG_ENV};
pub use load::{Load, LoadReport};
pub use manifests::{forward_sensor, line_of, webhook_source};
pub use metrics::{metric, wait_for_metric};
pub use moto::{Moto, MOTO_REGION};
pub use mqtt::{Mosquitto, Subscriber};
pub use nats::{NatsServer, TestCerts};
pub use net::{free_port, http_client, DELIVERY_TIMEOUT};
pub use rabbitmq::RabbitMq;
pub use sink::{collect_numbers, Request, Sink};
pub use tally::TallySink;
pub use tls_proxy::TlsProxy;
