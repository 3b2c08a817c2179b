//! The admin listener's deadlines (issue 15): the protection the SCIM listener has
//! (`server::scim_routes`), for the routes that read a body through actix's extractors
//! (`web::Json`, `web::Bytes`, `web::Form`), which have no deadline of their own.
//!
//! - A body must arrive whole within `limits.body_read_timeout` of the request's arrival, and
//!   is at most [`ADMIN_BODY_LIMIT`] bytes (admin bodies are a `jti`, a day count, a login
//!   form). A slower body gets 408, a larger one 413, and the connection is closed.
//! - The whole request is answered within `limits.request_timeout`: a handler that overruns it
//!   is answered 503 with `Retry-After` and keeps running on its own task to its end (an
//!   operator's sweep is not cut off half-way through its deactivations).
//!
//! Each request's handler runs on its own task, so a client dribbling a body holds nothing but
//! its own connection: the listener answers other requests meanwhile.
//!
//! [`close_keeping_body`] is shared with the SCIM listener: it is how a refused request's
//! unread body is never waited for.

use super::AdminState;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{header, ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use bytes::Bytes;
use futures_util::Stream;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The largest admin request body, in bytes (the console's forms and the API's JSON are a few
/// hundred bytes).
pub const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// Seconds a client is told to wait after a handler overran the request deadline.
const BUSY_RETRY_AFTER_S: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Unread,
    Reading,
    Read,
    TimedOut,
    TooLarge,
    Failed,
}

/// The request body, shared by the middleware and the stream the extractor reads: how far it
/// was read, and the connection's payload (kept alive by the middleware, see
/// [`close_keeping_body`]).
struct Shared {
    payload: RefCell<Option<Payload>>,
    state: Cell<BodyState>,
    read: Cell<usize>,
}

/// The payload an extractor reads: the connection's, under the deadline and the size cap.
struct Guarded {
    shared: Rc<Shared>,
    until: Pin<Box<tokio::time::Sleep>>,
    limit: usize,
}

impl Stream for Guarded {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let shared = &*this.shared;
        match shared.state.get() {
            BodyState::Unread => shared.state.set(BodyState::Reading),
            BodyState::Reading => {}
            _ => return Poll::Ready(None),
        }
        let mut slot = shared.payload.borrow_mut();
        let Some(payload) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let read = shared.read.get() + chunk.len();
                shared.read.set(read);
                if read > this.limit {
                    shared.state.set(BodyState::TooLarge);
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                shared.state.set(BodyState::Failed);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                shared.state.set(BodyState::Read);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.until.as_mut().poll(cx).is_ready() {
                    shared.state.set(BodyState::TimedOut);
                    return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))));
                }
                Poll::Pending
            }
        }
    }
}

/// Whether the request announces a body (a length above zero, or chunked).
fn declares_body(headers: &header::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || content_length(headers).is_some_and(|n| n > 0)
}

fn content_length(headers: &header::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// A response body that also holds `held` (the request's body) until the response is written.
struct Holding<H> {
    body: BoxBody,
    _held: H,
}

impl<H: Unpin> MessageBody for Holding<H> {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// `resp` with `Connection: close`, holding `request_body` (the request's unread payload, or
/// what owns it) until the response is written.
///
/// Why hold it: when actix sends a response and the request's payload is still unread, it
/// closes the connection, unless the payload was already dropped *and* the body is chunked.
/// Then it drains the rest of the body before it reads the next request, and a client that
/// stalled its chunked body keeps the connection (and the 408 is never followed by a close).
/// Alive until the response is written, the payload reads as unread: the connection closes
/// (RFC 9110 §15.5.9 for a 408), whatever the framing.
pub fn close_keeping_body<H: Unpin + 'static>(
    mut resp: HttpResponse,
    request_body: H,
) -> HttpResponse {
    resp.head_mut().set_connection_type(ConnectionType::Close);
    resp.map_body(|_, body| Holding {
        body,
        _held: request_body,
    })
    .map_into_boxed_body()
}

fn answer(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": msg }))
}

/// An answer as an error of the middleware: the way to answer without the request's
/// `HttpRequest`, which cannot be cloned before the router below has matched it (the
/// deadline may pass while the handler still holds it).
fn as_error(resp: HttpResponse) -> actix_web::Error {
    let reason = resp.status().canonical_reason().unwrap_or("refused");
    actix_web::error::InternalError::from_response(reason, resp).into()
}

/// Admin operations whose work is long by nature, exempt from `limits.request_timeout`.
const LONG_RUNNING: &[&str] = &["/admin/api/store/backup"];
/// Their own bound: a day.
const LONG_RUNNING_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The middleware (`middleware::from_fn`) of the admin listener's `App`.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limits = req
        .app_data::<web::Data<AdminState>>()
        .map(|a| a.limits.clone())
        .unwrap_or_default();
    let arrived = tokio::time::Instant::now();
    let deadline = arrived + limits.request_timeout;
    let declared = declares_body(req.headers());
    if content_length(req.headers()).is_some_and(|n| n > ADMIN_BODY_LIMIT as u64) {
        let payload = req.take_payload();
        let resp = too_large();
        return Ok(req.into_response(close_keeping_body(resp, RefCell::new(Some(payload)))));
    }
    let shared = Rc::new(Shared {
        payload: RefCell::new(None),
        state: Cell::new(BodyState::Unread),
        read: Cell::new(0),
    });
    if declared {
        *shared.payload.borrow_mut() = Some(req.take_payload());
        let guarded = Guarded {
            shared: shared.clone(),
            until: Box::pin(tokio::time::sleep_until(
                (arrived + limits.body_read_timeout).min(deadline),
            )),
            limit: ADMIN_BODY_LIMIT,
        };
        let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(guarded);
        req.set_payload(Payload::from(stream));
    }
    let path = req.path().to_string();
    // A backup copies the whole store while the bridge serves: minutes on a large one. It is
    // answered when done (its body is still bound by the body deadline above).
    let handler_deadline = if LONG_RUNNING.contains(&path.as_str()) {
        arrived + LONG_RUNNING_LIMIT
    } else {
        deadline
    };
    // Its own task: answered at the deadline, the handler is not dropped at an arbitrary
    // await point (see the module doc).
    let fut = next.call(req);
    let mut task =
        actix_web::rt::spawn(async move { fut.await.map(ServiceResponse::map_into_boxed_body) });
    let done = match tokio::time::timeout_at(handler_deadline, &mut task).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(join)) => {
            tracing::error!(error = %join, "an admin request handler failed");
            Some(Err(as_error(answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request could not be completed",
            ))))
        }
        Err(_) => None,
    };
    let state = shared.state.get();
    let replacement = match (&done, state) {
        (_, BodyState::TimedOut) => Some(timed_out()),
        (None, BodyState::Reading) => {
            // Still in the extractor: no handler code has run, so nothing is cut off.
            task.abort();
            Some(timed_out())
        }
        (_, BodyState::TooLarge) => Some(too_large()),
        (None, _) => {
            tracing::warn!(
                timeout_s = limits.request_timeout.as_secs_f64(),
                %path,
                "admin request overran limits.request_timeout"
            );
            let mut resp = answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request could not be completed in time; it may still complete: check before retrying",
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(BUSY_RETRY_AFTER_S),
            );
            Some(resp)
        }
        (Some(_), _) => None,
    };
    // A body announced but not read to its end is not drained: the connection closes.
    let unread = declared && state != BodyState::Read;
    let finish = |resp: HttpResponse| {
        if unread || resp.status() == StatusCode::REQUEST_TIMEOUT {
            close_keeping_body(resp, shared.clone())
        } else {
            resp.map_into_boxed_body()
        }
    };
    match (done, replacement) {
        (Some(Ok(res)), None) if !unread => Ok(res),
        (Some(Ok(res)), None) => {
            let (http, resp) = res.into_parts();
            Ok(ServiceResponse::new(http, finish(resp)))
        }
        (Some(Ok(res)), Some(resp)) => {
            let (http, _) = res.into_parts();
            Ok(ServiceResponse::new(http, finish(resp)))
        }
        (Some(Err(e)), None) if !unread => Err(e),
        (Some(Err(e)), None) => Err(as_error(finish(e.error_response()))),
        (_, Some(resp)) => Err(as_error(finish(resp))),
        // Unreachable: no answer always has a replacement.
        (None, None) => Err(as_error(finish(timed_out()))),
    }
}

fn too_large() -> HttpResponse {
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body exceeds {ADMIN_BODY_LIMIT} bytes"),
    )
}

fn timed_out() -> HttpResponse {
    answer(
        StatusCode::REQUEST_TIMEOUT,
        "the request body did not arrive in time: send it whole and promptly",
    )
}
