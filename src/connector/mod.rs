//! The connector seam: the SCIM side hands a connector typed operations on canonical resources;
//! the connector answers in SCIM resources. Everything vendor-specific stays behind this trait.

pub mod http;
pub mod local;
pub mod roles;
pub mod sisense;

use crate::scim::list::ListQuery;
use crate::scim::patch::PatchRequest;
use crate::scim::schema::{ResourceKind, SchemaRegistry};
use crate::scim::ScimResult;
use async_trait::async_trait;
use serde_json::Value;

/// Per-request facts a connector needs to render resources.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The tenant's SCIM base URL as the client addressed it, e.g. `https://h/tenants/acme/scim/v2`;
    /// used for `meta.location` and `$ref`.
    pub base_url: String,
}

impl RequestContext {
    pub fn location(&self, kind: ResourceKind, id: &str) -> String {
        format!(
            "{}{}/{}",
            self.base_url.trim_end_matches('/'),
            kind.endpoint(),
            id
        )
    }
}

/// RFC 7644 §3.14 preconditions on a write.
#[derive(Debug, Clone, Default)]
pub struct Precondition {
    /// `If-Match`: the write happens only if the current version matches (else 412).
    pub if_match: Option<String>,
}

/// One page of a list or search. `resources` are full resources, not yet projected.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub total: usize,
    pub resources: Vec<Value>,
}

/// What the server asks of a connector. Resources in and out are canonical JSON objects
/// (see `scim::resource`); outgoing ones carry `id` and `meta`. `with_members` tells whether
/// a group's `members` will be rendered, so a connector can skip loading large member lists.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The attributes this connector can round-trip, published in `/Schemas`.
    fn schemas(&self) -> &SchemaRegistry;

    async fn create(
        &self,
        kind: ResourceKind,
        resource: Value,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn get(
        &self,
        kind: ResourceKind,
        id: &str,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        resource: Value,
        pre: &Precondition,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        request: &PatchRequest,
        pre: &Precondition,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<Value>;

    async fn delete(&self, kind: ResourceKind, id: &str, pre: &Precondition) -> ScimResult<()>;

    /// Filtered, sorted list. The connector may push simple predicates down to an index; the
    /// page returned covers `query.page_range(total)`.
    async fn list(
        &self,
        kind: ResourceKind,
        query: &ListQuery,
        with_members: bool,
        ctx: &RequestContext,
    ) -> ScimResult<ListPage>;

    /// Readiness: `Err(reason)` when the backing store or vendor cannot serve.
    async fn ready(&self) -> Result<(), String>;
}
