//! `scim-bridge store export` / `store import` (issue 14, CONTRACT §6): the whole store, or one
//! tenant's part of it, as a versioned JSON Lines dump that round-trips every byte — the
//! directory with its ids, ETags (`meta.version`), indexes and counts, the ID map, the engine's
//! applied vendor state and durable outbox, the audit chain with its head and checkpoint, the
//! revoked token ids, and whatever tree a later version adds.
//!
//! The dump is generic over sled trees, not written per purpose, so that a new tree cannot be
//! forgotten. Derived records (directory indexes, counts, the audit head) are dumped as they
//! are rather than rebuilt: an export reads a stopped store (or a [`backup`](super::backup)),
//! which is one point in time, so they are consistent with what they index.
//!
//! ## Format, version 1
//!
//! UTF-8, one JSON object per line (`\n`):
//!
//! 1. the header:
//!    ```json
//!    {"format":"scim-bridge-dump","version":1,"store_version":1,"scim_bridge":"0.1.0",
//!     "created":"2026-12-02T13:00:00Z","tenants":["acme"],
//!     "trees":[{"tenant":"acme","tree":"audit","records":12},{"tenant":null,"tree":"meta","records":1}]}
//!    ```
//!    `version` is this format's; `store_version` is the store's layout
//!    ([`FORMAT_VERSION`](super::FORMAT_VERSION)); `trees` lists every tree dumped, empty ones
//!    included, with its record count;
//! 2. one line per record, trees in name order and keys in sled's (byte) order:
//!    ```json
//!    {"tenant":"acme","tree":"sisense","key":"u/2819c223","value":{"userName":"ann",…}}
//!    {"tenant":"acme","tree":"audit","key_b64":"ZQAAAAAAAAAB","value":{"seq":1,…}}
//!    {"tenant":"acme","tree":"sisense","key":"c/users","value_b64":"AAAAAAAAAAM="}
//!    ```
//!    `tenant` is the tenant id for the tree `t/{tenant}/{tree}`, `null` for a global tree
//!    (`meta`; sled's `__sled__default`). The key is `key` (a JSON string) when it is UTF-8,
//!    else `key_b64` (standard base64). The value is `value` (the JSON itself) when the stored
//!    bytes are JSON that serializes back to exactly those bytes, else `value_b64`;
//! 3. the trailer: `{"end":"scim-bridge-dump","records":N,"sha256":"…"}`, where `sha256` is
//!    the hex SHA-256 of every byte before the trailer (the header and record lines with their
//!    `\n`).
//!
//! `store import` reads the whole dump to a private spool file in the data dir first, and writes
//! nothing to the store until the header, every record, the count and the SHA-256 check out: a
//! truncated dump (no trailer) or one altered byte is refused with the store untouched. The
//! SHA-256 detects damage, not a forger, who can recompute it; the audit chain's own head hash
//! (`audit verify`) is the anchor to keep elsewhere.
//!
//! Import goes into an empty store or adds tenants the store does not hold; a tenant the store
//! already has is refused by name. The target keeps its own `meta/format_version`, after checking
//! that the dump's `store_version` is not newer than this binary's. Other global records are
//! added when absent, and refused when the store holds a different value under the same key.

use super::{split_tree_name, Store, StoreError, FORMAT_VERSION, META_TREE};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

/// The `format` of the header and the `end` of the trailer.
pub const FORMAT: &str = "scim-bridge-dump";
/// This dump format's version.
pub const VERSION: u32 = 1;
/// Records applied to the store per atomic batch at import.
const BATCH: usize = 10_000;
/// Records written at import between two flushes of the store (bounds its memory).
const FLUSH_EVERY: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The dump is not one this binary can trust or read; nothing was written.
    #[error("refused, nothing was written: {0}")]
    Refused(String),
    /// The request cannot be met (an unknown tenant to export, a tenant the target holds).
    #[error("{0}")]
    Invalid(String),
}

impl From<sled::Error> for DumpError {
    fn from(e: sled::Error) -> Self {
        DumpError::Store(StoreError::Sled(e))
    }
}

fn refused(msg: impl Into<String>) -> DumpError {
    DumpError::Refused(msg.into())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TreeInfo {
    pub tenant: Option<String>,
    pub tree: String,
    pub records: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub store_version: u32,
    pub scim_bridge: String,
    pub created: String,
    pub tenants: Vec<String>,
    pub trees: Vec<TreeInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    tenant: Option<String>,
    tree: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    // `Some(Value::Null)` is the JSON `null`, kept apart from an absent field.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    end: String,
    records: u64,
    sha256: String,
}

/// What an export or import did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tenants: Vec<String>,
    pub trees: usize,
    pub records: u64,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// The sled name of a dumped tree.
fn tree_name(tenant: Option<&str>, tree: &str) -> String {
    match tenant {
        Some(t) => format!("t/{t}/{tree}"),
        None => tree.to_string(),
    }
}

fn encode(tenant: Option<&str>, tree: &str, k: &[u8], v: &[u8]) -> Vec<u8> {
    let mut r = Record {
        tenant: tenant.map(str::to_string),
        tree: tree.to_string(),
        key: None,
        key_b64: None,
        value: None,
        value_b64: None,
    };
    match std::str::from_utf8(k) {
        Ok(s) => r.key = Some(s.to_string()),
        Err(_) => r.key_b64 = Some(b64().encode(k)),
    }
    // JSON only when it writes back byte for byte (serde_json keeps key order here), so that
    // import restores exactly the stored bytes.
    match serde_json::from_slice::<Value>(v) {
        Ok(j) if serde_json::to_vec(&j).is_ok_and(|b| b == v) => r.value = Some(j),
        _ => r.value_b64 = Some(b64().encode(v)),
    }
    let mut line = serde_json::to_vec(&r).unwrap_or_default();
    line.push(b'\n');
    line
}

fn decode(r: &Record) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = match (&r.key, &r.key_b64) {
        (Some(k), None) => k.as_bytes().to_vec(),
        (None, Some(k)) => b64()
            .decode(k)
            .map_err(|e| format!("key_b64 is not base64: {e}"))?,
        _ => return Err("a record needs exactly one of key and key_b64".into()),
    };
    let value = match (&r.value, &r.value_b64) {
        (Some(v), None) => serde_json::to_vec(v).map_err(|e| e.to_string())?,
        (None, Some(v)) => b64()
            .decode(v)
            .map_err(|e| format!("value_b64 is not base64: {e}"))?,
        _ => return Err("a record needs exactly one of value and value_b64".into()),
    };
    Ok((key, value))
}

/// Writes the dump of `store` (every tree, or only `tenant`'s) to `out`. The store must not be
/// written meanwhile: the CLI holds it alone; a running bridge's is copied by
/// [`backup`](super::backup::backup) first.
pub fn export(
    store: &Store,
    tenant: Option<&str>,
    out: &mut dyn Write,
) -> Result<Summary, DumpError> {
    let mut trees: Vec<(Option<String>, String, sled::Tree)> = Vec::new();
    let mut names = store.db.tree_names();
    names.sort();
    for name in names {
        let (t, purpose) = split_tree_name(&name);
        let Some(purpose) = purpose else {
            tracing::warn!(tree = ?name, "a tree with a name that is not UTF-8 is not exported");
            continue;
        };
        if tenant.is_some() && t != tenant {
            continue;
        }
        trees.push((
            t.map(str::to_string),
            purpose.to_string(),
            store.db.open_tree(&name)?,
        ));
    }
    let tenants: BTreeSet<String> = trees.iter().filter_map(|(t, ..)| t.clone()).collect();
    if let Some(t) = tenant {
        if !tenants.contains(t) {
            return Err(DumpError::Invalid(format!(
                "tenant {t:?} has no data in the store (tenants: {})",
                store.tenants().join(", ")
            )));
        }
    }
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        store_version: store.format_version()?,
        scim_bridge: env!("CARGO_PKG_VERSION").into(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        tenants: tenants.iter().cloned().collect(),
        trees: trees
            .iter()
            .map(|(t, p, tree)| TreeInfo {
                tenant: t.clone(),
                tree: p.clone(),
                records: tree.len() as u64,
            })
            .collect(),
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut hash = Sha256::new();
    let mut line = serde_json::to_vec(&header).unwrap_or_default();
    line.push(b'\n');
    hash.update(&line);
    out.write_all(&line)?;
    let mut records = 0u64;
    for ((t, p, tree), info) in trees.iter().zip(&header.trees) {
        let mut n = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv?;
            let line = encode(t.as_deref(), p, &k, &v);
            hash.update(&line);
            out.write_all(&line)?;
            n += 1;
        }
        if n != info.records {
            // Only a concurrent writer does this; the dump would not be one point in time.
            return Err(DumpError::Invalid(format!(
                "the tree {} changed while it was exported (is something writing the store?)",
                tree_name(t.as_deref(), p)
            )));
        }
        records += n;
    }
    let trailer = Trailer {
        end: FORMAT.into(),
        records,
        sha256: hex::encode(hash.finalize()),
    };
    let mut line = serde_json::to_vec(&trailer).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()?;
    Ok(Summary {
        tenants: header.tenants,
        trees: header.trees.len(),
        records,
    })
}

/// A private spool file in the data dir, removed when dropped.
struct Spool {
    path: PathBuf,
    file: std::fs::File,
}

impl Spool {
    fn create(store: &Store) -> Result<Spool, DumpError> {
        let path = store
            .data_dir()
            .join(format!(".import-{}.jsonl.partial", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path)?;
        Ok(Spool { path, file })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks a header against this binary and the target store.
fn check_header(line: &[u8], store: &Store) -> Result<Header, DumpError> {
    let h: Header = serde_json::from_slice(line).map_err(|e| {
        refused(format!(
            "the first line is not a scim-bridge dump header: {e}"
        ))
    })?;
    if h.format != FORMAT {
        return Err(refused(format!(
            "the header's format is {:?}, not {FORMAT:?}",
            h.format
        )));
    }
    if h.version != VERSION {
        return Err(refused(format!(
            "dump format version {} is not one this scim-bridge reads (it reads version {VERSION})",
            h.version
        )));
    }
    if h.store_version > FORMAT_VERSION {
        return Err(refused(format!(
            "the dump holds a store of format version {}, newer than this scim-bridge's {FORMAT_VERSION}: import it with a newer scim-bridge",
            h.store_version
        )));
    }
    if h.store_version < FORMAT_VERSION {
        // Records are written as they are; an older layout would need the migration the store
        // runs at open, which is defined on a whole store only.
        return Err(refused(format!(
            "the dump holds a store of format version {}, and this scim-bridge writes version {FORMAT_VERSION}: import it into an empty data dir with the version that wrote it, then open that store with this one to migrate it",
            h.store_version
        )));
    }
    for t in &h.tenants {
        crate::config::TenantId::parse(t)
            .map_err(|e| refused(format!("tenant {t:?} in the header: {e}")))?;
    }
    let held = store.tenants();
    let mut clash: Vec<&str> = Vec::new();
    for t in &h.tenants {
        if held.contains(t) {
            clash.push(t);
        }
    }
    if !clash.is_empty() {
        return Err(DumpError::Invalid(format!(
            "refused, nothing was written: the store in {} already holds tenant {}; import a tenant only into a store that does not have it (export the other tenants with --tenant, or import into an empty data dir)",
            store.data_dir().display(),
            clash.join(", ")
        )));
    }
    Ok(h)
}

/// Loads a dump from `input` into `store` (see the module doc). Nothing is written to the store
/// unless the whole dump checks out.
pub fn import(store: &Store, input: &mut dyn BufRead) -> Result<Summary, DumpError> {
    let mut spool = Spool::create(store)?;
    let mut hash = Sha256::new();
    let mut line = Vec::new();
    let mut lineno = 0u64;
    let read = |input: &mut dyn BufRead, line: &mut Vec<u8>| -> Result<bool, DumpError> {
        line.clear();
        Ok(input.read_until(b'\n', line)? > 0)
    };
    // Pass 1: check everything, spooling the records.
    if !read(input, &mut line)? {
        return Err(refused("the dump is empty"));
    }
    lineno += 1;
    let header = check_header(&line, store)?;
    let tenants: BTreeSet<&str> = header.tenants.iter().map(String::as_str).collect();
    let listed: BTreeMap<(Option<&str>, &str), u64> = header
        .trees
        .iter()
        .map(|t| ((t.tenant.as_deref(), t.tree.as_str()), t.records))
        .collect();
    for t in &header.trees {
        // A tree's name must read back as the tenant and tree it claims: a "global" tree named
        // `t/acme/…` would otherwise write into a tenant the store holds, past the clash check.
        let name = tree_name(t.tenant.as_deref(), &t.tree);
        if split_tree_name(name.as_bytes()) != (t.tenant.as_deref(), Some(t.tree.as_str())) {
            return Err(refused(format!(
                "the header lists tree {name:?} under tenant {:?}: a tenant's tree must be listed with its tenant",
                t.tenant
            )));
        }
        if let Some(tenant) = &t.tenant {
            if !tenants.contains(tenant.as_str()) {
                return Err(refused(format!(
                    "the header lists a tree of tenant {tenant:?}, which is not among its tenants"
                )));
            }
        }
    }
    hash.update(&line);
    let mut spooled = BufWriter::new(&spool.file);
    let mut counts: BTreeMap<(Option<String>, String), u64> = BTreeMap::new();
    let mut records = 0u64;
    let mut global_checks: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let trailer = loop {
        if !read(input, &mut line)? {
            return Err(refused(format!(
                "the dump is truncated: it ends after line {lineno} without its trailer"
            )));
        }
        lineno += 1;
        if !line.ends_with(b"\n") {
            return Err(refused(format!(
                "the dump is truncated: line {lineno} is cut short"
            )));
        }
        if line.starts_with(b"{\"end\"") {
            let t: Trailer = serde_json::from_slice(&line)
                .map_err(|e| refused(format!("line {lineno}: a malformed trailer: {e}")))?;
            break t;
        }
        hash.update(&line);
        let r: Record = serde_json::from_slice(&line)
            .map_err(|e| refused(format!("line {lineno}: not a dump record: {e}")))?;
        let (k, v) = decode(&r).map_err(|e| refused(format!("line {lineno}: {e}")))?;
        if !listed.contains_key(&(r.tenant.as_deref(), r.tree.as_str())) {
            return Err(refused(format!(
                "line {lineno}: tree {} is not listed in the header",
                tree_name(r.tenant.as_deref(), &r.tree)
            )));
        }
        if r.tenant.is_none() && !(r.tree == META_TREE && k == super::FORMAT_KEY) {
            global_checks.push((r.tree.clone(), k, v));
        }
        *counts.entry((r.tenant, r.tree)).or_default() += 1;
        records += 1;
        spooled.write_all(&line)?;
    };
    if read(input, &mut line)? {
        return Err(refused(format!(
            "there is more after the trailer on line {lineno}"
        )));
    }
    if trailer.end != FORMAT {
        return Err(refused("the trailer is not a scim-bridge dump's"));
    }
    let sha = hex::encode(hash.finalize());
    if trailer.sha256 != sha {
        return Err(refused(format!(
            "the SHA-256 of the dump is {sha}, the trailer says {}: the dump was altered or damaged",
            trailer.sha256
        )));
    }
    if trailer.records != records {
        return Err(refused(format!(
            "the dump holds {records} records, the trailer says {}",
            trailer.records
        )));
    }
    for ((tenant, tree), want) in &listed {
        let got = counts
            .get(&(tenant.map(str::to_string), tree.to_string()))
            .copied()
            .unwrap_or(0);
        if got != *want {
            return Err(refused(format!(
                "tree {} holds {got} records, the header says {want}",
                tree_name(*tenant, tree)
            )));
        }
    }
    let existing = store.db.tree_names();
    for (tree, k, v) in &global_checks {
        // Only trees that exist are read: opening one would create it, and nothing may be
        // written before the dump is accepted.
        if !existing.iter().any(|n| n.as_ref() == tree.as_bytes()) {
            continue;
        }
        if let Some(have) = store.db.open_tree(tree)?.get(k)? {
            if have.as_ref() != v.as_slice() {
                return Err(DumpError::Invalid(format!(
                    "refused, nothing was written: the store's global tree {tree:?} holds a different value under key {:?}",
                    String::from_utf8_lossy(k)
                )));
            }
        }
    }
    spooled.flush()?;
    drop(spooled);
    // The spool stays on the same disk as the store; fsync it so a crash mid-import leaves a
    // complete copy to retry from until it is removed.
    spool.file.sync_all()?;

    // Pass 2: write. Every tree listed is opened, so an empty one exists in the target too.
    for (tenant, tree) in listed.keys() {
        store.db.open_tree(tree_name(*tenant, tree))?;
    }
    use std::io::Seek;
    spool.file.seek(std::io::SeekFrom::Start(0))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &spool.file);
    let mut pending: Option<(String, sled::Batch, usize)> = None;
    let mut unflushed = 0usize;
    let mut flush = |p: Option<(String, sled::Batch, usize)>| -> Result<(), DumpError> {
        if let Some((name, batch, len)) = p {
            store.db.open_tree(name)?.apply_batch(batch)?;
            unflushed += len;
            // sled keeps every page written since its last flush in memory: one long import
            // of 1,000,000 users peaked at 4.7 GB (scripts/bench-store.sh) without this.
            if unflushed >= FLUSH_EVERY {
                store.db.flush()?;
                unflushed = 0;
            }
        }
        Ok(())
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let r: Record = serde_json::from_slice(&line)
            .map_err(|e| refused(format!("the spooled dump changed: {e}")))?;
        let (k, v) = decode(&r).map_err(refused)?;
        if r.tenant.is_none() && r.tree == META_TREE && k == super::FORMAT_KEY {
            // The target's own stamp stays (checked equal above).
            continue;
        }
        let name = tree_name(r.tenant.as_deref(), &r.tree);
        if pending
            .as_ref()
            .is_some_and(|(n, _, len)| *n != name || *len >= BATCH)
        {
            flush(pending.take())?;
        }
        let (_, batch, len) = pending.get_or_insert_with(|| (name, sled::Batch::default(), 0));
        batch.insert(k, v);
        *len += 1;
    }
    flush(pending.take())?;
    store.db.flush()?;
    Ok(Summary {
        tenants: header.tenants,
        trees: listed.len(),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store with the awkward cases: binary keys and values, JSON that does not write back
    /// byte for byte, the JSON `null`, an empty value, an empty tree, two tenants.
    fn awkward(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).unwrap();
        let t = store.tree("acme", "local").unwrap();
        t.insert("u/1", br#"{"userName":"ann","meta":{"version":"W/\"1\""}}"#)
            .unwrap();
        t.insert(b"e\x00\x00\x00\x00\x00\x00\x00\x01", b"{\"seq\":1}")
            .unwrap();
        t.insert("c/users", 3u64.to_be_bytes()).unwrap();
        t.insert("i/ux/a\0b", b"").unwrap();
        t.insert("spaced", b"{ \"a\": 1 }").unwrap();
        t.insert("null", b"null").unwrap();
        t.insert([0xff, 0xfe], "\u{e9}t\u{e9}").unwrap();
        store.tree("acme", "revoked").unwrap();
        store
            .tree("beta", "audit")
            .unwrap()
            .insert("head", br#"{"seq":0}"#)
            .unwrap();
        store
    }

    type Trees = BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

    fn all(store: &Store) -> Trees {
        let mut out = BTreeMap::new();
        for name in store.db.tree_names() {
            let t = store.db.open_tree(&name).unwrap();
            out.insert(
                name.to_vec(),
                t.iter()
                    .map(|kv| {
                        let (k, v) = kv.unwrap();
                        (k.to_vec(), v.to_vec())
                    })
                    .collect::<Vec<_>>(),
            );
        }
        out
    }

    fn dump_of(store: &Store, tenant: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        export(store, tenant, &mut out).unwrap();
        out
    }

    #[test]
    fn every_byte_round_trips_and_empty_trees_are_kept() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let src = awkward(a.path());
        let dump = dump_of(&src, None);
        let text = String::from_utf8(dump.clone()).unwrap();
        assert!(
            text.contains(r#""key":"u/1","value":{"userName":"ann""#),
            "{text}"
        );
        assert!(
            text.contains(r#""key":"i/ux/a\u0000b","value_b64":"""#),
            "{text}"
        );
        assert!(text.contains(r#""key":"null","value":null"#), "{text}");
        assert!(text.contains(r#""key":"spaced","value_b64""#), "{text}");
        let dst = Store::open(b.path()).unwrap();
        let s = import(&dst, &mut &dump[..]).unwrap();
        assert_eq!(s.tenants, vec!["acme".to_string(), "beta".to_string()]);
        assert_eq!(all(&src), all(&dst));
        assert!(dst
            .db
            .tree_names()
            .iter()
            .any(|n| n == b"t/acme/revoked".as_slice()));
        // Deterministic: the same store gives the same records.
        let again = dump_of(&dst, None);
        let body = |d: &[u8]| {
            d.split(|b| *b == b'\n')
                .skip(1)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        let (x, y) = (body(&dump), body(&again));
        assert_eq!(x[..x.len() - 2], y[..y.len() - 2]);
    }

    #[test]
    fn a_damaged_dump_is_refused_before_anything_is_written() {
        let a = tempfile::tempdir().unwrap();
        let dump = dump_of(&awkward(a.path()), None);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            (
                "header only",
                dump[..dump.iter().position(|b| *b == b'\n').unwrap() + 1].to_vec(),
            ),
            ("cut", dump[..dump.len() - 10].to_vec()),
            ("extra after trailer", [&dump[..], b"{}\n"].concat()),
            ("a record dropped", {
                let lines: Vec<&[u8]> = dump.split_inclusive(|b| *b == b'\n').collect();
                [lines[..2].concat(), lines[3..].concat()].concat()
            }),
            ("one byte", {
                let mut d = dump.clone();
                let at = d.windows(3).position(|w| w == b"ann").unwrap();
                d[at] = b'b';
                d
            }),
        ];
        for (what, bytes) in cases {
            let b = tempfile::tempdir().unwrap();
            let dst = Store::open(b.path()).unwrap();
            let err = import(&dst, &mut &bytes[..]).unwrap_err();
            assert!(matches!(err, DumpError::Refused(_)), "{what}: {err}");
            assert!(dst.tenants().is_empty(), "{what}: nothing written");
            assert_eq!(
                std::fs::read_dir(b.path()).unwrap().count(),
                1,
                "{what}: spool removed"
            );
        }
    }

    #[test]
    fn a_tenant_is_imported_only_where_it_is_absent() {
        let a = tempfile::tempdir().unwrap();
        let src = awkward(a.path());
        let acme = dump_of(&src, Some("acme"));
        let beta = dump_of(&src, Some("beta"));
        assert!(!String::from_utf8_lossy(&acme).contains("beta"));
        let b = tempfile::tempdir().unwrap();
        let dst = Store::open(b.path()).unwrap();
        import(&dst, &mut &beta[..]).unwrap();
        import(&dst, &mut &acme[..]).unwrap();
        assert_eq!(all(&src), all(&dst));
        let err = import(&dst, &mut &acme[..]).unwrap_err();
        assert!(
            err.to_string().contains("already holds tenant acme"),
            "{err}"
        );
        let err = export(&src, Some("gamma"), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("gamma"), "{err}");
    }

    #[test]
    fn a_global_tree_named_like_a_tenants_is_refused_even_with_a_valid_checksum() {
        let a = tempfile::tempdir().unwrap();
        let src = awkward(a.path());
        let beta = dump_of(&src, Some("beta"));
        let b = tempfile::tempdir().unwrap();
        let dst = Store::open(b.path()).unwrap();
        import(&dst, &mut &dump_of(&src, Some("acme"))[..]).unwrap();
        let before = all(&dst);
        // The beta dump, with a "global" tree that names acme's directory, re-checksummed.
        let text = String::from_utf8(beta).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        header["trees"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"tenant": null, "tree": "t/acme/local", "records": 1}));
        let mut body = format!("{header}\n");
        for l in &lines[1..lines.len() - 1] {
            body.push_str(l);
            body.push('\n');
        }
        body.push_str(
            "{\"tenant\":null,\"tree\":\"t/acme/local\",\"key\":\"u/evil\",\"value\":1}\n",
        );
        let trailer: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
        let records = trailer["records"].as_u64().unwrap() + 1;
        let sha = hex::encode(Sha256::digest(body.as_bytes()));
        body.push_str(&format!(
            "{{\"end\":\"{FORMAT}\",\"records\":{records},\"sha256\":\"{sha}\"}}\n"
        ));
        let err = import(&dst, &mut body.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("must be listed with its tenant"),
            "{err}"
        );
        assert_eq!(before, all(&dst), "nothing written");
    }
}
