//! The `time` filter: a time-of-day window `[start, stop)` in a time zone, wrapping past
//! midnight when stop is not after start.

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_saphyr::Spanned;

use super::Verdict;
use crate::compile::CompileContext;
use crate::manifest::TimeFilter;

/// A compiled time window.
#[derive(Debug, Clone)]
pub struct CompiledTimeFilter {
    start: NaiveTime,
    stop: NaiveTime,
    zone: Tz,
}

impl CompiledTimeFilter {
    /// Parses `HH:MM:SS` bounds and the zone.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        t: &Spanned<TimeFilter>,
    ) -> Option<Self> {
        let loc = Some(&t.referenced);
        let parse = |ctx: &mut CompileContext<'_>, name: &str, v: &str| {
            NaiveTime::parse_from_str(v.trim(), "%H:%M:%S")
                .map_err(|_| {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.{name}"),
                        format!("invalid time {v:?}"),
                        "use HH:MM:SS, e.g. 09:30:00",
                    )
                })
                .ok()
        };
        let start = parse(ctx, "start", &t.value.start);
        let stop = parse(ctx, "stop", &t.value.stop);
        let zone = match t.value.timezone.as_deref().filter(|z| !z.is_empty()) {
            None => Some(Tz::UTC),
            Some(z) => z.parse::<Tz>().ok().or_else(|| {
                ctx.error_with_hint(
                    loc,
                    format!("{field}.timezone"),
                    format!("invalid timezone {z:?}"),
                    "use an IANA name such as Europe/Berlin",
                );
                None
            }),
        };
        Some(Self {
            start: start?,
            stop: stop?,
            zone: zone?,
        })
    }

    /// Whether `at`, on its own date in the filter's zone, falls in the window.
    pub fn evaluate(&self, at: DateTime<Utc>) -> Verdict {
        let local = at.with_timezone(&self.zone).time();
        let pass = if self.stop > self.start {
            local >= self.start && local < self.stop
        } else {
            local >= self.start || local < self.stop
        };
        Verdict::of(pass)
    }
}
