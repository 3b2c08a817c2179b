//! Issue 9's acceptance runs: the Okta and the Entra sequences of tests/sisense.rs, in both
//! Sisense modes (`rest`, `scim`), are answered without a single 5xx and never slower than 15 s
//! per request, and Sisense's end state — read through its own API — equals the expected one
//! within 60 s of the last write, in three runs:
//!
//! 1. the simulator failing 10% of requests, throttling at 20 rps, expiring tokens every 5 s;
//! 2. the simulator (a separate process) frozen with SIGSTOP for 40 s in the middle of the run;
//! 3. the bridge (the real binary) SIGKILLed right after the last write while its outbox still
//!    holds undelivered changes, and restarted on the same data dir and port.
//!
//! Each run is one test that drives its four variants (Okta/Entra × rest/scim) concurrently,
//! each on its own simulator and bridge, and reports every variant's failure together.

#[path = "support/sisense_bridge.rs"]
mod support;

use scim_bridge::config::SisenseDeprovision;
use scim_bridge::sim::SimOptions;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// The longest an IdP request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(15);
/// How long after the last write Sisense must show the end state.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long the simulator stays frozen in run 2.
const FREEZE: Duration = Duration::from_secs(40);

fn patch_op(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

fn log_stderr() -> std::process::Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// The IdP: every request timed and checked (never a 5xx, never slower than 15 s). Unlike the
// shared `Scim` client it does not retry a 503 (that would hide a 5xx); a 429 is retried after
// its Retry-After, as Okta and Entra do, each attempt checked on its own.
// ---------------------------------------------------------------------------------------------

struct Call {
    what: String,
    status: u16,
    took: Duration,
    at: Instant,
}

#[derive(Clone)]
struct Idp {
    label: String,
    root: String,
    base: String,
    http: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    last_write: Arc<Mutex<Option<Instant>>>,
}

impl Idp {
    fn new(root: &str, label: &str) -> Idp {
        Idp {
            label: label.to_string(),
            root: root.to_string(),
            base: format!("{root}/tenants/{TENANT}/scim/v2"),
            http: reqwest::Client::builder()
                .timeout(REQUEST_LIMIT + Duration::from_secs(5))
                .build()
                .unwrap(),
            calls: Arc::default(),
            last_write: Arc::default(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let label = &self.label;
        for _ in 0..60 {
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{}", self.base, path))
                .bearer_auth(TOKEN)
                .header("content-type", "application/scim+json");
            if let Some(b) = &body {
                rb = rb.body(b.to_string());
            }
            let started = Instant::now();
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => panic!(
                    "{label}: {method} {path}: no answer after {:?}: {e}",
                    started.elapsed()
                ),
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            let took = started.elapsed();
            self.calls.lock().unwrap().push(Call {
                what: format!("{method} {path}"),
                status,
                took,
                at: started,
            });
            if method != reqwest::Method::GET {
                *self.last_write.lock().unwrap() = Some(Instant::now());
            }
            assert!(
                status < 500,
                "{label}: {method} {path} answered {status} after {took:?}: {text}"
            );
            assert!(
                took < REQUEST_LIMIT,
                "{label}: {method} {path} answered {status} after {took:?} (limit {REQUEST_LIMIT:?})"
            );
            let v: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            if status == 429 {
                let wait = retry_after.unwrap_or(1).clamp(1, 5);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            return (status, v);
        }
        panic!("{label}: {method} {path}: throttled 60 times in a row");
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn find_user(&self, user_name: &str) -> Option<Value> {
        let q = format!(
            "/Users?filter={}&startIndex=1&count=100",
            urlencode(&format!("userName eq \"{user_name}\""))
        );
        let (s, v) = self.get(&q).await;
        assert_eq!(s, 200, "{}: lookup {user_name}: {v}", self.label);
        v["Resources"].as_array().and_then(|a| a.first().cloned())
    }

    async fn find_group(&self, name: &str) -> Option<Value> {
        let q = format!(
            "/Groups?filter={}&excludedAttributes=members",
            urlencode(&format!("displayName eq \"{name}\""))
        );
        let (s, v) = self.get(&q).await;
        assert_eq!(s, 200, "{}: lookup group {name}: {v}", self.label);
        v["Resources"].as_array().and_then(|a| a.first().cloned())
    }

    /// Okta's assignment: look up by userName, create only when absent.
    async fn okta_assign(&self, user_name: &str, given: &str, family: &str) -> String {
        if let Some(u) = self.find_user(user_name).await {
            return u["id"].as_str().unwrap().to_string();
        }
        let (s, v) = self
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "name": {"givenName": given, "familyName": family},
                    "emails": [{"primary": true, "value": user_name, "type": "work"}],
                    "displayName": format!("{given} {family}"),
                    "locale": "en-US",
                    "externalId": format!("00u{}", user_name.len()),
                    "groups": [],
                    "password": "1mz050nq",
                    "active": true
                }),
            )
            .await;
        assert_eq!(s, 201, "{}: create {user_name}: {v}", self.label);
        v["id"].as_str().unwrap().to_string()
    }

    fn last_write(&self) -> Instant {
        self.last_write
            .lock()
            .unwrap()
            .expect("the sequence wrote something")
    }

    /// Requests answered, the slowest, and statuses, for the test's output.
    fn summary(&self) -> String {
        let calls = self.calls.lock().unwrap();
        let mut by_status: std::collections::BTreeMap<u16, usize> = Default::default();
        for c in calls.iter() {
            *by_status.entry(c.status).or_default() += 1;
        }
        let slowest = calls.iter().max_by_key(|c| c.took);
        format!(
            "{} requests, statuses {:?}, slowest {}",
            calls.len(),
            by_status,
            slowest.map_or("-".into(), |c| format!("{:?} ({})", c.took, c.what))
        )
    }

    /// The requests sent while `from..to` (the freeze), with their latencies.
    fn during(&self, from: Instant, to: Instant) -> (usize, Duration) {
        let calls = self.calls.lock().unwrap();
        let inside: Vec<&Call> = calls.iter().filter(|c| c.at >= from && c.at < to).collect();
        (
            inside.len(),
            inside.iter().map(|c| c.took).max().unwrap_or_default(),
        )
    }

    /// Every userName the bridge lists (lower-cased), page by page.
    async fn all_user_names(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut start = 1;
        loop {
            let (s, v) = self
                .get(&format!("/Users?startIndex={start}&count=100"))
                .await;
            assert_eq!(s, 200, "{}: {v}", self.label);
            let page = v["Resources"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                break;
            }
            for u in &page {
                let name = u["userName"].as_str().unwrap().to_lowercase();
                assert!(
                    seen.insert(name.clone()),
                    "{}: {name} listed twice by the bridge",
                    self.label
                );
            }
            start += page.len();
        }
        seen
    }
}

// ---------------------------------------------------------------------------------------------
// The sequences of tests/sisense.rs (same operations and status checks), without the checks of
// Sisense's state in the middle of the run: under these faults a write may be answered from the
// outbox, so Sisense is checked only at the end. `mid` runs halfway.
// ---------------------------------------------------------------------------------------------

/// Okta: test connection, assignments (a user already in Sisense is found), group push (create,
/// members, rename re-sent with every membership update, remove a member), profile update by
/// PUT, deactivation by pathless PATCH, reactivation, a group PUT with the whole member list.
async fn okta_sequence(idp: &Idp, mut mid: impl FnMut()) {
    let l = &idp.label;
    let (s, v) = idp.get("/Users?startIndex=1&count=2").await;
    assert_eq!(s, 200, "{l}: {v}");
    let ada = idp.okta_assign("ada@acme.test", "Ada", "Lovelace").await;
    let bob = idp.okta_assign("bob@acme.test", "Bob", "Builder").await;
    let cy = idp.okta_assign("cy@acme.test", "Cy", "Young").await;
    let dee = idp.okta_assign("dee@acme.test", "Dee", "Dee").await;
    let pre = idp
        .find_user("pre@acme.test")
        .await
        .unwrap_or_else(|| panic!("{l}: a user created directly in Sisense is found"));
    let pre_id = pre["id"].as_str().unwrap().to_string();
    assert_eq!(
        idp.okta_assign("pre@acme.test", "Pre", "Existing").await,
        pre_id,
        "{l}"
    );
    assert!(idp.find_group("BI Admins").await.is_none(), "{l}");
    let (s, admins) = idp
        .post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "BI Admins", "members": []}),
        )
        .await;
    assert_eq!(s, 201, "{l}: {admins}");
    let admins = admins["id"].as_str().unwrap().to_string();
    let (s, v) = idp
        .post(
            "/Groups",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "BI Designers",
                   "members": [{"value": bob, "display": "bob@acme.test"}]}),
        )
        .await;
    assert_eq!(s, 201, "{l}: {v}");
    let designers = v["id"].as_str().unwrap().to_string();
    mid();
    let (s, v) = idp
        .patch(
            &format!("/Groups/{admins}"),
            patch_op(json!([
                {"op": "replace", "value": {"id": admins, "displayName": "BI Admins"}},
                {"op": "add", "path": "members", "value": [{"value": ada, "display": "ada@acme.test"}]}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, v) = idp
        .patch(
            &format!("/Groups/{designers}"),
            patch_op(json!([
                {"op": "replace", "value": {"id": designers, "displayName": "BI Designers"}},
                {"op": "add", "path": "members", "value": [{"value": cy}, {"value": pre_id}]}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, v) = idp
        .patch(
            &format!("/Groups/{designers}"),
            patch_op(json!([
                {"op": "remove", "path": format!("members[value eq \"{cy}\"]")}
            ])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, mut full) = idp.get(&format!("/Users/{bob}")).await;
    assert_eq!(s, 200, "{l}: {full}");
    full["name"]["givenName"] = json!("Robert");
    let (s, v) = idp.put(&format!("/Users/{bob}"), full).await;
    assert_eq!(s, 200, "{l}: {v}");
    for (id, active) in [(&dee, false), (&cy, false), (&cy, true)] {
        let (s, v) = idp
            .patch(
                &format!("/Users/{id}"),
                patch_op(json!([{"op": "replace", "value": {"active": active}}])),
            )
            .await;
        assert_eq!(s, 200, "{l}: {v}");
        assert_eq!(v["active"], json!(active), "{l}: {v}");
    }
    let (s, v) = idp.get(&format!("/Users/{dee}")).await;
    assert_eq!((s, &v["active"]), (200, &json!(false)), "{l}: {v}");
    let (s, v) = idp
        .put(
            &format!("/Groups/{admins}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": admins,
                   "displayName": "BI Admins", "members": [{"value": ada}, {"value": dee}]}),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{l}: {v}");
}

/// Entra: lookups by externalId and work email, create with `roles: []` and explicit nulls,
/// groups created without members and filled by multi-member `Add`, non-RFC `Remove` with a
/// value list, attribute PATCH, disable with the string "False", a membership change while
/// disabled, restore, and hard delete (`deprovision = "delete"`).
async fn entra_sequence(idp: &Idp, mut mid: impl FnMut()) {
    let l = &idp.label;
    let (s, v) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("externalId eq \"3b1f1f6e-0000-4000-8000-000000000000\"")
        ))
        .await;
    assert_eq!((s, v["totalResults"].clone()), (200, json!(0)), "{l}: {v}");
    let mut ids = Vec::new();
    for (i, name) in ["eve", "fay", "gus"].iter().enumerate() {
        let mail = format!("{name}@contoso.test");
        let (s, v) = idp
            .get(&format!(
                "/Users?filter={}",
                urlencode(&format!("emails[type eq \"work\"].value eq \"{mail}\""))
            ))
            .await;
        assert_eq!((s, v["totalResults"].clone()), (200, json!(0)), "{l}: {v}");
        let (s, v) = idp
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                    "externalId": format!("0a21f0f2-{i}"), "userName": mail, "active": true,
                    "emails": [{"primary": true, "type": "work", "value": mail}],
                    "meta": {"resourceType": "User"},
                    "name": {"formatted": "x", "familyName": name, "givenName": "E"},
                    "roles": [], "title": null, "manager": null
                }),
            )
            .await;
        assert_eq!(s, 201, "{l}: {v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (eve, fay, gus) = (&ids[0], &ids[1], &ids[2]);
    let mut groups = Vec::new();
    for name in ["BI Admins", "BI Designers"] {
        let (s, v) = idp
            .post(
                "/Groups",
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                                   "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                       "externalId": format!("8aa1-{name}"), "displayName": name,
                       "meta": {"resourceType": "Group"}}),
            )
            .await;
        assert_eq!(s, 201, "{l}: {v}");
        groups.push(v["id"].as_str().unwrap().to_string());
    }
    let (admins, designers) = (&groups[0], &groups[1]);
    mid();
    let (s, v) = idp
        .patch(
            &format!("/Groups/{designers}?excludedAttributes=members"),
            patch_op(json!([{"op": "Add", "path": "members",
                             "value": [{"$ref": null, "value": eve}, {"$ref": null, "value": fay}, {"$ref": null, "value": gus}]}])),
        )
        .await;
    assert!(s == 200 || s == 204, "{l}: {s} {v}");
    let (s, v) = idp
        .patch(
            &format!("/Groups/{admins}"),
            patch_op(json!([{"op": "Add", "path": "members", "value": [{"value": eve}]}])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, v) = idp
        .patch(
            &format!("/Groups/{designers}"),
            patch_op(json!([{"op": "Remove", "path": "members", "value": [{"value": gus}]}])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, v) = idp
        .patch(
            &format!("/Users/{fay}"),
            patch_op(json!([{"op": "Replace", "path": "name.familyName", "value": "Fairfax"}])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, v) = idp
        .patch(
            &format!("/Users/{fay}"),
            patch_op(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .await;
    assert_eq!((s, &v["active"]), (200, &json!(false)), "{l}: {v}");
    let (s, v) = idp
        .get(&format!(
            "/Users?filter={}",
            urlencode("userName eq \"fay@contoso.test\"")
        ))
        .await;
    assert_eq!(
        (s, v["Resources"][0]["active"].clone()),
        (200, json!(false)),
        "{l}: {v}"
    );
    let (s, v) = idp
        .patch(
            &format!("/Groups/{admins}"),
            patch_op(json!([{"op": "Add", "path": "members", "value": [{"value": fay}]}])),
        )
        .await;
    assert_eq!(s, 200, "{l}: {v}");
    let (s, v) = idp
        .patch(
            &format!("/Users/{fay}"),
            patch_op(json!([{"op": "Replace", "path": "active", "value": "True"}])),
        )
        .await;
    assert_eq!((s, &v["active"]), (200, &json!(true)), "{l}: {v}");
    let (s, v) = idp.delete(&format!("/Users/{gus}")).await;
    assert_eq!(s, 204, "{l}: {v}");
    let (s, v) = idp.get(&format!("/Users/{gus}")).await;
    assert_eq!(s, 404, "{l}: {v}");
}

#[derive(Clone, Copy)]
enum Seq {
    Okta,
    Entra,
}

impl Seq {
    fn name(self) -> &'static str {
        match self {
            Seq::Okta => "okta",
            Seq::Entra => "entra",
        }
    }
    fn deprovision(self) -> SisenseDeprovision {
        match self {
            Seq::Okta => SisenseDeprovision::Deactivate,
            Seq::Entra => SisenseDeprovision::Delete,
        }
    }
    async fn run(self, idp: &Idp, mid: impl FnMut()) {
        match self {
            Seq::Okta => okta_sequence(idp, mid).await,
            Seq::Entra => entra_sequence(idp, mid).await,
        }
    }
    fn check(self, snap: &Snapshot) -> Result<(), String> {
        match self {
            Seq::Okta => okta_check(snap),
            Seq::Entra => entra_check(snap),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sisense's end state, read through its own API.
// ---------------------------------------------------------------------------------------------

struct Snapshot {
    /// By lower-cased userName: (role API name, active, sorted group names).
    users: HashMap<String, UserState>,
    /// The Sisense user records, by lower-cased userName.
    raw: HashMap<String, Value>,
}

/// Sisense's users, or `None` when a read met an injected fault. Panics on a duplicate userName
/// (a duplicate is never transient noise: it is the bug the runs look for).
async fn snapshot(base: &str) -> Option<Snapshot> {
    let api = SisenseApi::try_login(base).await?;
    let (s, roles) = api.call(reqwest::Method::GET, "/api/roles", None).await;
    if s != 200 {
        return None;
    }
    let roles: HashMap<String, String> = roles
        .as_array()?
        .iter()
        .map(|r| {
            Some((
                r["_id"].as_str()?.to_string(),
                r["name"].as_str()?.to_string(),
            ))
        })
        .collect::<Option<_>>()?;
    let (s, groups) = api.call(reqwest::Method::GET, "/api/v1/groups", None).await;
    if s != 200 {
        return None;
    }
    let groups: HashMap<String, String> = groups
        .as_array()?
        .iter()
        .map(|g| {
            Some((
                g["_id"].as_str()?.to_string(),
                g["name"].as_str()?.to_string(),
            ))
        })
        .collect::<Option<_>>()?;
    let (s, users) = api.call(reqwest::Method::GET, "/api/v1/users", None).await;
    if s != 200 {
        return None;
    }
    let mut snap = Snapshot {
        users: HashMap::new(),
        raw: HashMap::new(),
    };
    for u in users.as_array()? {
        let name = u["userName"].as_str()?.to_lowercase();
        let mut gs: Vec<String> = u["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|g| {
                        let id = g.as_str().unwrap_or_default();
                        groups
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| format!("<unknown group {id}>"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        gs.sort();
        let role = u["roleId"]
            .as_str()
            .and_then(|r| roles.get(r).cloned())
            .unwrap_or_else(|| format!("<role {}>", u["roleId"]));
        let prev = snap.users.insert(
            name.clone(),
            (role, u["active"].as_bool().unwrap_or(true), gs),
        );
        assert!(prev.is_none(), "duplicate Sisense user {name}");
        snap.raw.insert(name, u.clone());
    }
    Some(snap)
}

fn expect(want: &[(&str, &str, bool, &[&str])]) -> Vec<(String, UserState)> {
    want.iter()
        .map(|(n, r, a, g)| {
            let mut gs: Vec<String> = g.iter().map(|s| s.to_string()).collect();
            gs.sort();
            (n.to_string(), (r.to_string(), *a, gs))
        })
        .collect()
}

fn diff(snap: &Snapshot, want: &[(String, UserState)], total: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in want {
        let got = snap.users.get(name);
        if got != Some(w) {
            out.push(format!("{name}: want {w:?}, got {got:?}"));
        }
    }
    if snap.users.len() != total {
        let mut names: Vec<&String> = snap.users.keys().collect();
        names.sort();
        out.push(format!(
            "{} Sisense users, want {total}: {names:?}",
            snap.users.len()
        ));
    }
    out
}

fn field<'a>(snap: &'a Snapshot, user: &str, key: &str) -> Option<&'a str> {
    snap.raw.get(user).and_then(|u| u[key].as_str())
}

/// Five users and the admin; bob renamed Robert.
fn okta_check(snap: &Snapshot) -> Result<(), String> {
    let want = expect(&[
        ("ada@acme.test", "admin", true, &["BI Admins"]),
        ("bob@acme.test", "contributor", true, &["BI Designers"]),
        ("cy@acme.test", "consumer", true, &[]),
        ("dee@acme.test", "admin", false, &["BI Admins"]),
        ("pre@acme.test", "contributor", true, &["BI Designers"]),
    ]);
    let mut d = diff(snap, &want, 6);
    let first = field(snap, "bob@acme.test", "firstName");
    if first != Some("Robert") {
        d.push(format!(
            "bob@acme.test firstName: want Robert, got {first:?}"
        ));
    }
    if d.is_empty() {
        Ok(())
    } else {
        Err(d.join("; "))
    }
}

/// eve and fay admins in both groups, gus deleted, fay renamed Fairfax.
fn entra_check(snap: &Snapshot) -> Result<(), String> {
    let both: &[&str] = &["BI Admins", "BI Designers"];
    let want = expect(&[
        ("eve@contoso.test", "admin", true, both),
        ("fay@contoso.test", "admin", true, both),
    ]);
    let mut d = diff(snap, &want, 3);
    if snap.users.contains_key("gus@contoso.test") {
        d.push("gus@contoso.test still in Sisense".into());
    }
    let last = field(snap, "fay@contoso.test", "lastName");
    if last != Some("Fairfax") {
        d.push(format!(
            "fay@contoso.test lastName: want Fairfax, got {last:?}"
        ));
    }
    if d.is_empty() {
        Ok(())
    } else {
        Err(d.join("; "))
    }
}

/// The simulator's request counts by route (`/__sim/stats`), for a failure message.
async fn routes_used(base: &str) -> String {
    let stats: Option<Value> = match reqwest::get(format!("{base}/__sim/stats")).await {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    stats
        .and_then(|v| v.get("by_route").cloned())
        .map_or("(no stats)".into(), |v| v.to_string())
}

/// Polls Sisense until the sequence's end state holds; fails 60 s after the last write with
/// what differs. Then checks the bridge lists exactly Sisense's users (no orphan mapping).
async fn settle(idp: &Idp, seq: Seq, sisense_base: &str) -> Snapshot {
    let last_write = idp.last_write();
    let deadline = last_write + SETTLE_LIMIT;
    let mut last = String::from("Sisense never answered a full read");
    let snap = loop {
        if let Some(snap) = snapshot(sisense_base).await {
            match seq.check(&snap) {
                Ok(()) => break snap,
                Err(d) => last = d,
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "{}: Sisense's end state not reached within {SETTLE_LIMIT:?} of the last write: \
                 {last}; vendor routes used: {}",
                idp.label,
                routes_used(sisense_base).await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{}: end state in Sisense {:?} after the last write; {}",
        idp.label,
        last_write.elapsed(),
        idp.summary()
    );
    let bridge = idp.all_user_names().await;
    let sisense: BTreeSet<String> = snap.users.keys().cloned().collect();
    assert_eq!(
        bridge, sisense,
        "{}: the bridge's /Users differ from Sisense's users",
        idp.label
    );
    snap
}

// ---------------------------------------------------------------------------------------------
// Processes.
// ---------------------------------------------------------------------------------------------

/// A child process of the test (a simulator or the bridge): SIGKILLed and reaped when the test
/// ends, however it ends; a pending SIGCONT timer is cancelled first.
struct ChildGuard {
    child: std::process::Child,
    cont: Option<tokio::task::JoinHandle<()>>,
}

impl ChildGuard {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }
    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(h) = self.cont.take() {
            h.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scim-bridge simulate sisense` as a separate process, signed in to once.
async fn sim_process(seed: u64) -> (ChildGuard, String) {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
        .args(["simulate", "sisense", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--seed", &seed.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(log_stderr())
        .spawn()
        .expect("simulator binary starts");
    let guard = ChildGuard { child, cont: None };
    let base = format!("http://127.0.0.1:{port}");
    SisenseApi::login(&base).await;
    (guard, base)
}

/// Retries `f` until it gives a value (the checker's calls meet the simulator's faults too).
async fn retry<T, F, Fut>(f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("gave up retrying");
}

/// Creates `pre@acme.test` (a consumer) directly in Sisense, through faults.
async fn create_pre_user(base: &str) {
    retry(|| async {
        let api = SisenseApi::try_login(base).await?;
        let (s, roles) = api.call(reqwest::Method::GET, "/api/roles", None).await;
        if s != 200 {
            return None;
        }
        let role = roles.as_array()?.iter().find(|r| r["name"] == "consumer")?["_id"].clone();
        let (s, _) = api
            .call(
                reqwest::Method::POST,
                "/api/v1/users",
                Some(
                    json!({"email": "pre@acme.test", "userName": "pre@acme.test", "roleId": role}),
                ),
            )
            .await;
        // A 5xx may have created it anyway: a conflict on the retry means it is there.
        (s == 201 || s == 409 || snapshot(base).await?.users.contains_key("pre@acme.test"))
            .then_some(())
    })
    .await;
}

/// Runs the four variants (Okta/Entra × rest/scim) concurrently and fails with every variant's
/// failure.
async fn run_variants<F, Fut>(run: &str, f: F)
where
    F: Fn(Seq, bool, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let mut handles = Vec::new();
    for (i, (seq, native)) in [
        (Seq::Okta, false),
        (Seq::Okta, true),
        (Seq::Entra, false),
        (Seq::Entra, true),
    ]
    .into_iter()
    .enumerate()
    {
        let label = format!(
            "{run}/{}/{}",
            seq.name(),
            if native { "scim" } else { "rest" }
        );
        // `SISENSE_CHAOS_ONLY=entra/scim` runs only the variants whose label contains it.
        if std::env::var("SISENSE_CHAOS_ONLY").is_ok_and(|only| !label.contains(&only)) {
            continue;
        }
        // Staggered a little: four bridges starting at once on two cores.
        let delay = Duration::from_millis(300 * i as u64);
        let fut = f(seq, native, label.clone());
        handles.push((
            label,
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                fut.await
            }),
        ));
    }
    let handles_len = handles.len();
    let mut failures = Vec::new();
    for (label, h) in handles {
        if let Err(e) = h.await {
            let msg = if e.is_panic() {
                let p = e.into_panic();
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into())
            } else {
                e.to_string()
            };
            failures.push(format!("[{label}] {msg}"));
        }
    }
    let ran = handles_len;
    eprintln!("{run}: {ran} variant(s) in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {ran} variants failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn tenant_for(base: &str, seq: Seq, native: bool) -> scim_bridge::config::TenantConfig {
    let t = tenant(base, seq.deprovision(), demo_rules());
    if native {
        scim_mode(t)
    } else {
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Run 1: vendor faults.
// ---------------------------------------------------------------------------------------------

/// The simulator fails 10% of requests, throttles at 20 rps and expires tokens every 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_under_vendor_faults() {
    run_variants("faults", |seq, native, label| async move {
        let sim = spawn_sim(SimOptions {
            error_rate: 0.1,
            throttle_rps: Some(20.0),
            token_ttl_s: Some(5),
            seed: Some(7),
            ..SimOptions::default()
        })
        .await;
        let base = sim.base_url();
        if let Seq::Okta = seq {
            create_pre_user(&base).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let bridge = start_bridge(&config(tenant_for(&base, seq, native), dir.path()))
            .await
            .unwrap_or_else(|e| panic!("{label}: bridge start: {e}"));
        bridge.scim.wait_ready().await;
        let idp = Idp::new(&bridge.scim.root, &label);
        seq.run(&idp, || {}).await;
        settle(&idp, seq, &base).await;
        bridge.server.stop().await;
        sim.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 2: the simulator frozen for 40 s mid-run.
// ---------------------------------------------------------------------------------------------

/// Half the sequence, then the simulator process is stopped (SIGSTOP) and the rest is sent
/// while it is frozen; it is continued 40 s after the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_simulator_frozen_for_40s() {
    run_variants("frozen", |seq, native, label| async move {
        let (mut sim, base) = sim_process(21).await;
        if let Seq::Okta = seq {
            SisenseApi::login(&base)
                .await
                .create_user("pre@acme.test", "consumer")
                .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let bridge = start_bridge(&config(tenant_for(&base, seq, native), dir.path()))
            .await
            .unwrap_or_else(|e| panic!("{label}: bridge start: {e}"));
        bridge.scim.wait_ready().await;
        let idp = Idp::new(&bridge.scim.root, &label);
        let mut stopped_at = None;
        seq.run(&idp, || {
            sim.signal("-STOP");
            stopped_at = Some(Instant::now());
            let pid = sim.pid();
            sim.cont = Some(tokio::spawn(async move {
                tokio::time::sleep(FREEZE).await;
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &pid])
                    .status();
            }));
        })
        .await;
        let stopped_at = stopped_at.expect("the sequence reached its midpoint");
        let rest_took = stopped_at.elapsed();
        // Still frozen: readiness stays 200 (the store serves).
        if rest_took < FREEZE {
            let started = Instant::now();
            let r = idp
                .http
                .get(format!("{}/readyz", idp.root))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{label}: /readyz: {e}"));
            assert_eq!(r.status().as_u16(), 200, "{label}: /readyz while frozen");
            assert!(started.elapsed() < REQUEST_LIMIT, "{label}: /readyz slow");
        }
        let cont = sim.cont.take().unwrap();
        cont.await.unwrap();
        let (n, slowest) = idp.during(stopped_at, stopped_at + FREEZE);
        eprintln!(
            "{label}: rest of the sequence took {rest_took:?} from the stop; \
             {n} requests while frozen, slowest {slowest:?}"
        );
        assert!(
            n > 0,
            "{label}: nothing was sent while the simulator was frozen"
        );
        settle(&idp, seq, &base).await;
        bridge.server.stop().await;
        drop(sim);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Run 3: the bridge SIGKILLed while the outbox delivers.
// ---------------------------------------------------------------------------------------------

/// The pending outbox depth of the tenant, from `/metrics`.
async fn pending_depth(root: &str) -> f64 {
    let text = reqwest::get(format!("{root}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with(&format!(
                "scim_outbox_depth{{state=\"pending\",tenant=\"{TENANT}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// The real binary with a 200 ms inline deadline in front of a simulator answering in 500 ms:
/// every write is answered from the outbox. Killed right after the last write, restarted on
/// the same data dir and port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_with_the_bridge_sigkilled_while_the_outbox_delivers() {
    run_variants("sigkill", |seq, native, label| async move {
        let sim = spawn_sim(SimOptions {
            latency_ms: 500,
            seed: Some(31),
            ..SimOptions::default()
        })
        .await;
        let base = sim.base_url();
        if let Seq::Okta = seq {
            SisenseApi::login(&base)
                .await
                .create_user("pre@acme.test", "consumer")
                .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config_path = dir.path().join("scim-bridge.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"listen = "127.0.0.1:{port}"
data_dir = "{data}"

[[tenants]]
id = "{TENANT}"
tokens = ["{TOKEN}"]

[tenants.vendor]
kind = "sisense"
base_url = "{base}/"
username = "admin@sisense.local"
password = "admin"
deprovision = "{deprovision}"
{mode}
[tenants.roles]
default = "Viewer"
rules = [ {{ group = "BI Admins", role = "Admin" }}, {{ group = "BI Designers", role = "Designer" }} ]
"#,
                data = dir.path().join("data").display(),
                deprovision = match seq.deprovision() {
                    SisenseDeprovision::Delete => "delete",
                    _ => "deactivate",
                },
                mode = if native {
                    format!("mode = \"scim\"\nscim_token = \"{SIM_SCIM_TOKEN}\"\n")
                } else {
                    String::new()
                },
            ),
        )
        .unwrap();
        let spawn = || ChildGuard {
            child: std::process::Command::new(env!("CARGO_BIN_EXE_scim-bridge"))
                .args(["serve", "--config"])
                .arg(&config_path)
                .env("SCIM_BRIDGE_INLINE_DEADLINE_MS", "200")
                .stdout(std::process::Stdio::null())
                .stderr(log_stderr())
                .spawn()
                .expect("bridge binary starts"),
            cont: None,
        };
        let root = format!("http://127.0.0.1:{port}");
        let mut bridge = spawn();
        Scim::new(&root).wait_ready().await;
        let idp = Idp::new(&root, &label);
        seq.run(&idp, || {}).await;
        let pending = pending_depth(&root).await;
        bridge.kill9();
        eprintln!("{label}: killed with {pending} object(s) pending in the outbox");
        assert!(
            pending >= 1.0,
            "{label}: the outbox was already drained at the kill (the run tests nothing)"
        );
        let bridge = spawn();
        Scim::new(&root).wait_ready().await;
        // `snapshot` panics on a duplicate Sisense user; `settle` checks no orphan mapping.
        settle(&idp, seq, &base).await;
        drop(bridge);
        sim.stop().await;
    })
    .await;
}
