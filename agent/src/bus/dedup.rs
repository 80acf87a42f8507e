//! Remembers the identities of recently accepted events so a redelivered or republished event
//! fires once (DESIGN section 6). Bounded in time (the window) and in size; an identity is
//! scoped to the EventSource, event and producer ([`Event::identity`]).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::event::{Event, EventIdentity};

/// Most ids remembered at once; the oldest are forgotten first.
const MAX_ENTRIES: usize = 200_000;

/// A time-windowed set of event identities.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    seen: HashSet<EventIdentity>,
    order: VecDeque<(Instant, EventIdentity)>,
}

impl Dedup {
    /// A set that remembers keys for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether an event with this identity was seen within the window.
    pub fn contains(&mut self, key: EventIdentity) -> bool {
        self.expire();
        self.seen.contains(&key)
    }

    /// Whether `event` was seen within the window.
    pub fn contains_event(&mut self, event: &Event) -> bool {
        self.contains(event.identity())
    }

    /// Remembers an identity.
    pub fn insert(&mut self, key: EventIdentity) {
        if self.seen.insert(key) {
            self.order.push_back((Instant::now(), key));
        }
        while self.order.len() > MAX_ENTRIES {
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.seen.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: &str, subject: &str) -> Event {
        let mut e = Event::new(
            source,
            subject,
            "webhook",
            serde_json::Value::Null,
            bytes::Bytes::new(),
        );
        e.id = "1".into();
        e
    }

    #[tokio::test(start_paused = true)]
    async fn forgets_after_the_window() {
        let mut d = Dedup::new(Duration::from_secs(60));
        d.insert(ev("s", "e").identity());
        assert!(d.contains_event(&ev("s", "e")));
        assert!(!d.contains_event(&ev("other", "e")));
        assert!(!d.contains_event(&ev("s", "other-event")));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!d.contains_event(&ev("s", "e")));
    }
}
