//! Synchronous work that may run long (a script evaluation, a jq run) on the async
//! runtime: once it has been slow, it hands its worker's other tasks on before it runs
//! (`block_in_place`), so it delays only its own event. Fast work keeps running inline,
//! where that hand-over would cost more than the work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A run longer than this marks the work slow.
const SLOW: Duration = Duration::from_millis(1);

/// Whether one piece of work (one compiled script, one jq program) has run slow; clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct SlowWork(Arc<AtomicBool>);

impl SlowWork {
    /// Runs `work`, off the async worker when it has been slow before and the runtime has
    /// other workers to take over; returns its result and how long it took.
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> (T, Duration) {
        let started = tokio::time::Instant::now();
        let off_the_worker = self.is_slow()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if off_the_worker {
            tokio::task::block_in_place(work)
        } else {
            work()
        };
        let took = started.elapsed();
        if took > SLOW {
            self.0.store(true, Ordering::Relaxed);
        }
        (result, took)
    }

    /// Whether a run has been slow.
    pub fn is_slow(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
