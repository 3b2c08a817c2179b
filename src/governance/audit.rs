//! The audit log for auditors (issue 13): verify the hash chain, export it (JSON lines or CSV),
//! read it a page at a time (the console), and enforce the retention. Plain functions over a
//! [`Store`]: the admin API calls them on the running bridge's store, the CLI on a data dir
//! with no bridge running; neither needs a config. The chain itself is described in
//! [`crate::store::audit`].

use crate::store::audit::{
    decode_entry, entry_hash, seq_of_key, AuditEntry, AuditReader, Checkpoint, RetentionRecord,
    GENESIS,
};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::io::Write;

pub use crate::store::audit::{audited_tenants, AuditEvent, AuditObject};

/// How often (in entries) the progress callbacks are called.
const PROGRESS_EVERY: u64 = 1_000;
/// The largest page [`page`] returns.
pub const MAX_PAGE: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Verify
// ---------------------------------------------------------------------------------------------

/// What is wrong with the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The entry's content (or its `seq`, or its link to the entry before) is not what was
    /// chained.
    Altered(String),
    /// Entries `from..=to` are gone (from the middle, or the end: the head names `to`).
    Missing { from: u64, to: u64 },
    /// The head record does not match the last entry.
    HeadMismatch(String),
    /// A record that cannot be read at all.
    Unreadable(String),
    /// The retention checkpoint (where the chain starts after pruning) is not the one the
    /// chain's newest `retention_pruned` entry carries: old entries were removed, or the
    /// checkpoint moved, outside retention.
    Checkpoint(String),
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Altered(why) => write!(f, "altered: {why}"),
            FaultKind::Missing { from, to } if from == to => write!(f, "missing entry {from}"),
            FaultKind::Missing { from, to } => write!(f, "missing entries {from}..{to}"),
            FaultKind::HeadMismatch(why) => write!(f, "head does not match: {why}"),
            FaultKind::Unreadable(why) => write!(f, "unreadable: {why}"),
            FaultKind::Checkpoint(why) => {
                write!(
                    f,
                    "the retention checkpoint does not match the chain: {why}"
                )
            }
        }
    }
}

/// Why a verification failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditFault {
    /// The first bad entry of a tenant's chain: its `seq`, its time when it has one.
    #[error("audit log of tenant {tenant}: entry {seq}{}: {kind}", at.as_deref().map(|a| format!(" ({a})")).unwrap_or_default())]
    Broken {
        tenant: String,
        seq: u64,
        at: Option<String>,
        kind: FaultKind,
    },
    #[error("tenant {0} has no audit log")]
    NoLog(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One tenant's chain, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    pub tenant: String,
    /// Entries checked.
    pub entries: u64,
    /// The first and last `seq` checked (`None` when the log holds none).
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    /// The hash the chain ends with: keep it elsewhere to anchor the log.
    pub head_hash: String,
    /// Where the chain starts after retention.
    pub checkpoint: Option<Checkpoint>,
    /// Entries of the first format not chained yet (no bridge of this version opened the
    /// store since); they carry no hash to check.
    pub unchained: u64,
}

impl std::fmt::Display for VerifiedChain {
    /// One line for the CLI: `acme: 1234 entries (seq 1..1234), head 3f2a…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.first_seq {
            Some(first) => write!(
                f,
                "{}: {} entries (seq {first}..{}), head {}",
                self.tenant, self.entries, self.last_seq, self.head_hash
            )?,
            None => write!(f, "{}: no entries, head {}", self.tenant, self.head_hash)?,
        }
        if let Some(c) = &self.checkpoint {
            write!(f, ", pruned up to entry {} ({})", c.seq, c.at)?;
        }
        if self.unchained > 0 {
            write!(
                f,
                ", {} entries of the first format not chained yet",
                self.unchained
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub chains: Vec<VerifiedChain>,
}

impl VerifyReport {
    pub fn entries(&self) -> u64 {
        self.chains.iter().map(|c| c.entries).sum()
    }
}

/// Verifies the chain of `tenant`, or of every tenant with an audit log: every hash is
/// recomputed, every `prev` link, the `seq` run, the head, and the retention checkpoint
/// (against the newest `retention_pruned` entry, which carries it) checked. The first bad entry is
/// the error. Safe while the bridge writes: entries appended or pruned meanwhile are followed.
pub fn verify(store: &Store, tenant: Option<&str>) -> Result<VerifyReport, AuditFault> {
    verify_with_progress(store, tenant, None)
}

/// [`verify`], calling `progress` with the entries checked so far.
pub fn verify_with_progress(
    store: &Store,
    tenant: Option<&str>,
    mut progress: Option<&mut dyn FnMut(u64)>,
) -> Result<VerifyReport, AuditFault> {
    let tenants = match tenant {
        Some(t) => vec![t.to_string()],
        None => audited_tenants(store)?,
    };
    let mut report = VerifyReport::default();
    let mut done = 0u64;
    for t in tenants {
        let reader = AuditReader::open(store, &t)?.ok_or_else(|| AuditFault::NoLog(t.clone()))?;
        let chain = verify_chain(&reader, &mut |n| {
            if let Some(p) = progress.as_mut() {
                p(done + n);
            }
        })?;
        done += chain.entries;
        report.chains.push(chain);
    }
    if let Some(p) = progress.as_mut() {
        p(done);
    }
    Ok(report)
}

fn verify_chain(
    reader: &AuditReader,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifiedChain, AuditFault> {
    let tenant = reader.tenant().to_string();
    let broken = |seq: u64, at: Option<String>, kind: FaultKind| AuditFault::Broken {
        tenant: tenant.clone(),
        seq,
        at,
        kind,
    };
    let start = reader.state()?;
    let unchained = reader.unchained();
    let Some(mut head_seen) = start.head.clone() else {
        // Nothing chained yet: only entries of the first format may be here.
        if let Some(kv) = reader.raw().next() {
            let (k, v) = kv?;
            let (seq, at) = seq_and_time(&k, &v);
            return Err(broken(
                seq,
                at,
                FaultKind::HeadMismatch("there is no head".into()),
            ));
        }
        return Ok(VerifiedChain {
            tenant: tenant.clone(),
            entries: 0,
            first_seq: None,
            last_seq: 0,
            head_hash: GENESIS.into(),
            checkpoint: start.checkpoint,
            unchained,
        });
    };
    if unchained > 0 {
        // Entries of the first format are chained when the log opens, before anything is
        // appended: one next to a chain was put there behind the bridge's back.
        return Err(broken(
            0,
            None,
            FaultKind::Altered(format!(
                "{unchained} entries without a place in the chain sit beside it"
            )),
        ));
    }
    let mut checkpoint = start.checkpoint.clone();
    let mut expected = checkpoint.as_ref().map_or(1, |c| c.seq + 1);
    let mut prev = checkpoint
        .as_ref()
        .map_or(GENESIS.to_string(), |c| c.hash.clone());
    // Nothing may remain at or before the checkpoint (retention removes those with it).
    if let Some(kv) = reader.raw().next() {
        let (k, v) = kv?;
        if let Some(seq) = seq_of_key(&k).filter(|s| *s < expected) {
            let (_, at) = seq_and_time(&k, &v);
            return Err(broken(
                seq,
                at,
                FaultKind::Altered(format!(
                    "it lies before the retention checkpoint (entry {})",
                    expected - 1
                )),
            ));
        }
    }
    let mut entries = 0u64;
    let mut first_seq = None;
    // The newest `retention_pruned` entry read, and the checkpoint it carries: the checkpoint
    // must be that one (see the store's module doc).
    let mut retention: Option<(u64, RetentionRecord)> = None;
    loop {
        for kv in reader.raw_from(expected) {
            let (k, v) = kv?;
            let Some(seq) = seq_of_key(&k) else {
                return Err(broken(
                    expected,
                    None,
                    FaultKind::Unreadable(format!(
                        "a record under a key that is no entry's ({k:?})"
                    )),
                ));
            };
            let at = time_of(&v);
            if seq > expected {
                // A gap. Retention running meanwhile removes the oldest entries and moves the
                // checkpoint to the last one it removed: then the chain goes on from there.
                let now = reader.state()?.checkpoint;
                let resumes = now
                    .as_ref()
                    .filter(|c| c.seq + 1 == seq && checkpoint.as_ref() != Some(c))
                    .cloned();
                match resumes {
                    Some(c) if entries_prev(&v).as_deref() == Some(c.hash.as_str()) => {
                        prev = c.hash.clone();
                        checkpoint = Some(c);
                    }
                    _ => {
                        return Err(broken(
                            expected,
                            at,
                            FaultKind::Missing {
                                from: expected,
                                to: seq - 1,
                            },
                        ))
                    }
                }
            }
            let stored: Map<String, Value> = match serde_json::from_slice(&v) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(broken(
                        seq,
                        at,
                        FaultKind::Altered("its record is not a JSON object any more".into()),
                    ))
                }
            };
            if stored.get("seq").and_then(Value::as_u64) != Some(seq) {
                return Err(broken(
                    seq,
                    at,
                    FaultKind::Altered("its seq does not match its place".into()),
                ));
            }
            let recorded = stored.get("hash").and_then(Value::as_str).unwrap_or("");
            if entry_hash(&tenant, &stored) != recorded {
                return Err(broken(
                    seq,
                    at,
                    FaultKind::Altered("its content does not match its hash".into()),
                ));
            }
            if stored.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
                return Err(broken(
                    seq,
                    at,
                    FaultKind::Altered(format!(
                        "its prev does not match the hash of {}",
                        if seq == 1 {
                            "the chain's start".to_string()
                        } else {
                            format!("entry {}", seq - 1)
                        }
                    )),
                ));
            }
            if stored.get("event").and_then(Value::as_str)
                == Some(AuditEvent::RetentionPruned.as_str())
            {
                if let Some(r) = RetentionRecord::from_stored(&stored) {
                    retention = Some((seq, r));
                }
            }
            prev = recorded.to_string();
            first_seq.get_or_insert(seq);
            expected = seq + 1;
            entries += 1;
            if entries % PROGRESS_EVERY == 0 {
                progress(entries);
            }
        }
        let last = expected - 1;
        let now = reader.state()?;
        let Some(head) = now.head else {
            return Err(broken(
                last,
                None,
                FaultKind::HeadMismatch("the head is gone".into()),
            ));
        };
        if head.seq == last {
            if head.hash != prev {
                return Err(broken(
                    last,
                    None,
                    FaultKind::HeadMismatch(format!("its hash is not entry {last}'s")),
                ));
            }
            // Head and checkpoint were read together, and retention moves the checkpoint in
            // the transaction that appends its entry: the two agree at any moment, even when a
            // retention run went by while the chain was read.
            let checkpoint = now.checkpoint.or(checkpoint);
            if let Some((seq, kind)) = checkpoint_fault(checkpoint.as_ref(), &retention) {
                return Err(broken(seq, None, kind));
            }
            return Ok(VerifiedChain {
                tenant: tenant.clone(),
                entries,
                first_seq,
                last_seq: last,
                head_hash: prev,
                checkpoint,
                unchained: 0,
            });
        }
        if head.seq < last {
            return Err(broken(
                head.seq + 1,
                None,
                FaultKind::HeadMismatch(format!(
                    "it names entry {} but the chain goes on to {last}",
                    head.seq
                )),
            ));
        }
        if head.seq == head_seen.seq {
            // The head did not move while the chain was read: its last entries are gone.
            return Err(broken(
                last + 1,
                None,
                FaultKind::Missing {
                    from: last + 1,
                    to: head.seq,
                },
            ));
        }
        // Appended while the chain was read: read on.
        head_seen = head;
    }
}

/// What is wrong with the checkpoint `cp`, given the newest `retention_pruned` entry of the
/// chain (its `seq` and the checkpoint it carries): the entry to name and why.
fn checkpoint_fault(
    cp: Option<&Checkpoint>,
    retention: &Option<(u64, RetentionRecord)>,
) -> Option<(u64, FaultKind)> {
    match (cp, retention) {
        (None, None) => None,
        (Some(c), None) => Some((
            c.seq + 1,
            FaultKind::Checkpoint(format!(
                "entries up to {} are gone, but no retention_pruned entry in the chain records pruning them",
                c.seq
            )),
        )),
        (None, Some((at, r))) => Some((
            *at,
            FaultKind::Checkpoint(format!(
                "it records pruning up to entry {}, but there is no checkpoint",
                r.first_kept_seq.saturating_sub(1)
            )),
        )),
        (Some(c), Some((at, r))) => {
            let why = r.mismatch(c)?;
            let kept = r.first_kept_seq;
            let detail = if c.seq + 1 > kept {
                format!(
                    "{why} (entry {at}): entries {kept}..{} were removed outside retention",
                    c.seq
                )
            } else {
                format!("{why} (entry {at})")
            };
            Some((kept.min(c.seq + 1), FaultKind::Checkpoint(detail)))
        }
    }
}

fn time_of(v: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(v)
        .ok()
        .and_then(|v| v.get("at").and_then(Value::as_str).map(str::to_string))
}

fn entries_prev(v: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(v)
        .ok()
        .and_then(|v| v.get("prev").and_then(Value::as_str).map(str::to_string))
}

fn seq_and_time(k: &[u8], v: &[u8]) -> (u64, Option<String>) {
    (seq_of_key(k).unwrap_or(0), time_of(v))
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// One tenant; every tenant with an audit log when `None`.
    pub tenant: Option<String>,
    /// Entries at or after this time only.
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line: the entry as stored, with its `tenant` first. Removing
    /// `hash`, sorting the keys and hashing the compact JSON gives `hash` back.
    Jsonl,
    /// RFC 4180, with a header row; `before` and `after` as compact JSON. An empty `before`,
    /// `after` or `detail` is an absent one.
    Csv,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ExportFormat, String> {
        match s {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(format!("unknown format {other:?}: use jsonl or csv")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tenant {0} has no audit log")]
    NoLog(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 15] = [
    "tenant",
    "seq",
    "at",
    "actor",
    "event",
    "cause",
    "object",
    "scim_id",
    "name",
    "vendor_id",
    "before",
    "after",
    "detail",
    "prev",
    "hash",
];

/// Writes the entries that `filter` selects, oldest first per tenant (tenants in name order),
/// to `out`; returns how many. Streams: one entry in memory at a time.
pub fn export(
    store: &Store,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    export_with_progress(store, filter, format, out, None)
}

/// [`export`], calling `progress` with the entries written so far (every 1,000, and at the
/// end).
pub fn export_with_progress(
    store: &Store,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut dyn Write,
    mut progress: Option<&mut dyn FnMut(u64)>,
) -> Result<u64, ExportError> {
    let tenants = match &filter.tenant {
        Some(t) => vec![t.clone()],
        None => audited_tenants(store)?,
    };
    if format == ExportFormat::Csv {
        write!(out, "{}\r\n", CSV_COLUMNS.join(","))?;
    }
    let mut n = 0u64;
    for tenant in tenants {
        let reader =
            AuditReader::open(store, &tenant)?.ok_or_else(|| ExportError::NoLog(tenant.clone()))?;
        for kv in reader.raw() {
            let (_, v) = kv?;
            let Ok(Value::Object(stored)) = serde_json::from_slice::<Value>(&v) else {
                return Err(ExportError::Store(StoreError::Corrupt {
                    key: format!("audit entry of {tenant}"),
                    reason: "not a JSON object (run `audit verify`)".into(),
                }));
            };
            if let Some(since) = filter.since {
                let at = stored.get("at").and_then(Value::as_str).unwrap_or("");
                // An entry whose time does not read is exported: leaving it out would hide it.
                if DateTime::parse_from_rfc3339(at).is_ok_and(|t| t < since) {
                    continue;
                }
            }
            match format {
                ExportFormat::Jsonl => {
                    let mut line = Map::with_capacity(stored.len() + 1);
                    line.insert("tenant".into(), Value::String(tenant.clone()));
                    line.extend(stored);
                    serde_json::to_writer(&mut *out, &Value::Object(line))
                        .map_err(std::io::Error::from)?;
                    out.write_all(b"\n")?;
                }
                ExportFormat::Csv => {
                    let row: Vec<String> = CSV_COLUMNS
                        .iter()
                        .map(|c| match *c {
                            "tenant" => csv_field(&tenant),
                            c => csv_field(&match stored.get(c) {
                                None | Some(Value::Null) => String::new(),
                                Some(Value::String(s)) => s.clone(),
                                Some(other) => other.to_string(),
                            }),
                        })
                        .collect();
                    write!(out, "{}\r\n", row.join(","))?;
                }
            }
            n += 1;
            if n % PROGRESS_EVERY == 0 {
                if let Some(p) = progress.as_mut() {
                    p(n);
                }
            }
        }
    }
    out.flush()?;
    if let Some(p) = progress.as_mut() {
        p(n);
    }
    Ok(n)
}

/// One CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180 §2).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Pages (the console)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageFilter {
    /// `idp`, `sync`, `sweep` or `operator`.
    pub actor: Option<String>,
    /// An event's snake_case name (`role_change`…).
    pub event: Option<String>,
    /// Found, case-insensitively, in the object's name or ids, the cause, the detail or the
    /// values before and after.
    pub text: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

impl PageFilter {
    fn is_empty(&self) -> bool {
        self.actor.is_none() && self.event.is_none() && self.text.is_none() && self.since.is_none()
    }

    fn matches(&self, e: &AuditEntry, text: Option<&str>) -> bool {
        if self.actor.as_deref().is_some_and(|a| a != e.actor) {
            return false;
        }
        if self
            .event
            .as_deref()
            .is_some_and(|ev| ev != e.event.as_str())
        {
            return false;
        }
        if let Some(since) = self.since {
            if DateTime::parse_from_rfc3339(&e.at).is_ok_and(|t| t < since) {
                return false;
            }
        }
        if let Some(needle) = text {
            let found = [
                e.user_name.as_str(),
                e.user_id.as_str(),
                e.vendor_user_id.as_str(),
                e.cause.as_str(),
                e.detail.as_deref().unwrap_or(""),
            ]
            .iter()
            .any(|s| s.to_lowercase().contains(needle))
                || [&e.before, &e.after]
                    .iter()
                    .any(|v| !v.is_null() && v.to_string().to_lowercase().contains(needle));
            if !found {
                return false;
            }
        }
        true
    }
}

/// One page of a tenant's log, newest first, and how many entries match in all. `limit` is at
/// most [`MAX_PAGE`]. A tenant without a log has an empty one. Without a filter a page costs
/// only its own entries; with one, the log is read once.
pub fn page(
    store: &Store,
    tenant: &str,
    filter: &PageFilter,
    offset: usize,
    limit: usize,
) -> Result<(Vec<AuditEntry>, u64), StoreError> {
    let Some(reader) = AuditReader::open(store, tenant)? else {
        return Ok((Vec::new(), 0));
    };
    let limit = limit.min(MAX_PAGE);
    if filter.is_empty() {
        let total = reader.state()?.len();
        let entries = reader
            .entries()
            .rev()
            .skip(offset)
            .take(limit)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((entries, total));
    }
    let text = filter
        .text
        .as_deref()
        .map(str::to_lowercase)
        .filter(|t| !t.is_empty());
    let mut total = 0u64;
    let mut out = Vec::new();
    for kv in reader.raw().rev() {
        let (_, v) = kv?;
        let e = decode_entry(&v)?;
        if !filter.matches(&e, text.as_deref()) {
            continue;
        }
        if total >= offset as u64 && out.len() < limit {
            out.push(e);
        }
        total += 1;
    }
    Ok((out, total))
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

/// Removes `tenant`'s entries made before `older_than` (from the oldest on, up to the first
/// younger one), keeps the last removed entry's `seq` and hash as the checkpoint the chain
/// now starts from, and records the pruning itself (`retention_pruned`, actor `operator`,
/// `detail`: the count, `after`: the checkpoint), all in one transaction per step of at most
/// 5,000 entries. [`verify`] checks the checkpoint against the newest such entry. Returns how
/// many were removed (0: nothing recorded).
pub fn enforce_retention(
    store: &Store,
    tenant: &str,
    older_than: DateTime<Utc>,
) -> Result<u64, StoreError> {
    crate::store::audit::prune(store, tenant, older_than)
}

/// [`verify`] as the admin API answers it and the CLI prints it: `{"ok": true, "tenants":
/// [{tenant, entries, head, summary}]}`, or `{"ok": false, "fault": {tenant, seq, at, reason},
/// "message"}` naming the first bad entry. Only a store that cannot be read is an `Err`.
pub fn verify_json(store: &Store, tenant: Option<&str>) -> Result<serde_json::Value, StoreError> {
    use serde_json::json;
    match verify(store, tenant) {
        Ok(report) => Ok(json!({
            "ok": true,
            "entries": report.entries(),
            "tenants": report.chains.iter().map(|c| json!({
                "tenant": c.tenant,
                "entries": c.entries,
                "head": c.head_hash,
                "summary": c.to_string(),
            })).collect::<Vec<_>>(),
        })),
        Err(fault) => {
            let message = fault.to_string();
            match fault {
                AuditFault::Store(e) => Err(e),
                AuditFault::Broken {
                    tenant,
                    seq,
                    at,
                    kind,
                } => Ok(json!({
                    "ok": false,
                    "message": message,
                    "fault": {"tenant": tenant, "seq": seq, "at": at, "reason": kind.to_string()},
                })),
                // A tenant that has made no vendor-side change yet has nothing to break.
                AuditFault::NoLog(t) => Ok(json!({
                    "ok": true,
                    "entries": 0,
                    "tenants": [{"tenant": t, "entries": 0, "head": null, "summary": message}],
                })),
            }
        }
    }
}

/// The `since` of an export or a page (RFC 3339, any offset), as the API and the CLI read it;
/// the message names the value.
pub fn parse_since(since: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    since
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| format!("since {s:?} is not an RFC 3339 time"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn faults_read_as_the_auditor_needs() {
        let f = AuditFault::Broken {
            tenant: "acme".into(),
            seq: 4,
            at: Some("2026-01-01T00:00:00Z".into()),
            kind: FaultKind::Missing { from: 4, to: 6 },
        };
        assert_eq!(
            f.to_string(),
            "audit log of tenant acme: entry 4 (2026-01-01T00:00:00Z): missing entries 4..6"
        );
        assert_eq!(FaultKind::Altered("x".into()).to_string(), "altered: x");
    }
}
