//! Regressions for the defects an independent review of the server found.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

/// A filter on User.groups is evaluated on rendered users; the listed version must still be
/// the one GET returns (it was once folded with the groups twice).
#[tokio::test]
async fn filtered_list_version_equals_the_get_etag() {
    let app = spawn_app().await;
    let uid = app.create_user("listed@example.com").await;
    let gid = app.create_group("Listed group").await;
    app.patch_ops(
        &format!("/Groups/{gid}"),
        json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]),
    )
    .await
    .assert_status(200);
    let got = app.get(&format!("/Users/{uid}")).await;
    let etag = got.header("etag").expect("an ETag");
    let listed = app
        .filter("/Users", &format!("groups.value eq \"{gid}\""))
        .await
        .ok_json();
    let resources = list_resources(&listed);
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0]["meta"]["version"], json!(etag));
    assert_eq!(resources[0]["groups"].as_array().map(Vec::len), Some(1));
}

/// Root `.search` sorted by an attribute only Users have still answers, Groups last.
#[tokio::test]
async fn root_search_sorts_by_an_attribute_one_type_lacks() {
    let app = spawn_app().await;
    app.create_user("b-sort@example.com").await;
    app.create_user("a-sort@example.com").await;
    app.create_group("Sorted group").await;
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "sortBy": "userName"});
    let r = app
        .send_json(Method::POST, "/.search", Some(&body))
        .await
        .ok_json();
    let names: Vec<String> = list_resources(&r)
        .iter()
        .map(|x| {
            x["userName"]
                .as_str()
                .or(x["displayName"].as_str())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["a-sort@example.com", "b-sort@example.com", "Sorted group"]
    );
}

/// Arbitrary method tokens must not mint new metric series.
#[tokio::test]
async fn unknown_methods_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    for i in 0..5 {
        let m = Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let r = app.request(m, "/Users").send().await.unwrap();
        assert!(r.status().is_client_error());
    }
    let text = reqwest::get(format!("{}/metrics", app.admin_root))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("FOO"), "{text}");
    assert!(text.contains("method=\"other\""));
}

/// An If-Match that is not readable text matches nothing: 412, and nothing changes.
#[tokio::test]
async fn unreadable_if_match_is_a_failed_precondition() {
    let app = spawn_app().await;
    let uid = app.create_user("ifmatch@example.com").await;
    let before = app.get(&format!("/Users/{uid}")).await.ok_json();
    let r = app
        .request(Method::PATCH, &format!("/Users/{uid}"))
        .header("content-type", "application/scim+json")
        .header(
            "if-match",
            reqwest::header::HeaderValue::from_bytes(b"W/\"\xff\"").unwrap(),
        )
        .body(
            patch_body(json!([{"op": "replace", "path": "displayName", "value": "changed"}]))
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412);
    let after = app.get(&format!("/Users/{uid}")).await.ok_json();
    assert_eq!(after, before, "a failed precondition changes nothing");
}

/// A 405 names the methods the endpoint does allow.
#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let app = spawn_app().await;
    let uid = app.create_user("allow@example.com").await;
    for (method, path, allow) in [
        (Method::DELETE, "/Users".to_string(), "GET, POST"),
        (
            Method::POST,
            format!("/Users/{uid}"),
            "GET, PUT, PATCH, DELETE",
        ),
        (Method::GET, "/Users/.search".to_string(), "POST"),
        (Method::PUT, "/Schemas".to_string(), "GET"),
    ] {
        let r = Resp::send(app.request(method.clone(), &path)).await;
        r.assert_error(405, None);
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{method} {path}");
    }
}
