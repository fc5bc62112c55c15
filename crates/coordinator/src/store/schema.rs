//! The database layout and its version (`PRAGMA user_version`), applied in one transaction.
//! Version 1 is the roster; version 2 adds the app table (apps, assignments with the nodes'
//! reports, each node's assignment revision; the apps revision lives in `meta`). Version 3 adds
//! the serials of the node certificates each peer may use (mTLS), the keys of peers an operator
//! removed (refused until re-admitted) and an index to find the peers a join token admitted.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// The schema this build writes. Older files are migrated forward; newer ones are refused.
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE peers (
    peer_id         TEXT PRIMARY KEY,
    public_key      TEXT NOT NULL UNIQUE,
    subnet          INTEGER NOT NULL UNIQUE CHECK (subnet BETWEEN 1 AND 65535),
    display_name    TEXT NOT NULL,
    tags            TEXT NOT NULL,
    allowed_tags    TEXT,
    endpoints       TEXT NOT NULL,
    version         TEXT NOT NULL,
    resources       TEXT,
    credential_hash BLOB NOT NULL,
    joined_at       INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    online          INTEGER NOT NULL,
    join_token_id   TEXT
) STRICT;

CREATE TABLE join_tokens (
    id           TEXT PRIMARY KEY,
    secret_hash  BLOB NOT NULL,
    description  TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    uses_allowed INTEGER,
    uses         INTEGER NOT NULL DEFAULT 0,
    tags         TEXT,
    revoked_at   INTEGER
) STRICT;

CREATE TABLE events (
    revision INTEGER PRIMARY KEY,
    kind     TEXT NOT NULL,
    peer_id  TEXT NOT NULL,
    at       INTEGER NOT NULL,
    body     TEXT NOT NULL
) STRICT;
";

const SCHEMA_V2: &str = "
CREATE TABLE apps (
    name            TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,
    manifest        TEXT NOT NULL,
    artifact_digest TEXT,
    appsrv_url      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

CREATE TABLE assignments (
    app         TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE,
    replica     INTEGER NOT NULL CHECK (replica >= 0),
    peer_id     TEXT NOT NULL,
    assigned_at INTEGER NOT NULL,
    lost_at     INTEGER,
    report      TEXT,
    reported_at INTEGER,
    PRIMARY KEY (app, replica)
) STRICT;

CREATE TABLE node_assignments (
    peer_id  TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
) STRICT;
";

const SCHEMA_V3: &str = "
ALTER TABLE peers ADD COLUMN cert_serial TEXT;
ALTER TABLE peers ADD COLUMN prev_cert_serial TEXT;
CREATE TABLE removed_keys (
    public_key   TEXT PRIMARY KEY,
    peer_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    removed_at   INTEGER NOT NULL,
    reason       TEXT NOT NULL
) STRICT;

CREATE INDEX removed_keys_by_peer ON removed_keys (peer_id);
CREATE INDEX peers_by_join_token ON peers (join_token_id);
";

/// Connection settings: WAL so readers never block the writer and a crash never tears a commit;
/// `synchronous = NORMAL` keeps every commit safe against a process crash (kill -9) and the file
/// consistent after power loss, at the price of possibly losing the last commits on power loss.
pub fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if found < 1 {
        tx.execute_batch(SCHEMA_V1)?;
    }
    if found < 2 {
        tx.execute_batch(SCHEMA_V2)?;
    }
    if found < 3 {
        tx.execute_batch(SCHEMA_V3)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        "database schema migrated"
    );
    Ok(())
}
