//! A trigger target for load tests: it answers every request 200 and counts, per sequence
//! number, how often it arrived, so a test sees at once which events were lost and how many
//! were duplicated.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Where a request body carries the sequence number: a payload-less HTTP trigger posts the
/// CloudEvent, whose `data.body` is the webhook body the [`crate::Load`] client sent.
const SEQUENCE_POINTER: &str = "/data/body/n";

struct Counts {
    /// How often each sequence number arrived (index = number).
    times: Vec<AtomicU32>,
    /// Requests without a sequence number below the capacity.
    unreadable: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTP server on `127.0.0.1:0` counting the sequence number `n` of each request's
/// CloudEvent body (`data.body.n`), for `n` below a fixed capacity; any method, any path,
/// always `200 {}`.
pub struct TallySink {
    url: String,
    counts: Arc<Counts>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TallySink {
    /// Starts a sink for sequence numbers `0..capacity` on the current tokio runtime.
    pub async fn start(capacity: usize) -> TallySink {
        let counts = Arc::new(Counts {
            times: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            unreadable: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(count)
            .with_state(counts.clone());
        let (addr, shutdown) = crate::net::serve_loopback(app, "tally sink").await;
        TallySink {
            url: format!("http://{addr}"),
            counts,
            shutdown: Some(shutdown),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// How many requests arrived so far.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Requests whose body had no sequence number below the capacity (a correct agent
    /// sends none).
    pub fn unreadable(&self) -> usize {
        self.counts.unreadable.load(Ordering::SeqCst)
    }

    /// The numbers of `events` that have not arrived yet.
    pub fn missing(&self, events: Range<u64>) -> Vec<u64> {
        events.filter(|&n| self.times(n) == 0).collect()
    }

    /// Arrivals beyond the first, summed over all sequence numbers.
    pub fn duplicates(&self) -> usize {
        self.counts
            .times
            .iter()
            .map(|times| times.load(Ordering::SeqCst).saturating_sub(1) as usize)
            .sum()
    }

    /// Waits (polling every 20 ms, at most `timeout`) until every number of `events`
    /// arrived at least once; the error lists (the first of) those still missing.
    pub async fn wait_for_all(&self, events: Range<u64>, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = self.missing(events.clone());
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} of {} events never reached the sink within {timeout:?} \
                     ({} requests arrived); first missing: {:?}",
                    missing.len(),
                    events.end - events.start,
                    self.requests(),
                    &missing[..missing.len().min(20)]
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn times(&self, n: u64) -> u32 {
        usize::try_from(n)
            .ok()
            .and_then(|index| self.counts.times.get(index))
            .map_or(0, |times| times.load(Ordering::SeqCst))
    }
}

impl Drop for TallySink {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn count(State(counts): State<Arc<Counts>>, body: Bytes) -> (StatusCode, &'static str) {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let slot = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| {
            json.pointer(SEQUENCE_POINTER)
                .and_then(serde_json::Value::as_u64)
        })
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|index| counts.times.get(index));
    match slot {
        Some(times) => {
            times.fetch_add(1, Ordering::SeqCst);
        }
        None => {
            counts.unreadable.fetch_add(1, Ordering::SeqCst);
        }
    }
    (StatusCode::OK, "{}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::TallySink;
    use crate::http_client;

    #[tokio::test]
    async fn counts_sequence_numbers_and_duplicates() {
        let sink = TallySink::start(4).await;
        let client = http_client();
        for body in [
            r#"{"data":{"body":{"n":0}}}"#,
            r#"{"data":{"body":{"n":2}}}"#,
            r#"{"data":{"body":{"n":2}}}"#,
            r#"{"data":{"body":{"n":9}}}"#,
            "not json",
        ] {
            let response = client
                .post(sink.url("/n"))
                .body(body)
                .send()
                .await
                .expect("POST tally sink");
            assert_eq!(response.status().as_u16(), 200);
        }
        assert_eq!(sink.requests(), 5);
        assert_eq!(sink.unreadable(), 2, "out of range and not JSON");
        assert_eq!(sink.missing(0..4), [1, 3]);
        assert_eq!(sink.duplicates(), 1);
        let error = sink
            .wait_for_all(0..2, Duration::from_millis(50))
            .await
            .expect_err("1 never arrived");
        assert!(error.contains("first missing: [1]"), "{error}");
        sink.wait_for_all(2..3, Duration::from_millis(50))
            .await
            .expect("2 arrived");
    }
}
