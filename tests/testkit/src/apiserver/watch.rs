//! Watch streams: history replay from a resourceVersion, live events, bookmarks, 410 Expired,
//! streaming lists (`sendInitialEvents=true`) and `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Shared;
use super::selector::Selectors;
use super::store::{ApiError, EventType, Object, ResourceDef, StoredEvent};

pub(crate) struct WatchParams {
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub selectors: Selectors,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub send_initial_events: bool,
}

fn line(etype: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": etype, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// The line of an event about a stored object: the same text as [`line`] (keys in order),
/// made from the object's JSON as serialized once for every watcher.
fn object_line(etype: &str, object: &Object) -> Bytes {
    let json = object.json();
    let mut s = Vec::with_capacity(json.len() + etype.len() + 24);
    s.extend_from_slice(b"{\"object\":");
    s.extend_from_slice(json);
    s.extend_from_slice(b",\"type\":\"");
    s.extend_from_slice(etype.as_bytes());
    s.extend_from_slice(b"\"}\n");
    Bytes::from(s)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut obj = json!({
        "kind": def.kind,
        "apiVersion": def.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &obj)
}

fn expired(requested: u64, oldest: u64) -> Bytes {
    let status = ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {requested} ({oldest})"),
    )
    .to_status();
    line("ERROR", &status)
}

/// What a watcher with these filters sees of one stored event.
fn translate(
    ev: &StoredEvent,
    key: &str,
    ns: Option<&str>,
    sel: &Selectors,
) -> Option<&'static str> {
    if ev.key != key || ns.is_some_and(|ns| ns != ev.namespace) {
        return None;
    }
    let now = sel.matches(&ev.object);
    match ev.etype {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => {
            let was = ev.prev.as_ref().is_none_or(|p| sel.matches(p)) || now;
            was.then_some("DELETED")
        }
        EventType::Modified => {
            let before = ev.prev.as_ref().is_some_and(|p| sel.matches(p));
            match (before, now) {
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (true, true) => Some("MODIFIED"),
                (false, false) => None,
            }
        }
    }
}

/// Start a watch; the initial part is computed under the store lock together with the
/// subscription so that no event is lost or duplicated.
pub(crate) fn start(
    shared: Arc<Shared>,
    def: ResourceDef,
    p: WatchParams,
) -> Result<Response, ApiError> {
    if p.send_initial_events && !p.bookmarks {
        return Err(ApiError::new(
            422,
            "Invalid",
            "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is true",
        ));
    }
    let requested: Option<u64> = match p.resource_version.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    let key = def.key();
    let ns = p.namespace.clone();
    let mut initial: Vec<Bytes> = Vec::new();
    let mut finished = false;
    let (start_rv, mut rx) = {
        let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
        let rx = store.tx.subscribe();
        match requested {
            Some(n) if n != 0 && !p.send_initial_events => {
                if n < store.compacted_rv {
                    let oldest = store.history.front().map(|e| e.rv).unwrap_or(store.rv);
                    initial.push(expired(n, oldest));
                    finished = true;
                } else {
                    for ev in store.history.iter().filter(|e| e.rv > n) {
                        if let Some(t) = translate(ev, &key, ns.as_deref(), &p.selectors) {
                            initial.push(object_line(t, &ev.object));
                        }
                    }
                }
            }
            _ => {
                for obj in store.list(&def, ns.as_deref(), &p.selectors) {
                    initial.push(object_line("ADDED", &obj));
                }
                if p.send_initial_events {
                    initial.push(bookmark(&def, store.rv, true));
                }
            }
        }
        (store.rv, rx)
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    let mut shutdown = shared.shutdown.clone();
    let interval = shared.bookmark_interval;
    let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if finished {
            return;
        }
        if p.bookmarks
            && !p.send_initial_events
            && tx.send(bookmark(&def, start_rv, false)).await.is_err()
        {
            return;
        }
        let mut last_rv = start_rv;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let sleep_until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_until);
        loop {
            let mut out: Vec<Bytes> = Vec::new();
            let mut stop = false;
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv > last_rv {
                            last_rv = ev.rv;
                            if let Some(t) = translate(&ev, &key, ns.as_deref(), &p.selectors) {
                                out.push(object_line(t, &ev.object));
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        out.push(expired(last_rv, last_rv + 1));
                        stop = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => stop = true,
                },
                _ = ticker.tick(), if p.bookmarks => {
                    // Drain under the lock so the bookmark covers every event sent before it.
                    let rv = {
                        let store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
                        while let Ok(ev) = rx.try_recv() {
                            if ev.rv > last_rv {
                                last_rv = ev.rv;
                                if let Some(t) = translate(&ev, &key, ns.as_deref(), &p.selectors) {
                                    out.push(object_line(t, &ev.object));
                                }
                            }
                        }
                        store.rv
                    };
                    last_rv = last_rv.max(rv);
                    out.push(bookmark(&def, last_rv, false));
                }
                _ = &mut sleep_until => stop = true,
                _ = shutdown.changed() => stop = true,
                _ = tx.closed() => stop = true,
            }
            for b in out {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            if stop {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}
