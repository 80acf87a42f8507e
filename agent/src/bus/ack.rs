//! The acknowledgement obligation of one bus message (DESIGN section 6): a message is
//! acknowledged only when every piece of work it started (the sensor's own handling, each
//! trigger it fired, each dead letter it wrote) has finished. Work that is dropped unfinished
//! (a hard shutdown, a panic) leaves the message unacknowledged, so JetStream delivers it
//! again after the ack wait. While work is pending, "in progress" acknowledgements keep the
//! ack wait from running out under long triggers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tokio_util::sync::CancellationToken;

use super::dedup::Dedup;
use crate::event::EventIdentity;

// Held only for a set look-up inside synchronous code, never across an await.
#[allow(clippy::disallowed_types)]
pub(crate) type DedupLock = std::sync::Mutex<Dedup>;

/// One piece of unfinished work on a bus message; finish it with [`Pending::done`].
#[derive(Debug)]
pub struct Pending {
    /// `None` once this piece is finished (or for messages with nothing to acknowledge).
    tracked: Option<Arc<Tracked>>,
}

/// Where a finished message's id is remembered, so a redelivery of it is recognised.
#[derive(Debug)]
pub(crate) struct Completed {
    pub(crate) set: Arc<DedupLock>,
    pub(crate) identity: EventIdentity,
}

#[derive(Debug)]
struct Tracked {
    message: Message,
    remaining: AtomicUsize,
    abandoned: AtomicBool,
    progress: CancellationToken,
    completed: Option<Completed>,
}

impl Pending {
    /// Nothing to acknowledge (the embedded bus, offline tests).
    pub fn none() -> Self {
        Self { tracked: None }
    }

    /// The obligation of a JetStream message, sending "in progress" every half `ack_wait`
    /// until it is finished or abandoned.
    pub(crate) fn tracked(
        message: Message,
        ack_wait: Duration,
        completed: Option<Completed>,
    ) -> Self {
        let tracked = Arc::new(Tracked {
            message,
            remaining: AtomicUsize::new(1),
            abandoned: AtomicBool::new(false),
            progress: CancellationToken::new(),
            completed,
        });
        let every = (ack_wait / 2).max(Duration::from_millis(100));
        let beat = Arc::downgrade(&tracked);
        let stop = tracked.progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(t) = beat.upgrade() else { return };
                if let Err(e) = t.message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress acknowledgement failed");
                }
            }
        });
        Self {
            tracked: Some(tracked),
        }
    }

    /// Another piece of work on the same message (a trigger it fired).
    pub fn share(&self) -> Pending {
        if let Some(t) = &self.tracked {
            t.remaining.fetch_add(1, Ordering::SeqCst);
        }
        Pending {
            tracked: self.tracked.clone(),
        }
    }

    /// Finishes this piece; the last one acknowledges the message (unless a piece was
    /// abandoned, or one asked for redelivery).
    pub async fn done(mut self) {
        let Some(t) = self.tracked.take() else { return };
        if !t.release(false) || t.abandoned.load(Ordering::SeqCst) {
            return;
        }
        if let Some(c) = &t.completed {
            if let Ok(mut set) = c.set.lock() {
                set.insert(c.identity);
            }
        }
        if let Err(e) = t.message.ack().await {
            tracing::warn!(error = %e, "acknowledgement failed; the event will be delivered again");
        }
    }

    /// Gives the message back for redelivery after `delay` (work that cannot finish now,
    /// e.g. the condition store is unreachable); the other pieces no longer acknowledge it.
    pub async fn retry_later(mut self, delay: Duration) {
        let Some(t) = self.tracked.take() else { return };
        t.release(true);
        if let Err(e) = t.message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(error = %e, "negative acknowledgement failed; the event will be delivered again after the ack wait");
        }
    }
}

impl Tracked {
    /// Ends one piece of work (`abandon`: unfinished, so the message must not be
    /// acknowledged); whether it was the last one, which also stops the progress beats.
    fn release(&self, abandon: bool) -> bool {
        if abandon {
            self.abandoned.store(true, Ordering::SeqCst);
        }
        let last = self.remaining.fetch_sub(1, Ordering::SeqCst) == 1;
        if last {
            self.progress.cancel();
        }
        last
    }
}

impl Drop for Pending {
    /// A piece dropped without [`Pending::done`] (cancelled work, a panic) was not
    /// finished: the message is left for redelivery.
    fn drop(&mut self) {
        if let Some(t) = self.tracked.take() {
            t.release(true);
        }
    }
}
