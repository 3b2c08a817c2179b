//! Microsoft Entra ID provisioning, request by request (idp-behavior §2): its create body with
//! the enterprise extension and explicit nulls, its filters, its capitalised and flag-style PATCH
//! dialects, the manager as a bare string, group membership PATCHes, the validator's paging.

use crate::helpers::*;
use serde_json::{json, Value};

const EMPLOYEE_NUMBER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
const MANAGER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";

fn entra_create_body(user_name: &str, external_id: &str, email: &str) -> Value {
    json!({"schemas":[CORE_USER, ENTERPRISE],
        "externalId":external_id,"userName":user_name,"active":true,
        "emails":[{"primary":true,"type":"work","value":email}],
        "meta":{"resourceType":"User"},
        "name":{"formatted":"givenName familyName","familyName":"familyName","givenName":"givenName"},
        "addresses":null,"title":null,"manager":null,
        "roles":[],
        ENTERPRISE: {"employeeNumber":"701984","department":"R&D"}})
}

async fn entra_user(app: &TestApp, user_name: &str) -> String {
    let body = entra_create_body(
        user_name,
        &format!("ext-{user_name}"),
        &format!("{user_name}@testuser.com"),
    );
    id_of(&app.create_user_with(&body).await)
}

#[tokio::test]
async fn create_with_enterprise_extension_meta_and_nulls() {
    let app = spawn_app().await;
    let body = entra_create_body(
        "Test_User_dfeef4c5",
        "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "Test_User_dfeef4c5@testuser.com",
    );
    let r = app.post("/Users", &body).await;
    r.assert_status(201);
    let user = r.json();
    id_of(&user);
    assert_eq!(user["userName"], "Test_User_dfeef4c5");
    assert_eq!(user["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    assert_eq!(user[ENTERPRISE]["employeeNumber"], "701984");
    assert_eq!(user[ENTERPRISE]["department"], "R&D");
    let schemas = user["schemas"].as_array().unwrap();
    assert!(schemas.contains(&json!(CORE_USER)) && schemas.contains(&json!(ENTERPRISE)));
    // null is absent, client meta is ignored, and nothing is echoed as null.
    assert!(user.get("title").is_none(), "{user}");
    assert!(user.get("addresses").is_none(), "{user}");
    assert!(is_cleared(&user[ENTERPRISE]["manager"]), "{user}");
    assert!(is_cleared(&user["roles"]), "{user}");
    assert_eq!(find_null(&user, "$"), None, "{user}");
    assert!(is_datetime(&user["meta"]["created"]));
}

#[tokio::test]
async fn test_connection_probe_with_a_random_guid_is_an_empty_200() {
    let app = spawn_app().await;
    entra_user(&app, "someone").await;
    let guid = uuid::Uuid::new_v4();
    let body = app
        .filter("/Users", &format!("userName eq \"{guid}\""))
        .await
        .ok_json();
    assert_eq!(body["totalResults"], 0);
    assert_eq!(body["Resources"], json!([]));
    let body = app
        .filter("/Groups", &format!("displayName eq \"{guid}\""))
        .await
        .ok_json();
    assert_eq!(body["totalResults"], 0);
}

#[tokio::test]
async fn lookup_by_external_id_is_case_exact() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create_user_with(&entra_create_body("ext.user", "AbC-123", "ext.user@x.com"))
            .await,
    );
    let body = app
        .filter("/Users", "externalId eq \"AbC-123\"")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [id]);
    // RFC 7643 §3.1: externalId is caseExact.
    let body = app
        .filter("/Users", "externalId eq \"abc-123\"")
        .await
        .ok_json();
    assert_eq!(body["totalResults"], 0, "{body}");
}

#[tokio::test]
async fn lookup_by_work_email_value_path() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create_user_with(&entra_create_body(
            "mail.user",
            "x1",
            "Mail.User@Contoso.com",
        ))
        .await,
    );
    entra_user(&app, "other.user").await;
    let body = app
        .filter(
            "/Users",
            "emails[type eq \"work\"].value eq \"mail.user@contoso.com\"",
        )
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [id]);
    let body = app
        .filter(
            "/Users",
            "emails[type eq \"home\"].value eq \"mail.user@contoso.com\"",
        )
        .await
        .ok_json();
    assert_eq!(
        body["totalResults"], 0,
        "a home email was asked for: {body}"
    );
}

#[tokio::test]
async fn legacy_unquoted_filter_value_is_lenient_or_invalid_filter_never_5xx() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create_user_with(&entra_create_body("jyoung.user", "jyoung", "jy@x.com"))
            .await,
    );
    let r = app.get("/Users?filter=externalId+eq+jyoung").await;
    match r.status.as_u16() {
        200 => assert_eq!(ids(&list_resources(&r.json())), [id]),
        400 => {
            r.assert_error(400, Some("invalidFilter"));
        }
        other => panic!("expected 200 or 400 invalidFilter, got {other}: {}", r.text),
    }
}

#[tokio::test]
async fn capitalised_replace_operations() {
    let app = spawn_app().await;
    let id = entra_user(&app, "cap.user").await;
    let path = format!("/Users/{id}");
    let r = app
        .patch_ops(
            &path,
            json!([
                {"op":"Replace","path":"emails[type eq \"work\"].value","value":"updatedEmail@microsoft.com"},
                {"op":"Replace","path":"name.familyName","value":"updatedFamilyName"},
                {"op":"Replace","path":"userName","value":"5b50a1b2@testuser.com"},
                {"op":"Replace","path":EMPLOYEE_NUMBER,"value":"Eqpj"}
            ]),
        )
        .await;
    r.assert_status(200);
    let got = app.get(&path).await.ok_json();
    let emails = got["emails"].as_array().expect("emails");
    assert_eq!(
        emails.len(),
        1,
        "the work email is replaced, not added: {got}"
    );
    assert_eq!(emails[0]["value"], "updatedEmail@microsoft.com");
    assert_eq!(emails[0]["type"], "work");
    assert_eq!(got["name"]["familyName"], "updatedFamilyName");
    assert_eq!(got["name"]["givenName"], "givenName");
    assert_eq!(got["userName"], "5b50a1b2@testuser.com");
    assert_eq!(got[ENTERPRISE]["employeeNumber"], "Eqpj");
    assert_eq!(got[ENTERPRISE]["department"], "R&D");
    // The new userName is what the index finds now; the old one is gone.
    let b = app
        .filter("/Users", "userName eq \"5b50a1b2@testuser.com\"")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&b)), [id]);
    let b = app
        .filter("/Users", "userName eq \"cap.user\"")
        .await
        .ok_json();
    assert_eq!(b["totalResults"], 0);
}

#[tokio::test]
async fn add_of_a_single_valued_string() {
    let app = spawn_app().await;
    let id = entra_user(&app, "nick.user").await;
    let r = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([{"op":"Add","path":"nickName","value":"Babs"}]),
        )
        .await;
    assert_eq!(r.ok_json()["nickName"], "Babs");
}

#[tokio::test]
async fn disable_with_the_string_false_and_enable_with_true() {
    let app = spawn_app().await;
    let id = entra_user(&app, "disable.user").await;
    let path = format!("/Users/{id}");
    let body = app
        .patch_ops(
            &path,
            json!([{"op":"Replace","path":"active","value":"False"}]),
        )
        .await
        .ok_json();
    assert_eq!(body["active"], json!(false), "a boolean, not the string");
    let got = app.get(&path).await.ok_json();
    assert_eq!(got["active"], json!(false));
    let found = app
        .filter("/Users", "userName eq \"disable.user\"")
        .await
        .ok_json();
    assert_eq!(list_resources(&found)[0]["active"], json!(false));
    // Flag style: a real boolean.
    app.patch_ops(
        &path,
        json!([{"op":"replace","path":"active","value":true}]),
    )
    .await
    .assert_status(200);
    assert_eq!(app.get(&path).await.ok_json()["active"], json!(true));
    app.patch_ops(
        &path,
        json!([{"op":"Replace","path":"active","value":"False"}]),
    )
    .await
    .assert_status(200);
    let body = app
        .patch_ops(
            &path,
            json!([{"op":"Replace","path":"active","value":"True"}]),
        )
        .await
        .ok_json();
    assert_eq!(body["active"], json!(true));
}

#[tokio::test]
async fn flag_style_pathless_replace_with_dotted_and_urn_keys() {
    let app = spawn_app().await;
    let id = entra_user(&app, "flag.user").await;
    let path = format!("/Users/{id}");
    let body = app
        .patch_ops(
            &path,
            json!([{"op":"replace","value":{
                "displayName":"Bjfe","name.givenName":"Kkom","name.familyName":"Unua",
                EMPLOYEE_NUMBER:"Aklq"}}]),
        )
        .await
        .ok_json();
    for b in [body, app.get(&path).await.ok_json()] {
        assert_eq!(b["displayName"], "Bjfe", "{b}");
        assert_eq!(b["name"]["givenName"], "Kkom", "{b}");
        assert_eq!(b["name"]["familyName"], "Unua", "{b}");
        assert_eq!(b[ENTERPRISE]["employeeNumber"], "Aklq", "{b}");
        assert_eq!(b[ENTERPRISE]["department"], "R&D", "{b}");
        assert!(
            b.get("name.givenName").is_none(),
            "dotted key stored literally: {b}"
        );
        assert!(
            b.get(EMPLOYEE_NUMBER).is_none(),
            "URN key stored literally: {b}"
        );
    }
}

#[tokio::test]
async fn replace_of_a_missing_work_email_creates_it() {
    let app = spawn_app().await;
    let user = app
        .create_user_with(&json!({"schemas":[CORE_USER],"userName":"no.email","active":true}))
        .await;
    let id = id_of(&user);
    let body = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([{"op":"Replace","path":"emails[type eq \"work\"].value","value":"new@contoso.com"}]),
        )
        .await
        .ok_json();
    let emails = body["emails"].as_array().expect("emails created");
    assert_eq!(emails.len(), 1, "{body}");
    assert_eq!(emails[0]["type"], "work");
    assert_eq!(emails[0]["value"], "new@contoso.com");
    // And the lookup by work email finds it.
    let found = app
        .filter(
            "/Users",
            "emails[type eq \"work\"].value eq \"new@contoso.com\"",
        )
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&found)), [id]);
}

#[tokio::test]
async fn manager_as_a_bare_string_is_answered_in_the_complex_form() {
    let app = spawn_app().await;
    let boss = entra_user(&app, "boss").await;
    let boss2 = entra_user(&app, "boss2").await;
    let id = entra_user(&app, "employee").await;
    let path = format!("/Users/{id}");

    let body = app
        .patch_ops(&path, json!([{"op":"add","path":MANAGER,"value":boss}]))
        .await
        .ok_json();
    assert!(body[ENTERPRISE]["manager"].is_object(), "{body}");
    assert_eq!(body[ENTERPRISE]["manager"]["value"], json!(boss));
    assert_eq!(
        app.get(&path).await.ok_json()[ENTERPRISE]["manager"]["value"],
        json!(boss)
    );

    // Change (Replace), as the validator does.
    let body = app
        .patch_ops(
            &path,
            json!([{"op":"Replace","path":MANAGER,"value":boss2}]),
        )
        .await
        .ok_json();
    assert_eq!(body[ENTERPRISE]["manager"]["value"], json!(boss2));

    // The legacy documented form: a list with $ref and value.
    let body = app
        .patch_ops(
            &path,
            json!([{"op":"Add","path":MANAGER,"value":[{"$ref":null,"value":boss}]}]),
        )
        .await;
    let body = body.ok_json();
    assert_eq!(body[ENTERPRISE]["manager"]["value"], json!(boss), "{body}");

    // Remove.
    let body = app
        .patch_ops(&path, json!([{"op":"remove","path":MANAGER}]))
        .await
        .ok_json();
    assert!(is_cleared(&body[ENTERPRISE]["manager"]), "{body}");
    let got = app.get(&path).await.ok_json();
    assert!(is_cleared(&got[ENTERPRISE]["manager"]), "{got}");
    assert_eq!(
        got[ENTERPRISE]["employeeNumber"], "701984",
        "the rest stays"
    );
}

#[tokio::test]
async fn manager_removed_by_replace_with_empty() {
    let app = spawn_app().await;
    let boss = entra_user(&app, "boss").await;
    let id = entra_user(&app, "employee").await;
    let path = format!("/Users/{id}");
    app.patch_ops(&path, json!([{"op":"Add","path":MANAGER,"value":boss}]))
        .await
        .assert_status(200);
    app.patch_ops(&path, json!([{"op":"Replace","path":MANAGER,"value":""}]))
        .await
        .assert_status(200);
    let got = app.get(&path).await.ok_json();
    assert!(is_cleared(&got[ENTERPRISE]["manager"]), "{got}");
}

#[tokio::test]
async fn null_update_clears_optional_attributes() {
    let app = spawn_app().await;
    let id = entra_user(&app, "null.user").await;
    let path = format!("/Users/{id}");
    let set = json!([
        {"op":"Add","path":"title","value":"Boss"},
        {"op":"Add","path":"nickName","value":"Nick"},
        {"op":"Add","path":"preferredLanguage","value":"en-US"}
    ]);
    app.patch_ops(&path, set.clone()).await.assert_status(200);
    assert_eq!(app.get(&path).await.ok_json()["title"], "Boss");

    // First to "" ...
    let r = app
        .patch_ops(
            &path,
            json!([
                {"op":"Replace","path":"title","value":""},
                {"op":"Replace","path":"nickName","value":""},
                {"op":"Replace","path":EMPLOYEE_NUMBER,"value":""}
            ]),
        )
        .await;
    assert!(matches!(r.status.as_u16(), 200 | 204), "{}", r.text);
    let got = app.get(&path).await.ok_json();
    for (k, v) in [
        ("title", &got["title"]),
        ("nickName", &got["nickName"]),
        ("employeeNumber", &got[ENTERPRISE]["employeeNumber"]),
    ] {
        assert!(is_cleared(v), "{k} not cleared by \"\": {got}");
    }
    assert_eq!(got["preferredLanguage"], "en-US");

    // ... then to null.
    app.patch_ops(&path, set).await.assert_status(200);
    let r = app
        .patch_ops(
            &path,
            json!([
                {"op":"Replace","path":"title","value":null},
                {"op":"Replace","path":"nickName","value":null},
                {"op":"Replace","path":"preferredLanguage","value":null}
            ]),
        )
        .await;
    assert!(matches!(r.status.as_u16(), 200 | 204), "{}", r.text);
    let got = app.get(&path).await.ok_json();
    for k in ["title", "nickName", "preferredLanguage"] {
        assert!(is_cleared(&got[k]), "{k} not cleared by null: {got}");
    }
    assert_eq!(find_null(&got, "$"), None, "nulls are not rendered: {got}");
    assert_eq!(got["userName"], "null.user");
}

#[tokio::test]
async fn group_lifecycle_as_entra_sends_it() {
    let app = spawn_app().await;
    let u1 = entra_user(&app, "g.u1").await;
    let u2 = entra_user(&app, "g.u2").await;
    let u3 = entra_user(&app, "g.u3").await;

    // Query first, excluding members.
    let q = "/Groups?excludedAttributes=members&filter=displayName+eq+%22Entra+Group%22";
    assert_eq!(app.get(q).await.ok_json()["totalResults"], 0);

    // Create: ADSCIM schema URN, client meta, no members.
    let r = app
        .post(
            "/Groups",
            &json!({"schemas":[CORE_GROUP, ADSCIM_GROUP],
                "externalId":"8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName":"Entra Group","meta":{"resourceType":"Group"}}),
        )
        .await;
    r.assert_status(201);
    let g = r.json();
    let gid = id_of(&g);
    assert_eq!(g["displayName"], "Entra Group");
    assert_eq!(g["externalId"], "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159");
    assert!(is_cleared(&g["members"]), "{g}");
    let gpath = format!("/Groups/{gid}");

    // Add several members in one operation, with "$ref": null.
    let body = app
        .patch_ops(
            &gpath,
            json!([{"op":"Add","path":"members","value":[
                {"$ref":null,"value":u1},{"$ref":null,"value":u2},{"$ref":null,"value":u3}]}]),
        )
        .await;
    assert!(matches!(body.status.as_u16(), 200 | 204), "{}", body.text);
    let mut all = vec![u1.clone(), u2.clone(), u3.clone()];
    all.sort();
    assert_eq!(app.member_ids(&gid).await, all);

    // The lookup, members excluded: found, and no members key.
    let found = app.get(q).await.ok_json();
    let found = list_resources(&found);
    assert_eq!(ids(&found), [gid.clone()]);
    assert!(found[0].get("members").is_none(), "{}", found[0]);
    let one = app
        .get(&format!("{gpath}?excludedAttributes=members"))
        .await
        .ok_json();
    assert!(one.get("members").is_none(), "{one}");
    assert_eq!(one["displayName"], "Entra Group");

    // Remove with a value list (non-RFC, Entra's default).
    app.patch_ops(
        &gpath,
        json!([{"op":"Remove","path":"members","value":[{"$ref":null,"value":u1}]}]),
    )
    .await
    .assert_status(200);
    let mut rest = vec![u2.clone(), u3.clone()];
    rest.sort();
    assert_eq!(app.member_ids(&gid).await, rest);

    // Flag style: remove by filter.
    app.patch_ops(
        &gpath,
        json!([{"op":"remove","path":format!("members[value eq \"{u2}\"]")}]),
    )
    .await
    .assert_status(200);
    assert_eq!(app.member_ids(&gid).await, [u3.clone()]);

    // Rename.
    let r = app
        .patch_ops(
            &gpath,
            json!([{"op":"Replace","path":"displayName","value":"Entra Group 2"}]),
        )
        .await;
    assert!(matches!(r.status.as_u16(), 200 | 204), "{}", r.text);
    assert_eq!(
        app.get(&gpath).await.ok_json()["displayName"],
        "Entra Group 2"
    );

    let r = app.delete(&gpath).await;
    r.assert_status(204);
    app.get(&gpath).await.assert_error(404, None);
}

#[tokio::test]
async fn validator_pagination_echoes_start_index() {
    let app = spawn_app().await;
    let created = app.create_users("page", 12).await;
    let mut seen = Vec::new();
    for (start, want) in [(1, 5), (6, 5), (11, 2)] {
        let body = app
            .get(&format!("/Users?startIndex={start}&count=5"))
            .await
            .ok_json();
        let rs = list_resources(&body);
        assert_eq!(body["startIndex"], start, "{body}");
        assert_eq!(body["itemsPerPage"], want, "{body}");
        assert_eq!(body["totalResults"], 12);
        seen.extend(ids(&rs));
    }
    let mut a = seen.clone();
    a.sort();
    let mut b = created;
    b.sort();
    assert_eq!(a, b, "the three pages are the 12 users, once each");
}

#[tokio::test]
async fn the_aad_feature_flag_query_parameter_is_ignored() {
    let app = spawn_app().await;
    // Entra appends the flag to the tenant URL, so every request carries it.
    let r = app.get("/Users?aadOptscim062020").await;
    r.ok_json();
    let r = app
        .post(
            "/Users?aadOptscim062020",
            &entra_create_body("flag.q", "q1", "q@x.com"),
        )
        .await;
    r.assert_status(201);
    let id = id_of(&r.json());
    let r = app
        .get("/Users?aadOptscim062020&filter=userName+eq+%22flag.q%22")
        .await;
    assert_eq!(ids(&list_resources(&r.ok_json())), [id.clone()]);
    app.patch_ops(
        &format!("/Users/{id}?aadOptscim062020"),
        json!([{"op":"replace","path":"active","value":false}]),
    )
    .await
    .assert_status(200);
    app.get(&format!("/Users/{id}?aadOptscim062020=true"))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn delete_user_is_204_then_404_and_the_user_leaves_its_groups() {
    let app = spawn_app().await;
    let gone = entra_user(&app, "gone").await;
    let stays = entra_user(&app, "stays").await;
    let g = app
        .create_group_with_members("Team", &[&gone, &stays])
        .await;
    let gid = id_of(&g);
    let r = app.delete(&format!("/Users/{gone}")).await;
    r.assert_status(204);
    assert!(r.text.is_empty());
    app.get(&format!("/Users/{gone}"))
        .await
        .assert_error(404, None);
    app.delete(&format!("/Users/{gone}"))
        .await
        .assert_error(404, None);
    assert_eq!(app.member_ids(&gid).await, [stays.clone()]);
    assert_eq!(app.group_ids_of_user(&stays).await, [gid]);
    let all = app.get("/Users").await.ok_json();
    assert_eq!(all["totalResults"], 1);
    let body = app.filter("/Users", "userName eq \"gone\"").await.ok_json();
    assert_eq!(body["totalResults"], 0);
    // The userName is free again.
    app.post("/Users", &entra_create_body("gone", "again", "g@x.com"))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn manager_removed_by_a_value_filter_path() {
    let app = spawn_app().await;
    let boss = entra_user(&app, "boss").await;
    let id = entra_user(&app, "employee").await;
    let path = format!("/Users/{id}");
    app.patch_ops(&path, json!([{"op":"Add","path":MANAGER,"value":boss}]))
        .await
        .assert_status(200);
    // thomaspoignant/scim-patch#453: how the removal arrives.
    let r = app
        .patch_ops(
            &path,
            json!([{"op":"remove","path":format!("manager[value eq \"{boss}\"]")}]),
        )
        .await;
    r.assert_status(200);
    let got = app.get(&path).await.ok_json();
    assert!(is_cleared(&got[ENTERPRISE]["manager"]), "{got}");
}

#[tokio::test]
async fn add_on_a_missing_work_email_creates_it_too() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create_user_with(&json!({"schemas":[CORE_USER],"userName":"add.email"}))
            .await,
    );
    let body = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([{"op":"Add","path":"emails[type eq \"work\"].value","value":"added@contoso.com"}]),
        )
        .await
        .ok_json();
    assert_eq!(
        body["emails"],
        json!([{"type":"work","value":"added@contoso.com"}]),
        "{body}"
    );
}

#[tokio::test]
async fn remove_with_a_value_on_a_filtered_email_path() {
    let app = spawn_app().await;
    let id = entra_user(&app, "rm.email").await;
    let r = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([{"op":"Remove","path":"emails[type eq \"work\"].value","value":"rm.email@testuser.com"}]),
        )
        .await;
    r.assert_status(200);
    let got = app.get(&format!("/Users/{id}")).await.ok_json();
    let still = got["emails"]
        .as_array()
        .map(|a| a.iter().any(|e| e["value"] == "rm.email@testuser.com"))
        .unwrap_or(false);
    assert!(!still, "{got}");
}

#[tokio::test]
async fn boolean_strings_are_not_coerced_on_string_attributes() {
    let app = spawn_app().await;
    let id = entra_user(&app, "strings").await;
    let body = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([
                {"op":"Replace","path":"title","value":"True"},
                {"op":"Replace","path":"nickName","value":"False"},
                {"op":"Replace","path":EMPLOYEE_NUMBER,"value":"007"}
            ]),
        )
        .await
        .ok_json();
    assert_eq!(body["title"], json!("True"));
    assert_eq!(body["nickName"], json!("False"));
    assert_eq!(body[ENTERPRISE]["employeeNumber"], json!("007"));
}

#[tokio::test]
async fn restore_after_disable_keeps_memberships() {
    let app = spawn_app().await;
    let id = entra_user(&app, "restored").await;
    let gid = id_of(&app.create_group_with_members("Kept", &[&id]).await);
    let path = format!("/Users/{id}");
    app.patch_ops(
        &path,
        json!([{"op":"Replace","path":"active","value":"False"}]),
    )
    .await
    .assert_status(200);
    assert_eq!(
        app.member_ids(&gid).await,
        [id.clone()],
        "disable is not leave"
    );
    app.patch_ops(
        &path,
        json!([{"op":"Replace","path":"active","value":"True"}]),
    )
    .await
    .assert_status(200);
    assert_eq!(app.group_ids_of_user(&id).await, [gid]);
}

#[tokio::test]
async fn roles_sent_as_a_json_string_are_unwrapped() {
    let app = spawn_app().await;
    let id = entra_user(&app, "roles").await;
    let role = "{\"id\":\"7a3b\",\"value\":\"25\",\"displayName\":\"Role1234\"}";
    let body = app
        .patch_ops(
            &format!("/Users/{id}"),
            json!([{"op":"Add","path":"roles","value":[{"value":role}]}]),
        )
        .await
        .ok_json();
    // The element serialized as a JSON string is unwrapped (value.rs): the role value is "25".
    assert_eq!(
        body["roles"],
        json!([{"value":"25","display":"Role1234"}]),
        "{body}"
    );
    // POST form: a primary role object.
    let created = app
        .create_user_with(&json!({"schemas":[CORE_USER],"userName":"roles2",
            "roles":[{"primary":true,"type":"WindowsAzureActiveDirectoryRole","value":"Admin"}]}))
        .await;
    assert_eq!(created["roles"][0]["value"], "Admin");
    assert_eq!(created["roles"][0]["primary"], true);
}

/// Entra's default mappings address phone numbers and addresses by type as well; a Replace on a
/// missing entry creates it, and a second attribute of the same entry lands in the same element.
#[tokio::test]
async fn replace_on_missing_typed_phone_and_address_entries_creates_them() {
    let app = spawn_app().await;
    let id = id_of(
        &app.create_user_with(&json!({"schemas":[CORE_USER],"userName":"typed.entries"}))
            .await,
    );
    let path = format!("/Users/{id}");
    app.patch_ops(
        &path,
        json!([
            {"op":"Replace","path":"phoneNumbers[type eq \"mobile\"].value","value":"+1 555 0100"},
            {"op":"Replace","path":"phoneNumbers[type eq \"work\"].value","value":"+1 555 0199"},
            {"op":"Replace","path":"addresses[type eq \"work\"].streetAddress","value":"1 Main St"},
            {"op":"Replace","path":"addresses[type eq \"work\"].locality","value":"Springfield"},
            {"op":"Replace","path":"addresses[type eq \"work\"].postalCode","value":"12345"}
        ]),
    )
    .await
    .assert_status(200);
    let got = app.get(&path).await.ok_json();
    let phones = got["phoneNumbers"].as_array().expect("phoneNumbers");
    assert_eq!(phones.len(), 2, "{got}");
    assert!(phones
        .iter()
        .any(|p| p["type"] == "mobile" && p["value"] == "+1 555 0100"));
    assert!(phones
        .iter()
        .any(|p| p["type"] == "work" && p["value"] == "+1 555 0199"));
    let addrs = got["addresses"].as_array().expect("addresses");
    assert_eq!(addrs.len(), 1, "one work address, not three: {got}");
    assert_eq!(addrs[0]["type"], "work");
    assert_eq!(addrs[0]["streetAddress"], "1 Main St");
    assert_eq!(addrs[0]["locality"], "Springfield");
    assert_eq!(addrs[0]["postalCode"], "12345");
    // Replacing again updates in place.
    app.patch_ops(
        &path,
        json!([{"op":"Replace","path":"addresses[type eq \"work\"].locality","value":"Shelbyville"}]),
    )
    .await
    .assert_status(200);
    let got = app.get(&path).await.ok_json();
    assert_eq!(got["addresses"].as_array().map(Vec::len), Some(1));
    assert_eq!(got["addresses"][0]["locality"], "Shelbyville");
    assert_eq!(got["addresses"][0]["streetAddress"], "1 Main St");
}
