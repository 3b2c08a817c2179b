//! The local connector's data survives a restart on the same data dir: resources, ids, versions,
//! memberships, counts and the uniqueness index.

use crate::helpers::*;
use serde_json::{json, Value};

fn without_location(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("meta").and_then(Value::as_object_mut) {
        m.remove("location");
    }
    for key in ["groups", "members"] {
        if let Some(Value::Array(items)) = v.get_mut(key) {
            for i in items {
                if let Some(o) = i.as_object_mut() {
                    o.remove("$ref");
                }
            }
        }
    }
    v
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut app = spawn_app().await;
    let users = app.create_users("persist", 5).await;
    let g = app
        .create_group_with_members("Persisted", &[&users[0], &users[1], &users[2]])
        .await;
    let gid = id_of(&g);
    app.patch_ops(
        &format!("/Users/{}", users[4]),
        json!([{"op":"replace","value":{"active":false}}]),
    )
    .await;
    let mut before = Vec::new();
    for u in &users {
        before.push(app.get(&format!("/Users/{u}")).await.ok_json());
    }
    let group_before = app.get(&format!("/Groups/{gid}")).await.ok_json();

    app.restart().await;

    for (u, old) in users.iter().zip(&before) {
        let now = app.get(&format!("/Users/{u}")).await.ok_json();
        assert_eq!(
            without_location(now),
            without_location(old.clone()),
            "user {u}"
        );
    }
    let group_now = app.get(&format!("/Groups/{gid}")).await.ok_json();
    assert_eq!(
        without_location(group_now.clone()),
        without_location(group_before),
        "the group, members and version"
    );
    assert_eq!(member_values(&group_now).len(), 3);
    assert_eq!(app.group_ids_of_user(&users[0]).await, [gid.clone()]);
    assert!(app.group_ids_of_user(&users[3]).await.is_empty());

    // Counts and the list.
    let list = app.get("/Users").await.ok_json();
    assert_eq!(list["totalResults"], 5);
    let mut listed = ids(&list_resources(&list));
    listed.sort();
    let mut want = users.clone();
    want.sort();
    assert_eq!(listed, want, "ids are stable");
    assert_eq!(app.get("/Groups").await.ok_json()["totalResults"], 1);

    // The indexes: filters and uniqueness.
    let name = "persist00002@example.com";
    let found = app
        .filter(
            "/Users",
            &format!("userName eq \"{}\"", name.to_uppercase()),
        )
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&found)), [users[2].clone()]);
    app.post("/Users", &user_body(name))
        .await
        .assert_error(409, Some("uniqueness"));
    app.post(
        "/Groups",
        &json!({"schemas":[CORE_GROUP],"displayName":"persisted"}),
    )
    .await
    .assert_error(409, Some("uniqueness"));

    // Writes after the restart keep the counters right across another one.
    let extra = app.create_user("after-restart@example.com").await;
    app.delete(&format!("/Users/{}", users[0]))
        .await
        .assert_status(204);
    app.restart().await;
    let list = app.get("/Users").await.ok_json();
    assert_eq!(list["totalResults"], 5);
    assert_eq!(list_resources(&list).len(), 5);
    app.get(&format!("/Users/{extra}")).await.ok_json();
    app.get(&format!("/Users/{}", users[0]))
        .await
        .assert_error(404, None);
    let mut members = vec![users[1].clone(), users[2].clone()];
    members.sort();
    assert_eq!(app.member_ids(&gid).await, members);
}

#[tokio::test]
async fn a_restart_with_no_data_is_an_empty_directory() {
    let mut app = spawn_app().await;
    app.restart().await;
    let list = app.get("/Users").await.ok_json();
    assert_eq!(list["totalResults"], 0);
    app.create_user("first@example.com").await;
    assert_eq!(app.get("/Users").await.ok_json()["totalResults"], 1);
}

#[tokio::test]
async fn versions_are_stable_across_a_restart() {
    let mut app = spawn_app().await;
    let id = app.create_user("v@example.com").await;
    let gid = id_of(&app.create_group_with_members("V", &[&id]).await);
    let uv = app
        .get(&format!("/Users/{id}"))
        .await
        .header("etag")
        .unwrap();
    let gv = app
        .get(&format!("/Groups/{gid}"))
        .await
        .header("etag")
        .unwrap();
    app.restart().await;
    for (path, v) in [(format!("/Users/{id}"), uv), (format!("/Groups/{gid}"), gv)] {
        let r = Resp::send(
            app.request(reqwest::Method::GET, &path)
                .header("If-None-Match", &v),
        )
        .await;
        r.assert_status(304);
    }
}

#[tokio::test]
async fn two_tenants_keep_their_own_data_across_a_restart() {
    let toml = r#"
[[tenants]]
id = "a"
tokens = ["tok-a-persist-0001-0123456789abcdef"]
[tenants.vendor]
kind = "local"

[[tenants]]
id = "b"
tokens = ["tok-b-persist-0002-0123456789abcdef"]
[tenants.vendor]
kind = "local"
"#;
    let mut app = spawn_with_config(toml).await;
    let count = |app: &TestApp, t: &'static str, tok: &'static str| {
        let url = format!("{}/Users", app.tenant_base(t));
        let client = app.client.clone();
        async move {
            Resp::send(client.get(url).bearer_auth(tok)).await.ok_json()["totalResults"].clone()
        }
    };
    app.create_users("tenant-a", 3).await;
    let b_user = Resp::send(
        app.client
            .post(format!("{}/Users", app.tenant_base("b")))
            .bearer_auth("tok-b-persist-0002-0123456789abcdef")
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(user_body("tenant-a00000@example.com").to_string()),
    )
    .await;
    b_user.assert_status(201);
    app.restart().await;
    assert_eq!(
        count(&app, "a", "tok-a-persist-0001-0123456789abcdef").await,
        3
    );
    assert_eq!(
        count(&app, "b", "tok-b-persist-0002-0123456789abcdef").await,
        1
    );
    // Uniqueness is still per tenant.
    app.post("/Users", &user_body("tenant-a00000@example.com"))
        .await
        .assert_error(409, Some("uniqueness"));
    let r = app.get_root("/readyz").await;
    r.assert_status(200);
}
