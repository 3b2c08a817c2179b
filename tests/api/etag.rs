//! ETags (RFC 7644 §3.14): `ETag` = `meta.version` on every resource response, `If-None-Match`
//! → 304, `If-Match` mismatch → 412, versions that move with content and only with content.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;

const STALE: &str = "W/\"0000000000000000\"";

#[track_caller]
fn etag_is_version(r: &Resp) -> String {
    let body = r.json();
    let v = body["meta"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no meta.version: {body}"))
        .to_string();
    assert_eq!(
        r.header("etag").as_deref(),
        Some(v.as_str()),
        "ETag == meta.version"
    );
    assert!(
        v.starts_with("W/\"") && v.ends_with('"'),
        "a weak ETag: {v}"
    );
    v
}

#[tokio::test]
async fn etag_equals_meta_version_on_every_resource_response() {
    let app = spawn_app().await;
    let r = app.post("/Users", &user_body("etag@example.com")).await;
    r.assert_status(201);
    let v1 = etag_is_version(&r);
    let id = id_of(&r.json());
    let path = format!("/Users/{id}");

    let r = app.get(&path).await;
    r.assert_status(200);
    assert_eq!(
        etag_is_version(&r),
        v1,
        "GET sees the version POST returned"
    );

    let mut body = r.json();
    body["displayName"] = json!("Changed");
    let r = app.put(&path, &body).await;
    r.assert_status(200);
    let v2 = etag_is_version(&r);
    assert_ne!(v2, v1, "a change moves the version");

    let r = app
        .patch_ops(
            &path,
            json!([{"op":"replace","path":"displayName","value":"Again"}]),
        )
        .await;
    r.assert_status(200);
    let v3 = etag_is_version(&r);
    assert_ne!(v3, v2);

    // Idempotent PATCH: same content, same version.
    let r = app
        .patch_ops(
            &path,
            json!([{"op":"replace","path":"displayName","value":"Again"}]),
        )
        .await;
    r.assert_status(200);
    assert_eq!(etag_is_version(&r), v3, "no change, no new version");
    assert_eq!(etag_is_version(&app.get(&path).await), v3);

    // Groups too, and their version moves with membership.
    let r = app
        .post(
            "/Groups",
            &json!({"schemas":[CORE_GROUP],"displayName":"Etag group"}),
        )
        .await;
    r.assert_status(201);
    let g1 = etag_is_version(&r);
    let gid = id_of(&r.json());
    let r = app
        .patch_ops(
            &format!("/Groups/{gid}"),
            json!([{"op":"add","path":"members","value":[{"value":id}]}]),
        )
        .await;
    r.assert_status(200);
    let g2 = etag_is_version(&r);
    assert_ne!(g2, g1, "a membership change moves the group's version");
    assert_eq!(
        etag_is_version(&app.get(&format!("/Groups/{gid}")).await),
        g2
    );
}

#[tokio::test]
async fn if_none_match_with_the_current_version_is_304() {
    let app = spawn_app().await;
    let id = app.create_user("inm@example.com").await;
    let path = format!("/Users/{id}");
    let v = etag_is_version(&app.get(&path).await);
    let r = Resp::send(app.request(Method::GET, &path).header("If-None-Match", &v)).await;
    r.assert_status(304);
    assert!(r.text.is_empty(), "304 has no body");
    assert_eq!(r.header("etag").as_deref(), Some(v.as_str()));
    // A stale tag gets the resource.
    let r = Resp::send(
        app.request(Method::GET, &path)
            .header("If-None-Match", STALE),
    )
    .await;
    r.assert_status(200);
    etag_is_version(&r);
}

#[tokio::test]
async fn if_match_mismatch_is_412_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.create_user("im@example.com").await;
    let path = format!("/Users/{id}");
    let current = app.get(&path).await;
    let v = etag_is_version(&current);
    let mut body = current.json();
    body["displayName"] = json!("Should not land");

    let put = Resp::send(
        app.request(Method::PUT, &path)
            .header("If-Match", STALE)
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(body.to_string()),
    )
    .await;
    put.assert_error(412, None);

    let patch = Resp::send(
        app.request(Method::PATCH, &path)
            .header("If-Match", STALE)
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(
                patch_body(json!([{"op":"replace","path":"displayName","value":"Nope"}]))
                    .to_string(),
            ),
    )
    .await;
    patch.assert_error(412, None);

    let del = Resp::send(app.request(Method::DELETE, &path).header("If-Match", STALE)).await;
    del.assert_error(412, None);

    let after = app.get(&path).await;
    assert_eq!(etag_is_version(&after), v);
    assert_eq!(after.json()["displayName"], current.json()["displayName"]);
}

#[tokio::test]
async fn a_matching_if_match_lets_the_write_through() {
    let app = spawn_app().await;
    let id = app.create_user("im-ok@example.com").await;
    let path = format!("/Users/{id}");
    let current = app.get(&path).await;
    let v = etag_is_version(&current);
    let mut body = current.json();
    body["displayName"] = json!("Landed");

    let put = Resp::send(
        app.request(Method::PUT, &path)
            .header("If-Match", &v)
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(body.to_string()),
    )
    .await;
    put.assert_status(200);
    let v2 = etag_is_version(&put);
    assert_eq!(put.json()["displayName"], "Landed");

    // The old version no longer matches.
    let patch_with = |tag: String| {
        app.request(Method::PATCH, &path)
            .header("If-Match", tag)
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(patch_body(json!([{"op":"replace","path":"nickName","value":"N"}])).to_string())
    };
    Resp::send(patch_with(v.clone()))
        .await
        .assert_error(412, None);
    let r = Resp::send(patch_with(v2.clone())).await;
    r.assert_status(200);
    let v3 = etag_is_version(&r);
    // `*` matches any version.
    let r = Resp::send(
        app.request(Method::PATCH, &path)
            .header("If-Match", "*")
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(patch_body(json!([{"op":"replace","path":"nickName","value":"M"}])).to_string()),
    )
    .await;
    r.assert_status(200);

    let del = Resp::send(app.request(Method::DELETE, &path).header("If-Match", v3)).await;
    del.assert_error(412, None);
    let v4 = etag_is_version(&app.get(&path).await);
    let del = Resp::send(app.request(Method::DELETE, &path).header("If-Match", v4)).await;
    del.assert_status(204);
    app.get(&path).await.assert_error(404, None);
}

#[tokio::test]
async fn service_provider_config_advertises_etags() {
    let app = spawn_app().await;
    let spc = app.get("/ServiceProviderConfig").await.ok_json();
    assert_eq!(spc["etag"]["supported"], true);
}

/// `groups` is part of the user's representation, so joining a group is a new version
/// (RFC 7644 §3.14); otherwise a cache revalidating with If-None-Match keeps stale groups.
#[tokio::test]
async fn a_user_version_moves_when_its_groups_change() {
    let app = spawn_app().await;
    let u = app.create_user("joiner@example.com").await;
    let path = format!("/Users/{u}");
    let before = etag_is_version(&app.get(&path).await);
    let gid = app.create_group("Joined").await;
    app.patch_ops(
        &format!("/Groups/{gid}"),
        json!([{"op":"add","path":"members","value":[{"value":u}]}]),
    )
    .await
    .assert_status(200);
    let r = Resp::send(
        app.request(Method::GET, &path)
            .header("If-None-Match", &before),
    )
    .await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "the user now has groups; a 304 would keep the old representation"
    );
    assert_eq!(r.json()["groups"][0]["value"], json!(gid));
    assert_ne!(etag_is_version(&r), before);
}

/// The ETag describes the resource, whatever projection the body has.
#[tokio::test]
async fn the_etag_header_survives_a_projection() {
    let app = spawn_app().await;
    let id = app.create_user("projected@example.com").await;
    let path = format!("/Users/{id}");
    let v = etag_is_version(&app.get(&path).await);
    let r = app.get(&format!("{path}?attributes=userName")).await;
    r.assert_status(200);
    assert_eq!(r.header("etag").as_deref(), Some(v.as_str()), "{}", r.text);
}

#[tokio::test]
async fn a_group_version_moves_when_a_member_is_deleted() {
    let app = spawn_app().await;
    let u = app.create_user("leaver@example.com").await;
    let gid = id_of(&app.create_group_with_members("Left", &[&u]).await);
    let before = etag_is_version(&app.get(&format!("/Groups/{gid}")).await);
    app.delete(&format!("/Users/{u}")).await.assert_status(204);
    let r = app.get(&format!("/Groups/{gid}")).await;
    assert_ne!(etag_is_version(&r), before);
    assert!(is_cleared(&r.json()["members"]));
}

/// RFC 7644 §3.5.2.1: adding a value that is already there changes nothing, not even
/// `meta.lastModified` or the version.
#[tokio::test]
async fn adding_a_value_already_present_changes_nothing() {
    let app = spawn_app().await;
    let id = app.create_user("dup.add@example.com").await;
    let path = format!("/Users/{id}");
    let before = app.get(&path).await.ok_json();
    let r = app
        .patch_ops(
            &path,
            json!([{"op":"add","path":"emails","value":[{"primary":true,"value":"dup.add@example.com","type":"work"}]}]),
        )
        .await;
    let after = r.ok_json();
    assert_eq!(after["emails"].as_array().map(Vec::len), Some(1), "{after}");
    assert_eq!(after["meta"]["version"], before["meta"]["version"]);
    assert_eq!(
        after["meta"]["lastModified"],
        before["meta"]["lastModified"]
    );
}
