//! Trigger rate limits (`rateLimit`): at most `requestsPerUnit` executions per unit, attempts
//! included, spaced evenly (a bucket of one, so no burst can exceed the rate in any window).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use serde_saphyr::Spanned;

use crate::compile::CompileContext;
use crate::manifest::RateLimit;

/// A shared limiter for one trigger.
#[derive(Debug, Clone)]
pub struct Limiter(Arc<DefaultDirectRateLimiter>);

impl Limiter {
    /// Compiles `rateLimit`; `field` is its path.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        r: &Spanned<RateLimit>,
    ) -> Option<Self> {
        let loc = Some(&r.referenced);
        let unit = match r
            .value
            .unit
            .as_deref()
            .unwrap_or("Second")
            .to_ascii_lowercase()
            .as_str()
        {
            "second" => Duration::from_secs(1),
            "minute" => Duration::from_secs(60),
            "hour" => Duration::from_secs(3600),
            other => {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.unit"),
                    format!("unknown unit {other:?}"),
                    "use Second, Minute or Hour",
                );
                return None;
            }
        };
        let Some(quota) = quota(unit, r.value.requests_per_unit) else {
            ctx.error(
                loc,
                format!("{field}.requestsPerUnit"),
                "must be at least 1",
            );
            return None;
        };
        Some(Self(Arc::new(DefaultDirectRateLimiter::direct(quota))))
    }

    /// Waits until the next execution may start.
    pub async fn until_ready(&self) {
        self.0.until_ready().await;
    }
}

/// One execution every `unit / per_unit`, with no burst.
fn quota(unit: Duration, per_unit: u32) -> Option<Quota> {
    let n = NonZeroU32::new(per_unit)?;
    let period = unit / n.get();
    Quota::with_period(period).map(|q| q.allow_burst(NonZeroU32::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use governor::RateLimiter;

    #[test]
    fn spaces_executions_evenly_without_burst() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(
            quota(Duration::from_secs(1), 4).unwrap(),
            clock.clone(),
        );
        assert!(limiter.check().is_ok());
        // A full bucket of 4 would let these through at once; no burst means they wait.
        assert!(limiter.check().is_err());
        clock.advance(Duration::from_millis(249));
        assert!(limiter.check().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(limiter.check().is_ok());
        let mut passed = 1;
        for _ in 0..1000 {
            clock.advance(Duration::from_millis(1));
            if limiter.check().is_ok() {
                passed += 1;
            }
        }
        // 1.25 s in all: never more than the rate allows.
        assert_eq!(passed, 5);
        assert!(quota(Duration::from_secs(1), 0).is_none());
    }
}
