//! The role-change audit log (issue 5 §4): every vendor role a connector sets — who got it, what
//! caused it, from which role, to which, when — appended to a sled tree of the tenant. `GET
//! /metrics` counts the entries; a later issue exports them.
//!
//! Keys are `{unix nanos BE}{seq BE}` so a scan returns entries in time order and two entries
//! written in the same nanosecond never collide.

use crate::store::{Batch, Store, StoreError, Tree};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// One role change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChange {
    /// RFC 3339 time of the change.
    pub at: String,
    /// Who the change is about: the SCIM id and userName of the user.
    pub user_id: String,
    pub user_name: String,
    /// The vendor's id of the user.
    pub vendor_user_id: String,
    /// What caused it, e.g. `create`, `replace`, `patch`, `membership of "BI Admins"`.
    pub cause: String,
    /// Who asked: `idp` (a SCIM request) or `sync`.
    pub actor: String,
    /// Vendor role names (the vendor's own), `None` when unknown (e.g. a new user).
    pub from: Option<String>,
    pub to: String,
    /// What the entry records: a role change (the default, and every entry before this field),
    /// or a change the vendor refused for good.
    #[serde(default, skip_serializing_if = "AuditEvent::is_role_change")]
    pub event: AuditEvent,
    /// The vendor's reason, for a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    #[default]
    RoleChange,
    /// The vendor refused a change for good; it stays `failed` in the outbox until the IdP
    /// writes the object again or an operator retries it.
    DeliveryRefused,
    /// The IdP deleted a user and the vendor kept it without access instead of removing it
    /// (Tableau 409003: the user owns content and stays, `Unlicensed`).
    RemovalKept,
}

impl AuditEvent {
    fn is_role_change(&self) -> bool {
        *self == AuditEvent::RoleChange
    }
}

pub struct AuditLog {
    tree: Tree,
    seq: AtomicU64,
    count: AtomicU64,
    role_changes: AtomicU64,
}

impl AuditLog {
    pub fn open(store: &Store, tenant: &str) -> Result<AuditLog, StoreError> {
        let tree = store.tree(tenant, "audit")?;
        let count = tree.len() as u64;
        let log = AuditLog {
            tree,
            seq: AtomicU64::new(0),
            count: AtomicU64::new(count),
            role_changes: AtomicU64::new(0),
        };
        let roles = log
            .entries()?
            .iter()
            .filter(|e| e.event == AuditEvent::RoleChange)
            .count() as u64;
        log.role_changes.store(roles, Ordering::Relaxed);
        Ok(log)
    }

    /// Adds an entry to `batch` (the caller commits it with the write it records).
    pub fn record(&self, batch: &mut Batch, change: &RoleChange) {
        if change.event == AuditEvent::RoleChange {
            self.role_changes.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut key = nanos.to_be_bytes().to_vec();
        key.extend_from_slice(&self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        batch.insert(key, serde_json::to_vec(change).unwrap_or_default());
    }

    /// Applies a batch of entries and counts them.
    pub fn commit(&self, batch: Batch, entries: u64) -> Result<(), StoreError> {
        if entries == 0 {
            return Ok(());
        }
        self.tree.apply(batch)?;
        self.count.fetch_add(entries, Ordering::Relaxed);
        Ok(())
    }

    /// Applies a directory batch and a batch of entries in one sled transaction.
    pub(super) fn apply_with(
        &self,
        dir_tree: &sled::Tree,
        dir_batch: Batch,
        audit_batch: Batch,
        entries: u64,
    ) -> Result<(), StoreError> {
        use sled::Transactional;
        (dir_tree, self.tree.raw())
            .transaction(|(d, a)| {
                d.apply_batch(&dir_batch.0)?;
                a.apply_batch(&audit_batch.0)?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                    key: "audit".into(),
                    reason: "transaction aborted".into(),
                },
            })?;
        self.count.fetch_add(entries, Ordering::Relaxed);
        Ok(())
    }

    /// Role changes recorded so far (persisted ones included; refusals not counted).
    pub fn role_changes(&self) -> u64 {
        self.role_changes.load(Ordering::Relaxed)
    }

    /// Entries recorded so far (persisted ones included).
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Result<Vec<RoleChange>, StoreError> {
        self.tree
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: "audit".into(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_and_are_counted_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = AuditLog::open(&store, "t").unwrap();
        let mut batch = Batch::default();
        for to in ["Viewer", "Admin"] {
            log.record(
                &mut batch,
                &RoleChange {
                    at: "2026-01-01T00:00:00Z".into(),
                    user_id: "u".into(),
                    user_name: "ada".into(),
                    vendor_user_id: "v".into(),
                    cause: "create".into(),
                    actor: "idp".into(),
                    from: None,
                    to: to.into(),
                    event: AuditEvent::RoleChange,
                    detail: None,
                },
            );
        }
        log.commit(batch, 2).unwrap();
        assert_eq!(log.len(), 2);
        let tos: Vec<String> = log.entries().unwrap().into_iter().map(|e| e.to).collect();
        assert_eq!(tos, ["Viewer", "Admin"]);
        drop(log);
        assert_eq!(AuditLog::open(&store, "t").unwrap().len(), 2);
    }
}
