//! `GET /v1/apps/{id}/logs`: the app's log as the runner writes it (guest stdout and stderr, the
//! runner's own lines). `?tail=N` starts at the last N lines; `?follow=true` keeps the response
//! open and streams what is appended, across rotations, until the client goes away or the app is
//! deleted.

use super::api::parse_id;
use super::error::AppError;
use super::handle::AppsHandle;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::io::{self, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often a followed log is checked for new bytes.
const POLL: Duration = Duration::from_millis(200);
/// A followed log missing this long belongs to a deleted app: the stream ends.
const GONE_AFTER: Duration = Duration::from_secs(3);
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

pub async fn logs(
    State(apps): State<AppsHandle>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| {
        AppError::BadRequest(format!(
            "{} (the log takes `follow=true|false` and `tail=<lines>`)",
            e.body_text()
        ))
    })?;
    let path = apps.log_file(parse_id(&id)?).await?;
    let whole = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(AppError::Internal(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let start = q.tail.map_or(0, |n| tail_start(&whole, n));
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((text, whole[start..].to_vec()).into_response());
    }
    let follower = Follower {
        path,
        file: None,
        ino: None,
        pos: start as u64,
        missing_since: None,
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            match f.next_chunk().await {
                Ok(Some(bytes)) => return Some((Ok::<_, io::Error>(bytes), f)),
                Ok(None) if f.gone() => return None,
                Ok(None) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), error = %e, "following a log failed");
                    return None;
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The offset where the last `lines` lines of `text` start.
fn tail_start(text: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return text.len();
    }
    // A final newline ends the last line; it does not start another.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1)
}

/// Reads a log as it grows; reopens it when the runner rotates it (a new file at the path).
struct Follower {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    /// The inode of the file being read.
    ino: Option<u64>,
    pos: u64,
    missing_since: Option<Instant>,
}

impl Follower {
    fn gone(&self) -> bool {
        self.missing_since
            .is_some_and(|t| t.elapsed() >= GONE_AFTER)
    }

    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.file.is_none() {
            let mut file = match tokio::fs::File::open(&self.path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.missing_since.get_or_insert_with(Instant::now);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            self.missing_since = None;
            let ino = file.metadata().await?.ino();
            if self.ino.is_some_and(|old| old != ino) {
                self.pos = 0;
            }
            self.ino = Some(ino);
            file.seek(SeekFrom::Start(self.pos)).await?;
            self.file = Some(file);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n > 0 {
            self.pos += n as u64;
            buf.truncate(n);
            return Ok(Some(Bytes::from(buf)));
        }
        // At the end of what we hold: was it rotated away, or truncated?
        match tokio::fs::metadata(&self.path).await {
            Ok(m) if Some(m.ino()) != self.ino => self.file = None,
            Ok(m) if m.len() < self.pos => {
                self.pos = 0;
                file.seek(SeekFrom::Start(0)).await?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.file = None;
                self.missing_since.get_or_insert_with(Instant::now);
            }
            Err(e) => return Err(e),
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_the_start_of_the_last_lines() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(&text[tail_start(text, 1)..], b"three\n");
        assert_eq!(&text[tail_start(text, 2)..], b"two\nthree\n");
        assert_eq!(&text[tail_start(text, 3)..], text);
        assert_eq!(&text[tail_start(text, 10)..], text);
        assert_eq!(tail_start(text, 0), text.len());
        let unterminated = b"one\ntwo";
        assert_eq!(&unterminated[tail_start(unterminated, 1)..], b"two");
        assert_eq!(tail_start(b"", 5), 0);
    }

    #[tokio::test]
    async fn follows_appends_and_rotations_and_ends_when_the_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "a\n").unwrap();
        let mut f = Follower {
            path: path.clone(),
            file: None,
            ino: None,
            pos: 0,
            missing_since: None,
        };
        assert_eq!(f.next_chunk().await.unwrap().unwrap(), "a\n");
        assert_eq!(f.next_chunk().await.unwrap(), None);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut w| std::io::Write::write_all(&mut w, b"b\n"))
            .unwrap();
        assert_eq!(f.next_chunk().await.unwrap().unwrap(), "b\n");
        // Rotation: the old file moves away, a new one takes the path.
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&path, "c\n").unwrap();
        assert_eq!(f.next_chunk().await.unwrap(), None);
        assert_eq!(f.next_chunk().await.unwrap().unwrap(), "c\n");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(f.next_chunk().await.unwrap(), None);
        assert!(!f.gone());
        f.missing_since = Some(Instant::now() - GONE_AFTER);
        assert!(f.gone());
    }
}
