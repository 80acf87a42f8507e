//! `?watch=true`: newline-delimited JSON watch events over a chunked response.
//!
//! - `resourceVersion` unset or `"0"`: synthetic `ADDED` for every selected object, then live
//!   events; `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan`) does the same
//!   and then sends a `BOOKMARK` annotated `k8s.io/initial-events-end: "true"`.
//! - `resourceVersion=N`: every change after N from the history, then live events; when the
//!   history no longer holds all of them, one `ERROR` event with a 410 `Expired` Status and
//!   the end of the stream (kube's watcher then relists).
//! - Selectors apply to every event. A modification that moves an object into the selection
//!   is sent as `ADDED` and one that moves it out as `DELETED`, as the real server does.
//! - `allowWatchBookmarks=true`: a `BOOKMARK` with the latest resourceVersion every bookmark
//!   interval; `timeoutSeconds` ends the stream; `TestApiServer::close_watches` ends all.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::objects::view;
use super::resource::ResourceType;
use super::server::Shared;
use super::status::ApiError;
use super::store::{Change, ChangeType, Selection};

/// A parsed watch request.
pub(crate) struct WatchRequest {
    pub rt: ResourceType,
    pub selection: Selection,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub resource_version_match: Option<String>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

/// Starts the stream (validation errors are answered as a plain error response).
pub(crate) fn start(shared: Arc<Shared>, req: WatchRequest) -> Result<Response, ApiError> {
    if req.send_initial_events && req.resource_version_match.as_deref() != Some("NotOlderThan") {
        return Err(ApiError::unprocessable(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let from = match req
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "0")
    {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
        ),
    };
    // Subscribe before reading the state, so no change between the two is missed.
    let changed = shared.changed.subscribe();
    let close = shared.close.subscribe();
    let mut lines = Vec::new();
    let mut gone = false;
    let start_rv = {
        let store = shared.store();
        match from {
            Some(rv) if !req.send_initial_events => {
                if let Err(oldest) = store.can_resume(rv) {
                    lines.push(error_line(&ApiError::too_old(rv, oldest)));
                    gone = true;
                }
                rv
            }
            _ => {
                for obj in store.selected(&req.rt, &req.selection) {
                    lines.push(line("ADDED", obj));
                }
                if req.send_initial_events {
                    lines.push(bookmark(&req.rt, store.current_rv(), true));
                }
                store.current_rv()
            }
        }
    };
    let (tx, rx) = mpsc::channel::<String>(64);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|text| {
            (
                Ok::<Bytes, std::convert::Infallible>(Bytes::from(text + "\n")),
                rx,
            )
        })
    });
    let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
    let interval = shared.bookmark_interval();
    tokio::spawn(async move {
        for l in lines {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if gone {
            return;
        }
        follow(
            shared, req, start_rv, tx, changed, close, deadline, interval,
        )
        .await;
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[allow(clippy::too_many_arguments, reason = "the state of one watch stream")]
async fn follow(
    shared: Arc<Shared>,
    req: WatchRequest,
    mut last: u64,
    tx: mpsc::Sender<String>,
    mut changed: tokio::sync::watch::Receiver<u64>,
    mut close: tokio::sync::watch::Receiver<u64>,
    deadline: Option<tokio::time::Instant>,
    bookmark_every: Duration,
) {
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
    loop {
        let batch = {
            let store = shared.store();
            let batch = match store.changes_since(last) {
                Ok(changes) => Ok(changes
                    .filter_map(|c| event_line(&req, c))
                    .collect::<Vec<String>>()),
                Err(oldest) => Err(error_line(&ApiError::too_old(last, oldest))),
            };
            last = store.current_rv();
            batch
        };
        match batch {
            Ok(lines) => {
                for l in lines {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
            }
            Err(gone) => {
                let _ = tx.send(gone).await;
                return;
            }
        }
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = close.changed() => return,
            _ = timeout => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if req.bookmarks => {
                if tx.send(bookmark(&req.rt, last, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The event a change is for this watch, if any.
fn event_line(req: &WatchRequest, change: &Change) -> Option<String> {
    if change.storage != req.rt.storage_key() {
        return None;
    }
    let now = req.selection.matches(&change.namespace, &change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|p| req.selection.matches(&change.namespace, p));
    let kind = match (change.kind, before, now) {
        (ChangeType::Added, _, true) => "ADDED",
        (ChangeType::Deleted, _, true) => "DELETED",
        (ChangeType::Modified, true, true) => "MODIFIED",
        (ChangeType::Modified, false, true) => "ADDED",
        (ChangeType::Modified, true, false) => "DELETED",
        _ => return None,
    };
    Some(line(kind, view(&req.rt, &change.object)))
}

fn line(kind: &str, object: Value) -> String {
    json!({"type": kind, "object": object}).to_string()
}

fn error_line(err: &ApiError) -> String {
    line("ERROR", err.to_status())
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}
