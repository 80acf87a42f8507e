//! The calendar source: events on a standard 5-field cron schedule or a fixed interval, in a
//! time zone, skipping exclusion dates.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde_json::{json, Value};

use super::SourceContext;
use crate::backoff::parse_duration;
pub use crate::clock::Clock;
use crate::compile::CompileContext;
use crate::event::Event;
use crate::manifest::{CalendarEvent, Spanned};
use crate::telemetry::SourceTelemetry;

/// When a calendar fires.
#[derive(Debug, Clone)]
pub enum Timing {
    /// Standard cron (0 and 7 are Sunday, 1 is Monday).
    Schedule(Box<Cron>),
    /// Every so often, starting one interval after start-up.
    Interval(Duration),
}

/// A compiled calendar event.
#[derive(Debug, Clone)]
pub struct CalendarConfig {
    /// Schedule or interval.
    pub timing: Timing,
    /// Zone of the schedule and of exclusion dates.
    pub timezone: Tz,
    /// Days on which nothing fires.
    pub exclusion_dates: Vec<NaiveDate>,
}

impl CalendarConfig {
    /// Checks one calendar event.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        c: &Spanned<CalendarEvent>,
    ) -> Option<Self> {
        let loc = Some(&c.referenced);
        let c = &c.value;
        let timing = match (&c.schedule, &c.interval) {
            (Some(s), None) => {
                if s.split_whitespace().count() != 5 {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.schedule"),
                        format!("schedule {s:?} must have 5 fields"),
                        "minute hour day-of-month month day-of-week, e.g. \"0 9 * * 1\" for Mondays at 09:00",
                    );
                    return None;
                }
                match Cron::from_str(s) {
                    Ok(cron) => Timing::Schedule(Box::new(cron)),
                    Err(e) => {
                        ctx.error(
                            loc,
                            format!("{field}.schedule"),
                            format!("invalid schedule {s:?}: {e}"),
                        );
                        return None;
                    }
                }
            }
            (None, Some(i)) => match parse_duration(i) {
                Ok(d) if !d.is_zero() => Timing::Interval(d),
                _ => {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.interval"),
                        format!("invalid interval {i:?}"),
                        "use a Go duration such as 30s or 1h",
                    );
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                ctx.error(loc, field, "set schedule or interval, not both");
                return None;
            }
            (None, None) => {
                ctx.error(loc, field, "set schedule or interval");
                return None;
            }
        };
        let timezone = match c.timezone.as_deref().filter(|t| !t.is_empty()) {
            None => Tz::UTC,
            Some(t) => match t.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.timezone"),
                        format!("unknown time zone {t:?}"),
                        "use an IANA name such as Europe/Berlin",
                    );
                    return None;
                }
            },
        };
        let mut exclusion_dates = Vec::new();
        for d in &c.exclusion_dates {
            match NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d") {
                Ok(date) => exclusion_dates.push(date),
                Err(_) => {
                    ctx.error_with_hint(
                        loc,
                        format!("{field}.exclusionDates"),
                        format!("invalid date {d:?}"),
                        "use YYYY-MM-DD",
                    );
                    return None;
                }
            }
        }
        Some(Self {
            timing,
            timezone,
            exclusion_dates,
        })
    }

    /// The first firing time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.timing {
            Timing::Schedule(cron) => cron
                .find_next_occurrence(&after.with_timezone(&self.timezone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Timing::Interval(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| after.checked_add_signed(d)),
        }
    }

    /// Whether `at` falls on an exclusion date in the calendar's zone.
    pub fn is_excluded(&self, at: DateTime<Utc>) -> bool {
        let day = at.with_timezone(&self.timezone).date_naive();
        self.exclusion_dates.contains(&day)
    }
}

impl super::Section for CalendarConfig {
    const KEY: &'static str = "calendar";
    type Manifest = CalendarEvent;

    fn shared(event: &CalendarEvent) -> super::SharedManifest<'_> {
        super::SharedManifest {
            expression: event.filter.as_ref().map(|f| &f.expression),
            metadata: &event.metadata,
        }
    }

    fn compile_kind(
        ctx: &mut CompileContext<'_>,
        field: &str,
        event: &Spanned<CalendarEvent>,
    ) -> Option<super::SourceKind> {
        Self::compile(ctx, field, event).map(super::SourceKind::Calendar)
    }
}

/// The id of the tick at `at`: the same on every replica and after a restart, so a tick
/// published twice (a lease handed over mid-tick) is dropped as a duplicate by the bus.
fn tick_id(event_source: &str, event_name: &str, at: DateTime<Utc>) -> String {
    let name = format!(
        "{event_source}\n{event_name}\n{}",
        at.timestamp_nanos_opt().unwrap_or_else(|| at.timestamp())
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

/// Runs one calendar event until shutdown, publishing with back-pressure.
pub(super) async fn run(
    config: CalendarConfig,
    shared: super::SharedSettings,
    event_source: &str,
    event_name: &str,
    ctx: SourceContext,
) {
    let telemetry = SourceTelemetry::new(&ctx.metrics, event_source, event_name);
    let metadata = serde_json::to_value(&shared.metadata).unwrap_or(Value::Null);
    let mut next = config.next_after(ctx.clock.now());
    while let Some(at) = next {
        tokio::select! {
            () = ctx.clock.sleep_until(at) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        if !config.is_excluded(at) {
            let time = at.to_rfc3339_opts(SecondsFormat::Millis, true);
            let data = json!({ "eventTime": time, "metadata": metadata });
            let raw = Bytes::from(data.to_string());
            let mut event = Event::new(event_source, event_name, "calendar", data, raw);
            event.id = tick_id(event_source, event_name, at);
            event.time = at;
            event.raw_is_data = true;
            if !ctx.passes(&telemetry, shared.filter.as_ref(), &event) {
                next = config.next_after(at);
                continue;
            }
            if ctx.publish_waiting(&telemetry, None, event).await.is_err() {
                return;
            }
        }
        next = config.next_after(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusBuilder;
    use crate::telemetry::Metrics;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    fn config(timing: Timing, tz: Tz) -> CalendarConfig {
        CalendarConfig {
            timing,
            timezone: tz,
            exclusion_dates: vec![],
        }
    }

    fn shared() -> crate::source::SharedSettings {
        crate::source::SharedSettings {
            filter: None,
            metadata: [("k".to_owned(), "v".to_owned())].into(),
        }
    }

    fn schedule(s: &str) -> Timing {
        Timing::Schedule(Box::new(Cron::from_str(s).unwrap()))
    }

    #[test]
    fn monday_is_one_in_the_given_zone() {
        let c = config(schedule("0 9 * * 1"), chrono_tz::America::New_York);
        // Sunday 2026-11-22 12:00 UTC.
        let after = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        let next = c
            .next_after(after)
            .unwrap()
            .with_timezone(&chrono_tz::America::New_York);
        assert_eq!(next.weekday(), Weekday::Mon);
        assert_eq!((next.hour(), next.minute()), (9, 0));
        assert_eq!(
            next.with_timezone(&Utc),
            Utc.with_ymd_and_hms(2026, 11, 23, 14, 0, 0).unwrap()
        );
        let sunday = config(schedule("0 9 * * 0"), Tz::UTC)
            .next_after(after)
            .unwrap();
        assert_eq!(sunday.weekday(), Weekday::Sun);
        let also_sunday = config(schedule("0 9 * * 7"), Tz::UTC)
            .next_after(after)
            .unwrap();
        assert_eq!(also_sunday, sunday);
    }

    fn context(
        bus: Arc<crate::bus::Bus>,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> SourceContext {
        SourceContext {
            bus,
            metrics: Arc::new(Metrics::new()),
            shutdown,
            clock,
            secrets: crate::secret::SecretStore::default(),
            cluster: None,
            bind_host: std::net::Ipv4Addr::LOCALHOST.into(),
            http_limits: crate::telemetry::ServerLimits::ops(),
            host: Arc::new(crate::script::ScriptHost::new(Default::default(), vec![])),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cron_schedule_fires_on_monday_with_paused_time() {
        let mut b = BusBuilder::new(8);
        let mut rx = b.subscribe([("cal", "weekly")]);
        let shutdown = CancellationToken::new();
        let clock = Clock::starting_at(Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap());
        let ctx = context(b.build(), clock, shutdown.clone());
        let mut c = config(schedule("0 9 * * 1"), chrono_tz::Europe::Berlin);
        c.exclusion_dates = vec![NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()];
        let task = tokio::spawn(async move { run(c, shared(), "cal", "weekly", ctx).await });
        let first = rx.recv().await.and_then(|r| r.event().cloned()).unwrap();
        assert_eq!(first.data["eventTime"], "2026-11-23T08:00:00.000Z");
        assert_eq!(first.data["metadata"]["k"], "v");
        // 2026-11-30 is excluded: the next event is a week later.
        let second = rx.recv().await.and_then(|r| r.event().cloned()).unwrap();
        assert_eq!(second.data["eventTime"], "2026-12-07T08:00:00.000Z");
        assert_eq!(
            first.id,
            tick_id(
                "cal",
                "weekly",
                Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
            )
        );
        assert_ne!(first.id, second.id);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn interval_fires_repeatedly() {
        let mut b = BusBuilder::new(8);
        let mut rx = b.subscribe([("cal", "tick")]);
        let shutdown = CancellationToken::new();
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ctx = context(b.build(), Clock::starting_at(base), shutdown.clone());
        let c = config(Timing::Interval(Duration::from_secs(30)), Tz::UTC);
        let task = tokio::spawn(async move { run(c, shared(), "cal", "tick", ctx).await });
        for n in 1..=3 {
            let e = rx.recv().await.and_then(|r| r.event().cloned()).unwrap();
            assert_eq!(e.time, base + chrono::Duration::seconds(30 * n));
        }
        shutdown.cancel();
        task.await.unwrap();
    }
}
