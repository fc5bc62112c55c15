//! A Tabbify wasm app that misbehaves on request, so the runner's guards can be tested.
//!
//! `/` answers `ok`; `/trap` panics (a wasm trap); `/loop` spins forever (only the runner's
//! deadline stops it); `/alloc` allocates until linear memory cannot grow (only the memory limit
//! stops it).

use std::hint::black_box;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Misbehave;

impl Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("/").to_string();
        match path.as_str() {
            "/" => respond(out, 200, b"ok\n"),
            "/trap" => {
                eprintln!("misbehave: about to trap");
                panic!("deliberate trap requested on /trap");
            }
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "/alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used, not just reserved.
                    hoard.push(black_box(vec![0xA5u8; 1024 * 1024]));
                }
            }
            _ => respond(out, 404, b"not found\n"),
        }
    }
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
        if stream.blocking_write_and_flush(body).is_err() {
            return;
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Misbehave with_types_in wasip2);
