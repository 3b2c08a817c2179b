//! `/ServiceProviderConfig` (RFC 7643 §5): what this server supports, advertised truthfully.

use crate::scim::list::MAX_PAGE_SIZE;
use crate::scim::schema::urn;
use serde_json::{json, Value};

/// Optional features whose advertisement depends on what the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub bulk: Option<BulkLimits>,
    pub etag: bool,
    pub sort: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    pub max_operations: usize,
    pub max_payload_size: usize,
}

pub fn service_provider_config(features: &Features, base_url: &str) -> Value {
    let (bulk_supported, max_ops, max_payload) = match features.bulk {
        Some(b) => (true, b.max_operations, b.max_payload_size),
        None => (false, 0, 0),
    };
    json!({
        "schemas": [urn::SERVICE_PROVIDER_CONFIG],
        "patch": {"supported": true},
        "bulk": {"supported": bulk_supported, "maxOperations": max_ops, "maxPayloadSize": max_payload},
        "filter": {"supported": true, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": features.sort},
        "etag": {"supported": features.etag},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token: a static token or a JWT minted by `scim-bridge token issue`.",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", base_url.trim_end_matches('/')),
        }
    })
}
