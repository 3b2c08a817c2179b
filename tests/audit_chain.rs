//! The tamper-evident audit log (issue 13) over a real sled store: entries made by a real
//! engine over the Sisense simulator (real sockets) carry the right events, actors and values;
//! the hash chain verifies, and fails naming the first bad entry when a stored entry is altered
//! or removed (in the middle or at the end); retention prunes and the chain still verifies;
//! exports in JSON lines and CSV re-verify without the bridge, with their filters; pages.

#[path = "support/bridge.rs"]
mod bridge;
#[path = "support/idp.rs"]
mod idp;
#[path = "support/sisense_api.rs"]
mod sisense_api;

use chrono::{DateTime, Duration as Days, Utc};
use idp::{create, group};
use scim_bridge::engine::Engine;
use scim_bridge::governance::audit::{
    audited_tenants, enforce_retention, export, export_with_progress, page, verify, AuditFault,
    ExportFilter, ExportFormat, FaultKind, PageFilter,
};
use scim_bridge::store::audit::{entry_key, AuditEntry, AuditEvent, AuditLog, GENESIS};
use scim_bridge::store::Store;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sisense_api::{demo_rules, spawn_sim, tenant, Scim, SisenseApi, TENANT};
use std::sync::Arc;
use std::time::Duration;

/// The Sisense engine of tenant `acme` on `store`, its first observe done, served with no
/// background work (writes are delivered inline; the test delivers the rest).
async fn bridge_on(
    store: &Store,
    sim_base: &str,
) -> (Arc<Engine>, scim_bridge::server::RunningServer, Scim) {
    use scim_bridge::connector::sisense::{open, preflight};
    let t = tenant(
        sim_base,
        scim_bridge::config::SisenseDeprovision::Deactivate,
        demo_rules(),
    );
    let engine = open(store, &t, 0, None).unwrap();
    let t2 = t.clone();
    let roles = preflight(&t2, 0).await.unwrap().expect("Sisense reachable");
    engine.set_roles(roles);
    engine.observe_now().await.unwrap();
    let server = bridge::serve_engine(&t, engine.clone(), store.clone(), 1);
    let scim = Scim::new(&bridge::root(&server), &bridge::admin_root(&server));
    (engine, server, scim)
}

/// Delivers until nothing is pending.
async fn deliver_all(engine: &Arc<Engine>) {
    for _ in 0..50 {
        if engine.outbox().iter().all(|(_, _, e)| e.failed) {
            return;
        }
        engine.deliver_due().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox did not drain: {:?}", engine.outbox());
}

fn broken(r: Result<impl std::fmt::Debug, AuditFault>) -> (String, u64, FaultKind) {
    match r {
        Err(AuditFault::Broken {
            tenant, seq, kind, ..
        }) => (tenant, seq, kind),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_changes_are_audited_with_their_actors_and_tampering_is_found() {
    let sim = spawn_sim(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = bridge::open_store(dir.path()).await;
    let (engine, server, scim) = bridge_on(&store, &sim.base_url()).await;
    let before = engine.audit().len();

    let ada = create(
        &scim,
        "/Users",
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@acme.test",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"value": "ada@acme.test", "primary": true}],
        }),
    )
    .await;
    let admins = create(&scim, "/Groups", group("BI Admins", &[ada.as_str()])).await;
    deliver_all(&engine).await;
    scim.patch_ok(
        &format!("/Users/{ada}"),
        json!([{"op": "replace", "path": "active", "value": false}]),
    )
    .await;
    deliver_all(&engine).await;

    // What Sisense shows: ada an inactive admin in BI Admins.
    let api = SisenseApi::login(&sim.base_url()).await;
    let state = api.state().await;
    assert_eq!(
        state["ada@acme.test"],
        ("admin".into(), false, vec!["BI Admins".into()])
    );

    let entries: Vec<AuditEntry> = engine.audit().entries().unwrap()[before as usize..].to_vec();
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.event.as_str(), e.actor.as_str(), e.user_name.as_str()))
        .collect();
    let find = |event: AuditEvent, name: &str| {
        entries
            .iter()
            .find(|e| e.event == event && e.user_name == name)
            .unwrap_or_else(|| panic!("no {} of {name}: {summary:?}", event.as_str()))
    };
    let created = find(AuditEvent::UserCreated, "ada@acme.test");
    assert_eq!(
        (created.actor.as_str(), created.cause.as_str()),
        ("idp", "create")
    );
    assert_eq!(created.user_id, ada);
    assert!(!created.vendor_user_id.is_empty());
    assert_eq!(created.after["email"], "ada@acme.test");
    assert_eq!(created.after["active"], true);
    let roles: Vec<(Option<&str>, &str, &str)> = entries
        .iter()
        .filter(|e| e.event == AuditEvent::RoleChange)
        .map(|e| (e.from.as_deref(), e.to.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        roles,
        [(None, "Viewer", "idp"), (Some("Viewer"), "Admin", "idp")],
        "{summary:?}"
    );
    let role = entries
        .iter()
        .rfind(|e| e.event == AuditEvent::RoleChange)
        .unwrap();
    assert_eq!(role.before, json!({"role": "Viewer"}));
    assert_eq!(role.after, json!({"role": "Admin"}));
    assert!(role.cause.contains("BI Admins"), "{role:?}");
    let made = find(AuditEvent::GroupCreated, "BI Admins");
    assert_eq!(
        (made.actor.as_str(), made.user_id.as_str()),
        ("idp", admins.as_str())
    );
    assert_eq!(made.after, json!({"name": "BI Admins"}));
    let joined = find(AuditEvent::MemberAdded, "ada@acme.test");
    assert_eq!(joined.actor, "idp");
    assert_eq!(joined.after["group"], "BI Admins");
    assert_eq!(joined.after["group_id"], admins.as_str());
    let off = find(AuditEvent::UserDeactivated, "ada@acme.test");
    assert_eq!((off.actor.as_str(), off.cause.as_str()), ("idp", "patch"));
    assert_eq!(
        (off.before.clone(), off.after.clone()),
        (json!({"active": true}), json!({"active": false}))
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.event == AuditEvent::UserUpdated)
            .count(),
        0,
        "no profile change was sent: {summary:?}"
    );

    // The chain: seq without gaps, each entry linked to the one before.
    let all = engine.audit().entries().unwrap();
    let mut prev = GENESIS.to_string();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.prev, prev);
        prev = e.hash.clone();
    }
    let last = all.len() as u64;
    assert!(last >= 6, "{summary:?}");
    let report = verify(&store, Some(TENANT)).unwrap();
    assert_eq!(report.chains[0].entries, last);
    assert_eq!(report.chains[0].head_hash, prev);
    assert_eq!(audited_tenants(&store).unwrap(), [TENANT]);
    assert_eq!(verify(&store, None).unwrap().entries(), last);

    let tree = store.tree(TENANT, "audit").unwrap();
    let original = |seq: u64| tree.get(entry_key(seq)).unwrap().unwrap();

    // One stored byte altered: the entry is named.
    let third = original(3);
    let text = String::from_utf8(third.clone()).unwrap();
    let at = serde_json::from_str::<Value>(&text).unwrap()["at"]
        .as_str()
        .unwrap()
        .to_string();
    let pos = text.find("\"actor\":\"").unwrap() + "\"actor\":\"".len();
    let mut altered = third.clone();
    altered[pos] = if altered[pos] == b'x' { b'y' } else { b'x' };
    tree.insert(entry_key(3), &altered).unwrap();
    match verify(&store, Some(TENANT)) {
        Err(f @ AuditFault::Broken { .. }) => {
            let said = f.to_string();
            assert!(said.contains("tenant acme"), "{said}");
            assert!(said.contains("entry 3"), "{said}");
            assert!(said.contains(&at), "{said}");
            assert!(said.contains("altered"), "{said}");
        }
        other => panic!("{other:?}"),
    }
    // Altered and its hash recomputed, as someone who read the module doc would: the next
    // entry's link gives it away.
    let mut v: Map<String, Value> = serde_json::from_slice(&third).unwrap();
    v.insert("actor".into(), "operator".into());
    v.remove("hash");
    let mut hashed = v.clone();
    hashed.insert("tenant".into(), TENANT.into());
    let rehash = hex::encode(Sha256::digest(canonical(&Value::Object(hashed))));
    v.insert("hash".into(), rehash.into());
    tree.insert(entry_key(3), serde_json::to_vec(&v).unwrap())
        .unwrap();
    let (_, seq, kind) = broken(verify(&store, Some(TENANT)));
    assert_eq!(seq, 4);
    assert!(
        matches!(kind, FaultKind::Altered(ref why) if why.contains("prev")),
        "{kind}"
    );
    tree.insert(entry_key(3), &third).unwrap();
    verify(&store, Some(TENANT)).unwrap();

    // A middle entry removed.
    let second = original(2);
    tree.remove(entry_key(2)).unwrap();
    let (tenant, seq, kind) = broken(verify(&store, None));
    assert_eq!((tenant.as_str(), seq), (TENANT, 2));
    assert_eq!(kind, FaultKind::Missing { from: 2, to: 2 });
    assert_eq!(kind.to_string(), "missing entry 2");
    tree.insert(entry_key(2), &second).unwrap();

    // The last two removed: the head still names them.
    let tail = (original(last - 1), original(last));
    tree.remove(entry_key(last)).unwrap();
    tree.remove(entry_key(last - 1)).unwrap();
    let (_, seq, kind) = broken(verify(&store, Some(TENANT)));
    assert_eq!(seq, last - 1);
    assert_eq!(
        kind,
        FaultKind::Missing {
            from: last - 1,
            to: last
        }
    );
    assert_eq!(
        kind.to_string(),
        format!("missing entries {}..{last}", last - 1)
    );
    // The head moved back too, by hand: the head's hash is not the new last entry's.
    let head = tree.get("head").unwrap().unwrap();
    let mut h: Value = serde_json::from_slice(&head).unwrap();
    h["seq"] = json!(last - 2);
    tree.insert("head", serde_json::to_vec(&h).unwrap())
        .unwrap();
    let (_, _, kind) = broken(verify(&store, Some(TENANT)));
    assert!(matches!(kind, FaultKind::HeadMismatch(_)), "{kind}");
    tree.insert("head", &head).unwrap();
    tree.insert(entry_key(last - 1), &tail.0).unwrap();
    tree.insert(entry_key(last), &tail.1).unwrap();
    verify(&store, Some(TENANT)).unwrap();

    // Appends go on from the head after a restart of the engine.
    server.stop().await;
    drop(engine);
    let (engine, server, scim) = bridge_on(&store, &sim.base_url()).await;
    scim.patch_ok(
        &format!("/Users/{ada}"),
        json!([{"op": "replace", "path": "active", "value": true}]),
    )
    .await;
    deliver_all(&engine).await;
    let back = engine.audit().entries().unwrap();
    let on = back
        .iter()
        .find(|e| e.event == AuditEvent::UserReactivated)
        .expect("reactivation audited");
    assert!(on.seq > last);
    assert_eq!(on.actor, "idp");

    // A role changed by hand in Sisense is put back by the next observe: a drift correction,
    // actor `sync`.
    let roles = api.role_names().await;
    let designer = roles.iter().find(|(_, v)| *v == "contributor").unwrap().0;
    let vid = &on.vendor_user_id;
    let (s, v) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{vid}"),
            Some(json!({ "roleId": designer })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let seen = engine.audit().len();
    engine.observe_now().await.unwrap();
    let fixed = engine.audit().entries().unwrap();
    let fix = fixed.last().unwrap();
    assert_eq!(engine.audit().len(), seen + 1, "{fixed:?}");
    assert_eq!(
        (
            fix.event,
            fix.actor.as_str(),
            fix.from.as_deref(),
            fix.to.as_str()
        ),
        (AuditEvent::RoleChange, "sync", Some("Designer"), "Admin")
    );
    assert!(fix.cause.contains("role changed in Sisense"), "{fix:?}");
    verify(&store, Some(TENANT)).unwrap();
    server.stop().await;
}

/// Compact JSON with sorted keys, written here independently of the bridge's own.
fn canonical(v: &Value) -> Vec<u8> {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap(),
                        String::from_utf8(canonical(&m[k])).unwrap()
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(",")).into_bytes()
        }
        Value::Array(a) => {
            let parts: Vec<String> = a
                .iter()
                .map(|x| String::from_utf8(canonical(x)).unwrap())
                .collect();
            format!("[{}]", parts.join(",")).into_bytes()
        }
        other => serde_json::to_vec(other).unwrap(),
    }
}

/// An auditor's check of one exported object: its hash recomputed.
fn rehash(line: &Map<String, Value>) -> String {
    let mut m = line.clone();
    m.remove("hash");
    hex::encode(Sha256::digest(canonical(&Value::Object(m))))
}

fn entry_at(at: DateTime<Utc>, name: &str, cause: &str) -> AuditEntry {
    let mut e = AuditEntry::new(AuditEvent::UserUpdated, "idp", cause)
        .user(&format!("id-{name}"), name, &format!("v-{name}"))
        .before(json!({"email": format!("old-{name}@x")}))
        .after(json!({"email": format!("{name}@x")}));
    e.at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    e
}

#[test]
fn retention_prunes_old_entries_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "acme").unwrap();
    let old = Utc::now() - Days::days(400);
    let young = Utc::now() - Days::days(2);
    let mut batch: Vec<AuditEntry> = (0..5)
        .map(|i| entry_at(old + Days::hours(i), &format!("old{i}"), "patch"))
        .collect();
    batch.extend((0..3).map(|i| entry_at(young + Days::hours(i), &format!("new{i}"), "patch")));
    log.append(&batch).unwrap();
    let cutoff = Utc::now() - Days::days(365);

    assert_eq!(enforce_retention(&store, "acme", cutoff).unwrap(), 5);
    let report = verify(&store, Some("acme")).unwrap();
    let chain = &report.chains[0];
    assert_eq!(
        (chain.first_seq, chain.last_seq, chain.entries),
        (Some(6), 9, 4)
    );
    assert_eq!(
        chain.checkpoint.as_ref().map(|c| (c.seq, c.pruned)),
        Some((5, 5))
    );
    let entries = log.entries().unwrap();
    let pruned = entries.last().unwrap();
    assert_eq!(pruned.event, AuditEvent::RetentionPruned);
    assert_eq!(pruned.actor, "operator");
    assert_eq!(pruned.detail.as_deref(), Some("5"));
    assert_eq!(log.len(), 4);
    // Nothing old is left: nothing pruned, nothing recorded.
    assert_eq!(enforce_retention(&store, "acme", cutoff).unwrap(), 0);
    assert_eq!(log.len(), 4);
    // Appends go on after the pruning, and the chain still verifies.
    log.append(&[entry_at(Utc::now(), "later", "patch")])
        .unwrap();
    assert_eq!(verify(&store, None).unwrap().chains[0].last_seq, 10);

    // The first entry after the checkpoint removed: found.
    let tree = store.tree("acme", "audit").unwrap();
    tree.remove(entry_key(6)).unwrap();
    let (_, seq, kind) = broken(verify(&store, Some("acme")));
    assert_eq!((seq, kind), (6, FaultKind::Missing { from: 6, to: 6 }));
    // A tenant without a log is said so, not passed.
    assert!(matches!(
        verify(&store, Some("nobody")),
        Err(AuditFault::NoLog(_))
    ));
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes, CRLF rows).
fn read_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
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
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "a row without its CRLF");
    rows
}

#[test]
fn exports_re_verify_without_the_bridge_and_honour_their_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let then = Utc::now() - Days::days(10);
    let now = Utc::now();
    for tenant in ["acme", "beta"] {
        let log = AuditLog::open(&store, tenant).unwrap();
        log.append(&[
            entry_at(then, "ann", "patch"),
            // What a CSV must quote: a comma, a quote, a line break, and non-ASCII.
            entry_at(
                now,
                "bob",
                "membership of group \"Sales, EMEA\"\nsecond line é",
            )
            .detail("vendor said: \"no\", twice"),
        ])
        .unwrap();
    }

    let mut jsonl = Vec::new();
    assert_eq!(
        export(
            &store,
            &ExportFilter::default(),
            ExportFormat::Jsonl,
            &mut jsonl
        )
        .unwrap(),
        4
    );
    let lines: Vec<Map<String, Value>> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tenants: Vec<&str> = lines
        .iter()
        .map(|l| l["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme", "acme", "beta", "beta"]);
    for l in &lines {
        assert_eq!(rehash(l), l["hash"].as_str().unwrap(), "{l:?}");
        assert!(l["seq"].is_u64() && l["prev"].is_string());
    }
    assert_eq!(lines[1]["prev"], lines[0]["hash"]);
    // A line altered after export no longer matches its hash.
    let mut forged = lines[1].clone();
    forged.insert("actor".into(), "sync".into());
    assert_ne!(rehash(&forged), forged["hash"].as_str().unwrap());

    // Filters: one tenant, since a time.
    let mut out = Vec::new();
    let filter = ExportFilter {
        tenant: Some("beta".into()),
        since: Some(now - Days::hours(1)),
    };
    assert_eq!(
        export(&store, &filter, ExportFormat::Jsonl, &mut out).unwrap(),
        1
    );
    let only: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (only["tenant"].as_str(), only["name"].as_str()),
        (Some("beta"), Some("bob"))
    );
    let unknown = ExportFilter {
        tenant: Some("nobody".into()),
        since: None,
    };
    assert!(export(&store, &unknown, ExportFormat::Csv, &mut Vec::new()).is_err());

    // CSV: a header, every field read back exactly, every row re-verified.
    let mut csv = Vec::new();
    let filter = ExportFilter {
        tenant: Some("acme".into()),
        since: None,
    };
    assert_eq!(
        export(&store, &filter, ExportFormat::Csv, &mut csv).unwrap(),
        2
    );
    let rows = read_csv(&String::from_utf8(csv).unwrap());
    assert_eq!(rows.len(), 3);
    let header = &rows[0];
    assert_eq!(header[..3], ["tenant", "seq", "at"]);
    for (row, line) in rows[1..].iter().zip(&lines[..2]) {
        let mut rebuilt = Map::new();
        for (col, cell) in header.iter().zip(row) {
            let value = match col.as_str() {
                _ if cell.is_empty() && ["before", "after", "detail"].contains(&col.as_str()) => {
                    continue
                }
                "seq" => json!(cell.parse::<u64>().unwrap()),
                "before" | "after" => serde_json::from_str(cell).unwrap(),
                _ => json!(cell),
            };
            rebuilt.insert(col.clone(), value);
        }
        assert_eq!(&rebuilt, line, "the CSV row carries the whole entry");
        assert_eq!(rehash(&rebuilt), rebuilt["hash"].as_str().unwrap());
    }
    assert_eq!(
        rows[2][header.iter().position(|h| h == "cause").unwrap()],
        "membership of group \"Sales, EMEA\"\nsecond line é"
    );
}

#[test]
fn pages_are_newest_first_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "acme").unwrap();
    let now = Utc::now();
    let mut batch: Vec<AuditEntry> = (0..30)
        .map(|i| entry_at(now - Days::minutes(30 - i), &format!("u{i:02}"), "patch"))
        .collect();
    batch.push(
        AuditEntry::new(AuditEvent::UserDeactivated, "sweep", "dormant 90 days")
            .user("id-zed", "Zed@acme.test", "v-zed")
            .before(json!({"active": true}))
            .after(json!({"active": false})),
    );
    log.append(&batch).unwrap();

    let (first, total) = page(&store, "acme", &PageFilter::default(), 0, 10).unwrap();
    assert_eq!(total, 31);
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].user_name, "Zed@acme.test");
    assert_eq!(first[1].user_name, "u29");
    let (last, _) = page(&store, "acme", &PageFilter::default(), 30, 10).unwrap();
    assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);

    let sweep = PageFilter {
        actor: Some("sweep".into()),
        ..Default::default()
    };
    let (hits, total) = page(&store, "acme", &sweep, 0, 10).unwrap();
    assert_eq!((total, hits[0].event), (1, AuditEvent::UserDeactivated));
    let text = PageFilter {
        text: Some("ZED@".into()),
        event: Some("user_deactivated".into()),
        ..Default::default()
    };
    assert_eq!(page(&store, "acme", &text, 0, 10).unwrap().1, 1);
    let by_value = PageFilter {
        text: Some("old-u07@".into()),
        ..Default::default()
    };
    let (hits, total) = page(&store, "acme", &by_value, 0, 10).unwrap();
    assert_eq!((total, hits[0].user_name.as_str()), (1, "u07"));
    let paged = PageFilter {
        event: Some("user_updated".into()),
        ..Default::default()
    };
    let (hits, total) = page(&store, "acme", &paged, 25, 10).unwrap();
    assert_eq!((total, hits.len()), (30, 5));
    assert_eq!(page(&store, "nobody", &paged, 0, 10).unwrap().1, 0);
}

/// Counts what it is given, keeping none of it: the export must stream.
struct Tally(u64, u64);

impl std::io::Write for Tally {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        self.1 += buf.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_100000_entry_log_exports_as_a_stream_with_progress_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "big").unwrap();
    let at = Utc::now();
    for chunk in 0..100 {
        let batch: Vec<AuditEntry> = (0..1000)
            .map(|i| entry_at(at, &format!("user{chunk}-{i}"), "sync"))
            .collect();
        log.append(&batch).unwrap();
    }
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut tally = Tally(0, 0);
    let n = export_with_progress(
        &store,
        &ExportFilter::default(),
        ExportFormat::Jsonl,
        &mut tally,
        Some(&mut |done| seen.push(done)),
    )
    .unwrap();
    assert_eq!((n, tally.1), (100_000, 100_000));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100_000));
    assert!(seen.len() >= 100, "progress every 1,000: {}", seen.len());
    let report = verify(&store, Some("big")).unwrap();
    assert_eq!(report.chains[0].last_seq, 100_000);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "export and verify of 100,000 entries took {:?}",
        started.elapsed()
    );
}

/// The checkpoint as the store keeps it, rewritten by hand (as someone who read the module doc
/// would): the retention record the chain carries is what gives it away.
fn forge_checkpoint(store: &Store, tenant: &str, seq: u64, hash: &str, at: &str, pruned: u64) {
    let tree = store.tree(tenant, "audit").unwrap();
    tree.insert(
        "checkpoint",
        serde_json::to_vec(&json!({"seq": seq, "hash": hash, "at": at, "pruned": pruned})).unwrap(),
    )
    .unwrap();
}

/// Removes entries `from..=to` as a forger would, and returns the stored entry `to + 1` (whose
/// `prev` is the hash the forged checkpoint needs) and entry `to`'s time.
fn cut_oldest(store: &Store, tenant: &str, from: u64, to: u64) -> (Map<String, Value>, String) {
    let tree = store.tree(tenant, "audit").unwrap();
    let mut last_at = String::new();
    for seq in from..=to {
        let e: Value = serde_json::from_slice(&tree.get(entry_key(seq)).unwrap().unwrap()).unwrap();
        last_at = e["at"].as_str().unwrap().to_string();
        tree.remove(entry_key(seq)).unwrap();
    }
    let next = serde_json::from_slice(&tree.get(entry_key(to + 1)).unwrap().unwrap()).unwrap();
    (next, last_at)
}

#[test]
fn a_forged_checkpoint_over_removed_old_entries_is_found_and_named() {
    // No retention ever ran: the three oldest entries removed, and a checkpoint forged so that
    // the chain seems to start after them (its hash is the next entry's `prev`).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "acme").unwrap();
    let at = Utc::now() - Days::days(3);
    let batch: Vec<AuditEntry> = (0..8)
        .map(|i| entry_at(at + Days::minutes(i), &format!("u{i}"), "patch"))
        .collect();
    log.append(&batch).unwrap();
    verify(&store, Some("acme")).unwrap();
    let (next, last_at) = cut_oldest(&store, "acme", 1, 3);
    forge_checkpoint(
        &store,
        "acme",
        3,
        next["prev"].as_str().unwrap(),
        &last_at,
        3,
    );
    let fault = verify(&store, Some("acme")).unwrap_err();
    let said = fault.to_string();
    let (_, seq, kind) = broken(Err::<(), _>(fault));
    assert_eq!(seq, 4, "{said}");
    assert!(matches!(kind, FaultKind::Checkpoint(_)), "{kind:?}");
    assert!(
        said.contains("retention checkpoint does not match the chain")
            && said.contains("no retention_pruned entry"),
        "{said}"
    );

    // After a real retention run, more old entries removed and the checkpoint moved over them.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "acme").unwrap();
    let old = Utc::now() - Days::days(400);
    let young = Utc::now() - Days::days(2);
    let mut batch: Vec<AuditEntry> = (0..5)
        .map(|i| entry_at(old + Days::hours(i), &format!("old{i}"), "patch"))
        .collect();
    batch.extend((0..6).map(|i| entry_at(young + Days::hours(i), &format!("new{i}"), "patch")));
    log.append(&batch).unwrap();
    assert_eq!(
        enforce_retention(&store, "acme", Utc::now() - Days::days(365)).unwrap(),
        5
    );
    // The retention entry (seq 12) carries the checkpoint: entries from 6 on are kept.
    let record = log.entries().unwrap().last().unwrap().clone();
    assert_eq!(
        (record.seq, record.event),
        (12, AuditEvent::RetentionPruned)
    );
    assert_eq!(record.after["first_kept_seq"], 6);
    let cp = verify(&store, Some("acme")).unwrap().chains[0]
        .checkpoint
        .clone()
        .unwrap();
    assert_eq!(record.after["last_pruned_hash"], cp.hash.as_str());
    assert_eq!(record.after["pruned_total"], 5);

    let (next, last_at) = cut_oldest(&store, "acme", 6, 8);
    forge_checkpoint(
        &store,
        "acme",
        8,
        next["prev"].as_str().unwrap(),
        &last_at,
        8,
    );
    let fault = verify(&store, Some("acme")).unwrap_err();
    let said = fault.to_string();
    let (tenant, seq, kind) = broken(Err::<(), _>(fault));
    assert_eq!((tenant.as_str(), seq), ("acme", 6), "{said}");
    assert!(matches!(kind, FaultKind::Checkpoint(_)), "{kind:?}");
    assert!(
        said.contains("entries up to 8 were pruned, the chain records up to 5")
            && said.contains("entry 12")
            && said.contains("entries 6..8 were removed outside retention"),
        "{said}"
    );

    // The checkpoint's seq left alone but its time or count rewritten: named as well.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "acme").unwrap();
    log.append(&batch).unwrap();
    enforce_retention(&store, "acme", Utc::now() - Days::days(365)).unwrap();
    let cp = verify(&store, Some("acme")).unwrap().chains[0]
        .checkpoint
        .clone()
        .unwrap();
    forge_checkpoint(
        &store,
        "acme",
        cp.seq,
        &cp.hash,
        "2020-01-01T00:00:00Z",
        cp.pruned,
    );
    let (_, seq, kind) = broken(verify(&store, Some("acme")));
    assert_eq!(seq, 6);
    assert!(
        matches!(kind, FaultKind::Checkpoint(ref why) if why.contains("time")),
        "{kind}"
    );
    forge_checkpoint(&store, "acme", cp.seq, &cp.hash, &cp.at, cp.pruned);
    verify(&store, Some("acme")).unwrap();
}

#[test]
fn retention_in_steps_chains_each_checkpoint_and_verifies() {
    // More than one step (5,000 entries each): every step records its own checkpoint, and
    // the chain verifies after each run, and after appends.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let log = AuditLog::open(&store, "acme").unwrap();
    let old = Utc::now() - Days::days(400);
    for chunk in 0..12 {
        let batch: Vec<AuditEntry> = (0..1000)
            .map(|i| entry_at(old + Days::seconds(chunk * 1000 + i), "old", "patch"))
            .collect();
        log.append(&batch).unwrap();
    }
    log.append(&[entry_at(Utc::now(), "young", "patch")])
        .unwrap();
    let cutoff = Utc::now() - Days::days(365);
    assert_eq!(enforce_retention(&store, "acme", cutoff).unwrap(), 12_000);
    let entries = log.entries().unwrap();
    let records: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.event == AuditEvent::RetentionPruned)
        .collect();
    let kept: Vec<u64> = records
        .iter()
        .map(|e| e.after["first_kept_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [5_001, 10_001, 12_001]);
    assert!(records.iter().all(|e| e.actor == "operator"));
    let chain = verify(&store, Some("acme")).unwrap().chains[0].clone();
    assert_eq!(
        chain.checkpoint.map(|c| (c.seq, c.pruned)),
        Some((12_000, 12_000))
    );
    assert_eq!((chain.first_seq, chain.entries), (Some(12_001), 4));

    // A second run a long time later prunes the young entry and the records of the first run
    // too: the newest record still names the checkpoint.
    let later = Utc::now() + Days::days(1);
    assert_eq!(enforce_retention(&store, "acme", later).unwrap(), 4);
    let chain = verify(&store, Some("acme")).unwrap().chains[0].clone();
    assert_eq!(
        chain.checkpoint.map(|c| (c.seq, c.pruned)),
        Some((12_004, 12_004))
    );
    assert_eq!((chain.first_seq, chain.last_seq), (Some(12_005), 12_005));
    log.append(&[entry_at(Utc::now(), "after", "patch")])
        .unwrap();
    assert_eq!(verify(&store, None).unwrap().chains[0].last_seq, 12_006);
}
