//! Attribute names are case-insensitive everywhere (RFC 7643 §2.1): in bodies, PATCH paths and
//! pathless values, filters, `attributes`/`excludedAttributes` and `sortBy`. The stored and
//! returned spelling is the schema's.

use crate::helpers::*;
use serde_json::{json, Value};

fn has_key_ignoring_case(v: &Value, key: &str) -> Vec<String> {
    v.as_object()
        .map(|o| {
            o.keys()
                .filter(|k| k.eq_ignore_ascii_case(key) && k.as_str() != key)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn bodies_paths_and_pathless_values_in_any_case() {
    let app = spawn_app().await;
    let created = app
        .create_user_with(
            &json!({"SCHEMAS":[CORE_USER],"USERNAME":"casey@example.com",
            "Name":{"GIVENNAME":"Casey","familyname":"Jones"},
            "EMAILS":[{"VALUE":"casey@example.com","Type":"work","PRIMARY":true}],"Active":true}),
        )
        .await;
    assert_eq!(created["userName"], "casey@example.com", "{created}");
    assert_eq!(created["name"]["givenName"], "Casey");
    assert_eq!(created["emails"][0]["value"], "casey@example.com");
    let id = id_of(&created);
    let path = format!("/Users/{id}");

    let body = app
        .patch_ops(
            &path,
            json!([
                {"op":"Replace","path":"NAME.FAMILYNAME","value":"Smith"},
                {"op":"Replace","path":"EMAILS[TYPE eq \"work\"].VALUE","value":"casey.smith@example.com"},
                {"op":"Add","path":"NickName","value":"Case"},
                {"op":"replace","value":{"DisplayName":"Casey S","name.GivenName":"K.",
                    "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:EMPLOYEENUMBER":"42"}}
            ]),
        )
        .await
        .ok_json();
    let got = app.get(&path).await.ok_json();
    for b in [&body, &got] {
        assert_eq!(b["name"]["familyName"], "Smith", "{b}");
        assert_eq!(b["name"]["givenName"], "K.", "{b}");
        assert_eq!(b["emails"][0]["value"], "casey.smith@example.com", "{b}");
        assert_eq!(b["emails"].as_array().map(Vec::len), Some(1), "{b}");
        assert_eq!(b["nickName"], "Case", "{b}");
        assert_eq!(b["displayName"], "Casey S", "{b}");
        assert_eq!(b[ENTERPRISE]["employeeNumber"], "42", "{b}");
        for key in [
            "displayName",
            "nickName",
            "name",
            "emails",
            "userName",
            "active",
        ] {
            let odd = has_key_ignoring_case(b, key);
            assert!(
                odd.is_empty(),
                "stored under a client spelling {odd:?}: {b}"
            );
        }
        let odd = has_key_ignoring_case(&b["name"], "givenName");
        assert!(odd.is_empty(), "{odd:?}: {b}");
    }
}

#[tokio::test]
async fn projections_and_sorting_in_any_case() {
    let app = spawn_app().await;
    let id = app.create_user("proj.case@example.com").await;
    app.create_user("another@example.com").await;
    let only = app
        .get(&format!("/Users/{id}?attributes=USERNAME,Name.GivenName"))
        .await
        .ok_json();
    assert_eq!(only["userName"], "proj.case@example.com", "{only}");
    assert_eq!(only["name"], json!({"givenName":"Given"}), "{only}");
    assert!(only.get("emails").is_none(), "{only}");
    let without = app
        .get(&format!("/Users/{id}?EXCLUDEDATTRIBUTES=EMAILS"))
        .await
        .ok_json();
    assert!(without.get("emails").is_none(), "{without}");
    let gid = id_of(&app.create_group_with_members("Case", &[&id]).await);
    let g = app
        .get(&format!("/Groups/{gid}?excludedAttributes=MEMBERS"))
        .await
        .ok_json();
    assert!(g.get("members").is_none(), "{g}");
    let sorted = app
        .get("/Users?SORTBY=USERNAME&sortOrder=Descending")
        .await
        .ok_json();
    let names: Vec<&str> = sorted["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["proj.case@example.com", "another@example.com"]);
}
