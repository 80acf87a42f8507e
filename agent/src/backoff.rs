//! Retry timing: Argo's `retryStrategy` (Kubernetes `wait.Backoff`), where `steps` is the
//! total number of attempts.

use std::time::Duration;

use rand::Rng;

use crate::compile::CompileContext;
use crate::manifest::{Backoff as BackoffSpec, IntOrString};

/// Attempts and delays of one trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Total attempts (at least 1).
    pub steps: u32,
    /// Delay after the first failed attempt.
    pub duration: Duration,
    /// Multiplier per further attempt.
    pub factor: f64,
    /// Random extra delay, as a fraction of the delay.
    pub jitter: f64,
}

impl Default for Backoff {
    /// Without `retryStrategy`: 3 attempts, 1 s, factor 2, jitter 0.1 (DESIGN section 6).
    fn default() -> Self {
        Self {
            steps: 3,
            duration: Duration::from_secs(1),
            factor: 2.0,
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// Compiles `retryStrategy`; fields left out take Argo's defaults (5 steps, 1 s,
    /// factor 1, jitter 1), as Argo users expect.
    pub fn compile(
        ctx: &mut CompileContext<'_>,
        field: &str,
        spec: Option<&BackoffSpec>,
    ) -> Option<Self> {
        let Some(spec) = spec else {
            return Some(Self::default());
        };
        let duration = match &spec.duration {
            None => Duration::from_secs(1),
            Some(IntOrString::Int(n)) => Duration::from_nanos((*n).max(0) as u64),
            Some(IntOrString::Str(s)) => match parse_duration(s) {
                Ok(d) => d,
                Err(e) => {
                    ctx.error_with_hint(
                        None,
                        format!("{field}.duration"),
                        e,
                        "use a Go duration such as 500ms, 1s, 1m30s",
                    );
                    return None;
                }
            },
        };
        let amount = |ctx: &mut CompileContext<'_>,
                      name: &str,
                      a: &Option<crate::manifest::Amount>,
                      default: f64|
         -> Option<f64> {
            match a {
                None => Some(default),
                Some(a) => match a.value() {
                    Some(v) if v >= 0.0 && v.is_finite() => Some(v),
                    _ => {
                        ctx.error(
                            None,
                            format!("{field}.{name}"),
                            "must be a non-negative number",
                        );
                        None
                    }
                },
            }
        };
        let factor = amount(ctx, "factor", &spec.factor, 1.0)?;
        let jitter = amount(ctx, "jitter", &spec.jitter, 1.0)?;
        if jitter > 1.0 {
            ctx.error_with_hint(
                None,
                format!("{field}.jitter"),
                format!("jitter {jitter} is out of range"),
                "a fraction of the delay between 0 and 1, e.g. 0.1",
            );
            return None;
        }
        Some(Self {
            steps: spec.steps.filter(|s| *s > 0).unwrap_or(5),
            duration,
            factor,
            jitter,
        })
    }

    /// Delay before attempt `next` (2 for the first retry), without jitter.
    pub fn base_delay(&self, next: u32) -> Duration {
        let exp = next.saturating_sub(2) as i32;
        let factor = if self.factor > 0.0 { self.factor } else { 1.0 };
        let secs = self.duration.as_secs_f64() * factor.powi(exp);
        Duration::try_from_secs_f64(secs.min(MAX_RETRY_DELAY_SECS)).unwrap_or(Duration::ZERO)
    }

    /// The sum of `steps` delays (no jitter): how long Argo's `policy.k8s` polls with
    /// this backoff before giving up.
    pub fn total_delay(&self) -> Duration {
        (2..=self.steps.saturating_add(1))
            .map(|n| self.base_delay(n))
            .sum()
    }

    /// Delay before attempt `next`, with jitter.
    pub fn delay(&self, next: u32) -> Duration {
        let base = self.base_delay(next);
        if self.jitter <= 0.0 {
            return base;
        }
        let extra = rand::rng().random::<f64>() * self.jitter.min(1.0) * base.as_secs_f64();
        base.saturating_add(Duration::try_from_secs_f64(extra).unwrap_or(Duration::ZERO))
    }
}

/// The longest delay between two attempts, whatever the factor (seconds).
const MAX_RETRY_DELAY_SECS: f64 = 3600.0;

/// The longest duration a manifest may give, as Go's `time.Duration` (int64 nanoseconds):
/// about 292 years.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Parses a Go duration string: a sequence of numbers with units ns, us, µs, ms, s, m, h,
/// at most [`MAX_DURATION`] (Go's limit) in total.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let err = || format!("invalid duration {text:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    match Duration::try_from_secs_f64(total) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration {text:?} is out of range (at most 2562047h, as in Go)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn durations_beyond_gos_range_are_errors_not_panics() {
        for text in ["99999999999999999999h", "2562048h", "1e300s", "1.5.5s"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(
            parse_duration("2562047h").unwrap(),
            Duration::from_secs(2_562_047 * 3600)
        );
    }

    #[test]
    fn delays_grow_by_factor() {
        let b = Backoff {
            steps: 4,
            duration: Duration::from_millis(100),
            factor: 2.0,
            jitter: 0.0,
        };
        assert_eq!(b.delay(2), Duration::from_millis(100));
        assert_eq!(b.delay(3), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(400));
    }

    /// Property check over random input (fixed seed): any text gives a duration within Go's
    /// range or an error, never a panic; and a sum of random terms parses to that sum.
    #[test]
    fn random_durations_parse_within_range_or_fail() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(5);
        let alphabet: Vec<char> = "0123456789.hmsunµ -+e".chars().collect();
        for _ in 0..20_000 {
            let len = rng.random_range(0..24);
            let text: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if let Ok(d) = parse_duration(&text) {
                assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
            }
        }
        let units = [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        for _ in 0..5_000 {
            let (mut text, mut nanos) = (String::new(), 0u128);
            for _ in 0..rng.random_range(1..4) {
                let (unit, scale) = units[rng.random_range(0..units.len())];
                let n = rng.random_range(0..100_000u128);
                text.push_str(&format!("{n}{unit}"));
                nanos += n * scale;
            }
            let parsed = parse_duration(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            // Parsing goes through f64 seconds: equal within a microsecond per hour.
            let tolerance = nanos / 1_000_000_000 + 1_000;
            let got = parsed.as_nanos();
            assert!(got.abs_diff(nanos) <= tolerance, "{text}: {got} vs {nanos}");
        }
    }
}
