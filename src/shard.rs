//! `scim-bridge shard plan` (issue 14, CONTRACT §6): tenants partitioned over N replicas of one
//! StatefulSet, each replica the single writer of its own store.
//!
//! Why shards and not a cluster: sled allows one process per store, and the engine's outbox is
//! correct because exactly one process delivers a tenant's changes. Kubernetes already provides
//! what a home-made cluster would have to: a StatefulSet pod keeps its identity and its volume
//! across restarts, and is never run twice at once (the "at most one" guarantee of StatefulSets).
//! So a tenant belongs to one replica, the replica's store holds only its tenants, and the
//! Ingress routes `/tenants/{id}/` to that replica's own Service.
//!
//! The plan is a pure function of the config, the tenants' sizes, the previous plan and the
//! operator's explicit moves:
//! - **stable**: a tenant in the previous plan keeps its shard (when that shard still exists), so
//!   re-planning after adding tenants never moves data; moving is a deliberate `--move`, done by
//!   the runbook in the README (export, import, route switch);
//! - **balanced by size**: the others are placed largest first on the least-loaded shard (LPT),
//!   their weight being their user count (from `--sizes`) plus one, so tenants of unknown size
//!   still spread by count. Ties go to the shard with the highest rendezvous hash of
//!   (tenant, shard), so equal inputs always give the same plan.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// The version of `plan.json`, read back by `--previous`.
pub const PLAN_FORMAT: &str = "scim-bridge-shard-plan";
pub const PLAN_VERSION: u32 = 1;

/// The most replicas a plan may have: beyond it, a single Ingress with one Service per shard is
/// the wrong tool.
pub const MAX_SHARDS: u32 = 256;

/// Keys whose values are secrets: a literal value (not `${ENV}` or `${file:…}`) would land in a
/// ConfigMap, which is not where Kubernetes keeps secrets.
const SECRET_KEYS: &[&str] = &[
    "tokens",
    "jwt_secret",
    "password",
    "pat_secret",
    "secret_value",
    "secret_key",
    "api_key",
    "metrics_token",
    "scim_token",
];

/// What `shard plan` needs besides the config.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub shards: u32,
    /// Users per tenant (absent: 0).
    pub sizes: HashMap<String, u64>,
    /// The previous plan's assignment, kept where the shard still exists.
    pub previous: HashMap<String, u32>,
    /// Operator moves: tenant -> shard, applied before anything else.
    pub moves: BTreeMap<String, u32>,
}

/// The assignment of every tenant of the config to a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub format: String,
    pub version: u32,
    pub shards: u32,
    /// Tenant id -> shard, in the config's tenant order.
    pub assignment: Vec<Assignment>,
    /// The sum of the tenants' weights per shard.
    pub loads: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub tenant: String,
    pub shard: u32,
    /// Users (from `--sizes`), 0 when unknown.
    pub users: u64,
    /// Why it is there: `moved`, `kept` (previous plan) or `placed`.
    pub reason: String,
}

impl ShardPlan {
    /// The tenants of `shard`, in config order.
    pub fn tenants_of(&self, shard: u32) -> impl Iterator<Item = &str> {
        self.assignment
            .iter()
            .filter(move |a| a.shard == shard)
            .map(|a| a.tenant.as_str())
    }

    /// A previous plan, read back from its `plan.json`.
    pub fn parse(text: &str) -> Result<ShardPlan, String> {
        let plan: ShardPlan =
            serde_json::from_str(text).map_err(|e| format!("not a shard plan: {e}"))?;
        if plan.format != PLAN_FORMAT {
            return Err(format!(
                "format {:?}, expected {PLAN_FORMAT:?}",
                plan.format
            ));
        }
        if plan.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} (this scim-bridge reads version {PLAN_VERSION})",
                plan.version
            ));
        }
        Ok(plan)
    }
}

/// The tenant ids of a config file's raw TOML, in order, and the table itself. The raw text is
/// used, not the validated `Config`, because per-shard configs must keep `${ENV}` and
/// `${file:…}` references as written: planning must not need the secrets.
pub fn tenant_ids(doc: &toml::Table) -> Result<Vec<String>, String> {
    let tenants = doc
        .get("tenants")
        .and_then(|t| t.as_array())
        .ok_or("the config has no [[tenants]]")?;
    let mut ids = Vec::with_capacity(tenants.len());
    for (i, t) in tenants.iter().enumerate() {
        let id = t
            .get("id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("tenants[{i}].id: missing"))?;
        crate::config::TenantId::parse(id).map_err(|e| format!("tenants[{i}].id: {e}"))?;
        if ids.iter().any(|x| x == id) {
            return Err(format!("tenants[{i}].id: {id:?} appears twice"));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Assigns `tenants` (config order) to `req.shards` shards.
pub fn plan(tenants: &[String], req: &PlanRequest) -> Result<ShardPlan, String> {
    let n = req.shards;
    if n == 0 || n > MAX_SHARDS {
        return Err(format!("--shards must be 1..={MAX_SHARDS}, not {n}"));
    }
    if (tenants.len() as u64) < u64::from(n) {
        return Err(format!(
            "--shards {n} but the config has {} tenant(s): a replica without tenants serves nothing",
            tenants.len()
        ));
    }
    for (t, s) in &req.moves {
        if !tenants.contains(t) {
            return Err(format!("--move {t}={s}: no tenant {t:?} in the config"));
        }
        if *s >= n {
            return Err(format!("--move {t}={s}: shards are numbered 0..{}", n - 1));
        }
    }
    // A tenant whose previous shard is gone has its data on that shard's store: placing it
    // elsewhere silently would route its IdP to an empty store. Its move must be explicit.
    let stranded: Vec<String> = tenants
        .iter()
        .filter(|t| !req.moves.contains_key(*t))
        .filter_map(|t| {
            req.previous
                .get(t)
                .filter(|s| **s >= n)
                .map(|s| format!("{t}={s}"))
        })
        .collect();
    if !stranded.is_empty() {
        return Err(format!(
            "--shards {n} drops the shards of {}: their data is there; move each with --move TENANT=SHARD (and the runbook's export and import)",
            stranded.join(", ")
        ));
    }
    let weight = |t: &str| req.sizes.get(t).copied().unwrap_or(0).saturating_add(1);
    let mut loads = vec![0u64; n as usize];
    let mut placed: HashMap<&str, (u32, &'static str)> = HashMap::new();
    for t in tenants {
        let fixed = match (req.moves.get(t), req.previous.get(t)) {
            (Some(&s), _) => Some((s, "moved")),
            (None, Some(&s)) if s < n => Some((s, "kept")),
            _ => None,
        };
        if let Some((s, why)) = fixed {
            loads[s as usize] += weight(t);
            placed.insert(t, (s, why));
        }
    }
    let mut rest: Vec<&String> = tenants
        .iter()
        .filter(|t| !placed.contains_key(t.as_str()))
        .collect();
    rest.sort_by(|a, b| weight(b).cmp(&weight(a)).then_with(|| a.cmp(b)));
    for t in rest {
        let s = (0..n)
            .min_by(|&a, &b| {
                loads[a as usize]
                    .cmp(&loads[b as usize])
                    // Highest rendezvous score first among equally loaded shards.
                    .then_with(|| rendezvous(t, b).cmp(&rendezvous(t, a)))
            })
            .expect("n >= 1");
        loads[s as usize] += weight(t);
        placed.insert(t, (s, "placed"));
    }
    // Every shard must have a tenant: an empty replica would still take a volume and a Service.
    // LPT over at least n tenants fills every shard unless fixed assignments crowd them.
    if let Some(empty) = (0..n).find(|s| loads[*s as usize] == 0) {
        return Err(format!(
            "shard {empty} would have no tenant (the previous plan and --move put them all elsewhere): lower --shards or --move a tenant to it"
        ));
    }
    let assignment = tenants
        .iter()
        .map(|t| {
            let (shard, why) = placed[t.as_str()];
            Assignment {
                tenant: t.clone(),
                shard,
                users: req.sizes.get(t).copied().unwrap_or(0),
                reason: why.to_string(),
            }
        })
        .collect();
    Ok(ShardPlan {
        format: PLAN_FORMAT.to_string(),
        version: PLAN_VERSION,
        shards: n,
        assignment,
        loads,
    })
}

fn rendezvous(tenant: &str, shard: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(shard.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("32-byte digest"))
}

/// Users per tenant from `--sizes`: either the admin API's `GET /admin/api/tenants` answer (an
/// array of objects with `id` and `users`, possibly several shards' answers concatenated) or a
/// plain `{"tenant": users}` object.
pub fn parse_sizes(text: &str) -> Result<HashMap<String, u64>, String> {
    let mut sizes = HashMap::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        let value = value.map_err(|e| format!("not JSON: {e}"))?;
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let n = v
                        .as_u64()
                        .ok_or_else(|| format!("{k:?}: expected a user count, got {v}"))?;
                    sizes.insert(k, n);
                }
            }
            serde_json::Value::Array(rows) => {
                for (i, row) in rows.iter().enumerate() {
                    let id = row.get("id").and_then(|v| v.as_str());
                    let users = row.get("users").and_then(|v| v.as_u64());
                    match (id, users) {
                        (Some(id), Some(users)) => {
                            sizes.insert(id.to_string(), users);
                        }
                        _ => return Err(format!("[{i}]: expected {{\"id\": …, \"users\": N}}")),
                    }
                }
            }
            other => return Err(format!("expected an object or an array, got {other}")),
        }
    }
    Ok(sizes)
}

/// `shard`'s config: the source document with only its tenants, after a header naming the plan.
pub fn shard_config(
    doc: &toml::Table,
    plan: &ShardPlan,
    shard: u32,
    source: &str,
) -> Result<String, String> {
    let mut doc = doc.clone();
    let keep: Vec<&str> = plan.tenants_of(shard).collect();
    if let Some(toml::Value::Array(tenants)) = doc.get_mut("tenants") {
        tenants.retain(|t| {
            t.get("id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| keep.contains(&id))
        });
    }
    let body = toml::to_string(&doc).map_err(|e| format!("cannot write shard {shard}: {e}"))?;
    Ok(format!(
        "# Shard {shard} of {} (generated by `scim-bridge shard plan` from {source}; edit the source and re-plan).\n# Tenants: {}\n\n{body}",
        plan.shards,
        keep.join(", ")
    ))
}

/// Where a literal secret sits in the source config (key paths), for a warning: shard configs go
/// into a ConfigMap.
pub fn literal_secrets(doc: &toml::Table) -> Vec<String> {
    fn walk(path: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if SECRET_KEYS.contains(&k.as_str()) && is_literal(v) {
                        out.push(p.clone());
                    }
                    walk(&p, v, out);
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), v, out);
                }
            }
            _ => {}
        }
    }
    fn is_literal(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => !(s.starts_with("${") && s.ends_with('}')),
            toml::Value::Array(a) => a.iter().any(is_literal),
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk("", &toml::Value::Table(doc.clone()), &mut out);
    out
}

/// The Kubernetes side of a plan: names and where the Ingress answers.
#[derive(Debug, Clone)]
pub struct KubeNames {
    /// The StatefulSet's name: pod `i` is `{name}-{i}`.
    pub statefulset: String,
    pub namespace: Option<String>,
    /// The container port of the SCIM listener (the config's `listen` port).
    pub port: u16,
    pub host: Option<String>,
    pub tls_secret: Option<String>,
    pub ingress_class: Option<String>,
}

/// A DNS-1123 label (Kubernetes object names, namespaces).
pub fn check_label(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?}: expected a DNS label (a-z, 0-9, '-', at most 63)"
        ))
    }
}

/// A DNS-1123 subdomain (the Ingress host, the TLS Secret).
pub fn check_host(what: &str, s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(|l| check_label(what, l).is_ok()) {
        Ok(())
    } else {
        Err(format!("{what} {s:?}: expected a DNS name"))
    }
}

fn metadata(out: &mut String, name: &str, k: &KubeNames, shard: Option<u32>) {
    let _ = writeln!(out, "metadata:\n  name: {name}");
    if let Some(ns) = &k.namespace {
        let _ = writeln!(out, "  namespace: {ns}");
    }
    let _ = writeln!(
        out,
        "  labels:\n    app.kubernetes.io/name: {}\n    app.kubernetes.io/component: scim-bridge-shard",
        k.statefulset
    );
    if let Some(s) = shard {
        let _ = writeln!(out, "    scim-bridge.io/shard: \"{s}\"");
    }
}

/// One ConfigMap holding every shard's config under its pod's name: the StatefulSet mounts it
/// and each pod starts with `--config /etc/scim-bridge/$(POD_NAME).toml`.
pub fn configmap_yaml(k: &KubeNames, configs: &[String]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: ConfigMap\n");
    metadata(&mut out, &format!("{}-shards", k.statefulset), k, None);
    out.push_str("data:\n");
    for (i, text) in configs.iter().enumerate() {
        let _ = writeln!(out, "  {}-{i}.toml: |", k.statefulset);
        for line in text.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// A Service per shard, selecting that one pod by the label the StatefulSet controller sets.
pub fn services_yaml(k: &KubeNames, shards: u32) -> String {
    let mut out = String::new();
    for i in 0..shards {
        let pod = format!("{}-{i}", k.statefulset);
        out.push_str("---\napiVersion: v1\nkind: Service\n");
        metadata(&mut out, &pod, k, Some(i));
        let _ = writeln!(
            out,
            "spec:\n  type: ClusterIP\n  selector:\n    app.kubernetes.io/name: {}\n    statefulset.kubernetes.io/pod-name: {pod}\n  ports:\n    - name: scim\n      port: {port}\n      targetPort: {port}\n      protocol: TCP",
            k.statefulset,
            port = k.port
        );
    }
    out
}

/// The Ingress that routes `/tenants/{id}/` to the Service of the shard that owns the tenant
/// (and `/scim/v2/`, the embedded default's path, to the owner of `default`).
pub fn ingress_yaml(k: &KubeNames, plan: &ShardPlan) -> String {
    let mut out = String::from("apiVersion: networking.k8s.io/v1\nkind: Ingress\n");
    metadata(&mut out, &format!("{}-shards", k.statefulset), k, None);
    out.push_str("spec:\n");
    if let Some(class) = &k.ingress_class {
        let _ = writeln!(out, "  ingressClassName: {class}");
    }
    if let (Some(host), Some(secret)) = (&k.host, &k.tls_secret) {
        let _ = writeln!(
            out,
            "  tls:\n    - hosts:\n        - {host}\n      secretName: {secret}"
        );
    }
    out.push_str("  rules:\n");
    match &k.host {
        Some(host) => {
            let _ = writeln!(out, "    - host: {host}\n      http:\n        paths:");
        }
        None => out.push_str("    - http:\n        paths:\n"),
    }
    for a in &plan.assignment {
        let mut paths = vec![format!("/tenants/{}/", a.tenant)];
        if a.tenant == "default" {
            paths.push("/scim/v2/".to_string());
        }
        for path in paths {
            let _ = writeln!(
                out,
                "          - path: {path}\n            pathType: Prefix\n            backend:\n              service:\n                name: {}-{}\n                port:\n                  name: scim",
                k.statefulset, a.shard
            );
        }
    }
    out
}

/// Everything `shard plan` writes into `out`: `plan.json`, `{name}-{i}.toml` per shard and, under
/// `kubernetes/`, the ConfigMap, the Services and the Ingress. Returns the plan and the literal
/// secrets found (for a warning).
pub fn write_plan(
    config: &std::path::Path,
    req: &PlanRequest,
    names: &KubeNames,
    out: &std::path::Path,
) -> Result<(ShardPlan, Vec<String>), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let tenants = tenant_ids(&doc).map_err(|e| format!("{}: {e}", config.display()))?;
    let plan = plan(&tenants, req)?;
    let source = config
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| config.display().to_string());
    let configs = (0..plan.shards)
        .map(|i| shard_config(&doc, &plan, i, &source))
        .collect::<Result<Vec<_>, _>>()?;
    let kube = out.join("kubernetes");
    std::fs::create_dir_all(&kube).map_err(|e| format!("cannot create {}: {e}", kube.display()))?;
    let write = |path: std::path::PathBuf, body: &str| {
        std::fs::write(&path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let json = serde_json::to_string_pretty(&plan).expect("a plan serialises");
    write(out.join("plan.json"), &format!("{json}\n"))?;
    for (i, c) in configs.iter().enumerate() {
        write(out.join(format!("{}-{i}.toml", names.statefulset)), c)?;
    }
    write(
        kube.join("configmap.yaml"),
        &configmap_yaml(names, &configs),
    )?;
    write(
        kube.join("services.yaml"),
        &services_yaml(names, plan.shards),
    )?;
    write(kube.join("ingress.yaml"), &ingress_yaml(names, &plan))?;
    Ok((plan, literal_secrets(&doc)))
}

/// The listen port of a config's raw TOML (default 8080, as `listen`'s default).
pub fn listen_port(config: &std::path::Path) -> Result<u16, String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    match doc.get("listen").and_then(|v| v.as_str()) {
        None => Ok(crate::config::default_listen().port()),
        Some(l) => l
            .parse::<std::net::SocketAddr>()
            .map(|a| a.port())
            .map_err(|e| format!("listen {l:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i:03}")).collect()
    }

    #[test]
    fn every_tenant_once_and_balanced_by_size() {
        let tenants = ids(50);
        let mut req = PlanRequest {
            shards: 4,
            ..Default::default()
        };
        for (i, t) in tenants.iter().enumerate() {
            req.sizes.insert(t.clone(), (i as u64 * 37) % 1000);
        }
        let p = plan(&tenants, &req).unwrap();
        assert_eq!(p.assignment.len(), 50);
        let total: u64 = p.loads.iter().sum();
        let max = *p.loads.iter().max().unwrap();
        // Greedy placement on the lightest shard: the heaviest shard exceeds the lightest by at
        // most the weight of one tenant (here at most 1000).
        let heaviest = tenants.iter().map(|t| req.sizes[t] + 1).max().unwrap();
        assert!(
            max - p.loads.iter().min().unwrap() <= heaviest,
            "{:?}",
            p.loads
        );
        let sum: u64 = p.assignment.iter().map(|a| a.users + 1).sum();
        assert_eq!(sum, total);
    }

    #[test]
    fn same_input_same_plan_and_previous_assignments_are_kept() {
        let tenants = ids(20);
        let req = PlanRequest {
            shards: 3,
            ..Default::default()
        };
        let a = plan(&tenants, &req).unwrap();
        assert_eq!(a, plan(&tenants, &req).unwrap());
        // Five new tenants: nobody already placed moves.
        let mut more = tenants.clone();
        more.extend((100..105).map(|i| format!("new{i}")));
        let req2 = PlanRequest {
            shards: 3,
            previous: a
                .assignment
                .iter()
                .map(|x| (x.tenant.clone(), x.shard))
                .collect(),
            ..Default::default()
        };
        let b = plan(&more, &req2).unwrap();
        for x in &a.assignment {
            let y = b.assignment.iter().find(|y| y.tenant == x.tenant).unwrap();
            assert_eq!(
                (y.shard, y.reason.as_str()),
                (x.shard, "kept"),
                "{}",
                x.tenant
            );
        }
        // The new ones went to the lightest shards.
        assert!(b.assignment.iter().any(|y| y.reason == "placed"));
        // Fewer shards: the tenants of the dropped shard must be moved by name.
        let mut fewer = req2.clone();
        fewer.shards = 2;
        let on_2: Vec<&str> = a.tenants_of(2).collect();
        let err = plan(&more, &fewer).unwrap_err();
        assert!(err.contains(&format!("{}=2", on_2[0])), "{err}");
        for t in &on_2 {
            fewer.moves.insert(t.to_string(), 0);
        }
        let c = plan(&more, &fewer).unwrap();
        assert!(c.tenants_of(0).any(|t| t == on_2[0]));
    }

    #[test]
    fn moves_win_and_bad_requests_are_refused() {
        let tenants = ids(4);
        let mut req = PlanRequest {
            shards: 2,
            ..Default::default()
        };
        req.moves.insert("t001".into(), 1);
        req.moves.insert("t002".into(), 1);
        let p = plan(&tenants, &req).unwrap();
        assert_eq!(p.tenants_of(1).filter(|t| *t == "t001").count(), 1);
        req.moves.insert("nope".into(), 0);
        assert!(plan(&tenants, &req).unwrap_err().contains("no tenant"));
        req.moves.clear();
        req.moves.insert("t000".into(), 2);
        assert!(plan(&tenants, &req).unwrap_err().contains("0..1"));
        req.moves.clear();
        req.shards = 5;
        assert!(plan(&tenants, &req).unwrap_err().contains("4 tenant"));
        req.shards = 0;
        assert!(plan(&tenants, &req).is_err());
        // Everything pinned to shard 0: shard 1 would be empty.
        req.shards = 2;
        for t in &tenants {
            req.moves.insert(t.clone(), 0);
        }
        assert!(plan(&tenants, &req)
            .unwrap_err()
            .contains("shard 1 would have no tenant"));
    }

    #[test]
    fn shard_configs_keep_env_references_and_only_their_tenants() {
        let doc: toml::Table = toml::from_str(
            r#"
listen = "0.0.0.0:8080"
[admin]
tokens = ["${ADMIN}"]
[[tenants]]
id = "a"
tokens = ["${A_TOKEN}"]
[[tenants]]
id = "b"
tokens = ["literal-token-that-should-be-in-a-secret"]
[tenants.vendor]
kind = "local"
"#,
        )
        .unwrap();
        let tenants = tenant_ids(&doc).unwrap();
        assert_eq!(tenants, ["a", "b"]);
        let mut req = PlanRequest {
            shards: 2,
            ..Default::default()
        };
        req.moves.insert("a".into(), 0);
        req.moves.insert("b".into(), 1);
        let p = plan(&tenants, &req).unwrap();
        let c0 = shard_config(&doc, &p, 0, "x.toml").unwrap();
        assert!(c0.contains("${A_TOKEN}") && c0.contains("${ADMIN}"), "{c0}");
        assert!(!c0.contains("id = \"b\""), "{c0}");
        let back: toml::Table = toml::from_str(&c0).unwrap();
        assert_eq!(tenant_ids(&back).unwrap(), ["a"]);
        assert_eq!(literal_secrets(&doc), ["tenants[1].tokens"]);
    }

    #[test]
    fn sizes_from_the_admin_api_or_a_map() {
        let s = parse_sizes(r#"[{"id":"a","users":5,"groups":1}] [{"id":"b","users":7}]"#).unwrap();
        assert_eq!((s["a"], s["b"]), (5, 7));
        let s = parse_sizes(r#"{"a": 3}"#).unwrap();
        assert_eq!(s["a"], 3);
        assert!(parse_sizes(r#"{"a": "x"}"#).is_err());
        assert!(parse_sizes("[1]").is_err());
        assert!(parse_sizes("{").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_label("--name", "scim-bridge").is_ok());
        assert!(check_label("--name", "Bad_Name").is_err());
        assert!(check_host("--host", "scim.acme.example").is_ok());
        assert!(check_host("--host", "javascript://x").is_err());
    }
}
