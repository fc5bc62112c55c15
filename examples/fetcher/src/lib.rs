//! A Tabbify wasm app that makes one outbound HTTP request for its caller, so the tests can
//! show what an app can and cannot reach (its own node's control API, for one).
//!
//! `GET /fetch?method=POST&url=http://127.0.0.1:8730/v1/apps` sends that request (no body, no
//! credentials) and answers `200` with `<status>\n<body>` of what came back, or `502` with the
//! error when no answer came. `/` answers `fetcher`.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

struct Fetcher;

impl Guest for Fetcher {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((full.as_str(), ""));
        match path {
            "/" => respond(out, 200, b"fetcher\n"),
            "/fetch" => {
                let param = |name: &str| {
                    query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| percent_decode(v))
                };
                let Some(url) = param("url") else {
                    return respond(out, 400, b"give ?url=\n");
                };
                let method = param("method").unwrap_or_else(|| "GET".into());
                match fetch(&method, &url) {
                    Ok((status, body)) => {
                        let mut text = format!("{status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(out, 200, &text)
                    }
                    Err(e) => respond(out, 502, e.as_bytes()),
                }
            }
            _ => respond(out, 404, b"not found\n"),
        }
    }
}

/// `%XX` and `+` decoding of one query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fetch(method: &str, url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(format!("not an http(s) URL: {url}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "PUT" => Method::Put,
        other => Method::Other(other.to_string()),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_method(&method).map_err(|()| "bad method")?;
    req.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
    req.set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    req.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let body = req.body().map_err(|()| "request body already taken")?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = pending
        .get()
        .ok_or("no response yet")?
        .map_err(|()| "response already taken")?
        .map_err(|e| format!("request failed: {e:?}"))?;
    let status = resp.status();
    let incoming = resp.consume().map_err(|()| "response body already taken")?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "response body stream already taken")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("reading the response: {}", e.to_debug_string()));
                }
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok((status, bytes))
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain".to_vec()),
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
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Fetcher with_types_in wasip2);
