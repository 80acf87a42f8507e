//! A webhook load client that insists: it sends events `{"n": N}` for every `N` of a range
//! from a few concurrent tasks and retries each one until a webhook answers 200, across
//! agent crashes, restarts and a NATS outage. Paired with [`crate::TallySink`], which counts
//! the `n`s an HTTP trigger delivers, it measures loss and duplicates.
//!
//! Every failed attempt is classified, because a retry may duplicate an event: a refused
//! connection sent nothing, but after a timeout, a reset or an error status the agent may
//! have accepted the event anyway, and the retry then makes a second event with a new id.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

/// Per-request timeout of the load client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying after a refused connection or an uncertain failure (pacing, so a
/// dead agent is not hammered; never used to wait for a state).
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How many unexpected replies a report keeps.
const MAX_SAMPLES: usize = 20;
/// Upper bound on how long a `Retry-After` makes a task wait.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the load client did, once it finished or gave up.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// How many events the range held.
    pub total: usize,
    /// Events answered with 200.
    pub accepted: usize,
    /// Attempts refused at connect: nothing was sent, so the retry cannot duplicate.
    pub refused: usize,
    /// Attempts answered 503 (bus down or full).
    pub unavailable: usize,
    /// Attempts that failed after the request may have reached the agent (timeout,
    /// connection reset, incomplete reply).
    pub uncertain: usize,
    /// Attempts answered with a status other than 200 and 503.
    pub unexpected: usize,
    /// The first few of those, with the reply body.
    pub unexpected_samples: Vec<(u16, String)>,
    /// The events never answered 200 before the client gave up (empty when it finished).
    pub missing: Vec<u64>,
    /// From start to the last answer.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Failed attempts that may nevertheless have put an event on the bus, each of which
    /// the retry may have turned into a duplicate: everything but refused connections
    /// (a 503 may follow a publish the server stored but whose acknowledgement was lost).
    pub fn maybe_accepted_retries(&self) -> usize {
        self.uncertain + self.unavailable + self.unexpected
    }
}

/// Shared counters of the running tasks.
#[derive(Default)]
struct Counters {
    next: AtomicU64,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    unavailable: AtomicUsize,
    uncertain: AtomicUsize,
    unexpected: AtomicUsize,
    stop: AtomicBool,
}

/// A running load: events are being sent in the background.
pub struct Load {
    counters: Arc<Counters>,
    tasks: JoinSet<Task>,
    events: Range<u64>,
    started: Instant,
}

/// What one task saw that is not a counter.
#[derive(Default)]
struct Task {
    accepted: Vec<u64>,
    unexpected: Vec<(u16, String)>,
}

impl Load {
    /// Starts `concurrency` tasks posting `{"n": N}` for each `N` in `events` (each task
    /// takes the next `N` when done with one). Attempt `k` of event `N` goes to
    /// `urls[(N + k) % urls.len()]`, so events are spread over several webhooks and a
    /// retry moves on to the next one (a dead replica does not hold an event back).
    pub fn start(urls: &[String], events: Range<u64>, concurrency: usize) -> Load {
        assert!(!urls.is_empty(), "the load needs at least one webhook url");
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build the load client");
        let counters = Arc::new(Counters {
            next: AtomicU64::new(events.start),
            ..Counters::default()
        });
        let urls: Arc<[String]> = urls.into();
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency {
            let (client, counters, urls, end) =
                (client.clone(), counters.clone(), urls.clone(), events.end);
            tasks.spawn(async move {
                let mut task = Task::default();
                loop {
                    let n = counters.next.fetch_add(1, Ordering::SeqCst);
                    if n >= end || !send(&client, &urls, n, &counters, &mut task).await {
                        return task;
                    }
                    task.accepted.push(n);
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        Load {
            counters,
            tasks,
            events,
            started: Instant::now(),
        }
    }

    /// How many events were answered 200 so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Waits (polling every 10 ms, at most `timeout`) until at least `count` events were
    /// answered 200; the error says how far the load got.
    pub async fn wait_accepted(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.accepted() < count {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the load had {} of {count} events accepted after {timeout:?}",
                    self.accepted()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Waits for every event to be accepted, at most `timeout`; then (or on timeout, when
    /// the tasks stop after their current attempt) reports what happened.
    pub async fn finish(mut self, timeout: Duration) -> LoadReport {
        let deadline = Instant::now() + timeout;
        let mut report = LoadReport {
            total: usize::try_from(self.events.end - self.events.start)
                .expect("event count fits in usize"),
            ..LoadReport::default()
        };
        let mut accepted = Vec::new();
        loop {
            let joined = if self.counters.stop.load(Ordering::SeqCst) {
                self.tasks.join_next().await
            } else {
                match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        self.counters.stop.store(true, Ordering::SeqCst);
                        continue;
                    }
                }
            };
            let Some(joined) = joined else { break };
            let task = joined.expect("a load task panicked");
            accepted.extend(task.accepted);
            if report.unexpected_samples.len() < MAX_SAMPLES {
                report.unexpected_samples.extend(task.unexpected);
            }
        }
        report.elapsed = self.started.elapsed();
        accepted.sort_unstable();
        let mut accepted = accepted.into_iter().peekable();
        for n in self.events.clone() {
            if accepted.next_if_eq(&n).is_none() {
                report.missing.push(n);
            }
        }
        let c = &self.counters;
        report.accepted = c.accepted.load(Ordering::SeqCst);
        report.refused = c.refused.load(Ordering::SeqCst);
        report.unavailable = c.unavailable.load(Ordering::SeqCst);
        report.uncertain = c.uncertain.load(Ordering::SeqCst);
        report.unexpected = c.unexpected.load(Ordering::SeqCst);
        report
    }
}

/// Posts event `n` until some webhook answers 200 (`true`), or the load is stopped
/// (`false`).
async fn send(
    client: &reqwest::Client,
    urls: &[String],
    n: u64,
    counters: &Counters,
    task: &mut Task,
) -> bool {
    let body = serde_json::json!({ "n": n });
    let mut attempt = 0u64;
    loop {
        if counters.stop.load(Ordering::SeqCst) {
            return false;
        }
        let index = usize::try_from((n + attempt) % urls.len() as u64).expect("index fits");
        attempt += 1;
        let pause = match client.post(&urls[index]).json(&body).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => return true,
            Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                counters.unavailable.fetch_add(1, Ordering::SeqCst);
                retry_after(&response)
            }
            Ok(response) => {
                counters.unexpected.fetch_add(1, Ordering::SeqCst);
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if task.unexpected.len() < MAX_SAMPLES {
                    task.unexpected.push((status, text));
                }
                RETRY_PAUSE
            }
            Err(err) if err.is_connect() => {
                counters.refused.fetch_add(1, Ordering::SeqCst);
                RETRY_PAUSE
            }
            Err(_) => {
                counters.uncertain.fetch_add(1, Ordering::SeqCst);
                RETRY_PAUSE
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// The reply's `Retry-After` (whole seconds), at most [`MAX_RETRY_AFTER`];
/// [`RETRY_PAUSE`] when absent or unreadable.
fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(RETRY_PAUSE, |secs| {
            Duration::from_secs(secs).min(MAX_RETRY_AFTER)
        })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_types,
        reason = "the fake webhook's std Mutex is locked briefly and never across .await"
    )]

    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::State;
    use axum::http::{header, StatusCode};
    use axum::Json;

    use super::Load;
    use crate::free_port;

    /// A webhook that answers the first attempt of each `n` with 503 (`Retry-After: 0`)
    /// and later ones with 200.
    async fn flaky_webhook() -> String {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let app = axum::Router::new()
            .fallback(
                |State(seen): State<Arc<Mutex<HashSet<u64>>>>,
                 Json(body): Json<serde_json::Value>| async move {
                    let n = body["n"].as_u64().expect("load body carries n");
                    if seen.lock().expect("seen lock").insert(n) {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::RETRY_AFTER, "0")],
                        )
                    } else {
                        (StatusCode::OK, [(header::RETRY_AFTER, "0")])
                    }
                },
            )
            .with_state(seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake webhook");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn retries_each_event_until_accepted_and_classifies_failures() {
        let dead = format!("http://127.0.0.1:{}/hook", free_port());
        let load = Load::start(&[dead, flaky_webhook().await], 0..50, 4);
        load.wait_accepted(50, Duration::from_secs(10))
            .await
            .expect("all accepted");
        let report = load.finish(Duration::from_secs(10)).await;
        assert!(report.missing.is_empty(), "{report:?}");
        assert_eq!(report.total, 50);
        assert_eq!(report.accepted, 50);
        // Odd n: live 503, dead, live 200. Even n: dead, live 503, dead, live 200.
        assert_eq!(report.unavailable, 50, "{report:?}");
        assert_eq!(report.refused, 25 + 2 * 25, "{report:?}");
        assert_eq!(report.uncertain, 0, "{report:?}");
        assert_eq!(report.maybe_accepted_retries(), 50, "{report:?}");
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_and_reports_the_missing_events() {
        let dead = format!("http://127.0.0.1:{}/hook", free_port());
        let load = Load::start(&[dead], 10..13, 2);
        let report = load.finish(Duration::from_millis(100)).await;
        assert_eq!(report.accepted, 0);
        assert_eq!(report.missing, [10, 11, 12]);
        assert!(report.refused > 0, "{report:?}");
    }
}
