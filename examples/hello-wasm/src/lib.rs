//! The smallest useful Tabbify wasm app: a `wasi:http/proxy` component.
//!
//! `GET /` answers a fixed greeting; `POST /echo` (or `PUT`) sends the request body back. Every
//! request prints one line to stdout so the runner's app log has something to show.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

/// The body of `GET /`; tests and benchmarks compare against it.
const GREETING: &[u8] = b"hello from tabbify wasm\n";
/// The host accepts at most this many bytes per `blocking-write-and-flush` call.
const WRITE_CHUNK: usize = 4096;

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("/").to_string();
        let method = request.method();
        println!("hello-wasm: {method:?} {path}");
        match (method, path.as_str()) {
            (Method::Get | Method::Head, "/") => respond(out, 200, "text/plain", GREETING),
            (Method::Post | Method::Put, "/echo") => match read_body(&request) {
                Ok(body) => respond(out, 200, "application/octet-stream", &body),
                Err(e) => respond(out, 400, "text/plain", e.as_bytes()),
            },
            (_, "/" | "/echo") => respond(out, 405, "text/plain", b"method not allowed\n"),
            _ => respond(out, 404, "text/plain", b"not found\n"),
        }
    }
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "request body already taken".to_string())?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "request body stream already taken".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("reading body: {}", e.to_debug_string()));
                }
            }
        }
    }
    let _trailers = wasip2::http::types::IncomingBody::finish(body);
    Ok(bytes)
}

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    {
        let Ok(stream) = outgoing.write() else {
            return;
        };
        for chunk in body.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Hello with_types_in wasip2);
