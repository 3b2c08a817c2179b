//! Groups at scale and membership semantics: 2,000 members added in PATCH batches of 200,
//! removal by filter and by value list, deletes that cascade to memberships, unknown member ids,
//! and User.groups being read-only.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Instant;

fn members_of(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|i| json!({"value": i})).collect())
}

#[tokio::test]
async fn a_group_of_2000_members() {
    let app = spawn_app().await;
    let users = app.create_users("scale", 2000).await;
    let gid = app.create_group("Everyone").await;
    let gpath = format!("/Groups/{gid}");

    for batch in users.chunks(200) {
        let r = app
            .patch_ops(
                &format!("{gpath}?excludedAttributes=members"),
                json!([{"op":"add","path":"members","value":members_of(batch)}]),
            )
            .await;
        let body = r.ok_json();
        assert!(
            body.get("members").is_none(),
            "excludedAttributes applies to PATCH responses"
        );
    }

    let started = Instant::now();
    let slim = app
        .get(&format!("{gpath}?excludedAttributes=members"))
        .await
        .ok_json();
    assert!(slim.get("members").is_none(), "{slim}");
    assert_eq!(slim["displayName"], "Everyone");
    let slim_took = started.elapsed();

    let full = app.get(&gpath).await.ok_json();
    let listed = member_values(&full);
    assert_eq!(listed.len(), 2000);
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), 2000, "no duplicates");
    let mut want = users.clone();
    want.sort();
    assert_eq!(listed, want);
    assert!(
        slim_took.as_millis() < 500,
        "GET without members should not load them: {slim_took:?}"
    );

    // Adding the same members again is not a duplicate.
    app.patch_ops(
        &format!("{gpath}?excludedAttributes=members"),
        json!([{"op":"add","path":"members","value":members_of(&users[..200])}]),
    )
    .await
    .assert_status(200);
    assert_eq!(app.member_ids(&gid).await.len(), 2000);

    // Remove five by filter, in one PATCH of five operations.
    let by_filter: Vec<Value> = users[..5]
        .iter()
        .map(|u| json!({"op":"remove","path":format!("members[value eq \"{u}\"]")}))
        .collect();
    app.patch_ops(
        &format!("{gpath}?excludedAttributes=members"),
        Value::Array(by_filter),
    )
    .await
    .assert_status(200);
    // Remove 100 more with a value list (Entra).
    app.patch_ops(
        &format!("{gpath}?excludedAttributes=members"),
        json!([{"op":"Remove","path":"members","value":members_of(&users[5..105])}]),
    )
    .await
    .assert_status(200);
    let left = app.member_ids(&gid).await;
    assert_eq!(left.len(), 1895);
    let left: HashSet<String> = left.into_iter().collect();
    assert!(users[..105].iter().all(|u| !left.contains(u)));
    assert!(users[105..].iter().all(|u| left.contains(u)));
    assert!(app.group_ids_of_user(&users[0]).await.is_empty());
    assert_eq!(app.group_ids_of_user(&users[1999]).await, [gid.clone()]);

    // Deleting a member user takes it out of the group.
    app.delete(&format!("/Users/{}", users[1999]))
        .await
        .assert_status(204);
    let left = app.member_ids(&gid).await;
    assert_eq!(left.len(), 1894);
    assert!(!left.contains(&users[1999]));

    // The list with members excluded stays light.
    let listed = app
        .get("/Groups?excludedAttributes=members")
        .await
        .ok_json();
    let rs = list_resources(&listed);
    assert_eq!(rs.len(), 1);
    assert!(rs[0].get("members").is_none());
}

#[tokio::test]
async fn unknown_member_ids_are_accepted_and_not_listed() {
    let app = spawn_app().await;
    let u = app.create_user("real@example.com").await;
    let gid = app.create_group("Sanity").await;
    let gpath = format!("/Groups/{gid}");
    let r = app
        .patch_ops(
            &gpath,
            json!([{"op":"add","path":"members","value":[{"value":"fake-member-id"},{"value":u}]}]),
        )
        .await;
    let body = r.ok_json();
    assert_eq!(member_values(&body), [u.clone()], "{body}");
    assert_eq!(app.member_ids(&gid).await, [u.clone()]);
    // A filter on members finds the group by its real member only.
    let found = app
        .filter("/Groups", &format!("members[value eq \"{u}\"]"))
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&found)), [gid.clone()]);
    let found = app
        .filter("/Groups", "members[value eq \"fake-member-id\"]")
        .await
        .ok_json();
    assert_eq!(found["totalResults"], 0);

    // scim-sanity's `remove members` without a filter: all of them, 200.
    let body = app
        .patch_ops(&gpath, json!([{"op":"remove","path":"members"}]))
        .await
        .ok_json();
    assert!(is_cleared(&body["members"]), "{body}");
    assert!(app.member_ids(&gid).await.is_empty());
    assert!(app.group_ids_of_user(&u).await.is_empty());

    // Removing a member that is not there: 200, no change.
    app.patch_ops(
        &gpath,
        json!([{"op":"remove","path":"members[value eq \"not-a-member\"]"}]),
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn user_groups_is_read_only() {
    let app = spawn_app().await;
    let u = app.create_user("ro@example.com").await;
    let gid = app.create_group("ReadOnly").await;
    let path = format!("/Users/{u}");
    for op in ["add", "replace"] {
        app.patch_ops(
            &path,
            json!([{"op":op,"path":"groups","value":[{"value":gid}]}]),
        )
        .await
        .assert_error(400, Some("mutability"));
    }
    app.patch_ops(&path, json!([{"op":"remove","path":"groups"}]))
        .await
        .assert_error(400, Some("mutability"));
    assert!(app.group_ids_of_user(&u).await.is_empty());
    assert!(app.member_ids(&gid).await.is_empty());

    // In POST and PUT bodies, `groups` is ignored (Okta sends it), not applied.
    let mut body = user_body("ro2@example.com");
    body["groups"] = json!([{"value": gid}]);
    let created = app.create_user_with(&body).await;
    assert!(is_cleared(&created["groups"]), "{created}");
    let u2 = id_of(&created);
    let mut put = app.get(&format!("/Users/{u2}")).await.ok_json();
    put["groups"] = json!([{"value": gid}]);
    let r = app.put(&format!("/Users/{u2}"), &put).await;
    assert!(is_cleared(&r.ok_json()["groups"]));
    assert!(app.member_ids(&gid).await.is_empty());
}

#[tokio::test]
async fn deleting_a_group_clears_user_groups_and_the_name() {
    let app = spawn_app().await;
    let u = app.create_user("member@example.com").await;
    let g1 = id_of(&app.create_group_with_members("One", &[&u]).await);
    let g2 = id_of(&app.create_group_with_members("Two", &[&u]).await);
    let mut both = vec![g1.clone(), g2.clone()];
    both.sort();
    assert_eq!(app.group_ids_of_user(&u).await, both);
    app.delete(&format!("/Groups/{g1}"))
        .await
        .assert_status(204);
    assert_eq!(app.group_ids_of_user(&u).await, [g2.clone()]);
    // The displayName is free again; a duplicate name is not.
    app.create_group("One").await;
    app.post(
        "/Groups",
        &json!({"schemas":[CORE_GROUP],"displayName":"two"}),
    )
    .await
    .assert_error(409, Some("uniqueness"));
}

#[tokio::test]
async fn groups_can_be_members_of_groups() {
    let app = spawn_app().await;
    let inner = app.create_group("Inner").await;
    let outer = app.create_group("Outer").await;
    let body = app
        .patch_ops(
            &format!("/Groups/{outer}"),
            json!([{"op":"add","path":"members","value":[{"value":inner}]}]),
        )
        .await
        .ok_json();
    let members = body["members"].as_array().expect("members");
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["type"], "Group");
    assert!(members[0]["$ref"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/Groups/{inner}")));
    // A group cannot contain itself.
    app.patch_ops(
        &format!("/Groups/{outer}"),
        json!([{"op":"add","path":"members","value":[{"value":outer}]}]),
    )
    .await
    .assert_status(200);
    assert_eq!(app.member_ids(&outer).await, [inner]);
}
