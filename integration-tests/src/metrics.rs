//! Reading Prometheus text exposition.

use std::time::Duration;

use tokio::time::Instant;

use crate::Agent;

/// The value of metric `name` whose labels include all of `labels` (order-independent;
/// the sample may carry more labels). When several samples match (because a label was
/// left out) their values are summed. `None` when no sample matches.
///
/// ```
/// let text = "# TYPE x counter\nx_total{b=\"2\",a=\"1\"} 3\n";
/// assert_eq!(integration_tests::metric(text, "x_total", &[("a", "1")]), Some(3.0));
/// ```
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_sample)
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.iter().any(|(k, v)| k == key && v == value))
        })
        .map(|sample| sample.value)
        .fold(None, |sum, value| Some(sum.unwrap_or(0.0) + value))
}

/// Poll `/metrics` every 20 ms until [`metric`] reaches at least `value`; returns the
/// value seen. Panics (with the agent's output) after `timeout` or if the agent exits.
pub async fn wait_for_metric(
    agent: &Agent,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
    timeout: Duration,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        agent.check_alive();
        let text = agent.metrics_text().await;
        let seen = metric(&text, name, labels);
        if let Some(seen) = seen.filter(|seen| *seen >= value) {
            return seen;
        }
        if Instant::now() >= deadline {
            agent.fail(format_args!(
                "metric {name}{labels:?} did not reach {value} within {timeout:?} \
                 (last value {seen:?})\n--- /metrics ---\n{text}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One sample line `name{k="v",...} value [timestamp]`; `None` for comments and blanks.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parse `k="v",k2="v2"}` and return the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::metric;

    const TEXT: &str = r#"# HELP triggerd_trigger_executions Trigger executions.
# TYPE triggerd_trigger_executions counter
triggerd_trigger_executions_total{sensor="deploy",trigger="notify",outcome="success"} 2
triggerd_trigger_executions_total{outcome="failed",trigger="notify",sensor="deploy"} 1.0
triggerd_events_received_total{event_source="hooks",event_name="a \"quoted\", {odd} name"} 4 1700000000
up 1
# EOF
"#;

    #[test]
    fn finds_samples_by_name_and_labels_in_any_order() {
        let success = [("sensor", "deploy"), ("outcome", "success")];
        assert_eq!(
            metric(TEXT, "triggerd_trigger_executions_total", &success),
            Some(2.0)
        );
        let failed = [("trigger", "notify"), ("outcome", "failed")];
        assert_eq!(
            metric(TEXT, "triggerd_trigger_executions_total", &failed),
            Some(1.0)
        );
        assert_eq!(metric(TEXT, "up", &[]), Some(1.0));
    }

    #[test]
    fn sums_samples_when_labels_are_left_out() {
        let labels = [("sensor", "deploy")];
        assert_eq!(
            metric(TEXT, "triggerd_trigger_executions_total", &labels),
            Some(3.0)
        );
    }

    #[test]
    fn handles_escapes_and_timestamps() {
        let labels = [("event_name", "a \"quoted\", {odd} name")];
        assert_eq!(
            metric(TEXT, "triggerd_events_received_total", &labels),
            Some(4.0)
        );
    }

    #[test]
    fn none_when_nothing_matches() {
        assert_eq!(metric(TEXT, "triggerd_trigger_executions", &[]), None);
        let labels = [("outcome", "retry")];
        assert_eq!(
            metric(TEXT, "triggerd_trigger_executions_total", &labels),
            None
        );
    }
}
