//! The engine's durable records, kept in the tenant's directory tree (under `E/`) so that a
//! desired state, its outbox mark and the applied state are written in one atomic batch.
//!
//! | record                | meaning                                                        |
//! |-----------------------|----------------------------------------------------------------|
//! | `au/{scim id}`        | [`AppliedUser`]: what the vendor last confirmed for the user     |
//! | `ag/{scim id}`        | [`AppliedGroup`]: the vendor group's last confirmed name        |
//! | `am/{group}/{user}`   | the user's vendor id, confirmed a member (membership on group) |
//! | `ob/{u|g}/{scim id}`  | [`OutboxEntry`]: the object differs from what the IdP asked    |
//! | `del/{u|g}/{scim id}` | [`Tombstone`]: deleted by the IdP, not yet at the vendor        |
//! | `idp/{scim id}`       | the IdP has written this user: the role rules apply to it      |
//! | `gone/{vendor id}`    | a vendor user the IdP deleted (kept deactivated, or deleted): never adopted |
//! | `rules`               | the role rules last applied to every user                      |
//! | `synced`              | a full observe has completed once                              |
//! | `found/{scim id}`     | the vendor user existed before the IdP wrote it (`adopted`)     |
//! | `adopt/{scim id}`     | the IdP's first write of an adopted user is pending (value: that outbox entry's `since_ms`): the plan's "adopt" |
//! | `rolenames`           | vendor role id → name, as the last observe read them (offline reports) |
//! | `sweep/last`          | the last dormant sweep's summary                               |

use super::adapter::Profile;
use crate::scim::schema::ResourceKind;
use crate::store::directory::Directory;
use crate::store::{Batch, StoreError};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// What the vendor last confirmed for a user. `None` fields are unknown, so the next reconcile
/// sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedUser {
    pub vendor_id: String,
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub role: Option<String>,
    /// Vendor group ids as the vendor holds them on the user (membership on the user only);
    /// groups the bridge does not mirror are kept here and preserved.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// The user's last sign-in at the vendor (RFC 3339), as the last observe read it; `None`
    /// when the vendor reports none (never signed in, or a vendor without the field). Read by
    /// the access review and the dormant-account sweep; never written to the vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedGroup {
    pub vendor_id: String,
    pub name: String,
}

/// Who asked for a change: the audit log's actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Idp,
    Sync,
    /// The dormant-account sweep (scheduled, or `sweep dormant --apply`).
    Sweep,
    Operator,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Idp => "idp",
            Actor::Sync => "sync",
            Actor::Sweep => "sweep",
            Actor::Operator => "operator",
        }
    }
}

/// An object whose vendor state differs from the desired one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// When it first became pending (unix ms): the age of the oldest pending change.
    pub since_ms: u64,
    pub attempts: u32,
    /// Not before (unix ms).
    pub next_ms: u64,
    pub last_error: Option<String>,
    /// Refused for good: kept, not retried until the IdP writes the object again or an
    /// operator asks.
    #[serde(default)]
    pub failed: bool,
    /// Refused for lack of capacity (a licence seat): retried at every observe, since seats
    /// free up without the IdP writing anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capacity: bool,
    /// What caused it, for the audit log ("patch", "membership of group \"X\"").
    pub cause: String,
    pub actor: Actor,
    /// Bumped by every mark: a reconcile clears the entry only if no write marked it again
    /// while it ran (its fence).
    #[serde(default)]
    pub seq: u64,
}

/// A process-wide mark sequence, started from the clock so it keeps rising across restarts.
pub fn next_seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    SEQ.get_or_init(|| {
        AtomicU64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        )
    })
    .fetch_add(1, Ordering::Relaxed)
}

impl OutboxEntry {
    pub fn new(cause: impl Into<String>, actor: Actor) -> OutboxEntry {
        let now = now_ms();
        OutboxEntry {
            since_ms: now,
            attempts: 0,
            next_ms: now,
            last_error: None,
            failed: false,
            capacity: false,
            cause: cause.into(),
            actor,
            seq: next_seq(),
        }
    }
}

/// A deleted object still to be removed or deactivated at the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub vendor_id: Option<String>,
    pub name: String,
    /// A user's natural keys, to find a vendor user whose create was never confirmed.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Remove the vendor user whatever the tenant's deprovisioning says: the bridge made it
    /// for a create it then rolled back (the IdP never had this user).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub fn kind_tag(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "u",
        ResourceKind::Group => "g",
    }
}

/// Typed access to the engine's records of one tenant.
pub struct Records<'a>(pub &'a Directory);

impl Records<'_> {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.0.record(key)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        key: key.to_string(),
                        reason: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    pub fn applied_user(&self, sid: &str) -> Result<Option<AppliedUser>, StoreError> {
        self.get(&format!("au/{sid}"))
    }
    pub fn applied_group(&self, sid: &str) -> Result<Option<AppliedGroup>, StoreError> {
        self.get(&format!("ag/{sid}"))
    }
    pub fn outbox(&self, kind: ResourceKind, sid: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.get(&format!("ob/{}/{sid}", kind_tag(kind)))
    }
    pub fn tombstone(
        &self,
        kind: ResourceKind,
        sid: &str,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.get(&format!("del/{}/{sid}", kind_tag(kind)))
    }
    pub fn is_idp_written(&self, sid: &str) -> Result<bool, StoreError> {
        Ok(self.0.record(&format!("idp/{sid}"))?.is_some())
    }
    /// Whether the bridge made this user's vendor user and has not finished creating it.
    pub fn is_being_made(&self, sid: &str) -> Result<bool, StoreError> {
        Ok(self.0.record(&format!("made/{sid}"))?.is_some())
    }
    pub fn is_gone(&self, vendor_id: &str) -> Result<bool, StoreError> {
        Ok(self.0.record(&format!("gone/{vendor_id}"))?.is_some())
    }
    /// The confirmed members of a group (membership on the group): (user SCIM id, vendor id).
    pub fn applied_members(&self, gsid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = format!("am/{gsid}/");
        self.0
            .records(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    k[prefix.len()..].to_string(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }
    /// Every outbox entry: (kind, SCIM id, entry).
    pub fn pending(
        &self,
    ) -> impl Iterator<Item = Result<(ResourceKind, String, OutboxEntry), StoreError>> + '_ {
        self.0.records("ob/").map(|kv| {
            let (k, v) = kv?;
            let rest = &k["ob/".len()..];
            let (tag, sid) = rest.split_once('/').unwrap_or(("u", rest));
            let kind = if tag == "g" {
                ResourceKind::Group
            } else {
                ResourceKind::User
            };
            let entry = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                key: k.clone(),
                reason: e.to_string(),
            })?;
            Ok((kind, sid.to_string(), entry))
        })
    }
    pub fn flag(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.record(key)
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Record writes, added to a batch.
pub mod put {
    use super::*;

    pub fn applied_user(b: &mut Batch, sid: &str, a: &AppliedUser) {
        Directory::put_record(b, &format!("au/{sid}"), &json(a));
    }
    pub fn no_applied_user(b: &mut Batch, sid: &str) {
        Directory::remove_record(b, &format!("au/{sid}"));
    }
    pub fn applied_group(b: &mut Batch, sid: &str, a: &AppliedGroup) {
        Directory::put_record(b, &format!("ag/{sid}"), &json(a));
    }
    pub fn no_applied_group(b: &mut Batch, sid: &str) {
        Directory::remove_record(b, &format!("ag/{sid}"));
    }
    pub fn member(b: &mut Batch, gsid: &str, usid: &str, vendor_id: &str) {
        Directory::put_record(b, &format!("am/{gsid}/{usid}"), vendor_id.as_bytes());
    }
    pub fn no_member(b: &mut Batch, gsid: &str, usid: &str) {
        Directory::remove_record(b, &format!("am/{gsid}/{usid}"));
    }
    pub fn outbox(b: &mut Batch, kind: ResourceKind, sid: &str, e: &OutboxEntry) {
        Directory::put_record(b, &format!("ob/{}/{sid}", kind_tag(kind)), &json(e));
    }
    pub fn no_outbox(b: &mut Batch, kind: ResourceKind, sid: &str) {
        Directory::remove_record(b, &format!("ob/{}/{sid}", kind_tag(kind)));
    }
    pub fn tombstone(b: &mut Batch, kind: ResourceKind, sid: &str, t: &Tombstone) {
        Directory::put_record(b, &format!("del/{}/{sid}", kind_tag(kind)), &json(t));
    }
    pub fn no_tombstone(b: &mut Batch, kind: ResourceKind, sid: &str) {
        Directory::remove_record(b, &format!("del/{}/{sid}", kind_tag(kind)));
    }
    pub fn idp_written(b: &mut Batch, sid: &str) {
        Directory::put_record(b, &format!("idp/{sid}"), b"");
    }
    pub fn not_idp_written(b: &mut Batch, sid: &str) {
        Directory::remove_record(b, &format!("idp/{sid}"));
    }
    pub fn being_made(b: &mut Batch, sid: &str) {
        Directory::put_record(b, &format!("made/{sid}"), b"");
    }
    pub fn made(b: &mut Batch, sid: &str) {
        Directory::remove_record(b, &format!("made/{sid}"));
    }
    pub fn gone(b: &mut Batch, vendor_id: &str) {
        Directory::put_record(b, &format!("gone/{vendor_id}"), b"");
    }
    pub fn not_gone(b: &mut Batch, vendor_id: &str) {
        Directory::remove_record(b, &format!("gone/{vendor_id}"));
    }
    pub fn flag(b: &mut Batch, key: &str, value: &[u8]) {
        Directory::put_record(b, key, value);
    }
}

/// Who manages a vendor account (CONTRACT §5 `managed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Managed {
    /// The bridge created the vendor user for the IdP.
    Idp,
    /// The vendor user existed before the bridge; the IdP has written it since.
    Adopted,
    /// The IdP has never written it: an orphan.
    VendorOnly,
}

impl Managed {
    pub fn as_str(self) -> &'static str {
        match self {
            Managed::Idp => "idp",
            Managed::Adopted => "adopted",
            Managed::VendorOnly => "vendor-only",
        }
    }

    /// How a directory user is managed, from the engine's records of it.
    pub fn of(dir: &Directory, sid: &str) -> Result<Managed, StoreError> {
        let idp = Records(dir).is_idp_written(sid)?;
        let found = dir
            .record(&format!("{}{sid}", super::observe::FOUND))?
            .is_some();
        Ok(Managed::from_marks(idp, found))
    }

    pub(crate) fn from_marks(idp_written: bool, found: bool) -> Managed {
        match (idp_written, found) {
            (false, _) => Managed::VendorOnly,
            (true, true) => Managed::Adopted,
            (true, false) => Managed::Idp,
        }
    }
}
