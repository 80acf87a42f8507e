//! Stream, subject, consumer, bucket and key names of one namespace's JetStream bus. Every
//! name a user chose (namespace, sensor, trigger) passes through [`token`], so a `.` in a
//! sensor name cannot split a subject or clash with another name.

/// Names of one namespace's bus objects.
#[derive(Debug, Clone)]
pub struct Names {
    ns: String,
}

impl Names {
    /// Names for `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: token(namespace),
        }
    }

    /// The stream holding events on their way to sensors.
    pub fn events_stream(&self) -> String {
        format!("triggerd-{}-events", self.ns)
    }

    /// Subjects of [`Self::events_stream`].
    pub fn events_subjects(&self) -> String {
        format!("triggerd.{}.sensor.>", self.ns)
    }

    /// Where events for `sensor` are published (one subject per sensor, so each sensor's
    /// durable consumer reads only its own events).
    pub fn sensor_subject(&self, sensor: &str) -> String {
        format!("triggerd.{}.sensor.{}", self.ns, token(sensor))
    }

    /// The durable consumer of `sensor`.
    pub fn consumer(&self, sensor: &str) -> String {
        token(sensor)
    }

    /// The stream of dead letters.
    pub fn dlq_stream(&self) -> String {
        format!("triggerd-{}-dlq", self.ns)
    }

    /// Subjects of [`Self::dlq_stream`].
    pub fn dlq_subjects(&self) -> String {
        format!("triggerd.{}.dlq.>", self.ns)
    }

    /// Where dead letters of one trigger go.
    pub fn dlq_subject(&self, sensor: &str, trigger: &str) -> String {
        format!(
            "triggerd.{}.dlq.{}.{}",
            self.ns,
            token(sensor),
            token(trigger)
        )
    }

    /// The key-value bucket of partial condition state.
    pub fn conditions_bucket(&self) -> String {
        format!("triggerd-{}-conditions", self.ns)
    }

    /// The key of one trigger's partial condition state.
    pub fn condition_key(&self, sensor: &str, trigger: &str) -> String {
        format!("{}.{}", token(sensor), token(trigger))
    }

    /// The key-value bucket of leader leases.
    pub fn leases_bucket(&self) -> String {
        format!("triggerd-{}-leases", self.ns)
    }
}

/// `name` as one subject token, stream-name part, consumer name and key part: ASCII letters,
/// digits, `-` and `_` stay; every other byte becomes `=XX` (hex), so distinct names stay
/// distinct.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("=00");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_user_text_inside_one_token() {
        assert_eq!(token("ci-promote_1"), "ci-promote_1");
        assert_eq!(token("a.b"), "a=2Eb");
        assert_ne!(token("a.b"), token("a=2Eb"));
        let n = Names::new("team-a");
        assert_eq!(n.sensor_subject("x.y"), "triggerd.team-a.sensor.x=2Ey");
        assert_eq!(n.events_stream(), "triggerd-team-a-events");
    }
}
