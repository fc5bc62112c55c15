//! Parsing the coordinator's roster watch stream (server-sent events) into typed messages.

use crate::ClientError;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use tabbify_wire::mesh::{RosterEvent, RosterSnapshot, SSE_SNAPSHOT};

/// One message on the watch stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// The whole roster as of a revision; sent first when the requested revision is too old.
    Snapshot(RosterSnapshot),
    /// One change, in revision order.
    Event(Box<RosterEvent>),
}

impl WatchMessage {
    pub fn revision(&self) -> u64 {
        match self {
            WatchMessage::Snapshot(s) => s.revision,
            WatchMessage::Event(e) => e.revision,
        }
    }
}

pub(crate) fn parse_stream<S, B, E>(
    bytes: S,
) -> impl Stream<Item = Result<WatchMessage, ClientError>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    sse_items(bytes, "watch", decode)
}

/// The items `decode` makes of a server-sent-events body, for both of the coordinator's
/// streams. `decode` gets each event's name and data and answers `Ok(None)` for names it does
/// not know (a newer coordinator's), which are skipped.
pub(crate) fn sse_items<S, B, E, T>(
    bytes: S,
    what: &'static str,
    decode: fn(&str, &str) -> Result<Option<T>, ClientError>,
) -> impl Stream<Item = Result<T, ClientError>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    bytes.eventsource().filter_map(move |item| async move {
        match item {
            Err(e) => Some(Err(ClientError::Decode {
                what: what.into(),
                detail: e.to_string(),
            })),
            Ok(ev) => decode(&ev.event, &ev.data).transpose(),
        }
    })
}

fn decode(event: &str, data: &str) -> Result<Option<WatchMessage>, ClientError> {
    let bad = |e: serde_json::Error| ClientError::Decode {
        what: format!("watch event {event:?}"),
        detail: e.to_string(),
    };
    match event {
        SSE_SNAPSHOT => Ok(Some(WatchMessage::Snapshot(
            serde_json::from_str(data).map_err(bad)?,
        ))),
        "joined" | "updated" | "offline" | "removed" => Ok(Some(WatchMessage::Event(Box::new(
            serde_json::from_str(data).map_err(bad)?,
        )))),
        // Unknown event names come from a newer coordinator: skip them.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[tokio::test]
    async fn parses_snapshot_and_events_and_skips_unknown() {
        let peer = r#"{"peer_id":"p1","ula":"fd00:1:2:1::1","subnet":"fd00:1:2:1::/64","display_name":"a","tags":["wasm"],"public_key":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","endpoints":[],"last_seen":"2026-01-01T00:00:00Z","online":true,"version":"0.1.0"}"#;
        let text = format!(
            ": keepalive\n\nid: 3\nevent: snapshot\ndata: {{\"revision\":3,\"peers\":[]}}\n\nevent: future-thing\ndata: {{}}\n\nid: 4\nevent: joined\ndata: {{\"revision\":4,\"kind\":\"joined\",\"peer\":{peer},\"at\":\"2026-01-01T00:00:00Z\"}}\n\n"
        );
        // Split into awkward chunks to exercise reassembly.
        let chunks: Vec<Result<Vec<u8>, String>> =
            text.as_bytes().chunks(7).map(|c| Ok(c.to_vec())).collect();
        let msgs: Vec<_> = parse_stream(stream::iter(chunks)).collect().await;
        let msgs: Vec<WatchMessage> = msgs.into_iter().map(|m| m.unwrap()).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].revision(), 3);
        assert!(matches!(msgs[0], WatchMessage::Snapshot(_)));
        match &msgs[1] {
            WatchMessage::Event(e) => {
                assert_eq!(e.revision, 4);
                assert_eq!(e.peer.display_name, "a");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_json_is_a_decode_error() {
        let chunks: Vec<Result<Vec<u8>, String>> =
            vec![Ok(b"id: 1\nevent: joined\ndata: {nope\n\n".to_vec())];
        let msgs: Vec<_> = parse_stream(stream::iter(chunks)).collect().await;
        assert!(matches!(msgs[0], Err(ClientError::Decode { .. })));
    }
}
