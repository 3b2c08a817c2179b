//! Rendering: the one place a `ScimError` becomes an HTTP response, and SCIM JSON bodies get
//! their media type.

use crate::scim::ScimError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::Value;

pub const SCIM_JSON: &str = "application/scim+json";

pub fn scim_json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, SCIM_JSON))
        .body(body.to_string())
}

/// A resource response: `body` (the projected resource) with the `ETag` of `full` (= its
/// `meta.version`, RFC 7644 §3.14) — taken from the unprojected resource, since
/// `attributes=userName` projects `meta` away but the version still identifies the resource.
pub fn resource(status: StatusCode, full: &Value, body: &Value) -> HttpResponse {
    let mut resp = scim_json(status, body);
    if let Some(v) = full
        .get("meta")
        .and_then(|m| m.get("version"))
        .and_then(Value::as_str)
    {
        if let Ok(h) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(header::ETAG, h);
        }
    }
    resp
}

pub fn error(e: &ScimError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = scim_json(status, &e.to_json());
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if e.status == 408 {
        // RFC 9110 §15.5.9: the server closes the connection after a 408.
        close_connection(&mut resp);
    }
    if e.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"SCIM\""),
        );
    }
    resp
}

/// Sends `Connection: close` with `resp`, and closes the connection once it is written.
pub fn close_connection(resp: &mut HttpResponse) {
    resp.head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
}
