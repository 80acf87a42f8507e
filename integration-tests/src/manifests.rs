//! Small helpers for writing manifest fixtures.

/// An `argoproj.io/v1alpha1` webhook EventSource `name` with one POST event `event`
/// on `port` at `endpoint`.
pub fn webhook_source(name: &str, event: &str, port: u16, endpoint: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: {name}
spec:
  webhook:
    {event}:
      port: "{port}"
      endpoint: {endpoint}
      method: POST
"#
    )
}

/// The 1-based number of the first line of `text` containing `needle`; panics when
/// there is none. Fixtures use it so expected positions follow the fixture text.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
        .unwrap_or_else(|| panic!("fixture has no line containing {needle:?}"))
}

/// An `argoproj.io/v1alpha1` Sensor `name` with one dependency `event` on EventSource
/// `source` and one HTTP trigger `forward` that POSTs the event (the CloudEvent: no payload)
/// to `url`, a single attempt each.
pub fn forward_sensor(name: &str, source: &str, event: &str, url: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: {name}
spec:
  dependencies:
    - name: {event}
      eventSourceName: {source}
      eventName: {event}
  triggers:
    - template:
        name: forward
        http:
          url: {url}
          method: POST
      retryStrategy:
        steps: 1
"#
    )
}
