//! Any bytes, as a PATCH, against a fixed user and a fixed group: the engine must never panic.
//! `cargo +nightly fuzz run patch_apply -- -max_total_time=60`
//!
//! JSON input is used as the body itself (an object), as its `Operations` (an array) or as one
//! operation's `value`; other bytes become the `path` of add/replace/remove operations, which
//! drives the path and filter parsers through the engine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim_bridge::scim::patch::{apply_patch, PatchMode, PatchOptions, PatchRequest};
use scim_bridge::scim::schema::ResourceSchema;
use serde_json::{json, Value};
use std::sync::OnceLock;

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

struct Fixtures {
    user: Value,
    group: Value,
    user_schema: ResourceSchema,
    group_schema: ResourceSchema,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| Fixtures {
        user: json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
            "id": "2819c223", "externalId": "bjensen", "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs Jensen", "active": true,
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                       {"value": "babs@jensen.org", "type": "home"}],
            "addresses": [{"type": "work", "locality": "Hollywood", "region": "CA"}],
            "roles": [{"value": "Admin", "primary": true}],
            ENT: {"employeeNumber": "701984", "manager": {"value": "26118915", "displayName": "John"}},
            "meta": {"resourceType": "User"}
        }),
        group: json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "e9e30dba", "displayName": "Tour Guides",
            "members": [{"value": "2819c223", "display": "Babs"}, {"value": "902c246b"}],
            "meta": {"resourceType": "Group"}
        }),
        user_schema: ResourceSchema::user(),
        group_schema: ResourceSchema::group(),
    })
}

fn bodies(data: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(data) {
        Ok(v @ Value::Object(_)) => vec![v],
        Ok(Value::Array(ops)) => vec![json!({"schemas": [PATCH_OP], "Operations": ops})],
        Ok(v) => vec![
            json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "value": v}]}),
            json!({"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "members", "value": v}]}),
        ],
        Err(_) => {
            let path = String::from_utf8_lossy(data);
            ["add", "replace", "remove"]
                .iter()
                .map(|op| {
                    json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": op, "path": path, "value": [{"value": "x", "type": "work", "primary": "True"}]},
                        {"op": op, "path": path, "value": "False"},
                        {"op": op, "path": path, "value": null}
                    ]})
                })
                .collect()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    for body in bodies(data) {
        let Ok(req) = PatchRequest::from_json(&body) else {
            continue;
        };
        for mode in [PatchMode::Strict, PatchMode::IdpCompatible] {
            for external_members in [false, true] {
                let opts = PatchOptions {
                    mode,
                    external_members,
                };
                let _ = apply_patch(&f.user, &req, &f.user_schema, opts);
                if let Ok(out) = apply_patch(&f.group, &req, &f.group_schema, opts) {
                    // Re-applying to the result must not panic either (states the fixtures lack).
                    let _ = apply_patch(&out.resource, &req, &f.group_schema, opts);
                }
            }
        }
    }
});
