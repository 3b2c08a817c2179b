//! What one SCIM request carries besides its body, shared by the protocol layer, the
//! connectors and the store: the base URL resources are rendered under, the RFC 7644 §3.14
//! preconditions, and one page of a listing.

use crate::scim::schema::ResourceKind;
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
