//! `GET /v1/mesh/watch`: the roster as a server-sent event stream that a client can resume from
//! any revision without a gap or a duplicate.
//!
//! The order of operations is what makes that true: subscribe to the live broadcast first, then
//! read the backlog from the log, then pass live events on only when they are exactly the next
//! revision. Anything unexpected (the subscriber lagged, a revision skipped) falls back to reading
//! the log again from the last revision sent; if the log no longer has it, a snapshot is sent.
//!
//! Nothing here grows with the number of watchers per event: the store thread encodes each event
//! into its SSE frame once ([`LiveEvent`]), and every watcher sends those same bytes (a reference
//! count, not a copy). Events read back from the log are framed from their stored JSON without
//! parsing it, and a snapshot is built from the listing's per-peer JSON.

use crate::service::Service;
use crate::store::{EncodedEvent, EncodedEventsAfter};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tabbify_wire::mesh::{RosterEvent, SSE_SNAPSHOT};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Events read from the log per round trip to the store.
const PAGE: usize = 1000;
/// Items buffered between the watcher task and the HTTP response.
const BUFFER: usize = 64;
/// The SSE comment sent when a stream has been idle this long.
const KEEP_ALIVE_FRAME: &[u8] = b":keep-alive\n\n";

/// One SSE frame: `id: <revision>`, `event: <name>`, `data: <json>`.
pub fn frame(revision: u64, name: &str, json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + name.len() + 40);
    b.put_slice(b"id: ");
    b.put_slice(revision.to_string().as_bytes());
    b.put_slice(b"\nevent: ");
    b.put_slice(name.as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// A committed roster event in its SSE form, encoded once for every watcher.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    pub revision: u64,
    pub frame: Bytes,
}

impl LiveEvent {
    pub fn encode(ev: &RosterEvent) -> Self {
        let json = serde_json::to_vec(ev).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode a roster event");
            Vec::new()
        });
        Self {
            revision: ev.revision,
            frame: frame(ev.revision, ev.kind.as_str(), &json),
        }
    }

    fn from_log(ev: &EncodedEvent) -> Self {
        Self {
            revision: ev.revision,
            frame: frame(ev.revision, &ev.kind, ev.body.as_bytes()),
        }
    }
}

/// What a watch stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Snapshot,
    Event,
}

/// One message of the watch stream, already framed.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchItem {
    pub kind: ItemKind,
    pub revision: u64,
    pub frame: Bytes,
}

impl WatchItem {
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// Starts a watch from `since` (exclusive) as SSE bytes, with a keep-alive comment after every
/// `keep_alive` of silence; `None` starts with a snapshot.
pub fn start(
    service: Arc<Service>,
    since: Option<u64>,
    keep_alive: Duration,
) -> impl Stream<Item = Bytes> + Send + 'static {
    use futures_util::StreamExt;
    KeepAlive::new(items(service, since).map(|item| item.frame), keep_alive)
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
    live: broadcast::Receiver<LiveEvent>,
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
                    Ok(ev) if ev.revision == self.last + 1 => self.send_event(ev).await?,
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
            .read(move |s| s.encoded_events_after(since, PAGE))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        match page {
            EncodedEventsAfter::Gone => {
                self.send_snapshot(service).await?;
                Ok(false)
            }
            EncodedEventsAfter::Events(events) => {
                let done = events.len() < PAGE;
                for ev in &events {
                    self.send_event(LiveEvent::from_log(ev)).await?;
                }
                Ok(done)
            }
        }
    }

    async fn send_snapshot(&mut self, service: &Service) -> Result<(), String> {
        // The listing shares each peer's JSON; it is joined here, off the store thread.
        let list = service
            .read(|s| s.peer_list(None))
            .await
            .map_err(|e| e.to_string())?;
        let json = list.to_json().map_err(|e| e.to_string())?;
        let revision = list.revision;
        self.tx
            .send(WatchItem {
                kind: ItemKind::Snapshot,
                revision,
                frame: frame(revision, SSE_SNAPSHOT, &json),
            })
            .await
            .map_err(|_| "client went away")?;
        self.last = revision;
        Ok(())
    }

    async fn send_event(&mut self, ev: LiveEvent) -> Result<(), String> {
        let revision = ev.revision;
        self.tx
            .send(WatchItem {
                kind: ItemKind::Event,
                revision,
                frame: ev.frame,
            })
            .await
            .map_err(|_| "client went away")?;
        self.last = revision;
        Ok(())
    }
}

/// A stream of SSE frames that sends a comment after `every` without one, so idle connections
/// (and proxies) do not time out.
struct KeepAlive<S> {
    inner: S,
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<S> KeepAlive<S> {
    fn new(inner: S, every: Duration) -> Self {
        Self {
            inner,
            every,
            timer: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl<S: Stream<Item = Bytes> + Unpin> Stream for KeepAlive<S> {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            let deadline = tokio::time::Instant::now() + this.every;
            this.timer.as_mut().reset(deadline);
            return Poll::Ready(item);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            let deadline = tokio::time::Instant::now() + this.every;
            this.timer.as_mut().reset(deadline);
            return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE_FRAME)));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::LivenessPolicy;
    use crate::service::Settings;
    use crate::store::{RegisterCommand, Store};
    use futures_util::StreamExt;
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

    fn snapshot_of(item: &WatchItem) -> tabbify_wire::mesh::RosterSnapshot {
        let text = std::str::from_utf8(&item.frame).unwrap();
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        serde_json::from_str(data).unwrap()
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
        assert!(got.iter().all(|i| i.kind == ItemKind::Event));
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
            .position(|i| i.kind == ItemKind::Snapshot)
            .expect("a snapshot replaces the pruned events");
        let before: Vec<u64> = got[..snap_at].iter().map(WatchItem::revision).collect();
        assert_eq!(before, (1..=before.len() as u64).collect::<Vec<_>>());
        let snap = snapshot_of(&got[snap_at]);
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
        assert_eq!(first[0].kind, ItemKind::Snapshot);
        let snap = snapshot_of(&first[0]);
        assert!(snap.revision == 1 && snap.peers.len() == 1);
        join(&f, 2).await;
        let next = collect(&mut stream, 2).await;
        assert_eq!((next[0].kind, next[0].revision), (ItemKind::Event, 2));
        let text = std::str::from_utf8(&next[0].frame).unwrap();
        assert!(
            text.starts_with("id: 2\nevent: joined\ndata: {") && text.ends_with("}\n\n"),
            "{text}"
        );
    }
}
