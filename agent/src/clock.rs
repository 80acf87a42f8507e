//! The wall clock that schedules read (calendars, condition resets), replaceable in tests.

use chrono::{DateTime, Utc};

/// The wall clock schedules read. `Virtual` advances with tokio's clock, so tests with paused
/// time see days pass instantly.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// `base` at `start`, advancing with tokio's (possibly paused) time.
    Virtual {
        /// Wall time at `start`.
        base: DateTime<Utc>,
        /// tokio instant of `base`.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A virtual clock reading `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        Clock::Virtual {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    /// Current wall time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Virtual { base, start } => {
                *base + chrono::Duration::from_std(start.elapsed()).unwrap_or_default()
            }
        }
    }

    /// Sleeps until the wall time `at`.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        loop {
            let left = (at - self.now()).to_std().unwrap_or_default();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    }
}
