//! The event bus between sources and sensors. File mode uses the embedded, in-process bus.

mod dedup;
mod embedded;

pub use embedded::{Bus, BusBuilder, PublishError, Published, Subscription};
