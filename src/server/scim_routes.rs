//! The SCIM endpoints (RFC 7644 §3) under `/tenants/{tenant}/scim/v2/` and, for the `default`
//! tenant, `/scim/v2/`. Routing is by hand so every unknown path or method gets an RFC 7644
//! Error body (scim2-tester checks 404 bodies and 405 on the discovery endpoints).

use super::forwarded;
use super::limits::Guard;
use super::response;
use super::{AppState, Tenant};
use crate::connector::{Precondition, RequestContext};
use crate::scim::discovery::{service_provider_config, Features};
use crate::scim::list::{list_response, ListQuery};
use crate::scim::patch::PatchRequest;
use crate::scim::resource::{canonicalize, etag_matches};
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::{ScimError, ScimResult};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const FEATURES: Features = Features {
    bulk: None,
    etag: true,
    sort: true,
};

/// Which SCIM endpoint a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    ServiceProviderConfig,
    ResourceTypes(Option<String>),
    Schemas(Option<String>),
    Collection(ResourceKind),
    Item(ResourceKind, String),
    Search(Option<ResourceKind>),
    Bulk,
    Unknown,
}

impl Endpoint {
    fn parse(segments: &[String]) -> Endpoint {
        let kind = |s: &str| match s {
            "Users" => Some(ResourceKind::User),
            "Groups" => Some(ResourceKind::Group),
            _ => None,
        };
        match segments {
            [s] if s == "ServiceProviderConfig" || s == "ServiceProviderConfigs" => {
                Endpoint::ServiceProviderConfig
            }
            [s] if s == "ResourceTypes" => Endpoint::ResourceTypes(None),
            [s, id] if s == "ResourceTypes" => Endpoint::ResourceTypes(Some(id.clone())),
            [s] if s == "Schemas" => Endpoint::Schemas(None),
            [s, id] if s == "Schemas" => Endpoint::Schemas(Some(id.clone())),
            [s] if s == ".search" => Endpoint::Search(None),
            [s] if s == "Bulk" => Endpoint::Bulk,
            [r] => kind(r)
                .map(Endpoint::Collection)
                .unwrap_or(Endpoint::Unknown),
            [r, s] if s == ".search" => kind(r)
                .map(|k| Endpoint::Search(Some(k)))
                .unwrap_or(Endpoint::Unknown),
            [r, id] => kind(r)
                .map(|k| Endpoint::Item(k, id.clone()))
                .unwrap_or(Endpoint::Unknown),
            _ => Endpoint::Unknown,
        }
    }

    /// The `Allow` header of a 405 on this endpoint (RFC 9110 §15.5.6).
    fn allowed_methods(&self) -> &'static str {
        match self {
            Endpoint::ServiceProviderConfig | Endpoint::ResourceTypes(_) | Endpoint::Schemas(_) => {
                "GET"
            }
            Endpoint::Collection(_) => "GET, POST",
            Endpoint::Item(..) => "GET, PUT, PATCH, DELETE",
            Endpoint::Search(_) | Endpoint::Bulk => "POST",
            Endpoint::Unknown => "GET",
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Endpoint::ServiceProviderConfig => "ServiceProviderConfig",
            Endpoint::ResourceTypes(_) => "ResourceTypes",
            Endpoint::Schemas(_) => "Schemas",
            Endpoint::Collection(k) | Endpoint::Item(k, _) => k.endpoint().trim_start_matches('/'),
            Endpoint::Search(_) => ".search",
            Endpoint::Bulk => "Bulk",
            Endpoint::Unknown => "unknown",
        }
    }
}

/// Splits a request path into (tenant, SCIM base path, segments below the base).
fn split_path(path: &str) -> Option<(String, String, Vec<String>)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["scim", "v2", rest @ ..] => Some((
            "default".to_string(),
            "/scim/v2".to_string(),
            rest.iter().map(|s| decode(s)).collect(),
        )),
        ["tenants", t, "scim", "v2", rest @ ..] => {
            let t = decode(t);
            let base = format!("/tenants/{t}/scim/v2");
            Some((t, base, rest.iter().map(|s| decode(s)).collect()))
        }
        _ => None,
    }
}

/// Every request that is not health, readiness or metrics lands here.
///
/// In order: the client address's failed sign-ins (429 once over `auth_failure_limit`), the
/// tenant-independent answers (discovery without a token, 404, 405), authentication (an unknown
/// tenant fails it exactly as a known one does with a wrong token, so no answer tells whether a
/// tenant exists), one of the tenant's request slots, then the handler under the deadlines.
pub async fn entry(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    guard: web::Data<Guard>,
) -> HttpResponse {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + guard.limits().request_timeout;
    let Some((tenant_id, base, segments)) = split_path(req.path()) else {
        let resp = unread_body_closes(
            &req,
            payload,
            response::error(&ScimError::not_found(format!(
                "no endpoint at {}",
                req.path()
            ))),
        );
        state.metrics.observe(
            "unknown",
            "unknown",
            req.method().as_str(),
            404,
            started.elapsed().as_secs_f64(),
        );
        return resp;
    };
    let endpoint = Endpoint::parse(&segments);
    let tenant = state.tenant(&tenant_id);
    let tenant_label = if tenant.is_some() {
        tenant_id.as_str()
    } else {
        "unknown"
    };
    let client = forwarded::client_key(&req, &guard.trusted_proxies);
    let body = Rc::new(Body {
        state: Cell::new(BodyState::Unread),
        stream: RefCell::new(Some(payload)),
    });
    // An address over its failed sign-ins is refused whatever it presents, a valid token
    // included: checking the token would keep answering the guess (200 or 401) and the limit
    // would slow nothing. Other addresses are not affected.
    let refused = client.and_then(|ip| guard.failures.refused(ip, &tenant_id, Instant::now()));
    let mut resp = match refused {
        Some(retry_after) => response::error(&ScimError::throttled(
            "too many failed authentications from this address: retry later",
            retry_after,
        )),
        None => {
            let ctx = RequestContext {
                base_url: format!(
                    "{}{}",
                    forwarded::origin(&req, &guard.trusted_proxies),
                    base
                ),
            };
            let target = Target {
                tenant: tenant.as_ref(),
                endpoint: &endpoint,
                deadline,
                body: body.clone(),
            };
            let resp = serve(&req, &state, &guard, target, ctx).await;
            if resp.status() == StatusCode::UNAUTHORIZED {
                if let Some(ip) = client {
                    guard.failures.record(ip, &tenant_id, Instant::now());
                }
            }
            resp
        }
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static(endpoint.allowed_methods()),
        );
    }
    // A body that was announced but not read to its end (refused before it was read, too
    // large, too slow) is not drained: the connection closes after the answer. The body is
    // held until the answer is written, or actix would drain a chunked one (and wait for a
    // stalled one for ever) instead of closing; see `close_keeping_body`.
    if resp.status() == StatusCode::REQUEST_TIMEOUT
        || (declares_body(req.headers()) && body.state.get() != BodyState::Read)
    {
        resp = crate::admin::deadlines::close_keeping_body(resp, body.clone());
    }
    state.metrics.observe(
        tenant_label,
        endpoint.label(),
        req.method().as_str(),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Seconds an IdP is told to wait after the bridge could not serve a request in time.
const BUSY_RETRY_AFTER_S: u64 = 5;

/// How far the request body has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Unread,
    Reading,
    Read,
}

/// The request body, shared by `entry` and the handler's task: how far it was read, and the
/// stream (lent to [`read_json`] while it reads).
struct Body {
    state: Cell<BodyState>,
    stream: RefCell<Option<web::Payload>>,
}

/// The body stream, lent out of its [`Body`] and put back when dropped (also when the reading
/// future is dropped at a deadline).
struct Lent<'a> {
    body: &'a Body,
    stream: Option<web::Payload>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            *self.body.stream.borrow_mut() = Some(stream);
        }
    }
}

/// What a request is for, and its deadlines.
struct Target<'a> {
    tenant: Option<&'a Arc<Tenant>>,
    endpoint: &'a Endpoint,
    /// `limits.request_timeout` after the request arrived.
    deadline: tokio::time::Instant,
    body: Rc<Body>,
}

/// The body-read deadline handed to [`read_json`].
struct BodyDeadline {
    /// `limits.body_read_timeout`, counted from the first read.
    timeout: Duration,
    /// The request's own deadline, which the body read never outlasts.
    request: tokio::time::Instant,
    body: Rc<Body>,
}

/// The registry anonymous discovery describes: every attribute the bridge knows, the same for
/// every tenant path, so that discovery without a token tells nothing about a tenant (not even
/// whether it exists). With a valid token, discovery is the tenant's own.
fn anonymous_registry() -> &'static SchemaRegistry {
    static REGISTRY: OnceLock<SchemaRegistry> = OnceLock::new();
    REGISTRY.get_or_init(SchemaRegistry::default)
}

/// `resp` for a request whose body is never read: when one was announced, the connection
/// closes after the answer, and the body is held until then so that actix does not drain it
/// first (a stalled chunked body would hold the connection for ever; see
/// [`crate::admin::deadlines::close_keeping_body`]).
pub(super) fn unread_body_closes(
    req: &HttpRequest,
    body: web::Payload,
    resp: HttpResponse,
) -> HttpResponse {
    if declares_body(req.headers()) {
        crate::admin::deadlines::close_keeping_body(resp, body)
    } else {
        resp
    }
}

fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

async fn serve(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    guard: &Guard,
    target: Target<'_>,
    ctx: RequestContext,
) -> HttpResponse {
    let endpoint = target.endpoint;
    // Discovery answers without a token (CONTRACT §2) and is read-only.
    match endpoint {
        Endpoint::ServiceProviderConfig | Endpoint::ResourceTypes(_) | Endpoint::Schemas(_) => {
            if req.method() != Method::GET {
                return response::error(&ScimError::method_not_allowed(format!(
                    "{} is read-only: only GET is allowed",
                    endpoint.label()
                )));
            }
            let registry = if req.headers().contains_key(header::AUTHORIZATION) {
                match authenticate(req, target.tenant) {
                    Ok(t) => t.connector.schemas(),
                    Err(e) => return response::error(&e),
                }
            } else {
                anonymous_registry()
            };
            return discovery(endpoint, registry, &ctx.base_url)
                .unwrap_or_else(|e| response::error(&e));
        }
        Endpoint::Unknown => {
            return response::error(&ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                req.path()
            )))
        }
        _ => {}
    }
    let tenant = match authenticate(req, target.tenant) {
        Ok(t) => t.clone(),
        Err(e) => return response::error(&e),
    };
    // `[limits] tenant_rate`: checked only once the token is good, so an unauthenticated
    // client cannot spend a tenant's budget, and an unknown tenant still gets the same 401 as
    // a known one. Before the slot: a request over the rate does not wait. 429 + Retry-After
    // (RFC 6585 §4) is what Okta and Entra pace themselves by.
    if let Err(retry_after) = guard.admit(&tenant.id, Instant::now()) {
        state
            .metrics
            .rate_limited
            .with_label_values(&[&tenant.id])
            .inc();
        return response::error(&ScimError::throttled(
            format!("too many requests for this tenant; retry after {retry_after} s"),
            retry_after,
        ));
    }
    // At most `tenant_concurrency` requests of one tenant run at once; the rest wait here, up
    // to the request deadline, so one tenant's load (or one leaked token's slow bodies) holds
    // only that tenant's slots.
    let permit = match guard.slot(&tenant.id, target.deadline).await {
        Ok(p) => p,
        Err(()) => {
            return response::error(&ScimError::unavailable(
                "too many requests of this tenant are in progress: retry later",
                BUSY_RETRY_AFTER_S,
            ))
        }
    };
    let body = BodyDeadline {
        timeout: guard.limits().body_read_timeout,
        request: target.deadline,
        body: target.body.clone(),
    };
    let work = {
        let req = req.clone();
        let state = state.clone();
        let endpoint = endpoint.clone();
        async move {
            let _slot = permit;
            handle(&req, &state, &tenant, &endpoint, &ctx, &body).await
        }
    };
    // The handler runs as its own task: when it overruns the request deadline, the client is
    // answered at once and the handler is not cut off at an arbitrary await point (a write
    // half-way through its vendor calls); it finishes, keeping its slot, for at most one more
    // `request_timeout`, then it is dropped.
    let grace = guard.limits().request_timeout;
    let mut task = actix_web::rt::spawn(tokio::time::timeout_at(target.deadline + grace, work));
    match tokio::time::timeout_at(target.deadline, &mut task).await {
        Ok(Ok(Ok(Ok(resp)))) => resp,
        Ok(Ok(Ok(Err(e)))) => {
            if e.status >= 500 {
                tracing::warn!(status = e.status, detail = %e.detail, "request failed");
            }
            response::error(&e)
        }
        Ok(Err(join)) => {
            tracing::error!(error = %join, "the request handler failed");
            response::error(&ScimError::internal("the request could not be completed"))
        }
        // The body was still arriving when the request's time was up: the sender's doing.
        Err(_) | Ok(Ok(Err(_))) if target.body.state.get() == BodyState::Reading => {
            response::error(&body_timeout())
        }
        // 503, not 504 or 500: the bridge is the server the IdP talks to and nothing is broken;
        // it could not answer in time (a slow vendor, a backlog of this tenant) and says when to
        // retry. RFC 9110 gives Retry-After to 503, and Okta and Entra retry a 503 with it.
        // The change may still complete meanwhile; a retry then finds it done.
        Err(_) | Ok(Ok(Err(_))) => {
            tracing::warn!(
                timeout_s = guard.limits().request_timeout.as_secs_f64(),
                "request overran limits.request_timeout"
            );
            response::error(&ScimError::unavailable(
                "the request could not be completed in time: retry later",
                BUSY_RETRY_AFTER_S,
            ))
        }
    }
}

fn body_timeout() -> ScimError {
    ScimError::new(
        408,
        None,
        "the request body did not arrive in time: send it whole and promptly",
    )
}

/// The bearer token must open `tenant`. Every refusal reads the same whichever the tenant and
/// the reason (the reason is logged), and an unknown tenant is refused as a known one with a
/// wrong token: no answer tells whether a tenant exists, has a JWT key, or which check failed.
fn authenticate<'a>(
    req: &HttpRequest,
    tenant: Option<&'a Arc<Tenant>>,
) -> ScimResult<&'a Arc<Tenant>> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ScimError::unauthorized("authentication required: send Authorization: Bearer <token>")
        })?;
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| {
            ScimError::unauthorized("the Authorization header must use the Bearer scheme")
        })?;
    let refused = || ScimError::unauthorized("invalid bearer token");
    match tenant {
        Some(t) => match t.auth.verify(token) {
            Ok(()) => Ok(t),
            Err(e) => {
                tracing::info!(tenant = %t.id, reason = %e, "bearer token refused");
                Err(refused())
            }
        },
        None => {
            // The hash a known tenant's check costs, so the time taken does not tell either.
            let _ = std::hint::black_box(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
            tracing::info!("bearer token refused: no such tenant");
            Err(refused())
        }
    }
}

fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    // form_urlencoded decodes `+` as a space, as Okta encodes filters (idp-behavior §1.1).
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a JSON body: `application/scim+json`, `application/json` (any `+json`), a `charset`
/// parameter, or no Content-Type at all (idp-behavior §1.1); at most `limit` bytes, all of
/// them within `deadline` (else 408).
async fn read_json(
    headers: &HeaderMap,
    limit: usize,
    deadline: &BodyDeadline,
) -> ScimResult<Value> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        let jsonish = essence.is_empty()
            || essence == "application/json"
            || essence.ends_with("+json")
            || essence == "text/json";
        if !jsonish {
            return Err(ScimError::new(
                415,
                None,
                format!("unsupported media type {essence:?}: send application/scim+json"),
            ));
        }
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(ScimError::payload_too_large(format!(
                "the request body exceeds {limit} bytes"
            )));
        }
    }
    let body = &*deadline.body;
    let mut lent = Lent {
        body,
        stream: body.stream.borrow_mut().take(),
    };
    let Some(payload) = lent.stream.as_mut() else {
        return Err(ScimError::invalid_syntax(
            "the request body was already read",
        ));
    };
    let mut buf = BytesMut::new();
    body.state.set(BodyState::Reading);
    let until = (tokio::time::Instant::now() + deadline.timeout).min(deadline.request);
    loop {
        let next = tokio::time::timeout_at(until, payload.next())
            .await
            .map_err(|_| body_timeout())?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ScimError::invalid_syntax(format!("could not read the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ScimError::payload_too_large(format!(
                "the request body exceeds {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    body.state.set(BodyState::Read);
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty"));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))
}

fn precondition(req: &HttpRequest) -> Precondition {
    Precondition {
        // An If-Match that is present but not readable text can match no version: the write
        // must fail with 412, not go ahead unconditionally.
        if_match: req.headers().get(header::IF_MATCH).map(|v| {
            v.to_str()
                .map(str::to_string)
                .unwrap_or_else(|_| "\"<unreadable If-Match>\"".to_string())
        }),
    }
}

async fn handle(
    req: &HttpRequest,
    state: &AppState,
    tenant: &Arc<Tenant>,
    endpoint: &Endpoint,
    ctx: &RequestContext,
    body: &BodyDeadline,
) -> ScimResult<HttpResponse> {
    let method = req.method();
    let registry = tenant.connector.schemas();
    let connector = &tenant.connector;
    let pairs = query_pairs(req);
    match (endpoint, method.clone()) {
        (Endpoint::Collection(kind), Method::GET) => {
            let query =
                ListQuery::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            list(tenant, *kind, &query, ctx).await
        }
        (Endpoint::Search(Some(kind)), Method::POST) => {
            let body = read_json(req.headers(), state.body_limit, body).await?;
            let query = ListQuery::from_search_request(&body)?;
            list(tenant, *kind, &query, ctx).await
        }
        (Endpoint::Search(None), Method::POST) => {
            let body = read_json(req.headers(), state.body_limit, body).await?;
            let query = ListQuery::from_search_request(&body)?;
            search_all(tenant, &query, ctx).await
        }
        (Endpoint::Collection(kind), Method::POST) => {
            let body = read_json(req.headers(), state.body_limit, body).await?;
            let schema = registry.get(*kind);
            let resource = canonicalize(&body, schema)?;
            let created = connector.create(*kind, resource, ctx).await?;
            let projected = projection(&pairs, schema).apply(&created, schema);
            let mut resp = response::resource(StatusCode::CREATED, &created, &projected);
            if let Some(loc) = created["meta"]["location"].as_str() {
                if let Ok(h) = header::HeaderValue::from_str(loc) {
                    resp.headers_mut().insert(header::LOCATION, h);
                }
            }
            Ok(resp)
        }
        (Endpoint::Item(kind, id), Method::GET) => {
            let schema = registry.get(*kind);
            let proj = projection(&pairs, schema);
            let with_members = proj.wants("members", schema);
            let found = connector.get(*kind, id, with_members, ctx).await?;
            if let (Some(inm), Some(v)) = (
                req.headers()
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok()),
                found["meta"]["version"].as_str(),
            ) {
                if etag_matches(inm, v) {
                    let mut resp = HttpResponse::NotModified().finish();
                    if let Ok(h) = header::HeaderValue::from_str(v) {
                        resp.headers_mut().insert(header::ETAG, h);
                    }
                    return Ok(resp);
                }
            }
            Ok(response::resource(
                StatusCode::OK,
                &found,
                &proj.apply(&found, schema),
            ))
        }
        (Endpoint::Item(kind, id), Method::PUT) => {
            let body = read_json(req.headers(), state.body_limit, body).await?;
            let schema = registry.get(*kind);
            let resource = canonicalize(&body, schema)?;
            let updated = connector
                .replace(*kind, id, resource, &precondition(req), ctx)
                .await?;
            Ok(response::resource(
                StatusCode::OK,
                &updated,
                &projection(&pairs, schema).apply(&updated, schema),
            ))
        }
        (Endpoint::Item(kind, id), Method::PATCH) => {
            let body = read_json(req.headers(), state.body_limit, body).await?;
            let schema = registry.get(*kind);
            let patch = PatchRequest::from_json(&body)?;
            let proj = projection(&pairs, schema);
            let with_members = proj.wants("members", schema);
            let updated = connector
                .patch(*kind, id, &patch, &precondition(req), with_members, ctx)
                .await?;
            // 200 with the full resource satisfies Okta, Entra, scim2-tester and scim-sanity at once (idp-behavior §3.4).
            Ok(response::resource(
                StatusCode::OK,
                &updated,
                &proj.apply(&updated, schema),
            ))
        }
        (Endpoint::Item(kind, id), Method::DELETE) => {
            connector.delete(*kind, id, &precondition(req)).await?;
            Ok(HttpResponse::NoContent().finish())
        }
        (Endpoint::Bulk, _) => Err(ScimError::not_implemented(
            "Bulk is not supported (ServiceProviderConfig advertises bulk.supported = false)",
        )),
        (_, m) => Err(ScimError::method_not_allowed(format!(
            "{m} is not allowed on {}",
            endpoint.label()
        ))),
    }
}

fn projection(
    pairs: &[(String, String)],
    schema: &crate::scim::schema::ResourceSchema,
) -> crate::scim::projection::Projection {
    crate::scim::projection::Projection::new(
        param(pairs, "attributes"),
        param(pairs, "excludedAttributes"),
        schema,
    )
}

async fn list(
    tenant: &Tenant,
    kind: ResourceKind,
    query: &ListQuery,
    ctx: &RequestContext,
) -> ScimResult<HttpResponse> {
    let schema = tenant.connector.schemas().get(kind);
    let proj = query.projection(schema);
    let with_members = proj.wants("members", schema);
    let page = tenant
        .connector
        .list(kind, query, with_members, ctx)
        .await?;
    let resources = page
        .resources
        .iter()
        .map(|r| proj.apply(r, schema))
        .collect();
    Ok(response::scim_json(
        StatusCode::OK,
        &list_response(page.total, query.start_index, resources),
    ))
}

/// `POST /.search` at the root (RFC 7644 §3.4.3): Users then Groups, as one result set. Each
/// type is asked only for its part of the requested window, so paging works at any depth.
async fn search_all(
    tenant: &Tenant,
    query: &ListQuery,
    ctx: &RequestContext,
) -> ScimResult<HttpResponse> {
    let registry = tenant.connector.schemas();
    // A sort attribute one type lacks leaves that type unsorted (its resources have no value,
    // which sorts last) rather than failing the whole search.
    let for_kind = |kind: ResourceKind| {
        let mut q = query.clone();
        if q.sort_by
            .as_deref()
            .is_some_and(|by| !crate::scim::list::sortable(by, registry.get(kind)))
        {
            q.sort_by = None;
        }
        q
    };
    let mut totals = Vec::new();
    for kind in [ResourceKind::User, ResourceKind::Group] {
        let mut count_only = for_kind(kind);
        count_only.count = Some(0);
        totals.push(
            tenant
                .connector
                .list(kind, &count_only, false, ctx)
                .await?
                .total,
        );
    }
    let total: usize = totals.iter().sum();
    let window = query.page_range(total);
    let mut resources = Vec::with_capacity(window.len());
    let mut offset = 0;
    for (kind, kind_total) in [ResourceKind::User, ResourceKind::Group]
        .into_iter()
        .zip(totals)
    {
        // The part of `window` that falls in this type's span [offset, offset + kind_total).
        let start = window.start.max(offset);
        let end = window.end.min(offset + kind_total);
        if start < end {
            let schema = registry.get(kind);
            let proj = query.projection(schema);
            let mut part = for_kind(kind);
            part.start_index = start - offset + 1;
            part.count = Some(end - start);
            let page = tenant
                .connector
                .list(kind, &part, proj.wants("members", schema), ctx)
                .await?;
            resources.extend(page.resources.iter().map(|r| proj.apply(r, schema)));
        }
        offset += kind_total;
    }
    Ok(response::scim_json(
        StatusCode::OK,
        &list_response(total, query.start_index, resources),
    ))
}

fn discovery(
    endpoint: &Endpoint,
    registry: &crate::scim::schema::SchemaRegistry,
    base: &str,
) -> ScimResult<HttpResponse> {
    let body = match endpoint {
        Endpoint::ServiceProviderConfig => service_provider_config(&FEATURES, base),
        Endpoint::ResourceTypes(None) => {
            let items: Vec<Value> = registry
                .resource_types()
                .iter()
                .map(|r| r.resource_type_json(base))
                .collect();
            list_response(items.len(), 1, items)
        }
        Endpoint::ResourceTypes(Some(id)) => registry
            .resource_types()
            .iter()
            .find(|r| r.kind.name() == id)
            .map(|r| r.resource_type_json(base))
            .ok_or_else(|| ScimError::not_found(format!("no resource type {id:?}")))?,
        Endpoint::Schemas(None) => {
            let items: Vec<Value> = registry.schemas().iter().map(|s| s.to_json(base)).collect();
            list_response(items.len(), 1, items)
        }
        Endpoint::Schemas(Some(id)) => registry
            .schema(id)
            .map(|s| s.to_json(base))
            .ok_or_else(|| ScimError::not_found(format!("no schema {id:?}")))?,
        _ => return Err(ScimError::not_found("no such discovery endpoint")),
    };
    Ok(response::scim_json(StatusCode::OK, &body))
}
