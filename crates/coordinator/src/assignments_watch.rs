//! `GET /v1/nodes/self/assignments/watch`: one node's assignment set as a server-sent event
//! stream.
//!
//! Level-triggered, so there is nothing to replay: each event is the node's complete set as of
//! the revision it last changed at. The stream follows the apps revision (published by the store
//! thread after every job) and re-reads the set when it moves; it marks the revision seen before
//! each read, so a change that lands during a read is never missed, and sends only when the set's
//! revision differs from the last one sent. A node that resumes with `since` equal to its current
//! revision hears nothing until the next change.

use crate::service::Service;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tabbify_wire::mesh::PeerId;
use tabbify_wire::placement::{AssignmentSet, SSE_ASSIGNMENTS};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Sets buffered between the watcher task and the HTTP response.
const BUFFER: usize = 8;

/// The SSE form of a set: `id: <revision>`, `event: assignments`, `data: <json>`.
pub fn to_sse(set: &AssignmentSet) -> Event {
    let data = serde_json::to_string(set).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode an assignment set");
        String::new()
    });
    Event::default()
        .id(set.revision.to_string())
        .event(SSE_ASSIGNMENTS)
        .data(data)
}

/// Starts following `peer`'s set; `since` is the revision the node already has.
pub fn start(
    service: Arc<Service>,
    peer: PeerId,
    since: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    sets(service, peer, since).map(|set| Ok(to_sse(&set)))
}

/// The sets themselves, as they change.
pub fn sets(
    service: Arc<Service>,
    peer: PeerId,
    since: Option<u64>,
) -> ReceiverStream<AssignmentSet> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        if let Err(why) = follow(&service, &tx, peer.clone(), since).await {
            tracing::debug!(peer_id = %peer, %why, "assignment watch ended");
        }
    });
    ReceiverStream::new(rx)
}

async fn follow(
    service: &Service,
    tx: &mpsc::Sender<AssignmentSet>,
    peer: PeerId,
    since: Option<u64>,
) -> Result<(), String> {
    let mut revisions = service.watch_apps();
    let mut last = since;
    loop {
        revisions.borrow_and_update();
        let id = peer.clone();
        let set = service
            .read(move |s| s.peer(&id).is_some().then(|| s.assignment_set(&id)))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the node left the roster")?;
        if last != Some(set.revision) {
            last = Some(set.revision);
            tx.send(set).await.map_err(|_| "client went away")?;
        }
        tokio::select! {
            _ = tx.closed() => return Err("client went away".into()),
            _ = service.shutdown.cancelled() => return Err("shutting down".into()),
            changed = revisions.changed() => changed.map_err(|_| "the store stopped")?,
        }
    }
}
