//! PATCH engine cost. Target: a 5-operation Entra PATCH applied to a typical user in ≤ 10 µs.
//! `cargo bench --bench patch`

use criterion::{criterion_group, criterion_main, Criterion};
use scim_bridge::scim::patch::{apply_patch, PatchOptions, PatchRequest};
use scim_bridge::scim::schema::ResourceSchema;
use serde_json::{json, Value};
use std::hint::black_box;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn typical_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "bjensen",
        "userName": "bjensen@example.com",
        "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "locale": "en-US",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
        "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
                       "region": "CA", "postalCode": "91608", "country": "USA", "primary": true}],
        ENT: {"employeeNumber": "701984", "department": "Tour Operations",
              "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}},
        "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z",
                 "lastModified": "2011-05-13T04:42:34Z", "location": "https://example.com/v2/Users/2819c223"}
    })
}

/// Entra's default (no-flag) shapes, one op per attribute (idp-behavior.md §2.3).
fn entra_five_ops() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        {"op": "Replace", "path": "userName", "value": "5b50c7fa@testuser.com"},
        {"op": "Replace", "path": format!("{ENT}:employeeNumber"), "value": "Eqpj"},
        {"op": "Replace", "path": "active", "value": "False"}
    ]})
}

fn group_with_members(n: usize) -> Value {
    let members: Vec<Value> = (0..n)
        .map(|i| json!({"value": format!("user-{i:06}"), "display": format!("User {i}")}))
        .collect();
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1",
           "displayName": "Everyone", "members": members})
}

fn bench(c: &mut Criterion) {
    let user_schema = ResourceSchema::user();
    let group_schema = ResourceSchema::group();
    let user = typical_user();
    let body = entra_five_ops();
    let req = PatchRequest::from_json(&body).expect("valid body");
    let opts = PatchOptions::default();

    c.bench_function("apply/entra_5_ops_user", |b| {
        b.iter(|| apply_patch(black_box(&user), black_box(&req), &user_schema, opts).unwrap())
    });
    c.bench_function("parse+apply/entra_5_ops_user", |b| {
        b.iter(|| {
            let req = PatchRequest::from_json(black_box(&body)).unwrap();
            apply_patch(black_box(&user), &req, &user_schema, opts).unwrap()
        })
    });

    let okta = PatchRequest::from_json(&json!({
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "replace", "value": {"id": "g1", "displayName": "Everyone"}},
        {"op": "remove", "path": "members[value eq \"user-000500\"]"},
        {"op": "add", "path": "members", "value": [{"value": "new-user", "display": "New"}]}
    ]}))
    .expect("valid body");
    let group = group_with_members(1000);
    c.bench_function("apply/okta_membership_group_1000", |b| {
        b.iter(|| apply_patch(black_box(&group), &okta, &group_schema, opts).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
