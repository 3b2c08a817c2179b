//! Discovery (RFC 7643 §5–7, RFC 7644 §4) and searching with projections: what scim2-tester,
//! Entra's validator and gallery apps read before anything else.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

const SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

async fn anon_get(app: &TestApp, path: &str) -> Resp {
    Resp::send(app.anonymous(Method::GET, path)).await
}

#[tokio::test]
async fn service_provider_config_is_truthful_and_needs_no_token() {
    let app = spawn_app().await;
    let spc = anon_get(&app, "/ServiceProviderConfig").await.ok_json();
    assert_eq!(spc["schemas"], json!([SPC]));
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert!(spc["filter"]["maxResults"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(spc["etag"]["supported"], true);
    assert_eq!(spc["sort"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert!(spc["changePassword"]["supported"].is_boolean());
    let schemes = spc["authenticationSchemes"].as_array().expect("schemes");
    assert!(!schemes.is_empty());
    assert_eq!(schemes[0]["type"], "oauthbearertoken");
    assert_eq!(find_null(&spc, "$"), None);
    // With a token it is the same document.
    assert_eq!(app.get("/ServiceProviderConfig").await.ok_json(), spc);
}

#[tokio::test]
async fn resource_types() {
    let app = spawn_app().await;
    let body = anon_get(&app, "/ResourceTypes").await.ok_json();
    let rts = list_resources(&body);
    assert_eq!(body["totalResults"], 2);
    let user = rts.iter().find(|r| r["id"] == "User").expect("User");
    let group = rts.iter().find(|r| r["id"] == "Group").expect("Group");
    assert_eq!(user["schemas"], json!([RESOURCE_TYPE]));
    assert_eq!(user["endpoint"], "/Users");
    assert_eq!(user["schema"], CORE_USER);
    assert!(user["schemaExtensions"]
        .as_array()
        .expect("schemaExtensions")
        .iter()
        .any(|e| e["schema"] == ENTERPRISE && e["required"] == false));
    assert_eq!(group["endpoint"], "/Groups");
    assert_eq!(group["schema"], CORE_GROUP);
    assert_eq!(find_null(&body, "$"), None);

    let one = anon_get(&app, "/ResourceTypes/User").await.ok_json();
    assert_eq!(&one, user);
    anon_get(&app, "/ResourceTypes/Group").await.ok_json();
    anon_get(&app, "/ResourceTypes/Nope")
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn schemas_are_a_camel_case_list_without_nulls() {
    let app = spawn_app().await;
    let body = anon_get(&app, "/Schemas").await.ok_json();
    let schemas = list_resources(&body);
    assert_eq!(
        find_null(&body, "$"),
        None,
        "Entra rejects nulls in /Schemas"
    );
    let ids: Vec<&str> = schemas.iter().filter_map(|s| s["id"].as_str()).collect();
    for want in [CORE_USER, ENTERPRISE, CORE_GROUP] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    fn check_attrs(attrs: &Value, at: &str) {
        for a in attrs
            .as_array()
            .unwrap_or_else(|| panic!("{at}: attributes"))
        {
            let name = a["name"].as_str().expect("name");
            let at = format!("{at}.{name}");
            let ty = a["type"].as_str().expect("type");
            assert!(
                [
                    "string",
                    "boolean",
                    "decimal",
                    "integer",
                    "dateTime",
                    "binary",
                    "reference",
                    "complex"
                ]
                .contains(&ty),
                "{at}: type {ty}"
            );
            assert!(a["multiValued"].is_boolean(), "{at}");
            assert!(a["required"].is_boolean(), "{at}");
            assert!(
                ["readOnly", "readWrite", "immutable", "writeOnly"]
                    .contains(&a["mutability"].as_str().unwrap_or("")),
                "{at}: mutability {}",
                a["mutability"]
            );
            assert!(
                ["always", "never", "default", "request"]
                    .contains(&a["returned"].as_str().unwrap_or("")),
                "{at}: returned {}",
                a["returned"]
            );
            if let Some(u) = a.get("uniqueness") {
                assert!(
                    ["none", "server", "global"].contains(&u.as_str().unwrap_or("")),
                    "{at}"
                );
            }
            if ty == "complex" {
                check_attrs(&a["subAttributes"], &at);
            }
        }
    }
    for s in &schemas {
        assert_eq!(s["schemas"], json!([SCHEMA]), "{}", s["id"]);
        check_attrs(&s["attributes"], s["id"].as_str().unwrap());
    }
    let user = schemas.iter().find(|s| s["id"] == CORE_USER).unwrap();
    let attr = |name: &str| {
        user["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("User.{name} not published"))
    };
    assert_eq!(attr("userName")["required"], true);
    assert_eq!(attr("userName")["uniqueness"], "server");
    assert_eq!(attr("password")["returned"], "never");
    assert_eq!(attr("groups")["mutability"], "readOnly");
    assert_eq!(attr("emails")["multiValued"], true);
    let ent = schemas.iter().find(|s| s["id"] == ENTERPRISE).unwrap();
    let manager = ent["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "manager")
        .expect("manager");
    assert_eq!(manager["type"], "complex");
    assert!(manager["subAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "value"));
}

#[tokio::test]
async fn one_schema_by_urn_and_unknown_ids() {
    let app = spawn_app().await;
    for urn in [CORE_USER, ENTERPRISE, CORE_GROUP] {
        let s = anon_get(&app, &format!("/Schemas/{urn}")).await.ok_json();
        assert_eq!(s["id"], urn);
        assert!(s["attributes"].is_array());
    }
    anon_get(&app, "/Schemas/urn:example:nope")
        .await
        .assert_error(404, None);
}

#[tokio::test]
async fn get_with_attributes_and_excluded_attributes() {
    let app = spawn_app().await;
    let id = app.create_user("proj@example.com").await;
    let only = app
        .get(&format!("/Users/{id}?attributes=userName"))
        .await
        .ok_json();
    assert_eq!(only["id"], json!(id), "id is returned always");
    assert_eq!(only["userName"], "proj@example.com");
    assert!(
        only.get("emails").is_none() && only.get("name").is_none(),
        "{only}"
    );
    let sub = app
        .get(&format!("/Users/{id}?attributes=name.givenName"))
        .await
        .ok_json();
    assert_eq!(sub["name"], json!({"givenName": "Given"}), "{sub}");
    let without = app
        .get(&format!("/Users/{id}?excludedAttributes=emails,name"))
        .await
        .ok_json();
    assert!(without.get("emails").is_none() && without.get("name").is_none());
    assert_eq!(without["userName"], "proj@example.com");
    // `id` cannot be excluded.
    let still = app
        .get(&format!("/Users/{id}?excludedAttributes=id"))
        .await
        .ok_json();
    assert_eq!(still["id"], json!(id));
    // On lists, too, and by URN-qualified name.
    let list = app
        .get(&format!("/Users?attributes={CORE_USER}:userName"))
        .await
        .ok_json();
    let rs = list_resources(&list);
    assert_eq!(rs[0]["userName"], "proj@example.com");
    assert!(rs[0].get("emails").is_none(), "{}", rs[0]);
    // On POST responses.
    let r = app
        .post(
            "/Users?attributes=userName",
            &user_body("proj2@example.com"),
        )
        .await;
    r.assert_status(201);
    let created = r.json();
    assert!(created.get("emails").is_none(), "{created}");
    assert!(created["id"].is_string());
}

#[tokio::test]
async fn search_at_the_root_and_per_resource() {
    let app = spawn_app().await;
    let u = app.create_user("searched@example.com").await;
    app.create_user("other@example.com").await;
    let g = app.create_group("Searched Group").await;

    // Root .search: Users and Groups, projected.
    let r = app
        .post(
            "/.search",
            &json!({"schemas":[SEARCH_REQUEST],"attributes":["displayName"],"startIndex":1,"count":10}),
        )
        .await;
    let body = r.ok_json();
    let rs = list_resources(&body);
    assert_eq!(body["totalResults"], 3);
    let found: Vec<String> = ids(&rs);
    assert!(found.contains(&u) && found.contains(&g), "{body}");
    for res in &rs {
        assert!(res.get("userName").is_none(), "{res}");
        assert!(res.get("emails").is_none(), "{res}");
        assert!(res["displayName"].is_string(), "{res}");
    }

    // Per resource: a filter, attributes, excludedAttributes.
    let r = app
        .post(
            "/Users/.search",
            &json!({"schemas":[SEARCH_REQUEST],
                "filter":"userName eq \"searched@example.com\"",
                "attributes":["userName","emails"]}),
        )
        .await;
    let body = r.ok_json();
    let rs = list_resources(&body);
    assert_eq!(ids(&rs), [u.clone()]);
    assert_eq!(rs[0]["userName"], "searched@example.com");
    assert!(rs[0]["emails"].is_array());
    assert!(rs[0].get("name").is_none(), "{}", rs[0]);

    let body = app
        .post(
            "/Users/.search",
            &json!({"schemas":[SEARCH_REQUEST],"excludedAttributes":["emails"],"count":1}),
        )
        .await
        .ok_json();
    let rs = list_resources(&body);
    assert_eq!(body["totalResults"], 2);
    assert_eq!(rs.len(), 1);
    assert!(rs[0].get("emails").is_none());
    assert!(rs[0]["userName"].is_string());

    let body = app
        .post(
            "/Groups/.search",
            &json!({"schemas":[SEARCH_REQUEST],"filter":"displayName eq \"searched group\""}),
        )
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [g]);

    // .search needs a token.
    let r = Resp::send(
        app.anonymous(Method::POST, "/Users/.search")
            .header("Content-Type", SCIM_CONTENT_TYPE)
            .body(json!({"schemas":[SEARCH_REQUEST]}).to_string()),
    )
    .await;
    r.assert_error(401, None);
}

#[tokio::test]
async fn a_new_resource_is_on_the_first_page_of_an_unfiltered_list() {
    // scim2-tester: "GET list without filter must contain the new resource on its first page".
    let app = spawn_app().await;
    app.create_users("first-page", 20).await;
    let id = app.create_user("newest@example.com").await;
    let body = app.get("/Users").await.ok_json();
    assert!(ids(&list_resources(&body)).contains(&id));
    let gid = app.create_group("Newest").await;
    let body = app.get("/Groups").await.ok_json();
    assert!(ids(&list_resources(&body)).contains(&gid));
}

#[tokio::test]
async fn sorting_by_user_name() {
    let app = spawn_app().await;
    for n in ["charlie@x.com", "Alice@x.com", "bob@x.com"] {
        app.create_user(n).await;
    }
    let body = app
        .get("/Users?sortBy=userName&sortOrder=ascending")
        .await
        .ok_json();
    let names: Vec<String> = list_resources(&body)
        .iter()
        .map(|r| r["userName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Alice@x.com", "bob@x.com", "charlie@x.com"]);
    let body = app
        .get("/Users?sortBy=userName&sortOrder=descending&count=1")
        .await
        .ok_json();
    assert_eq!(list_resources(&body)[0]["userName"], "charlie@x.com");
}

#[tokio::test]
async fn root_search_with_a_filter_and_paging_across_types() {
    let app = spawn_app().await;
    let u = app.create_user("root.search@example.com").await;
    let g = app.create_group("Root Search").await;
    // A filter on an attribute only Users have: the user, not a 400 because Groups lack it.
    let body = app
        .post(
            "/.search",
            &json!({"schemas":[SEARCH_REQUEST],"filter":"userName eq \"root.search@example.com\""}),
        )
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [u.clone()]);
    // A filter both types can answer.
    let body = app
        .post(
            "/.search",
            &json!({"schemas":[SEARCH_REQUEST],"filter":"displayName eq \"Root Search\""}),
        )
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), [g.clone()]);
    // Paging walks the concatenation: Users first, then Groups.
    let page = |start: u64| {
        let app = &app;
        async move {
            app.post(
                "/.search",
                &json!({"schemas":[SEARCH_REQUEST],"startIndex":start,"count":1}),
            )
            .await
            .ok_json()
        }
    };
    let p1 = page(1).await;
    let p2 = page(2).await;
    assert_eq!(p1["totalResults"], 2);
    assert_eq!(p2["startIndex"], 2);
    assert_eq!(ids(&list_resources(&p1)), [u]);
    assert_eq!(ids(&list_resources(&p2)), [g]);
}

/// Root `.search` pages through the concatenation of Users and Groups; past the server's page
/// size (1,000) the window must still be right.
#[tokio::test]
async fn root_search_pages_past_the_server_page_size() {
    let app = spawn_app().await;
    let users = app.create_users("deep", 1005).await;
    let gid = app.create_group("Deep Group").await;
    let body = app
        .post(
            "/.search",
            &json!({"schemas":[SEARCH_REQUEST],"startIndex":1001,"count":10,"attributes":["id"]}),
        )
        .await
        .ok_json();
    assert_eq!(body["totalResults"], 1006);
    assert_eq!(body["startIndex"], 1001);
    let got = ids(&list_resources(&body));
    let mut want: Vec<String> = users[1000..].to_vec();
    want.push(gid);
    assert_eq!(got, want, "users 1001-1005, then the group");
    // The per-resource list agrees.
    let body = app
        .get("/Users?startIndex=1001&count=10&attributes=id")
        .await
        .ok_json();
    assert_eq!(ids(&list_resources(&body)), users[1000..].to_vec());
}

#[tokio::test]
async fn sub_attribute_projections() {
    let app = spawn_app().await;
    let u = app.create_user("sub.proj@example.com").await;
    let got = app
        .get(&format!("/Users/{u}?excludedAttributes=name.givenName"))
        .await
        .ok_json();
    assert_eq!(got["name"], json!({"familyName":"Family"}), "{got}");
    let gid = id_of(&app.create_group_with_members("Sub", &[&u]).await);
    let g = app
        .get(&format!("/Groups/{gid}?attributes=members.value"))
        .await
        .ok_json();
    assert_eq!(g["members"], json!([{"value": u}]), "{g}");
    assert!(g.get("displayName").is_none(), "{g}");
    let g = app
        .get("/Groups?attributes=displayName&filter=displayName+eq+%22Sub%22")
        .await
        .ok_json();
    let rs = list_resources(&g);
    assert!(rs[0].get("members").is_none(), "{}", rs[0]);
    assert_eq!(rs[0]["displayName"], "Sub");
}

#[tokio::test]
async fn sorted_pages_are_windows_of_one_order() {
    let app = spawn_app().await;
    app.create_users("sorted", 30).await;
    let all = app
        .get("/Users?sortBy=userName&sortOrder=descending&count=30")
        .await
        .ok_json();
    let all: Vec<String> = ids(&list_resources(&all));
    let page = app
        .get("/Users?sortBy=userName&sortOrder=descending&startIndex=11&count=10")
        .await
        .ok_json();
    assert_eq!(page["startIndex"], 11);
    assert_eq!(page["totalResults"], 30);
    assert_eq!(ids(&list_resources(&page)), all[10..20].to_vec());
    let names: Vec<String> = list_resources(&page)
        .iter()
        .map(|r| r["userName"].as_str().unwrap().to_string())
        .collect();
    let mut want = names.clone();
    want.sort();
    want.reverse();
    assert_eq!(names, want);
}
