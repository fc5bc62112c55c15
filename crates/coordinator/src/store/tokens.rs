//! Join-token rows: create, list, revoke, and the use counter a registration consumes.

use super::{Store, StoreError, ms, ts};
use crate::tokens::{self, JoinTokenRecord};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tabbify_wire::token::{CreateJoinTokenRequest, CreatedJoinToken, JoinTokenInfo, JoinTokenList};
use tabbify_wire::{Tag, Timestamp};

/// Default lifetime of a join token.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime accepted (ten years).
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
pub const MAX_DESCRIPTION_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum CreateTokenError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no join token with id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const COLUMNS: &str =
    "id, secret_hash, description, created_at, expires_at, uses_allowed, uses, tags, revoked_at";

pub(super) fn load(conn: &Connection, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM join_tokens WHERE id = ?1"))?;
    let row = stmt
        .query_row(params![id], |r| Ok(record_from_row(r)))
        .optional()?;
    row.transpose()
}

pub(super) fn consume_use(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE join_tokens SET uses = uses + 1 WHERE id = ?1")?
        .execute(params![id])?;
    if n != 1 {
        return Err(StoreError::Corrupt(format!(
            "join token {id} vanished mid-registration"
        )));
    }
    Ok(())
}

/// Marks token `id` revoked (keeping an earlier revocation time); false when there is no such
/// token.
pub(super) fn revoke_in(conn: &Connection, id: &str, now: Timestamp) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        )?
        .execute(params![id, ms(now)])?;
    Ok(n > 0)
}

fn record_from_row(r: &Row<'_>) -> Result<JoinTokenRecord, StoreError> {
    let id: String = r.get(0)?;
    let hash: Vec<u8> = r.get(1)?;
    let secret_hash: [u8; 32] = hash
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("join token {id}: hash is not 32 bytes")))?;
    let tags: Option<Vec<Tag>> = match r.get::<_, Option<String>>(7)? {
        Some(t) => Some(
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("join token {id}: tags: {e}")))?,
        ),
        None => None,
    };
    let uses_allowed: Option<i64> = r.get(5)?;
    let uses: i64 = r.get(6)?;
    Ok(JoinTokenRecord {
        secret_hash,
        description: r.get(2)?,
        created_at: ts(r.get(3)?),
        expires_at: ts(r.get(4)?),
        uses_allowed: uses_allowed.map(|u| u32::try_from(u).unwrap_or(u32::MAX)),
        uses: u32::try_from(uses).unwrap_or(u32::MAX),
        tags,
        revoked_at: r.get::<_, Option<i64>>(8)?.map(ts),
        id,
    })
}

fn info(rec: &JoinTokenRecord, now: Timestamp) -> JoinTokenInfo {
    JoinTokenInfo {
        id: rec.id.clone(),
        description: rec.description.clone(),
        created_at: rec.created_at,
        expires_at: rec.expires_at,
        uses_allowed: rec.uses_allowed,
        uses: rec.uses,
        tags: rec.tags.clone(),
        state: tokens::token_state(rec, now),
    }
}

/// What a create request turns into once defaults are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenPlan {
    expires_at: Timestamp,
    uses_allowed: Option<u32>,
    tags: Option<Vec<Tag>>,
}

/// Checks an admin's create request and fills in the defaults.
fn plan_token(req: &CreateJoinTokenRequest, now: Timestamp) -> Result<TokenPlan, String> {
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(format!(
            "ttl_secs must be between 1 and {MAX_TTL_SECS} (ten years), got {ttl}"
        ));
    }
    let uses_allowed = if req.reusable {
        None
    } else {
        let uses = req.uses.unwrap_or(1);
        if uses == 0 {
            return Err("uses must be at least 1 (or set reusable: true)".into());
        }
        Some(uses)
    };
    if let Some(d) = &req.description {
        let n = d.chars().count();
        if n > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control) {
            return Err(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} printable characters (got {n})"
            ));
        }
    }
    let tags = req.tags.clone().map(|mut t| {
        t.sort();
        t.dedup();
        t
    });
    Ok(TokenPlan {
        expires_at: Timestamp(now.unix_ms().saturating_add(ttl * 1000)),
        uses_allowed,
        tags,
    })
}

impl Store {
    pub fn create_join_token(
        &mut self,
        req: &CreateJoinTokenRequest,
        now: Timestamp,
    ) -> Result<CreatedJoinToken, CreateTokenError> {
        let TokenPlan {
            expires_at,
            uses_allowed,
            tags,
        } = plan_token(req, now).map_err(CreateTokenError::Invalid)?;
        let id = tokens::new_id();
        let secret = tokens::new_secret();
        let rec = JoinTokenRecord {
            id: id.clone(),
            secret_hash: tokens::hash_secret(&secret),
            description: req.description.clone(),
            created_at: now,
            expires_at,
            uses_allowed,
            uses: 0,
            tags,
            revoked_at: None,
        };
        let tags_json = match &rec.tags {
            Some(t) => Some(serde_json::to_string(t).map_err(StoreError::from)?),
            None => None,
        };
        self.conn
            .execute(
                &format!("INSERT INTO join_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, NULL)"),
                params![
                    rec.id,
                    &rec.secret_hash[..],
                    rec.description,
                    ms(rec.created_at),
                    ms(rec.expires_at),
                    rec.uses_allowed.map(i64::from),
                    tags_json,
                ],
            )
            .map_err(StoreError::from)?;
        Ok(CreatedJoinToken {
            token: tokens::format_join_token(&id, &secret),
            info: info(&rec, now),
        })
    }

    pub fn join_tokens(&self, now: Timestamp) -> Result<JoinTokenList, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM join_tokens ORDER BY created_at, id"
        ))?;
        let mut rows = stmt.query([])?;
        let mut list = Vec::new();
        while let Some(row) = rows.next()? {
            list.push(info(&record_from_row(row)?, now));
        }
        Ok(JoinTokenList { tokens: list })
    }

    pub fn join_token(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<JoinTokenInfo>, StoreError> {
        Ok(load(&self.conn, id)?.map(|r| info(&r, now)))
    }

    /// Revokes a token. Revoking twice is fine; the first revocation time is kept.
    pub fn revoke_join_token(&mut self, id: &str, now: Timestamp) -> Result<(), RevokeError> {
        if !revoke_in(&self.conn, id, now)? {
            return Err(RevokeError::NotFound(id.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_defaults_and_limits() {
        let now = Timestamp(1_000);
        let plan = plan_token(&CreateJoinTokenRequest::default(), now).unwrap();
        assert_eq!(plan.expires_at, Timestamp(1_000 + DEFAULT_TTL_SECS * 1000));
        assert_eq!(plan.uses_allowed, Some(1));
        assert_eq!(plan.tags, None);
        let reusable = CreateJoinTokenRequest {
            reusable: true,
            uses: Some(5),
            ..Default::default()
        };
        assert_eq!(plan_token(&reusable, now).unwrap().uses_allowed, None);
        for (bad, want) in [
            (
                CreateJoinTokenRequest {
                    ttl_secs: Some(0),
                    ..Default::default()
                },
                "ttl_secs",
            ),
            (
                CreateJoinTokenRequest {
                    ttl_secs: Some(MAX_TTL_SECS + 1),
                    ..Default::default()
                },
                "ttl_secs",
            ),
            (
                CreateJoinTokenRequest {
                    uses: Some(0),
                    ..Default::default()
                },
                "uses must be at least 1",
            ),
            (
                CreateJoinTokenRequest {
                    description: Some("x".repeat(257)),
                    ..Default::default()
                },
                "description",
            ),
        ] {
            let err = plan_token(&bad, now).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}
