//! Revoked JWTs (issue 15): the deny list of one tenant, by `jti`, in a sled tree of the store
//! (`t/{tenant}/revoked`). `scim-bridge token revoke` writes it; bearer validation reads it on
//! every request (a sled lookup, no copy taken at start), so a revocation written through the
//! store counts from the next request on.
//!
//! Each entry is its own record of who revoked the token and when. [`RevokedTokens::revoke_audited`]
//! also appends a `token_revoked` entry (actor `operator`) to the tenant's hash-chained audit
//! log, in the same sled transaction as the deny-list write: a crash leaves both or neither,
//! never a revocation the audit log does not show (nor an audit entry for a token that still
//! works). The entry names the `jti` and the reason, never any token material.

use crate::store::audit::{AuditEntry, AuditEvent, AuditLog};
use crate::store::{Batch, Store, StoreError, Tree};
use serde::{Deserialize, Serialize};

/// The longest `jti` accepted by `revoke` (a uuid is 36 characters).
pub const MAX_JTI_LEN: usize = 256;

/// One revoked token: which, when, by whom, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub jti: String,
    /// RFC 3339 time of the revocation.
    pub revoked_at: String,
    /// Who revoked it, e.g. `alice (scim-bridge token revoke)`.
    pub revoked_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Newly added to the deny list.
    Added(Revocation),
    /// It was already there; the first record is kept.
    Already(Revocation),
}

/// The deny list of one tenant.
#[derive(Clone)]
pub struct RevokedTokens {
    tree: Tree,
}

impl std::fmt::Debug for RevokedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevokedTokens")
            .field("entries", &self.tree.len())
            .finish()
    }
}

impl RevokedTokens {
    pub fn open(store: &Store, tenant: &str) -> Result<RevokedTokens, StoreError> {
        Ok(RevokedTokens {
            tree: store.tree(tenant, "revoked")?,
        })
    }

    /// Whether `jti` is on the deny list: read from the store on each call.
    pub fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        self.tree.contains_key(jti.as_bytes())
    }

    /// Adds `jti` with a record of who and when, and flushes it to disk before returning.
    /// `jti` must be 1..=256 printable ASCII characters (the caller reports anything else).
    pub fn revoke(
        &self,
        jti: &str,
        revoked_by: &str,
        reason: Option<&str>,
    ) -> Result<Revoked, StoreError> {
        if let Some(existing) = self.get(jti)? {
            return Ok(Revoked::Already(existing));
        }
        let record = self.record(jti, revoked_by, reason);
        self.tree.insert(jti.as_bytes(), self.encode(&record)?)?;
        self.tree.raw().flush()?;
        Ok(Revoked::Added(record))
    }

    /// [`revoke`](Self::revoke), and the audit entry of a new revocation appended to `audit`
    /// (the same tenant's log) in one sled transaction across the two trees, then flushed
    /// before returning: once this returns `Added`, the token is refused from the next request
    /// on and the chain shows who revoked it, even after a crash. An `Already` writes nothing.
    pub fn revoke_audited(
        &self,
        audit: &AuditLog,
        jti: &str,
        revoked_by: &str,
        reason: Option<&str>,
    ) -> Result<Revoked, StoreError> {
        // One revocation at a time in this process, so two operators revoking the same `jti`
        // at once give one record and one audit entry, not two (the existence check and the
        // write are not in one transaction: the chain append cannot be).
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = self.get(jti)? {
            return Ok(Revoked::Already(existing));
        }
        let record = self.record(jti, revoked_by, reason);
        let mut batch = Batch::default();
        batch.insert(jti.as_bytes(), self.encode(&record)?);
        let mut entry = AuditEntry::new(AuditEvent::TokenRevoked, "operator", "token revoke")
            .after(serde_json::json!({ "jti": jti, "revoked_by": revoked_by }))
            .detail(reason.unwrap_or_default());
        // The console's "object" column: the token, by its id (never the token itself).
        entry.user_name = jti.to_string();
        audit.apply_with(self.tree.raw(), batch, std::slice::from_ref(&entry))?;
        self.tree.raw().flush()?;
        Ok(Revoked::Added(record))
    }

    fn record(&self, jti: &str, revoked_by: &str, reason: Option<&str>) -> Revocation {
        Revocation {
            jti: jti.to_string(),
            revoked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked_by: revoked_by.to_string(),
            reason: reason.map(str::to_string),
        }
    }

    fn encode(&self, record: &Revocation) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
            key: record.jti.clone(),
            reason: e.to_string(),
        })
    }

    /// The record of `jti`, when revoked.
    pub fn get(&self, jti: &str) -> Result<Option<Revocation>, StoreError> {
        match self.tree.get(jti.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(jti, &v).map(Some),
        }
    }

    /// Every revocation, in `jti` order.
    pub fn list(&self) -> Result<Vec<Revocation>, StoreError> {
        self.tree
            .scan_prefix(b"")
            .map(|kv| {
                let (k, v) = kv?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }
}

fn decode(jti: &str, bytes: &[u8]) -> Result<Revocation, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("revoked/{jti}"),
        reason: e.to_string(),
    })
}

/// Whether `jti` is a value `revoke` accepts: 1..=256 printable ASCII characters.
pub fn valid_jti(jti: &str) -> bool {
    !jti.is_empty() && jti.len() <= MAX_JTI_LEN && jti.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether opening the store failed because another process (a running bridge) holds its lock.
pub fn is_locked(e: &StoreError) -> bool {
    match e {
        StoreError::Sled(sled::Error::Io(io)) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_is_persistent_idempotent_and_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let list = RevokedTokens::open(&store, "a").unwrap();
            assert!(!list.is_revoked("j1").unwrap());
            let first = match list.revoke("j1", "tester", Some("leaked")).unwrap() {
                Revoked::Added(r) => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(first.revoked_by, "tester");
            assert_eq!(first.reason.as_deref(), Some("leaked"));
            assert!(matches!(
                list.revoke("j1", "someone-else", None).unwrap(),
                Revoked::Already(r) if r == first
            ));
            assert!(!RevokedTokens::open(&store, "b")
                .unwrap()
                .is_revoked("j1")
                .unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let list = RevokedTokens::open(&store, "a").unwrap();
        assert!(list.is_revoked("j1").unwrap());
        assert_eq!(list.list().unwrap().len(), 1);
    }

    #[test]
    fn a_second_open_of_the_store_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        // Platforms without advisory locks open it a second time.
        if let Err(e) = Store::open(dir.path()) {
            assert!(is_locked(&e), "{e}");
        }
        assert!(!is_locked(&StoreError::Corrupt {
            key: "k".into(),
            reason: "r".into()
        }));
    }

    #[test]
    fn jti_values() {
        assert!(valid_jti("0b0e8e5c-6d0c-4d8a-9d2f-1a2b3c4d5e6f"));
        assert!(!valid_jti(""));
        assert!(!valid_jti("has space"));
        assert!(!valid_jti(&"x".repeat(MAX_JTI_LEN + 1)));
    }
}
