//! The SCIM endpoints (RFC 7644 §3) under `/tenants/{tenant}/scim/v2/` and, for the `default`
//! tenant, `/scim/v2/`. Routing is by hand so every unknown path or method gets an RFC 7644
//! Error body (scim2-tester checks 404 bodies and 405 on the discovery endpoints).

use super::response;
use super::{AppState, Tenant};
use crate::connector::{Precondition, RequestContext};
use crate::scim::discovery::{service_provider_config, Features};
use crate::scim::list::{list_response, ListQuery};
use crate::scim::patch::PatchRequest;
use crate::scim::resource::{canonicalize, etag_matches};
use crate::scim::schema::ResourceKind;
use crate::scim::{ScimError, ScimResult};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

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
pub async fn entry(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let Some((tenant_id, base, segments)) = split_path(req.path()) else {
        let resp = response::error(&ScimError::not_found(format!(
            "no endpoint at {}",
            req.path()
        )));
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
    let tenant = state.tenants.get(&tenant_id).cloned();
    let tenant_label = if tenant.is_some() {
        tenant_id.as_str()
    } else {
        "unknown"
    };
    let resp = match tenant {
        None => response::error(&ScimError::not_found(format!(
            "unknown tenant {tenant_id:?}"
        ))),
        Some(t) => {
            let ctx = RequestContext {
                base_url: format!(
                    "{}://{}{}",
                    req.connection_info().scheme(),
                    req.connection_info().host(),
                    base
                ),
            };
            match handle(&req, payload, &state, &t, &endpoint, &ctx).await {
                Ok(r) => r,
                Err(e) => {
                    if e.status >= 500 {
                        tracing::warn!(status = e.status, detail = %e.detail, "request failed");
                    }
                    response::error(&e)
                }
            }
        }
    };
    let mut resp = resp;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static(endpoint.allowed_methods()),
        );
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

fn authenticate(req: &HttpRequest, tenant: &Tenant) -> ScimResult<()> {
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
    tenant
        .auth
        .verify(token)
        .map_err(|e| ScimError::unauthorized(format!("invalid bearer token for this tenant: {e}")))
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
/// parameter, or no Content-Type at all (idp-behavior §1.1); at most `limit` bytes.
async fn read_json(
    headers: &HeaderMap,
    mut payload: web::Payload,
    limit: usize,
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
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
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
    payload: web::Payload,
    state: &AppState,
    tenant: &Arc<Tenant>,
    endpoint: &Endpoint,
    ctx: &RequestContext,
) -> ScimResult<HttpResponse> {
    let method = req.method();
    let registry = tenant.connector.schemas();
    // Discovery answers without a token (CONTRACT §2) and is read-only.
    match endpoint {
        Endpoint::ServiceProviderConfig | Endpoint::ResourceTypes(_) | Endpoint::Schemas(_) => {
            if method != Method::GET {
                return Err(ScimError::method_not_allowed(format!(
                    "{} is read-only: only GET is allowed",
                    endpoint.label()
                )));
            }
            return discovery(endpoint, registry, &ctx.base_url);
        }
        Endpoint::Unknown => {
            return Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}",
                req.path()
            )))
        }
        _ => {}
    }
    authenticate(req, tenant)?;
    let connector = &tenant.connector;
    let pairs = query_pairs(req);
    match (endpoint, method.clone()) {
        (Endpoint::Collection(kind), Method::GET) => {
            let query =
                ListQuery::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            list(tenant, *kind, &query, ctx).await
        }
        (Endpoint::Search(Some(kind)), Method::POST) => {
            let body = read_json(req.headers(), payload, state.body_limit).await?;
            let query = ListQuery::from_search_request(&body)?;
            list(tenant, *kind, &query, ctx).await
        }
        (Endpoint::Search(None), Method::POST) => {
            let body = read_json(req.headers(), payload, state.body_limit).await?;
            let query = ListQuery::from_search_request(&body)?;
            search_all(tenant, &query, ctx).await
        }
        (Endpoint::Collection(kind), Method::POST) => {
            let body = read_json(req.headers(), payload, state.body_limit).await?;
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
            let body = read_json(req.headers(), payload, state.body_limit).await?;
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
            let body = read_json(req.headers(), payload, state.body_limit).await?;
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
