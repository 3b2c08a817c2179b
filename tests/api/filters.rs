//! Filters over HTTP (RFC 7644 §3.4.2.2) against the local connector: operators, logic,
//! complex and URN paths, escaping, and the indexes staying right after updates.

use crate::helpers::*;
use serde_json::json;

/// Four users with distinct attributes; returns their ids in creation order.
async fn seed(app: &TestApp) -> Vec<String> {
    let bodies = [
        json!({"schemas":[CORE_USER, ENTERPRISE],"userName":"alice@example.com","externalId":"ext-A",
            "name":{"givenName":"Alice","familyName":"Smith"},"title":"Engineer","active":true,
            "emails":[{"type":"work","value":"alice@example.com","primary":true},{"type":"home","value":"alice@home.org"}],
            ENTERPRISE:{"employeeNumber":"1001","department":"R&D"}}),
        json!({"schemas":[CORE_USER, ENTERPRISE],"userName":"bob@example.com","externalId":"ext-B",
            "name":{"givenName":"Bob","familyName":"Smithers"},"active":false,
            "emails":[{"type":"home","value":"bob@example.com"}],
            ENTERPRISE:{"employeeNumber":"1002","department":"Sales"}}),
        json!({"schemas":[CORE_USER],"userName":"carol@other.org","externalId":"ext-C",
            "name":{"givenName":"Carol","familyName":"Jones"},"title":"Manager","active":true}),
        json!({"schemas":[CORE_USER],"userName":"first+tag@example.com","active":true}),
    ];
    let mut out = Vec::new();
    for b in bodies {
        out.push(id_of(&app.create_user_with(&b).await));
    }
    out
}

async fn matching(app: &TestApp, collection: &str, filter: &str) -> Vec<String> {
    let r = app.filter(collection, filter).await;
    assert_eq!(r.status.as_u16(), 200, "filter {filter:?}: {}", r.text);
    let mut got = ids(&list_resources(&r.json()));
    got.sort();
    got
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn operators_logic_and_paths() {
    let app = spawn_app().await;
    let u = seed(&app).await;
    let (a, b, c, d) = (&u[0], &u[1], &u[2], &u[3]);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("userName sw \"ALICE\"", sorted(&[a])),
        ("userName ew \"@example.com\"", sorted(&[a, b, d])),
        ("userName co \"OTHER\"", sorted(&[c])),
        ("userName ne \"alice@example.com\"", sorted(&[b, c, d])),
        ("title pr", sorted(&[a, c])),
        ("not (title pr)", sorted(&[b, d])),
        ("active eq false", sorted(&[b])),
        ("active eq true and title pr", sorted(&[a, c])),
        ("title eq \"Engineer\" or title eq \"Manager\"", sorted(&[a, c])),
        ("name.familyName sw \"smith\"", sorted(&[a, b])),
        ("name.givenName eq \"carol\"", sorted(&[c])),
        ("emails.value eq \"alice@home.org\"", sorted(&[a])),
        ("emails[type eq \"home\"]", sorted(&[a, b])),
        ("emails[type eq \"work\" and value co \"alice\"]", sorted(&[a])),
        ("emails[type eq \"work\"].value eq \"bob@example.com\"", vec![]),
        ("emails[type eq \"home\"].value eq \"bob@example.com\"", sorted(&[b])),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"1002\"",
            sorted(&[b]),
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"r&d\"",
            sorted(&[a]),
        ),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"carol@other.org\"",
            sorted(&[c]),
        ),
        ("externalId eq \"ext-C\"", sorted(&[c])),
        ("externalId eq \"ext-C\" or externalId eq \"ext-A\"", sorted(&[a, c])),
        ("id eq \"nope\"", vec![]),
        ("meta.resourceType eq \"User\"", sorted(&[a, b, c, d])),
        ("meta.lastModified gt \"2000-01-01T00:00:00Z\"", sorted(&[a, b, c, d])),
        ("meta.created lt \"2000-01-01T00:00:00Z\"", vec![]),
        ("userName eq \"first+tag@example.com\"", sorted(&[d])),
        ("(userName eq \"alice@example.com\") or (userName eq \"bob@example.com\" and active eq false)", sorted(&[a, b])),
        ("USERNAME EQ \"BOB@EXAMPLE.COM\"", sorted(&[b])),
    ];
    for (f, want) in cases {
        assert_eq!(matching(&app, "/Users", f).await, want, "filter {f:?}");
    }
    assert_eq!(
        matching(&app, "/Users", &format!("id eq \"{a}\"")).await,
        [a.clone()]
    );
    // `+` kept as a literal when Okta percent-encodes it.
    let body = app
        .get("/Users?filter=userName+eq+%22first%2Btag%40example.com%22")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [d.clone()]);
}

#[tokio::test]
async fn escaped_quotes_and_unicode_in_values() {
    let app = spawn_app().await;
    let g = app.create_group("R&D \"Core\" \\ Team").await;
    assert_eq!(
        matching(
            &app,
            "/Groups",
            "displayName eq \"R&D \\\"Core\\\" \\\\ Team\""
        )
        .await,
        [g.clone()]
    );
    let u = app.create_user("zoë.ßtraße@例え.jp").await;
    assert_eq!(
        matching(&app, "/Users", "userName eq \"ZOË.ßtraße@例え.JP\"").await,
        [u.clone()],
        "case-insensitive beyond ASCII"
    );
    let got = app.get(&format!("/Users/{u}")).await.ok_json();
    assert_eq!(got["userName"], "zoë.ßtraße@例え.jp", "stored as sent");
}

#[tokio::test]
async fn lookups_follow_updates() {
    let app = spawn_app().await;
    let u = seed(&app).await;
    let a = &u[0];
    let path = format!("/Users/{a}");
    // PATCH the matching attributes Entra and Okta look users up by.
    app.patch_ops(
        &path,
        json!([
            {"op":"replace","path":"userName","value":"alice.new@example.com"},
            {"op":"replace","path":"externalId","value":"ext-A2"},
            {"op":"replace","path":"emails[type eq \"work\"].value","value":"alice.new@example.com"}
        ]),
    )
    .await
    .assert_status(200);
    for (f, hit) in [
        ("userName eq \"alice@example.com\"", false),
        ("userName eq \"alice.new@example.com\"", true),
        ("externalId eq \"ext-A\"", false),
        ("externalId eq \"ext-A2\"", true),
        (
            "emails[type eq \"work\"].value eq \"alice@example.com\"",
            false,
        ),
        (
            "emails[type eq \"work\"].value eq \"alice.new@example.com\"",
            true,
        ),
        ("emails.value eq \"alice@home.org\"", true),
    ] {
        let got = matching(&app, "/Users", f).await;
        assert_eq!(!got.is_empty(), hit, "after PATCH, {f:?} -> {got:?}");
    }
    // And after a PUT that drops the home email.
    let mut body = app.get(&path).await.ok_json();
    body["emails"] = json!([{"type":"work","value":"alice.put@example.com"}]);
    body["externalId"] = json!("ext-A3");
    app.put(&path, &body).await.assert_status(200);
    for (f, hit) in [
        ("emails.value eq \"alice@home.org\"", false),
        ("emails.value eq \"alice.new@example.com\"", false),
        ("emails.value eq \"alice.put@example.com\"", true),
        ("externalId eq \"ext-A2\"", false),
        ("externalId eq \"ext-A3\"", true),
    ] {
        let got = matching(&app, "/Users", f).await;
        assert_eq!(!got.is_empty(), hit, "after PUT, {f:?} -> {got:?}");
    }
    // The freed userName can be taken by someone else.
    app.post("/Users", &user_body("alice@example.com"))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn renames_may_not_collide() {
    let app = spawn_app().await;
    let a = app.create_user("one@example.com").await;
    app.create_user("two@example.com").await;
    app.patch_ops(
        &format!("/Users/{a}"),
        json!([{"op":"replace","path":"userName","value":"TWO@example.com"}]),
    )
    .await
    .assert_error(409, Some("uniqueness"));
    let mut body = app.get(&format!("/Users/{a}")).await.ok_json();
    body["userName"] = json!("two@example.com");
    app.put(&format!("/Users/{a}"), &body)
        .await
        .assert_error(409, Some("uniqueness"));
    assert_eq!(
        app.get(&format!("/Users/{a}")).await.ok_json()["userName"],
        "one@example.com"
    );
    // Changing only the case of one's own userName is fine.
    app.patch_ops(
        &format!("/Users/{a}"),
        json!([{"op":"replace","path":"userName","value":"ONE@example.com"}]),
    )
    .await
    .assert_status(200);

    let g1 = app.create_group("Alpha").await;
    app.create_group("Beta").await;
    app.patch_ops(
        &format!("/Groups/{g1}"),
        json!([{"op":"replace","value":{"id":g1,"displayName":"beta"}}]),
    )
    .await
    .assert_error(409, Some("uniqueness"));
    let found = matching(&app, "/Groups", "displayName eq \"alpha\"").await;
    assert_eq!(found, [g1]);
}

#[tokio::test]
async fn groups_by_member_and_members_by_filter() {
    let app = spawn_app().await;
    let u = seed(&app).await;
    let g1 = id_of(&app.create_group_with_members("G1", &[&u[0], &u[1]]).await);
    let g2 = id_of(&app.create_group_with_members("G2", &[&u[1]]).await);
    assert_eq!(
        matching(&app, "/Groups", &format!("members[value eq \"{}\"]", u[0])).await,
        [g1.clone()]
    );
    assert_eq!(
        matching(&app, "/Groups", &format!("members.value eq \"{}\"", u[1])).await,
        sorted(&[&g1, &g2])
    );
    assert_eq!(
        matching(&app, "/Users", &format!("groups.value eq \"{g2}\"")).await,
        [u[1].clone()]
    );
    assert_eq!(
        matching(&app, "/Users", "groups pr").await,
        sorted(&[&u[0], &u[1]])
    );
    assert_eq!(
        matching(&app, "/Groups", "displayName sw \"g\" and members pr").await,
        sorted(&[&g1, &g2])
    );
}
