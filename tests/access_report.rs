//! The access review end to end (issue 13): real simulators of Sisense, Tableau and Metabase,
//! one bridge tenant each on one store, users provisioned by the IdP over SCIM, users made by
//! hand at the vendors (orphans, and one the IdP then takes over), last sign-ins set through
//! each simulator's `/__sim/last_login`, a sync, and the review in CSV, JSON Lines and HTML.
//! Also the last-sign-in hook of all four simulators, and that a sign-in alone never makes the
//! bridge write to a vendor.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/metabase_api.rs"]
mod metabase_api;
#[path = "support/sim.rs"]
mod simsupport;
#[path = "support/sisense_api.rs"]
mod sisense_api;
#[path = "support/tableau_api.rs"]
mod tableau_api;

use idp::{create, group, Idp};
use scim_bridge::config::{
    MetabaseAuth, PersonKey, RoleRule, RoleRules, Secret, SisenseApiVersion, SisenseDeprovision,
    SisenseMode, TableauAuth, TableauDeprovision, TableauFlavor, TenantConfig, TenantId, Url,
    VendorConfig,
};
use scim_bridge::connector::{metabase, sisense, tableau};
use scim_bridge::engine::Engine;
use scim_bridge::governance::access::{self, AccessError, AccessRow, Format, Managed, COLUMNS};
use scim_bridge::server::RunningServer;
use scim_bridge::sim::{RunningSim, SimOptions, Vendor};
use scim_bridge::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn token(tenant: &str) -> String {
    format!("test-token-{tenant}-0123456789abcdef")
}

fn base(id: &str, vendor: VendorConfig, roles: RoleRules) -> TenantConfig {
    TenantConfig {
        id: TenantId::parse(id).unwrap(),
        tokens: vec![Secret::new(token(id))],
        jwt_secret: None,
        vendor,
        roles,
        on_vendor_unavailable: Default::default(),
        attributes: Default::default(),
        dry_run: false,
        sweep: None,
    }
}

fn url(sim: &RunningSim) -> Url {
    Url::parse(&format!("{}/", sim.base_url())).unwrap()
}

fn sisense_tenant(sim: &RunningSim) -> TenantConfig {
    base(
        "acme-sisense",
        VendorConfig::Sisense {
            base_url: url(sim),
            username: "admin@sisense.local".into(),
            password: Secret::new("admin"),
            api_version: SisenseApiVersion::V1,
            mode: SisenseMode::Rest,
            scim_token: None,
            deprovision: SisenseDeprovision::Deactivate,
        },
        RoleRules {
            default: Some("Viewer".into()),
            rules: vec![RoleRule {
                group: Some("BI Admins".into()),
                role: "Admin".into(),
            }],
        },
    )
}

fn tableau_tenant(sim: &RunningSim) -> TenantConfig {
    base(
        "acme-tableau",
        VendorConfig::Tableau {
            base_url: url(sim),
            site: tableau_api::SITE.into(),
            api_version: tableau_api::API_VERSION.into(),
            auth: TableauAuth::Pat {
                name: tableau_api::PAT_NAME.into(),
                secret: Secret::new(tableau_api::PAT_SECRET),
            },
            deprovision: TableauDeprovision::Unlicense,
            flavor: TableauFlavor::Server,
            auth_setting: None,
        },
        RoleRules {
            default: Some("Viewer".into()),
            rules: Vec::new(),
        },
    )
}

fn metabase_tenant(sim: &RunningSim) -> TenantConfig {
    base(
        "acme-metabase",
        VendorConfig::Metabase {
            base_url: url(sim),
            auth: MetabaseAuth::ApiKey(Secret::new(metabase_api::API_KEY)),
        },
        RoleRules {
            default: None,
            rules: vec![RoleRule {
                group: Some("BI Admins".into()),
                role: "Administrators".into(),
            }],
        },
    )
}

/// The engine of `t` on `store`, its roles resolved and its first observe done, served alone
/// (no background work: a sync happens when the test asks), and the IdP's client of it.
async fn serve(store: &Store, t: &TenantConfig, index: usize) -> (Arc<Engine>, RunningServer, Idp) {
    let (engine, roles) = match t.vendor.kind() {
        "sisense" => (
            sisense::open(store, t, index, None).unwrap(),
            sisense::preflight(t, index).await,
        ),
        "tableau" => (
            tableau::open(store, t, index, None).unwrap(),
            tableau::preflight(t, index).await,
        ),
        "metabase" => (
            metabase::open(store, t, index, None).unwrap(),
            metabase::preflight(t, index).await,
        ),
        other => panic!("no {other} tenant here"),
    };
    if let Err(problems) = roles {
        panic!("{}: start-up check: {problems:?}", t.id.as_str());
    }
    match engine.load_roles().await {
        Ok(table) => engine.set_roles(table),
        Err(Ok(problems)) => panic!("{}: rules do not resolve: {problems:?}", t.id.as_str()),
        Err(Err(e)) => panic!("{}: roles not read: {e}", t.id.as_str()),
    }
    engine.observe_now().await.unwrap();
    let server = bridge::serve_engine(t, engine.clone(), store.clone(), 1);
    let idp = Idp::patient(&bridge::root(&server), t.id.as_str(), &token(t.id.as_str()));
    (engine, server, idp)
}

fn user(login: &str, email: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": login,
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true,
    })
}

/// `POST /__sim/last_login` on the simulator at `base`: the status.
async fn set_last_login(base: &str, login: &str, at: Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/__sim/last_login"))
        .json(&json!({"login": login, "at": at}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Vendor calls other than reads (and the simulator's own hooks) in `calls`.
fn writes(calls: &BTreeMap<String, u64>) -> Vec<String> {
    calls
        .keys()
        .filter(|k| !k.starts_with("GET ") && !k.contains("/__sim/"))
        // Sign-ins are not writes to the directory.
        .filter(|k| !k.contains("auth") && !k.contains("session") && !k.contains("login"))
        .cloned()
        .collect()
}

fn find<'a>(rows: &'a [AccessRow], tenant: &str, login: &str) -> &'a AccessRow {
    rows.iter()
        .find(|r| r.tenant == tenant && r.login.eq_ignore_ascii_case(login))
        .unwrap_or_else(|| panic!("no row {tenant}/{login} in {rows:#?}"))
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes, CRLF records), to read the CSV
/// back as a spreadsheet would.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && record.is_empty(), "CSV ends mid-record");
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_review_lists_every_vendor_account_grouped_by_person() {
    let sis_sim = sisense_api::spawn_sim(SimOptions::default()).await;
    let tab_sim = simsupport::spawn(Vendor::Tableau, SimOptions::default()).await;
    let mb_sim = simsupport::spawn(Vendor::Metabase, SimOptions::default()).await;
    let (sis_base, tab_base, mb_base) = (sis_sim.base_url(), tab_sim.base_url(), mb_sim.base_url());

    // Made by hand before the bridge: Sisense carol (an orphan) and dave (whom the IdP then
    // takes over), Tableau erin (an orphan).
    let sis_api = sisense_api::SisenseApi::login(&sis_base).await;
    sis_api.create_user("carol@acme.test", "consumer").await;
    sis_api.create_user("dave@acme.test", "consumer").await;
    let tab_api = tableau_api::TableauApi::login(&tab_base).await;
    tab_api.create_user("erin@acme.test", "Explorer").await;

    let data = tempfile::tempdir().unwrap();
    let store = bridge::open_store(data.path()).await;
    let tenants = vec![
        sisense_tenant(&sis_sim),
        tableau_tenant(&tab_sim),
        metabase_tenant(&mb_sim),
    ];
    let (sis, _sis_server, sis_idp) = serve(&store, &tenants[0], 0).await;
    let (tab, _tab_server, tab_idp) = serve(&store, &tenants[1], 1).await;
    let (mb, _mb_server, mb_idp) = serve(&store, &tenants[2], 2).await;

    // The IdP: Ann everywhere (under another userName in Tableau: the email groups her), Bob
    // in Sisense only, in a group whose name needs quoting and escaping; Dave taken over.
    create(&sis_idp, "/Users", user("ann@acme.test", "Ann@Acme.test")).await;
    create(&tab_idp, "/Users", user("ann.t", "ann@acme.test")).await;
    let ann_mb = create(&mb_idp, "/Users", user("ann@acme.test", "ann@acme.test")).await;
    create(&mb_idp, "/Groups", group("BI Admins", &[&ann_mb])).await;
    let bob = create(&sis_idp, "/Users", user("bob@acme.test", "bob@acme.test")).await;
    create(
        &sis_idp,
        "/Groups",
        group("Sales, EMEA <R&D> \"core\"", &[&bob]),
    )
    .await;
    let dave = sis_idp
        .find_user("dave@acme.test")
        .await
        .expect("observe adopted dave")["id"]
        .as_str()
        .unwrap()
        .to_string();
    sis_idp
        .patch_ok(
            &format!("/Users/{dave}"),
            json!([{"op": "replace", "path": "name.givenName", "value": "David"}]),
        )
        .await;

    // Sign-ins, each in the vendor's own field, through the hook (any case of the login).
    assert_eq!(
        set_last_login(&sis_base, "ANN@acme.test", json!("2024-01-15T09:30:00Z")).await,
        204
    );
    assert_eq!(
        set_last_login(
            &sis_base,
            "carol@acme.test",
            json!("2023-06-01T08:00:00.250Z")
        )
        .await,
        204
    );
    assert_eq!(
        set_last_login(&tab_base, "ann.t", json!("2024-02-01T10:00:00+02:00")).await,
        204
    );
    assert_eq!(
        set_last_login(
            &mb_base,
            "Ann@Acme.Test",
            json!("2024-03-01T12:00:00+01:00")
        )
        .await,
        204
    );

    for e in [&sis, &tab, &mb] {
        e.observe_now().await.unwrap();
        let p = e.sync_progress();
        assert!(!p.running, "{p:?}");
        assert!(
            p.users_seen > 0 && p.users_total == Some(p.users_seen),
            "{p:?}"
        );
        assert!(
            p.last_completed_at.is_some() && p.last_duration_ms.is_some(),
            "{p:?}"
        );
    }

    let rows = access::rows(&store, &tenants, PersonKey::Email, None).unwrap();
    let (s, t, m) = ("acme-sisense", "acme-tableau", "acme-metabase");

    // One row per vendor account: the bridge's users, the orphans, and each vendor's admin.
    let accounts: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.tenant.clone(), r.login.to_lowercase()))
        .collect();
    for (tenant, login) in [
        (s, "ann@acme.test"),
        (s, "bob@acme.test"),
        (s, "carol@acme.test"),
        (s, "dave@acme.test"),
        (s, "admin@sisense.local"),
        (t, "ann.t"),
        (t, "erin@acme.test"),
        (t, "admin@tableau.local"),
        (m, "ann@acme.test"),
        (m, "admin@metabase.local"),
    ] {
        assert!(
            accounts.contains(&(tenant.to_string(), login.to_string())),
            "{tenant}/{login} missing: {rows:#?}"
        );
    }
    let mut unique = accounts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), accounts.len(), "an account listed twice");

    // managed: made for the IdP, found and then written by the IdP, never written by it.
    assert_eq!(find(&rows, s, "ann@acme.test").managed, Managed::Idp);
    assert_eq!(find(&rows, t, "ann.t").managed, Managed::Idp);
    assert_eq!(find(&rows, m, "ann@acme.test").managed, Managed::Idp);
    assert_eq!(find(&rows, s, "dave@acme.test").managed, Managed::Adopted);
    assert_eq!(
        find(&rows, s, "carol@acme.test").managed,
        Managed::VendorOnly
    );
    assert_eq!(
        find(&rows, t, "erin@acme.test").managed,
        Managed::VendorOnly
    );
    assert_eq!(
        find(&rows, m, "admin@metabase.local").managed,
        Managed::VendorOnly
    );

    // Last sign-ins, normalised to UTC seconds; none for a user who never signed in.
    assert_eq!(
        find(&rows, s, "ann@acme.test").last_login.as_deref(),
        Some("2024-01-15T09:30:00Z")
    );
    assert_eq!(
        find(&rows, s, "carol@acme.test").last_login.as_deref(),
        Some("2023-06-01T08:00:00Z")
    );
    assert_eq!(
        find(&rows, t, "ann.t").last_login.as_deref(),
        Some("2024-02-01T08:00:00Z")
    );
    assert_eq!(
        find(&rows, m, "ann@acme.test").last_login.as_deref(),
        Some("2024-03-01T11:00:00Z")
    );
    assert_eq!(find(&rows, s, "bob@acme.test").last_login, None);
    // The bridge signed in to Sisense as its admin: the real login sets the field too.
    assert!(find(&rows, s, "admin@sisense.local").last_login.is_some());

    // Roles by the vendor's names, not ids; groups by name; activation; ids.
    let ann_s = find(&rows, s, "ann@acme.test");
    assert_eq!(ann_s.role.as_deref(), Some("Viewer"), "{ann_s:?}");
    assert_eq!(ann_s.vendor, "sisense");
    assert_eq!(ann_s.email.as_deref(), Some("Ann@Acme.test"));
    assert!(ann_s.active);
    let ann_m = find(&rows, m, "ann@acme.test");
    assert_eq!(ann_m.role.as_deref(), Some("Administrators"), "{ann_m:?}");
    assert_eq!(ann_m.groups, vec!["BI Admins".to_string()]);
    assert_eq!(ann_m.scim_id, ann_mb);
    assert_eq!(
        find(&rows, t, "ann.t").role.as_deref(),
        Some("Viewer"),
        "{rows:#?}"
    );
    let bob_row = find(&rows, s, "bob@acme.test");
    assert_eq!(
        bob_row.groups,
        vec!["Sales, EMEA <R&D> \"core\"".to_string()]
    );
    let sis_users = sis_api.users().await;
    let bob_vendor = sis_users
        .iter()
        .find(|u| u["userName"] == "bob@acme.test")
        .unwrap();
    assert_eq!(bob_row.vendor_id, bob_vendor["_id"].as_str().unwrap());

    // Grouped by person (the email, without case), then tenant: Ann's three accounts together.
    let ann_rows: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.person.as_deref() == Some("ann@acme.test"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ann_rows.len(), 3, "{rows:#?}");
    assert_eq!(
        ann_rows[2] - ann_rows[0],
        2,
        "Ann's accounts are not adjacent"
    );
    let tenants_of_ann: Vec<&str> = ann_rows.iter().map(|i| rows[*i].tenant.as_str()).collect();
    assert_eq!(tenants_of_ann, vec![m, s, t]);
    let persons: Vec<&Option<String>> = rows.iter().map(|r| &r.person).collect();
    let mut sorted = persons.clone();
    sorted.sort_by_key(|p| (p.is_none(), (*p).clone()));
    assert_eq!(persons, sorted, "rows are not sorted by person");

    // By userName instead: Ann's Tableau account stands apart.
    let by_name = access::rows(&store, &tenants, PersonKey::UserName, None).unwrap();
    assert_eq!(
        by_name
            .iter()
            .filter(|r| r.person.as_deref() == Some("ann@acme.test"))
            .count(),
        2
    );

    // CSV: the header, one record per row, every cell as in the rows.
    let csv = access::render(&rows, Format::Csv);
    let records = parse_csv(&csv);
    assert_eq!(records[0], COLUMNS.to_vec());
    assert_eq!(records.len(), rows.len() + 1);
    let bob_record = records
        .iter()
        .find(|r| r[4] == "bob@acme.test")
        .expect("bob in the CSV");
    assert_eq!(
        bob_record,
        &vec![
            "bob@acme.test".to_string(),
            s.into(),
            "sisense".into(),
            bob_row.vendor_id.clone(),
            "bob@acme.test".into(),
            "bob@acme.test".into(),
            "true".into(),
            "Viewer".into(),
            "Sales, EMEA <R&D> \"core\"".into(),
            String::new(),
            "idp".into(),
            bob.clone(),
        ]
    );
    assert!(csv.contains("\"Sales, EMEA <R&D> \"\"core\"\"\""), "{csv}");

    // JSON Lines: each line one row, the whole equal to the rows.
    let jsonl = access::render(&rows, Format::Jsonl);
    let back: Vec<AccessRow> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, rows);
    let carol_line: Value = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["login"] == "carol@acme.test")
        .unwrap();
    assert_eq!(carol_line["managed"], "vendor-only");
    assert_eq!(carol_line["last_login"], "2023-06-01T08:00:00Z");

    // HTML: one table row per account, the group name escaped, nothing loaded from outside.
    let html = access::render(&rows, Format::Html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<tr>").count(), rows.len() + 1);
    assert!(html.contains("Sales, EMEA &lt;R&amp;D&gt; &quot;core&quot;"));
    assert!(!html.contains("<R&D>"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    assert!(html.contains("<td class=\"managed-vendor-only\">vendor-only</td>"));

    // One tenant, and its pages: the same rows, in the directory's order, with the total.
    let sis_rows = access::rows(&store, &tenants, PersonKey::Email, Some(s)).unwrap();
    assert!(sis_rows.iter().all(|r| r.tenant == s));
    let expected: Vec<&AccessRow> = rows.iter().filter(|r| r.tenant == s).collect();
    assert_eq!(sis_rows.iter().collect::<Vec<_>>(), expected);
    let mut paged = Vec::new();
    let mut offset = 0;
    loop {
        let (page, total) = access::page(&store, &tenants, PersonKey::Email, s, offset, 2).unwrap();
        assert_eq!(total, sis_rows.len());
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        offset += page.len();
        paged.extend(page);
    }
    let mut by_id = sis_rows.clone();
    by_id.sort_by(|a, b| a.scim_id.cmp(&b.scim_id));
    assert_eq!(paged, by_id);

    // Bad input is an error, never a panic.
    assert!(matches!(
        access::rows(&store, &tenants, PersonKey::Email, Some("nope")),
        Err(AccessError::UnknownTenant(_))
    ));
    assert!(matches!(
        access::page(&store, &tenants, PersonKey::Email, "nope", 0, 10),
        Err(AccessError::UnknownTenant(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_sign_in_is_stored_without_any_vendor_write() {
    let sim = sisense_api::spawn_sim(SimOptions::default()).await;
    let sim_base = sim.base_url();
    let data = tempfile::tempdir().unwrap();
    let store = bridge::open_store(data.path()).await;
    let tenants = vec![sisense_tenant(&sim)];
    let (engine, _server, idp) = serve(&store, &tenants[0], 0).await;
    create(&idp, "/Users", user("ann@acme.test", "ann@acme.test")).await;
    engine.observe_now().await.unwrap();
    let audited = engine.audit().len();

    assert_eq!(
        set_last_login(&sim_base, "ann@acme.test", json!("2024-05-05T05:05:05Z")).await,
        204
    );
    let before = simsupport::stats(&sim_base).await;
    let report = engine.observe_now().await.unwrap();
    let calls = simsupport::calls_since(&sim_base, &before).await;

    assert_eq!(report.logins_refreshed, 1, "{report:?}");
    assert_eq!(report.states_refreshed, 0, "{report:?}");
    assert_eq!(report.users_pulled, 0, "{report:?}");
    assert!(writes(&calls).is_empty(), "vendor writes: {calls:?}");
    assert!(engine.outbox().is_empty(), "{:?}", engine.outbox());
    assert_eq!(engine.audit().len(), audited, "a sign-in was audited");
    let rows = access::rows(&store, &tenants, PersonKey::Email, None).unwrap();
    assert_eq!(
        find(&rows, "acme-sisense", "ann@acme.test")
            .last_login
            .as_deref(),
        Some("2024-05-05T05:05:05Z")
    );

    // Cleared at the vendor ("never signed in"): cleared here too, still without a write.
    assert_eq!(
        set_last_login(&sim_base, "ann@acme.test", Value::Null).await,
        204
    );
    let before = simsupport::stats(&sim_base).await;
    engine.observe_now().await.unwrap();
    let calls = simsupport::calls_since(&sim_base, &before).await;
    assert!(writes(&calls).is_empty(), "vendor writes: {calls:?}");
    let rows = access::rows(&store, &tenants, PersonKey::Email, None).unwrap();
    assert_eq!(
        find(&rows, "acme-sisense", "ann@acme.test").last_login,
        None
    );
}

#[tokio::test]
async fn every_simulator_takes_a_last_sign_in_and_refuses_bad_ones() {
    for (vendor, login) in [
        (Vendor::Sisense, "Admin@Sisense.local"),
        (Vendor::Tableau, "ADMIN@tableau.local"),
        (Vendor::Thoughtspot, "TSADMIN"),
        (Vendor::Metabase, "admin@METABASE.local"),
    ] {
        let sim = simsupport::spawn(vendor, SimOptions::default()).await;
        let b = sim.base_url();
        let at = json!("2024-01-15T09:30:00Z");
        assert_eq!(set_last_login(&b, login, at.clone()).await, 204, "{vendor}");
        assert_eq!(
            set_last_login(&b, login, Value::Null).await,
            204,
            "{vendor}"
        );
        assert_eq!(
            set_last_login(&b, "nobody@x.test", at).await,
            404,
            "{vendor}"
        );
        assert_eq!(
            set_last_login(&b, login, json!("last tuesday")).await,
            400,
            "{vendor}"
        );
        let r = reqwest::Client::new()
            .post(format!("{b}/__sim/last_login"))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{vendor}");
        assert_eq!(
            set_last_login(&b, " ", json!("2024-01-15T09:30:00Z")).await,
            400,
            "{vendor}: blank login"
        );
        sim.stop().await;
    }

    // Read back through the vendors' own APIs, in their own fields.
    let sim = simsupport::spawn(Vendor::Tableau, SimOptions::default()).await;
    let b = sim.base_url();
    let api = tableau_api::TableauApi::login(&b).await;
    api.create_user("zoe", "Viewer").await;
    assert_eq!(
        set_last_login(&b, "ZOE", json!("2024-02-01T10:00:00+02:00")).await,
        204
    );
    let zoe = api.user_by_name("zoe").await.unwrap();
    assert_eq!(zoe["lastLogin"], "2024-02-01T08:00:00Z", "{zoe}");
    assert_eq!(set_last_login(&b, "zoe", Value::Null).await, 204);
    let zoe = api.user_by_name("zoe").await.unwrap();
    assert!(zoe.get("lastLogin").is_none(), "{zoe}");

    let sim = simsupport::spawn(Vendor::Metabase, SimOptions::default()).await;
    let b = sim.base_url();
    let api = metabase_api::MetabaseApi::connect(&b).await;
    let id = api
        .create_user("yan@acme.test", "Yan", "Y", json!({}))
        .await;
    assert_eq!(
        set_last_login(&b, "Yan@Acme.test", json!("2024-03-01T12:00:00+01:00")).await,
        204
    );
    let yan = api.get_ok(&format!("/api/user/{id}")).await;
    let at = yan["last_login"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(at).unwrap(),
        chrono::DateTime::parse_from_rfc3339("2024-03-01T11:00:00Z").unwrap(),
        "{yan}"
    );
}
