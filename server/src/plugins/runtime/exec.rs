//! One request: a fresh store and instance on the guest runtime, the head handed back as soon as
//! the guest sets it, and the outcome delivered after the body.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::telemetry::names::PLUGIN_INSTANTIATION_SECONDS;

use super::body::{AbortOnDrop, GuestBody, ResponseBody};
use super::error::classify;
use super::host::Host;
use super::{
    ExecError, GuestRequest, GuestResponse, InstanceGuard, Plugin, RequestLimits, Runtime,
};

/// How long past the deadline the caller waits for the guest runtime to report before giving up
/// on it: the guest side enforces the deadline itself, this only covers a wedged runtime.
const CALLER_GRACE: Duration = Duration::from_secs(1);

type Head = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

pub(super) async fn handle(
    rt: &Runtime,
    plugin: &Plugin,
    limits: &RequestLimits,
    req: GuestRequest,
) -> Result<GuestResponse, ExecError> {
    let deadline = Instant::now() + limits.timeout;
    let request_limit = limits.max_request_body;
    if declared_length(&req.headers).is_some_and(|n| n > request_limit) {
        return Err(ExecError::RequestBodyTooLarge {
            limit: request_limit,
        });
    }
    let request_too_large = Arc::new(AtomicBool::new(false));
    let (request, guard) = guest_request(req, request_limit, request_too_large.clone())?;

    let plugin_name: Arc<str> = limits.plugin_name.as_str().into();
    let memory = limits.memory_bytes.min(rt.max_memory_bytes);
    let host = Host::new(limits, memory, &plugin_name);
    let (head_tx, head_rx) = oneshot::channel::<Head>();
    let (done_tx, done_rx) = oneshot::channel();
    let pre = plugin.pre().clone();
    let task = rt.guest.handle().spawn(async move {
        let outcome = run(pre, host, guard, request, head_tx, deadline, &plugin_name).await;
        if let Err(err) = &outcome {
            tracing::debug!(target: super::log::GUEST_LOG_TARGET, plugin = %plugin_name, error = %err, "plugin request failed");
        }
        let _ = done_tx.send(outcome);
    });
    let task = AbortOnDrop(task.abort_handle());

    let head = match tokio::time::timeout_at(deadline + CALLER_GRACE, head_rx).await {
        Ok(Ok(head)) => head,
        // The guest ended, or dropped its response-outparam, without setting a response: its
        // outcome says why.
        Ok(Err(_)) => {
            let outcome = tokio::time::timeout_at(deadline + CALLER_GRACE, done_rx).await;
            return Err(outcome.map_or(ExecError::Timeout, outcome_without_head));
        }
        Err(_) => return Err(ExecError::Timeout),
    };
    let response = match head {
        Ok(response) => response,
        Err(code) => {
            return Err(ExecError::BadResponse(format!(
                "the plugin answered with error {code:?}"
            )));
        }
    };
    if request_too_large.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ExecError::RequestBodyTooLarge {
            limit: request_limit,
        });
    }

    let (parts, body) = response.into_parts();
    if !(200..=599).contains(&parts.status.as_u16()) {
        return Err(ExecError::BadResponse(format!(
            "status {} is not a final status",
            parts.status
        )));
    }
    let content_length = declared_length(&parts.headers);
    if content_length.is_some_and(|n| n > limits.max_response_body) {
        return Err(ExecError::ResponseBodyTooLarge {
            limit: limits.max_response_body,
        });
    }
    let body = ResponseBody::new(
        body,
        done_rx,
        limits.max_response_body,
        request_too_large,
        request_limit,
        content_length,
        task,
    );
    Ok(GuestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// The request as hyper carries it into wasi:http: an absolute URI (scheme and authority are
/// part of the guest's view) and no `Authorization` header, ever.
pub(super) fn guest_request(
    req: GuestRequest,
    limit: u64,
    too_large: Arc<AtomicBool>,
) -> Result<(hyper::Request<GuestBody>, Option<InstanceGuard>), ExecError> {
    let GuestRequest {
        method,
        uri,
        mut headers,
        body,
        instance_guard,
    } = req;
    headers.remove(http::header::AUTHORIZATION);
    let authority = match uri.authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.parse::<http::uri::Authority>().is_ok())
            .unwrap_or("localhost")
            .to_owned(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = http::Uri::builder()
        .scheme(uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP))
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|err| ExecError::Internal(format!("building the guest's request URI: {err}")))?;
    let mut request = hyper::Request::new(body.into_guest(limit, too_large));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok((request, instance_guard))
}

/// Runs on the guest runtime: instantiate, call `handle`, classify what went wrong. The store
/// is dropped before this returns, which ends the response body if the guest had not.
async fn run(
    pre: ProxyPre<Host>,
    host: Host,
    guard: Option<InstanceGuard>,
    request: hyper::Request<GuestBody>,
    head_tx: oneshot::Sender<Head>,
    deadline: Instant,
    plugin_name: &Arc<str>,
) -> Result<(), ExecError> {
    let mut instance = Instance {
        store: Store::new(pre.engine(), host),
        _guard: guard,
    };
    let store = &mut instance.store;
    store.limiter(|host| &mut host.limiter);
    // Every epoch tick the guest yields its thread, so guests share the guest runtime fairly
    // and the timer below can fire; past the deadline the tick interrupts it instead.
    let cpu_deadline = deadline.into_std();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if std::time::Instant::now() >= cpu_deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });

    let scheme = if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let internal = |err: wasmtime::Error| ExecError::Internal(format!("{err:#}"));
    let mut http = store.data_mut().http();
    let req = http
        .new_incoming_request(scheme, request)
        .map_err(internal)?;
    let out = http.new_response_outparam(head_tx).map_err(internal)?;

    let call = async {
        let instantiating = std::time::Instant::now();
        let proxy = pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|err| (true, err))?;
        metrics::histogram!(PLUGIN_INSTANTIATION_SECONDS, "plugin" => Arc::clone(plugin_name))
            .record(instantiating.elapsed().as_secs_f64());
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, req, out)
            .await
            .map_err(|err| (false, err))
    };
    let result = tokio::time::timeout_at(deadline, call).await;
    let memory_denied = store.data().limiter.denied;
    match result {
        Ok(Ok(())) => Ok(()),
        Err(_) => Err(ExecError::Timeout),
        // `exit(0)` after answering is how some toolchains end a handler.
        Ok(Err((_, err)))
            if err
                .downcast_ref::<wasmtime_wasi::I32Exit>()
                .is_some_and(|e| e.0 == 0) =>
        {
            Ok(())
        }
        Ok(Err((instantiating, err))) => {
            let error = classify(&err, memory_denied);
            match error {
                // Failing to instantiate without the guest's fault (no free slot...) is ours.
                ExecError::Trap(_) if instantiating => Err(ExecError::Internal(format!(
                    "instantiating the plugin: {err:#}"
                ))),
                error => Err(error),
            }
        }
    }
}

/// A request's store and the caller's guard. Fields drop in order: the store (and with it the
/// engine slot) is gone before the guard is released, whether `run` returns or is aborted.
struct Instance {
    store: Store<Host>,
    _guard: Option<InstanceGuard>,
}

/// The guest ended (or failed) without ever setting a response.
fn outcome_without_head(
    outcome: Result<Result<(), ExecError>, oneshot::error::RecvError>,
) -> ExecError {
    match outcome {
        Ok(Err(err)) => err,
        Ok(Ok(())) => {
            ExecError::BadResponse("the plugin returned without setting a response".into())
        }
        Err(_) => ExecError::Internal("the plugin's task ended without an outcome".into()),
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
