//! Okta's OIN SCIM 2.0 connector, request by request (idp-behavior §1): test connection,
//! lookup-then-create, PUT of the whole resource, pathless deactivate, Group Push, import paging,
//! and the 12 steps of the Okta SPEC test.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;

/// The exact body Okta POSTs (idp-behavior §1.3).
fn okta_create_body() -> Value {
    json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"test.user@okta.local",
        "name":{"givenName":"Test","familyName":"User"},
        "emails":[{"primary":true,"value":"test.user@okta.local","type":"work"}],
        "displayName":"Test User","locale":"en-US","externalId":"00ujl29u0le5T6Aj10h7",
        "groups":[],"password":"1mz050nq","active":true})
}

#[tokio::test]
async fn test_connection_lists_users_with_integer_counters() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.create_user(&format!("conn{i}@okta.local")).await;
    }
    let body = app.get("/Users?startIndex=1&count=2").await.ok_json();
    let resources = list_resources(&body);
    assert_eq!(body["totalResults"], 3);
    assert_eq!(body["startIndex"], 1);
    assert_eq!(body["itemsPerPage"], 2);
    assert_eq!(resources.len(), 2);
    // What the SPEC test reads from Resources[0].
    let first = &resources[0];
    for field in ["id", "userName"] {
        assert!(
            first[field].as_str().is_some_and(|s| !s.is_empty()),
            "{first}"
        );
    }
    assert!(first["name"]["familyName"].is_string(), "{first}");
    assert!(first["name"]["givenName"].is_string(), "{first}");
    assert!(first["active"].is_boolean(), "{first}");
    assert!(first["emails"][0]["value"].is_string(), "{first}");
}

#[tokio::test]
async fn lookup_then_create_as_okta_does() {
    let app = spawn_app().await;
    // 1. Lookup: Okta encodes spaces as %20 here.
    let lookup =
        "/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100";
    let body = app.get(lookup).await.ok_json();
    assert_eq!(
        body,
        json!({"schemas":[LIST_RESPONSE],"totalResults":0,"startIndex":1,"itemsPerPage":0,"Resources":[]}),
        "an empty lookup is a 200 ListResponse with integer counters"
    );

    // 2. Create, with password and groups: [].
    let r = app.post("/Users", &okta_create_body()).await;
    r.assert_status(201);
    r.assert_scim_content_type();
    let user = r.json();
    let id = id_of(&user);
    assert!(!r.text.contains("1mz050nq"), "password echoed: {}", r.text);
    assert!(user.get("password").is_none(), "{user}");
    assert_eq!(user["userName"], "test.user@okta.local");
    assert_eq!(user["name"]["givenName"], "Test");
    assert_eq!(user["name"]["familyName"], "User");
    assert_eq!(user["externalId"], "00ujl29u0le5T6Aj10h7");
    assert_eq!(user["active"], true);
    assert_eq!(user["emails"][0]["value"], "test.user@okta.local");
    assert!(user["schemas"]
        .as_array()
        .unwrap()
        .contains(&json!(CORE_USER)));
    assert!(
        is_cleared(&user["groups"]),
        "groups: [] is not stored: {user}"
    );
    let meta = &user["meta"];
    assert_eq!(meta["resourceType"], "User", "{user}");
    assert!(is_datetime(&meta["created"]), "{meta}");
    assert!(is_datetime(&meta["lastModified"]), "{meta}");
    let location = meta["location"].as_str().expect("meta.location");
    assert_eq!(location, format!("{}/Users/{id}", app.base_url));
    assert_eq!(
        r.header("location").as_deref(),
        Some(location),
        "Location == meta.location"
    );
    assert_eq!(
        r.header("etag").as_deref(),
        meta["version"].as_str(),
        "ETag == meta.version"
    );

    // 3. The lookup now finds it, and GET by id returns it without the password.
    let body = app.get(lookup).await.ok_json();
    assert_eq!(ids(&list_resources(&body)), [id.clone()]);
    let got = app.get(&format!("/Users/{id}")).await;
    let got_body = got.ok_json();
    assert!(!got.text.contains("1mz050nq"));
    assert!(got_body.get("password").is_none());
    assert_eq!(got_body["userName"], "test.user@okta.local");
}

#[tokio::test]
async fn duplicate_create_is_409_uniqueness() {
    let app = spawn_app().await;
    app.post("/Users", &okta_create_body())
        .await
        .assert_status(201);
    app.post("/Users", &okta_create_body())
        .await
        .assert_error(409, Some("uniqueness"));
    // Case does not make a different userName (userName is caseExact: false).
    let mut shouty = okta_create_body();
    shouty["userName"] = json!("TEST.USER@OKTA.LOCAL");
    app.post("/Users", &shouty)
        .await
        .assert_error(409, Some("uniqueness"));
    let body = app.get("/Users").await.ok_json();
    assert_eq!(body["totalResults"], 1);
}

#[tokio::test]
async fn username_filter_is_case_insensitive_and_plus_is_a_space() {
    let app = spawn_app().await;
    let id = id_of(&app.create_user_with(&okta_create_body()).await);
    // Okta's own encoding: `+` for spaces, different case (SPEC test step 9).
    let body = app
        .get("/Users?filter=userName+eq+%22TEST.User%40OKTA.local%22")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [id.clone()]);
    // Operator and attribute name are case-insensitive too.
    let body = app
        .filter("/Users", "USERNAME Eq \"test.user@okta.local\"")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [id]);
    // An unknown user: 200 with nothing, never 404 (SPEC test step 3).
    let body = app
        .filter("/Users", "userName eq \"invalid.user@okta.local\"")
        .await
        .ok_json();
    assert_eq!(body["totalResults"], 0);
    assert!(list_resources(&body).is_empty());
}

#[tokio::test]
async fn unknown_user_is_404_with_error_schema() {
    let app = spawn_app().await;
    let r = app.get("/Users/00919288221112222").await;
    let body = r.assert_error(404, None);
    assert_eq!(body["status"], "404");
}

#[tokio::test]
async fn put_of_the_whole_resource_as_read_with_client_meta() {
    let app = spawn_app().await;
    let created = app.create_user_with(&okta_create_body()).await;
    let id = id_of(&created);
    let mut body = app.get(&format!("/Users/{id}")).await.ok_json();
    // What Okta sends back: everything it read, edited, plus password and a non-ISO meta.created.
    body["name"]["givenName"] = json!("Changed");
    body["password"] = json!("n3wPassw0rd");
    body["groups"] = json!([]);
    body["meta"]["created"] = json!("04-12-2018 00:00:00");
    body["meta"]["lastModified"] = json!("04-12-2018 00:00:00");
    body["id"] = json!(id);
    let r = app.put(&format!("/Users/{id}"), &body).await;
    let updated = r.ok_json();
    assert!(
        !r.text.contains("n3wPassw0rd"),
        "password echoed: {}",
        r.text
    );
    assert_eq!(id_of(&updated), id);
    assert_eq!(updated["name"]["givenName"], "Changed");
    assert_eq!(updated["name"]["familyName"], "User");
    assert_eq!(updated["userName"], "test.user@okta.local");
    assert_eq!(
        updated["meta"]["created"], created["meta"]["created"],
        "client meta is ignored"
    );
    assert!(is_datetime(&updated["meta"]["lastModified"]));
    assert_eq!(
        r.header("etag").as_deref(),
        updated["meta"]["version"].as_str()
    );
    assert_ne!(updated["meta"]["version"], created["meta"]["version"]);
    let again = app.get(&format!("/Users/{id}")).await.ok_json();
    assert_eq!(again["name"]["givenName"], "Changed");
}

#[tokio::test]
async fn pathless_deactivate_keeps_the_user_readable_and_reactivate_restores_it() {
    let app = spawn_app().await;
    let id = id_of(&app.create_user_with(&okta_create_body()).await);
    let path = format!("/Users/{id}");
    let r = app
        .patch_ops(&path, json!([{"op":"replace","value":{"active":false}}]))
        .await;
    let body = r.ok_json();
    assert_eq!(body["active"], false, "PATCH answers 200 with the user");
    assert_eq!(id_of(&body), id);
    assert_eq!(
        r.header("etag").as_deref(),
        body["meta"]["version"].as_str()
    );

    // Deactivation is not deletion: GET and the filter still return it.
    assert_eq!(app.get(&path).await.ok_json()["active"], false);
    let found = app
        .filter("/Users", "userName eq \"test.user@okta.local\"")
        .await
        .ok_json();
    let found = list_resources(&found);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["active"], false);

    let r = app
        .patch_ops(&path, json!([{"op":"replace","value":{"active":true}}]))
        .await;
    assert_eq!(r.ok_json()["active"], true);
    assert_eq!(app.get(&path).await.ok_json()["active"], true);
}

#[tokio::test]
async fn password_sync_patch_is_accepted_and_never_returned() {
    let app = spawn_app().await;
    let id = id_of(&app.create_user_with(&okta_create_body()).await);
    let r = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([{"op":"replace","value":{"password":"s3cr3t-Sync"}}]),
        )
        .await;
    let body = r.ok_json();
    assert!(body.get("password").is_none());
    assert!(!r.text.contains("s3cr3t-Sync"));
    let got = app.get(&format!("/Users/{id}")).await;
    assert!(!got.text.contains("s3cr3t-Sync"));
}

#[tokio::test]
async fn group_push_lifecycle() {
    let app = spawn_app().await;
    let u1 = app.create_user("u1@okta.local").await;
    let u2 = app.create_user("u2@okta.local").await;
    let u3 = app.create_user("u3@okta.local").await;

    // Lookup before create.
    let lookup = app
        .filter("/Groups", "displayName eq \"Test SCIMv2\"")
        .await
        .ok_json();
    assert_eq!(lookup["totalResults"], 0);
    assert_eq!(lookup["Resources"], json!([]));

    let r = app
        .post(
            "/Groups",
            &json!({"schemas":[CORE_GROUP],"displayName":"Test SCIMv2","members":[]}),
        )
        .await;
    r.assert_status(201);
    let group = r.json();
    let gid = id_of(&group);
    assert_eq!(group["displayName"], "Test SCIMv2");
    assert_eq!(group["meta"]["resourceType"], "Group");
    assert_eq!(
        r.header("location").as_deref(),
        group["meta"]["location"].as_str()
    );
    assert!(is_cleared(&group["members"]), "{group}");
    let gpath = format!("/Groups/{gid}");

    let lookup = app
        .filter("/Groups", "displayName eq \"test scimv2\"")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&lookup)), [gid.clone()]);

    // Rename, with the read-only id inside the value: ignored, not rejected.
    let rename = json!([{"op":"replace","value":{"id":gid,"displayName":"Test SCIMv2 renamed"}}]);
    let renamed = app.patch_ops(&gpath, rename.clone()).await.ok_json();
    assert_eq!(renamed["displayName"], "Test SCIMv2 renamed");
    assert_eq!(id_of(&renamed), gid);
    // Okta re-sends the rename with every membership update: idempotent.
    let again = app.patch_ops(&gpath, rename.clone()).await.ok_json();
    assert_eq!(again["displayName"], "Test SCIMv2 renamed");
    assert_eq!(again["meta"]["version"], renamed["meta"]["version"]);

    // Full push.
    let r = app
        .patch_ops(
            &gpath,
            json!([{"op":"replace","path":"members","value":[
                {"value":u1,"display":"u1@okta.local"},{"value":u2,"display":"u2@okta.local"}]}]),
        )
        .await;
    let pushed = r.ok_json();
    let mut want = vec![u1.clone(), u2.clone()];
    want.sort();
    assert_eq!(member_values(&pushed), want, "PATCH answers with members");

    // Incremental: remove one by filter, add another, in one PATCH.
    app.patch_ops(&gpath, rename).await.assert_status(200);
    let r = app
        .patch_ops(
            &gpath,
            json!([
                {"op":"remove","path":format!("members[value eq \"{u1}\"]")},
                {"op":"add","path":"members","value":[{"value":u3,"display":"u3@okta.local"}]}
            ]),
        )
        .await;
    r.assert_status(200);
    let mut want = vec![u2.clone(), u3.clone()];
    want.sort();
    assert_eq!(app.member_ids(&gid).await, want);

    // User.groups is derived from memberships and agrees.
    assert!(app.group_ids_of_user(&u1).await.is_empty());
    assert_eq!(app.group_ids_of_user(&u2).await, [gid.clone()]);
    let u3_body = app.get(&format!("/Users/{u3}")).await.ok_json();
    assert_eq!(u3_body["groups"][0]["value"], json!(gid));
    assert_eq!(u3_body["groups"][0]["display"], "Test SCIMv2 renamed");

    // Full push back to u1 alone.
    app.patch_ops(
        &gpath,
        json!([{"op":"replace","path":"members","value":[{"value":u1}]}]),
    )
    .await
    .assert_status(200);
    assert_eq!(app.member_ids(&gid).await, [u1.clone()]);
    assert_eq!(app.group_ids_of_user(&u1).await, [gid.clone()]);
    assert!(app.group_ids_of_user(&u2).await.is_empty());
    assert!(app.group_ids_of_user(&u3).await.is_empty());

    // Unlink pushed group → delete.
    let r = app.delete(&gpath).await;
    r.assert_status(204);
    assert!(r.text.is_empty(), "204 has no body: {:?}", r.text);
    app.get(&gpath).await.assert_error(404, None);
    assert!(app.group_ids_of_user(&u1).await.is_empty());
    let lookup = app
        .filter("/Groups", "displayName eq \"Test SCIMv2 renamed\"")
        .await
        .ok_json();
    assert_eq!(lookup["totalResults"], 0);
}

#[tokio::test]
async fn group_created_with_members_of_provisioned_users() {
    let app = spawn_app().await;
    let u1 = app.create_user("m1@okta.local").await;
    let u2 = app.create_user("m2@okta.local").await;
    let g = app.create_group_with_members("Pushed", &[&u1, &u2]).await;
    let mut want = vec![u1.clone(), u2.clone()];
    want.sort();
    assert_eq!(member_values(&g), want, "{g}");
    assert_eq!(app.member_ids(&id_of(&g)).await, want);
    for m in g["members"].as_array().unwrap() {
        assert_eq!(m["type"], "User", "{m}");
        assert!(m["$ref"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/Users/{}", m["value"].as_str().unwrap())));
    }
}

#[tokio::test]
async fn aiw_put_group_replaces_the_member_list() {
    let app = spawn_app().await;
    let u1 = app.create_user("p1@okta.local").await;
    let u2 = app.create_user("p2@okta.local").await;
    let g = app.create_group_with_members("AIW", &[&u1]).await;
    let gid = id_of(&g);
    let mut body = app.get(&format!("/Groups/{gid}")).await.ok_json();
    body["members"] = json!([{"value": u2, "display": "p2@okta.local"}]);
    let r = app.put(&format!("/Groups/{gid}"), &body).await;
    let put = r.ok_json();
    assert_eq!(member_values(&put), [u2.clone()]);
    assert_eq!(app.member_ids(&gid).await, [u2.clone()]);
    assert!(app.group_ids_of_user(&u1).await.is_empty());
    assert_eq!(app.group_ids_of_user(&u2).await, [gid]);
}

#[tokio::test]
async fn import_pages_by_100_in_a_stable_order() {
    let app = spawn_app().await;
    let created: HashSet<String> = app.create_users("import", 130).await.into_iter().collect();
    let page = |start: usize| {
        let app = &app;
        async move {
            app.get(&format!("/Users?startIndex={start}&count=100"))
                .await
                .ok_json()
        }
    };
    let p1 = page(1).await;
    let r1 = list_resources(&p1);
    assert_eq!(p1["totalResults"], 130);
    assert_eq!(p1["startIndex"], 1);
    assert_eq!(p1["itemsPerPage"], 100);
    let p2 = page(101).await;
    let r2 = list_resources(&p2);
    assert_eq!(p2["totalResults"], 130);
    assert_eq!(p2["startIndex"], 101);
    assert_eq!(p2["itemsPerPage"], 30);
    let mut all: Vec<String> = ids(&r1);
    all.extend(ids(&r2));
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), 130, "pages overlap");
    assert_eq!(unique, created);
    // The same page twice is the same page.
    assert_eq!(ids(&list_resources(&page(1).await)), ids(&r1));
    // Past the end: empty, still 200.
    let p3 = page(201).await;
    assert!(list_resources(&p3).is_empty());
    assert_eq!(p3["totalResults"], 130);

    // Groups are imported the same way.
    app.create_group("Imported").await;
    let g = app.get("/Groups?startIndex=1&count=100").await.ok_json();
    assert_eq!(list_resources(&g).len(), 1);
    assert_eq!(g["totalResults"], 1);
}

#[tokio::test]
async fn invalid_token_is_401_with_error_body_and_www_authenticate() {
    let app = spawn_app().await;
    let r = Resp::send(
        app.client
            .get(app.url("/Users"))
            .header("Authorization", "Bearer not-the-token"),
    )
    .await;
    let body = r.assert_error(401, None);
    assert_eq!(body["status"], "401");
    let www = r.header("www-authenticate").expect("WWW-Authenticate");
    assert!(www.starts_with("Bearer"), "{www}");
    assert!(!r.text.contains("not-the-token"), "the token is echoed");
}

/// The 12 requests of Okta's SCIM 2.0 SPEC test (idp-behavior §1.8), each under 600 ms.
#[tokio::test]
async fn okta_spec_test_replay() {
    let app = spawn_app().await;
    // "At least one user must exist before the run."
    app.create_user_with(&okta_create_body()).await;
    let mut steps = Vec::new();

    let r = app.get("/Users?count=1&startIndex=1").await;
    let b = r.ok_json();
    let isv = id_of(&list_resources(&b)[0]);
    steps.push(r);
    let r = app.get(&format!("/Users/{isv}")).await;
    assert_eq!(id_of(&r.ok_json()), isv);
    steps.push(r);
    let r = app
        .filter("/Users", "userName eq \"invalid-user-3b1f@example.com\"")
        .await;
    assert_eq!(r.ok_json()["totalResults"], 0);
    steps.push(r);
    let r = app.get("/Users/010101001010101010").await;
    r.assert_error(404, None);
    steps.push(r);
    let r = app
        .filter("/Users", "userName eq \"Jane.Random7@example.com\"")
        .await;
    assert_eq!(r.ok_json()["totalResults"], 0);
    steps.push(r);
    let new_user = json!({"schemas":[CORE_USER],"userName":"Jane.Random7@example.com",
        "name":{"givenName":"Jane","familyName":"Random"},
        "emails":[{"primary":true,"value":"Jane.Random7@example.com","type":"work"}],
        "displayName":"Jane Random","active":true});
    let r = app.post("/Users", &new_user).await;
    r.assert_status(201);
    let created = r.json();
    assert_eq!(created["active"], true);
    assert_eq!(created["name"]["givenName"], "Jane");
    let id1 = id_of(&created);
    steps.push(r);
    let r = app.get(&format!("/Users/{id1}")).await;
    assert_eq!(r.ok_json()["userName"], "Jane.Random7@example.com");
    steps.push(r);
    let r = app.post("/Users", &new_user).await;
    r.assert_error(409, Some("uniqueness"));
    steps.push(r);
    let r = app
        .filter("/Users", "userName eq \"JANE.RANDOM7@EXAMPLE.COM\"")
        .await;
    assert_eq!(r.ok_json()["totalResults"], 1);
    steps.push(r);
    let r = app.get("/Groups").await;
    assert!(r.ok_json()["Resources"].is_array());
    steps.push(r);
    let r = Resp::send(
        app.client
            .get(app.url("/Users"))
            .header("Authorization", "Bearer invalid"),
    )
    .await;
    r.assert_error(401, None);
    steps.push(r);
    let r = app.get("/Users/00919288221112222").await;
    r.assert_error(404, None);
    steps.push(r);

    assert_eq!(steps.len(), 12);
    for (i, s) in steps.iter().enumerate() {
        assert!(
            s.elapsed.as_millis() < 600,
            "step {} took {:?}",
            i + 1,
            s.elapsed
        );
    }
}

#[tokio::test]
async fn okta_headers_and_media_types_are_accepted() {
    let app = spawn_app().await;
    let r = Resp::send(
        app.request(Method::POST, "/Users")
            .header("Accept-Charset", "utf-8")
            .header("Accept-Encoding", "gzip,deflate")
            .header("Content-Type", "application/scim+json; charset=utf-8")
            .body(user_body("headers@okta.local").to_string()),
    )
    .await;
    r.assert_status(201);
    r.assert_scim_content_type();
    r.json();
}

/// AIW apps deactivate with PUT, not PATCH (idp-behavior §1.4).
#[tokio::test]
async fn aiw_deactivate_with_put() {
    let app = spawn_app().await;
    let id = id_of(&app.create_user_with(&okta_create_body()).await);
    let path = format!("/Users/{id}");
    let mut body = app.get(&path).await.ok_json();
    body["active"] = json!(false);
    body["password"] = json!("again-a-password");
    assert_eq!(app.put(&path, &body).await.ok_json()["active"], false);
    assert_eq!(app.get(&path).await.ok_json()["active"], false);
    let found = app
        .filter("/Users", "userName eq \"test.user@okta.local\"")
        .await
        .ok_json();
    assert_eq!(list_resources(&found)[0]["active"], false);
}

#[tokio::test]
async fn membership_by_pathless_add_and_emptied_by_replace_with_nothing() {
    let app = spawn_app().await;
    let u1 = app.create_user("pl1@okta.local").await;
    let u2 = app.create_user("pl2@okta.local").await;
    let gid = app.create_group("Pathless").await;
    let gpath = format!("/Groups/{gid}");
    let body = app
        .patch_ops(
            &gpath,
            json!([{"op":"add","value":{"members":[{"value":u1},{"value":u2}]}}]),
        )
        .await
        .ok_json();
    let mut want = vec![u1.clone(), u2.clone()];
    want.sort();
    assert_eq!(member_values(&body), want);
    app.patch_ops(
        &gpath,
        json!([{"op":"replace","path":"members","value":[]}]),
    )
    .await
    .assert_status(200);
    assert!(app.member_ids(&gid).await.is_empty());
    assert!(app.group_ids_of_user(&u1).await.is_empty());
}

/// Behind a TLS-terminating proxy (Okta requires an https base URL), locations follow the
/// forwarded scheme and host — when the proxy is one of `trusted_proxies`.
#[tokio::test]
async fn locations_follow_forwarded_scheme_and_host() {
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let r = Resp::send(
        app.request(Method::POST, "/Users")
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "scim.example.com")
            .body(user_body("proxied@okta.local").to_string()),
    )
    .await;
    r.assert_status(201);
    let body = r.json();
    let id = id_of(&body);
    let want = format!("https://scim.example.com/scim/v2/Users/{id}");
    assert_eq!(body["meta"]["location"], json!(want));
    assert_eq!(r.header("location"), Some(want));
}

#[tokio::test]
async fn ids_are_case_sensitive() {
    let app = spawn_app().await;
    let id = app.create_user("case@okta.local").await;
    let upper = id.to_uppercase();
    assert_ne!(upper, id);
    app.get(&format!("/Users/{upper}"))
        .await
        .assert_error(404, None);
    let body = app
        .filter("/Users", &format!("id eq \"{upper}\""))
        .await
        .ok_json();
    assert_eq!(body["totalResults"], 0);
}
