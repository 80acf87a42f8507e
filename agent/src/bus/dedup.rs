//! Remembers recently accepted (source, id) pairs so a redelivered or republished event fires
//! once (DESIGN section 6). Bounded in time (the window) and in size.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Most ids remembered at once; the oldest are forgotten first.
const MAX_ENTRIES: usize = 200_000;

/// A time-windowed set of event keys.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    seen: HashSet<(String, String)>,
    order: VecDeque<(Instant, (String, String))>,
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

    /// Whether `(source, id)` was seen within the window.
    pub fn contains(&mut self, source: &str, id: &str) -> bool {
        self.expire();
        self.seen.contains(&(source.to_owned(), id.to_owned()))
    }

    /// Remembers `(source, id)`.
    pub fn insert(&mut self, source: &str, id: &str) {
        let key = (source.to_owned(), id.to_owned());
        if self.seen.insert(key.clone()) {
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

    #[tokio::test(start_paused = true)]
    async fn forgets_after_the_window() {
        let mut d = Dedup::new(Duration::from_secs(60));
        d.insert("s", "1");
        assert!(d.contains("s", "1"));
        assert!(!d.contains("other", "1"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!d.contains("s", "1"));
    }
}
