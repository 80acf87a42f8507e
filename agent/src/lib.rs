//! triggerd: one process per namespace that turns events into triggers.
//!
//! Modules follow the data flow: manifests are loaded and scripts compiled, sources emit
//! events onto the bus, sensors match and filter them, triggers execute, policies judge the
//! result and delivery retries or dead-letters it. `testing` runs sensors offline against
//! stubbed trigger responses (`triggerd test`, `triggerd eval`).
//!
//! # Layers
//!
//! Top-level modules are layered: each may import only the modules listed after it, so
//! imports point down the data flow and shared types sit below all their users. The test
//! `tests/layering.rs` reads this list and fails on any import that points up it (test-only
//! code may reach anywhere). A new top-level module is placed here first.
//!
//! 1. `cli` — the command line: `run`, `validate`, `test`, `eval`, `dlq`, `crds`.
//! 2. `testing` — offline sensor and policy tests (`triggerd test`).
//! 3. `controller` — cluster mode: Sensor and EventSource objects become plans.
//! 4. `agent` — runs a plan: bus, sources, sensors, ops port.
//! 5. `plan` — the validation pass over all loaded documents.
//! 6. `source` — event sources, one file per kind.
//! 7. `sensor` — dependencies, filters, transforms and conditions.
//! 8. `delivery` — runs a trigger to its final outcome: policy, retries, rate limit, dead letter.
//! 9. `policy` — judges one attempt's response.
//! 10. `trigger` — what one attempt does, one file per trigger kind.
//! 11. `aws_client` — AWS SDK settings shared by the awsLambda trigger and the sqs source.
//! 12. `amqp_client` — AMQP connection settings shared by source and trigger.
//! 13. `kafka_client` — Kafka connection settings shared by source and trigger.
//! 14. `mqtt_client` — MQTT connection settings shared by source and trigger.
//! 15. `nats_client` — NATS connection settings shared by source and trigger.
//! 16. `broker_tls` — broker TLS from the PEM text of secrets (NATS, Kafka, MQTT, AMQP).
//! 17. `cluster` — the Kubernetes API client, kind discovery, namespace guard, Lease, CRDs.
//! 18. `bus` — carries events from sources to sensors: embedded or JetStream.
//! 19. `event` — the CloudEvent and the set of events that fired a trigger.
//! 20. `backoff` — retry backoff and Go durations.
//! 21. `compile` — the compile context every compile step is handed.
//! 22. `secret` — secrets from files, the environment or the namespace's Secrets.
//! 23. `script` — the Rhai host.
//! 24. `manifest` — manifest types and loading, with positions.
//! 25. `files` — the directories a manifest's file references may read from.
//! 26. `telemetry` — metrics, logs and the ops port.
//! 27. `clock` — the clock sources and sensors read (real, or paused in tests).

pub mod agent;
pub mod amqp_client;
pub mod aws_client;
pub mod backoff;
pub mod broker_tls;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod compile;
pub mod controller;
pub mod delivery;
pub mod event;
pub mod files;
pub mod kafka_client;
pub mod manifest;
pub mod mqtt_client;
pub mod nats_client;
pub mod plan;
pub mod policy;
pub mod script;
pub mod secret;
pub mod sensor;
pub mod source;
pub mod telemetry;
pub mod testing;
pub mod trigger;
