//! `GET /v1/mesh/watch`: the roster as a server-sent event stream that a client can resume from
//! any revision without a gap or a duplicate.
//!
//! The order of operations is what makes that true: subscribe to the live broadcast first, then
//! read the backlog from the log, then pass live events on only when they are exactly the next
//! revision. Anything unexpected (the subscriber lagged, a revision skipped) falls back to reading
//! the log again from the last revision sent; if the log no longer has it, a snapshot is sent.

use crate::service::Service;
use crate::store::EventsAfter;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tabbify_wire::mesh::{RosterEvent, RosterSnapshot, SSE_SNAPSHOT};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Events read from the log per round trip to the store.
const PAGE: usize = 1000;
/// Items buffered between the watcher task and the HTTP response.
const BUFFER: usize = 64;

/// One message of the watch stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    Snapshot(RosterSnapshot),
    Event(Box<RosterEvent>),
}

impl WatchItem {
    pub fn revision(&self) -> u64 {
        match self {
            WatchItem::Snapshot(s) => s.revision,
            WatchItem::Event(e) => e.revision,
        }
    }

    /// The SSE form: `id: <revision>`, `event: <kind|snapshot>`, `data: <json>`.
    pub fn to_sse(&self) -> Event {
        let (name, data) = match self {
            WatchItem::Snapshot(s) => (SSE_SNAPSHOT, serde_json::to_string(s)),
            WatchItem::Event(e) => (e.kind.as_str(), serde_json::to_string(e)),
        };
        let data = data.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode a watch item");
            String::new()
        });
        Event::default()
            .id(self.revision().to_string())
            .event(name)
            .data(data)
    }
}

/// Starts a watch from `since` (exclusive) as SSE events; `None` starts with a snapshot.
pub fn start(
    service: Arc<Service>,
    since: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    items(service, since).map(|item| Ok(item.to_sse()))
}

/// Starts a watch from `since` (exclusive); `None` starts with a snapshot.
pub fn items(service: Arc<Service>, since: Option<u64>) -> ReceiverStream<WatchItem> {
    // Subscribe before anything is read, so every event committed from here on reaches us.
    let live = service.subscribe();
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let _counted = service.metrics.watch_opened();
        let mut watcher = Watcher { tx, live, last: 0 };
        if let Err(why) = watcher.run(&service, since).await {
            tracing::debug!(%why, "watch stream ended");
        }
    });
    ReceiverStream::new(rx)
}

struct Watcher {
    tx: mpsc::Sender<WatchItem>,
    live: broadcast::Receiver<RosterEvent>,
    /// The last revision sent to the client.
    last: u64,
}

impl Watcher {
    async fn run(&mut self, service: &Service, since: Option<u64>) -> Result<(), String> {
        match since {
            Some(rev) => self.last = rev,
            None => self.send_snapshot(service).await?,
        }
        let mut caught_up = false;
        loop {
            if !caught_up {
                caught_up = self.send_backlog(service).await?;
                continue;
            }
            tokio::select! {
                _ = self.tx.closed() => return Err("client went away".into()),
                _ = service.shutdown.cancelled() => return Err("shutting down".into()),
                received = self.live.recv() => match received {
                    Ok(ev) if ev.revision <= self.last => {}
                    Ok(ev) if ev.revision == self.last + 1 => self.send_event(&ev).await?,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => caught_up = false,
                    Err(broadcast::error::RecvError::Closed) => return Err("broadcast closed".into()),
                },
            }
        }
    }

    /// Sends one page of the log after `last`; true when it was the end of the log.
    async fn send_backlog(&mut self, service: &Service) -> Result<bool, String> {
        let since = self.last;
        let page = service
            .read(move |s| s.events_after(since, PAGE))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        match page {
            EventsAfter::Gone => {
                self.send_snapshot(service).await?;
                Ok(false)
            }
            EventsAfter::Events(events) => {
                let done = events.len() < PAGE;
                for ev in &events {
                    self.send_event(ev).await?;
                }
                Ok(done)
            }
        }
    }

    async fn send_snapshot(&mut self, service: &Service) -> Result<(), String> {
        let snap: RosterSnapshot = service
            .read(|s| s.snapshot())
            .await
            .map_err(|e| e.to_string())?;
        let revision = snap.revision;
        self.tx
            .send(WatchItem::Snapshot(snap))
            .await
            .map_err(|_| "client went away")?;
        self.last = revision;
        Ok(())
    }

    async fn send_event(&mut self, ev: &RosterEvent) -> Result<(), String> {
        self.tx
            .send(WatchItem::Event(Box::new(ev.clone())))
            .await
            .map_err(|_| "client went away")?;
        self.last = ev.revision;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::LivenessPolicy;
    use crate::service::Settings;
    use crate::store::{RegisterCommand, Store};
    use std::time::Duration;
    use tabbify_wire::mesh::RegisterRequest;
    use tabbify_wire::token::CreateJoinTokenRequest;
    use tabbify_wire::{PublicKeyB64, Tag, Timestamp};

    struct Fixture {
        _dir: tempfile::TempDir,
        svc: Arc<Service>,
        token: String,
    }

    fn fixture(broadcast_capacity: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db")).unwrap();
        let token = store
            .create_join_token(
                &CreateJoinTokenRequest {
                    reusable: true,
                    ..Default::default()
                },
                Timestamp::now(),
            )
            .unwrap()
            .token;
        let settings = Settings {
            open_join: false,
            liveness: LivenessPolicy {
                heartbeat_interval: Duration::from_secs(5),
                offline_after_missed: 3,
                retention: Duration::from_secs(3600),
            },
            mesh: store.mesh_prefix(),
            event_log_capacity: 100_000,
            serving_since: Timestamp::now(),
            node_lost_grace: Duration::from_secs(30),
            default_appsrv: None,
            mtls: None,
            guards: crate::guards::Guards::default(),
        };
        let svc =
            Service::with_broadcast_capacity(store, "tbfa_test", settings, broadcast_capacity)
                .unwrap();
        Fixture {
            _dir: dir,
            svc: Arc::new(svc),
            token,
        }
    }

    async fn join(f: &Fixture, i: u64) {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_le_bytes());
        let cmd = RegisterCommand {
            request: RegisterRequest {
                public_key: PublicKeyB64::from_bytes(key),
                display_name: format!("n{i}"),
                tags: vec![Tag::wasm()],
                endpoints: vec![],
                requested_ula: None,
                version: "1".into(),
                peer_credential: None,
                resources: None,
                csr: None,
            },
            join_token: Some(f.token.clone()),
            open_join: false,
            alloc_start: 1,
            proof: None,
            certificate: None,
        };
        f.svc
            .write(move |s, sink| {
                let reg = s.register(cmd, Timestamp::now()).unwrap();
                sink.extend(reg.event);
            })
            .await
            .unwrap();
    }

    async fn collect(stream: &mut ReceiverStream<WatchItem>, up_to: u64) -> Vec<WatchItem> {
        let mut out = Vec::new();
        while out.last().is_none_or(|i: &WatchItem| i.revision() < up_to) {
            let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("watch stalled")
                .expect("watch ended");
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_broadcast_rereads_the_log() {
        // Broadcast depth 4, hand-off buffer 64, 300 unread events: most must come from the log.
        let f = fixture(4);
        for i in 0..5 {
            join(&f, i).await;
        }
        let mut stream = items(Arc::clone(&f.svc), Some(0));
        for i in 5..305 {
            join(&f, i).await;
        }
        let got = collect(&mut stream, 305).await;
        let revs: Vec<u64> = got.iter().map(WatchItem::revision).collect();
        assert_eq!(revs, (1..=305).collect::<Vec<_>>());
        assert!(got.iter().all(|i| matches!(i, WatchItem::Event(_))));
        // And it is live again afterwards.
        join(&f, 999).await;
        assert_eq!(collect(&mut stream, 306).await.len(), 1);
    }

    #[tokio::test]
    async fn pruned_while_behind_means_a_snapshot_then_live_events() {
        let f = fixture(4);
        let mut stream = items(Arc::clone(&f.svc), Some(0));
        for i in 0..200 {
            join(&f, i).await;
        }
        f.svc
            .write(|s, _| s.prune_events(10).unwrap())
            .await
            .unwrap();
        let got = collect(&mut stream, 200).await;
        // Whatever was delivered before the prune is contiguous from 1; then one snapshot at the
        // head; nothing is duplicated or skipped without a snapshot covering it.
        let snap_at = got
            .iter()
            .position(|i| matches!(i, WatchItem::Snapshot(_)))
            .expect("a snapshot replaces the pruned events");
        let before: Vec<u64> = got[..snap_at].iter().map(WatchItem::revision).collect();
        assert_eq!(before, (1..=before.len() as u64).collect::<Vec<_>>());
        let WatchItem::Snapshot(snap) = &got[snap_at] else {
            unreachable!()
        };
        assert_eq!(snap.revision, 200);
        assert_eq!(snap.peers.len(), 200);
        assert_eq!(snap_at + 1, got.len());
        join(&f, 1000).await;
        assert_eq!(collect(&mut stream, 201).await[0].revision(), 201);
    }

    #[tokio::test]
    async fn no_revision_starts_with_a_snapshot() {
        let f = fixture(16);
        join(&f, 1).await;
        let mut stream = items(Arc::clone(&f.svc), None);
        let first = collect(&mut stream, 1).await;
        assert!(
            matches!(&first[0], WatchItem::Snapshot(s) if s.revision == 1 && s.peers.len() == 1)
        );
        join(&f, 2).await;
        assert!(
            matches!(&collect(&mut stream, 2).await[0], WatchItem::Event(e) if e.revision == 2)
        );
    }
}
