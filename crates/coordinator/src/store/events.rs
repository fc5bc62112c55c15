//! The revisioned event log: every roster change is one row, revisions count up by one with no
//! gaps, and the oldest rows are pruned to keep the log bounded.

use super::{Store, StoreError, ms};
use rusqlite::{Connection, Transaction, params};
use std::cell::Cell;
use tabbify_wire::Timestamp;
use tabbify_wire::mesh::{Peer, RosterEvent, RosterEventKind};

/// What a watcher resuming after `since` gets from the log.
#[derive(Debug, Clone, PartialEq)]
pub enum EventsAfter {
    /// The next events in order (possibly empty when the watcher is up to date). At most the
    /// requested number; ask again from the last one for more.
    Events(Vec<RosterEvent>),
    /// Events right after `since` are no longer kept (or `since` is in the future): the watcher
    /// needs a snapshot.
    Gone,
}

/// One logged event as stored: its revision, kind and wire JSON, not parsed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub revision: u64,
    pub kind: String,
    pub body: String,
}

/// [`EventsAfter`] with the events as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodedEventsAfter {
    Events(Vec<EncodedEvent>),
    Gone,
}

pub(super) fn current_revision(conn: &Connection) -> Result<u64, StoreError> {
    let rev: i64 = conn.query_row("SELECT COALESCE(MAX(revision), 0) FROM events", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(rev).unwrap_or(0))
}

/// Writes the event with the given revision inside `tx` and returns it.
pub(super) fn append(
    tx: &Transaction<'_>,
    serialised: &Cell<u64>,
    revision: u64,
    kind: RosterEventKind,
    peer: &Peer,
    at: Timestamp,
) -> Result<RosterEvent, StoreError> {
    let event = RosterEvent {
        revision,
        kind,
        peer: peer.clone(),
        at,
    };
    let body = serde_json::to_string(&event)?;
    serialised.set(serialised.get() + body.len() as u64);
    tx.execute(
        "INSERT INTO events (revision, kind, peer_id, at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            i64::try_from(revision).unwrap_or(i64::MAX),
            kind.as_str(),
            peer.peer_id,
            ms(at),
            body
        ],
    )?;
    Ok(event)
}

pub(super) fn verify_contiguous(conn: &Connection, revision: u64) -> Result<(), StoreError> {
    let (count, min, max): (i64, Option<i64>, Option<i64>) = conn.query_row(
        "SELECT COUNT(*), MIN(revision), MAX(revision) FROM events",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let max = max.map(|m| u64::try_from(m).unwrap_or(0)).unwrap_or(0);
    if max != revision {
        return Err(StoreError::Corrupt(format!(
            "event log ends at {max}, revision is {revision}"
        )));
    }
    if let Some(min) = min
        && max - u64::try_from(min).unwrap_or(0) + 1 != u64::try_from(count).unwrap_or(0)
    {
        return Err(StoreError::Corrupt(format!(
            "event log {min}..={max} has {count} rows: a gap"
        )));
    }
    Ok(())
}

impl Store {
    /// Up to `limit` events after `since`, or [`EventsAfter::Gone`] when they were pruned.
    pub fn events_after(&self, since: u64, limit: usize) -> Result<EventsAfter, StoreError> {
        if since > self.revision {
            return Ok(EventsAfter::Gone);
        }
        if since == self.revision {
            return Ok(EventsAfter::Events(Vec::new()));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT body FROM events WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![
                i64::try_from(since).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| r.get::<_, String>(0),
        )?;
        let mut events = Vec::new();
        for body in rows {
            let body = body?;
            let event: RosterEvent = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))?;
            events.push(event);
        }
        match events.first() {
            Some(first) if first.revision == since + 1 => Ok(EventsAfter::Events(events)),
            _ => Ok(EventsAfter::Gone),
        }
    }

    /// Like [`Store::events_after`], with each event's stored JSON as it is (a watch stream
    /// sends it without parsing and encoding it again).
    pub fn encoded_events_after(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<EncodedEventsAfter, StoreError> {
        if since > self.revision {
            return Ok(EncodedEventsAfter::Gone);
        }
        if since == self.revision {
            return Ok(EncodedEventsAfter::Events(Vec::new()));
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT revision, kind, body FROM events WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![
                i64::try_from(since).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(EncodedEvent {
                    revision: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    kind: r.get(1)?,
                    body: r.get(2)?,
                })
            },
        )?;
        let events = rows.collect::<Result<Vec<_>, _>>()?;
        match events.first() {
            Some(first) if first.revision == since + 1 => Ok(EncodedEventsAfter::Events(events)),
            _ => Ok(EncodedEventsAfter::Gone),
        }
    }

    /// The oldest revision still in the log (`None` when it is empty).
    pub fn oldest_revision(&self) -> Result<Option<u64>, StoreError> {
        let min: Option<i64> =
            self.conn
                .query_row("SELECT MIN(revision) FROM events", [], |r| r.get(0))?;
        Ok(min.map(|m| u64::try_from(m).unwrap_or(0)))
    }

    /// Drops all but the newest `keep` events (at least one is always kept, so the current
    /// revision survives a restart). Returns how many rows went.
    pub fn prune_events(&mut self, keep: u64) -> Result<usize, StoreError> {
        let keep = keep.max(1);
        if self.revision <= keep {
            return Ok(0);
        }
        let cutoff = self.revision - keep;
        let n = self.conn.execute(
            "DELETE FROM events WHERE revision <= ?1",
            params![i64::try_from(cutoff).unwrap_or(i64::MAX)],
        )?;
        if n > 0 {
            tracing::debug!(removed = n, cutoff, "pruned the event log");
        }
        Ok(n)
    }
}
