//! The client's request body, lent to one attempt at a time. The HTTP client takes ownership of
//! the body it sends and drops it when the connection fails, so the body sits in a shared slot
//! instead: an attempt that never read from it (every connect failure) leaves it there for the
//! next replica, and once anything was read it is spent. No bytes are buffered.

use axum::body::Body;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

#[derive(Debug)]
struct Slot {
    body: Option<Body>,
    /// Set on the first read: the bytes went somewhere, the body cannot be sent again.
    read: bool,
}

/// Owns the client's body across attempts.
#[derive(Debug, Clone)]
pub(crate) struct LentBody {
    slot: Arc<Mutex<Slot>>,
}

impl LentBody {
    pub(crate) fn new(body: Body) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Slot {
                body: Some(body),
                read: false,
            })),
        }
    }

    /// The body for one more attempt, or `None` when an earlier attempt read from it.
    pub(crate) fn lend(&self) -> Option<LentBody> {
        let slot = lock(&self.slot);
        (!slot.read).then(|| self.clone())
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpBody for LentBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut slot = lock(&self.slot);
        slot.read = true;
        match slot.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.slot)
            .body
            .as_ref()
            .is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.slot).body.as_ref() {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(mut body: LentBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.unwrap().into_data() {
                out.extend_from_slice(&data);
            }
        }
        out
    }

    #[tokio::test]
    async fn an_unread_body_can_be_lent_again_and_a_read_one_cannot() {
        let lent = LentBody::new(Body::from("hello"));
        let first = lent.lend().unwrap();
        assert_eq!(first.size_hint().exact(), Some(5));
        drop(first);
        let second = lent.lend().unwrap();
        assert_eq!(collect(second).await, b"hello");
        assert!(lent.lend().is_none());
    }

    #[tokio::test]
    async fn an_empty_body_ends_at_once() {
        let lent = LentBody::new(Body::empty());
        assert!(lent.lend().unwrap().is_end_stream());
    }
}
