//! Serving HTTP with the wasm app: one hyper connection task per client, one fresh guest instance
//! per request (from the pre-instantiated component), and the runner's own answer when the guest
//! fails: 504 past the deadline, 500 for a trap or the memory cap. The runner itself never dies
//! of a guest's failure.

use super::cache::load_component;
use super::engine::{EpochTicker, build_engine, deadline_ticks};
use super::guest::GuestState;
use crate::control::ControlState;
use crate::log_file::AppLog;
use crate::runtime::{LoadError, request_deadline};
use crate::stats::RequestStats;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tabbify_wire::runner::{CompileCache, RunnerSpec, RunnerState};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Header naming why the runner, not the app, answered.
pub const ERROR_HEADER: &str = "x-tabbify-error";
/// How long past the epoch deadline the runner waits for a guest blocked in the host.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);

/// A loaded wasm app.
pub struct WasmApp {
    pre: ProxyPre<GuestState>,
    ticker: EpochTicker,
    env: Vec<(String, String)>,
    memory_bytes: u64,
    deadline: Duration,
    slots: Arc<Semaphore>,
    stats: Arc<RequestStats>,
    log: AppLog,
    compile_cache: CompileCache,
    cache_file: PathBuf,
}

/// Why the runner answered instead of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Still running at the deadline.
    Deadline(Duration),
    /// Trapped after the memory cap refused to grow its memory.
    MemoryLimit(u64),
    /// Trapped (panic, unreachable, out-of-bounds, ...).
    Trap(String),
    /// Returned without setting a response.
    NoResponse,
    /// Set an error instead of a response.
    GuestError(String),
    /// The request could not be handed to the guest.
    BadRequest(String),
    /// Instantiation or the runner itself failed.
    Internal(String),
}

impl Failure {
    /// Decides what a guest error means; `memory_refused` tells whether the cap said no.
    pub fn classify(error: &wasmtime::Error, deadline: Duration, memory_refused: bool) -> Self {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Failure::Deadline(deadline),
            _ if memory_refused => Failure::MemoryLimit(0),
            // The trap's own text; the wasm backtrace goes to the runner's debug log only.
            Some(trap) => Failure::Trap(trap.to_string()),
            None => Failure::Trap(first_line(&error.to_string())),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Failure::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::MemoryLimit(_)
            | Failure::Trap(_)
            | Failure::NoResponse
            | Failure::GuestError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `x-tabbify-error` value.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Deadline(_) => "deadline",
            Failure::MemoryLimit(_) => "memory-limit",
            Failure::Trap(_) => "trap",
            Failure::NoResponse => "no-response",
            Failure::GuestError(_) => "guest-error",
            Failure::BadRequest(_) => "bad-request",
            Failure::Internal(_) => "internal",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Deadline(d) => {
                format!("request exceeded its deadline of {} ms", d.as_millis())
            }
            Failure::MemoryLimit(bytes) => format!(
                "app exceeded its memory limit of {} MiB",
                bytes / (1024 * 1024)
            ),
            Failure::Trap(t) => format!("app trapped: {t}"),
            Failure::NoResponse => "app returned without a response".into(),
            Failure::GuestError(e) => format!("app answered with an error: {e}"),
            Failure::BadRequest(e) => format!("bad request: {e}"),
            Failure::Internal(e) => format!("runner could not run the app: {e}"),
        }
    }
}

impl WasmApp {
    /// Reads, checks and compiles (or loads from cache) the component named by `spec`.
    pub fn load(
        spec: &RunnerSpec,
        log: AppLog,
        stats: Arc<RequestStats>,
    ) -> Result<Self, LoadError> {
        let path = &spec.artifact;
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let memory_bytes = spec.manifest.memory_bytes();
        let slots = spec.max_concurrent_requests.max(1);
        let engine =
            build_engine(memory_bytes, slots).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let (component, compile_cache, cache_file) =
            load_component(&engine, path, &bytes, &spec.cache_dir)?;
        let not_proxy = |e: wasmtime::Error| LoadError::NotProxy {
            path: path.clone(),
            message: format!("{e:#}"),
        };
        let mut linker = Linker::<GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(not_proxy)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(not_proxy)?;
        let pre = linker.instantiate_pre(&component).map_err(not_proxy)?;
        let pre = ProxyPre::new(pre).map_err(not_proxy)?;
        let ticker = EpochTicker::start(engine).map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self {
            pre,
            ticker,
            env: spec.manifest.env.clone().into_iter().collect(),
            memory_bytes,
            deadline: request_deadline(spec),
            slots: Arc::new(Semaphore::new(slots as usize)),
            stats,
            log,
            compile_cache,
            cache_file,
        })
    }

    pub fn compile_cache(&self) -> CompileCache {
        self.compile_cache
    }

    pub fn cache_file(&self) -> &std::path::Path {
        &self.cache_file
    }

    /// Accepts connections until `control` asks to stop, then lets open connections finish for
    /// the grace period.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, control: Arc<ControlState>) {
        let graceful = GracefulShutdown::new();
        let stop = control.stop_requested();
        tokio::pin!(stop);
        let grace = loop {
            tokio::select! {
                grace = &mut stop => break grace,
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let app = self.clone();
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.handle(req).await) }
                    });
                    // The timer lets hyper's default 30 s header-read timeout apply (slow clients).
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    });
                }
            }
        };
        control.set_state(RunnerState::Stopping);
        drop(listener);
        tracing::info!(grace_ms = grace.as_millis(), "draining connections");
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over with connections still open");
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let stats = &self.stats;
        match self.run_guest(req).await {
            Ok(response) => {
                stats.served();
                response
            }
            Err(failure) => {
                let message = failure.message();
                tracing::warn!(code = failure.code(), %message, "request failed");
                self.log
                    .runner_line(&format!("request failed ({}): {message}", failure.code()));
                stats.failed(message.clone());
                failure_response(&failure, &message)
            }
        }
    }

    async fn run_guest(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, Failure> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Failure::Internal(e.to_string()))?;
        let in_flight = self.stats.begin();
        let ticking = self.ticker.activate();
        let mut store = Store::new(
            self.pre.engine(),
            GuestState::new(&self.log, &self.env, self.memory_bytes),
        );
        store.limiter(|state| &mut state.cap);
        store.set_epoch_deadline(deadline_ticks(self.deadline));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| Failure::BadRequest(format!("{e:#}")))?;
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| Failure::Internal(format!("{e:#}")))?;
        let pre = self.pre.clone();
        // The guest runs in its own task so it can keep streaming the body after the head is sent;
        // the permit, the in-flight count and the ticker are held until it is done.
        let task = tokio::spawn(async move {
            let result = async {
                let proxy = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| (e, true))?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, outparam)
                    .await
                    .map_err(|e| (e, false))
            }
            .await;
            let refused = store.data().cap.refused;
            drop((permit, in_flight, ticking));
            (result, refused)
        });
        let abort = task.abort_handle();
        match tokio::time::timeout(self.deadline + DEADLINE_SLACK, receiver).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(code))) => Err(Failure::GuestError(format!("{code:?}"))),
            Ok(Err(_no_response)) => match task.await {
                Ok((Ok(()), _)) => Err(Failure::NoResponse),
                Ok((Err((e, true)), _)) => Err(Failure::Internal(format!("instantiation: {e:#}"))),
                Ok((Err((e, false)), refused)) => {
                    tracing::debug!(error = ?e, "guest failed");
                    Err(match Failure::classify(&e, self.deadline, refused) {
                        Failure::MemoryLimit(_) => Failure::MemoryLimit(self.memory_bytes),
                        other => other,
                    })
                }
                Err(e) => Err(Failure::Internal(format!("guest task: {e}"))),
            },
            Err(_elapsed) => {
                abort.abort();
                Err(Failure::Deadline(self.deadline))
            }
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

fn failure_response(failure: &Failure, message: &str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(format!("{message}\n")))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = failure.status();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(failure.code()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_is_a_deadline_even_when_memory_was_refused() {
        let d = Duration::from_millis(100);
        let e = wasmtime::Error::from(Trap::Interrupt);
        assert_eq!(Failure::classify(&e, d, true), Failure::Deadline(d));
        assert_eq!(
            Failure::classify(&e, d, true).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn trap_after_refused_growth_is_the_memory_limit() {
        let d = Duration::from_millis(100);
        let e = wasmtime::Error::from(Trap::UnreachableCodeReached);
        assert!(matches!(
            Failure::classify(&e, d, true),
            Failure::MemoryLimit(_)
        ));
        let trap = Failure::classify(&e, d, false);
        assert!(
            matches!(&trap, Failure::Trap(t) if t.contains("unreachable")),
            "{trap:?}"
        );
        assert_eq!(trap.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(trap.code(), "trap");
    }

    #[test]
    fn messages_and_codes() {
        let f = Failure::MemoryLimit(64 * 1024 * 1024);
        assert_eq!(f.message(), "app exceeded its memory limit of 64 MiB");
        assert_eq!(f.code(), "memory-limit");
        let r = failure_response(&f, &f.message());
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.headers()[ERROR_HEADER], "memory-limit");
    }
}
