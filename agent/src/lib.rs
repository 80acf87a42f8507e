//! triggerd: one process per namespace that turns events into triggers.
//!
//! Modules follow the data flow: manifests are loaded and scripts compiled, sources emit
//! events onto the bus, sensors match and filter them, triggers execute, policies judge the
//! result and delivery retries or dead-letters it. `testing` runs sensors offline against
//! stubbed trigger responses (`triggerd test`, `triggerd eval`).

pub mod agent;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod delivery;
pub mod event;
pub mod kafka_client;
pub mod manifest;
pub mod nats_client;
pub mod plan;
pub mod policy;
pub mod script;
pub mod sensor;
pub mod source;
pub mod telemetry;
pub mod testing;
pub mod trigger;
