//! The sled store. One sled database per data dir; one tree per tenant and purpose, so tenants'
//! data never share keys. sled 0.34 is the stable line; it stays behind this module.

pub mod audit;
pub mod backup;
pub mod directory;
pub mod dump;
pub mod revoked;
pub(crate) mod touches;

use std::path::{Path, PathBuf};

/// The layout version of the store (issue 14): the trees, their key encodings and their values.
/// sled 0.34 is pre-1.0 and its own format carries no promise, so the bridge keeps one of its
/// own, in the global `meta` tree under `format_version` (ASCII decimal). Raise it with any
/// change an older binary would misread, and add a [`Migration`] from the previous version.
pub const FORMAT_VERSION: u32 = 1;
const META_TREE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format_version";

/// A step from one layout version to the next, run at open before anything else reads the
/// store. It must be idempotent: a crash before the new version is stamped runs it again.
pub struct Migration {
    pub from: u32,
    pub run: fn(&sled::Db) -> Result<(), StoreError>,
}

/// Every migration this binary knows, `from` ascending. None yet: version 1 is the first.
const MIGRATIONS: &[Migration] = &[];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Written by a newer scim-bridge: opening it could misread or corrupt it.
    #[error(
        "the store in {path} has format version {found}, but this scim-bridge ({binary}) knows \
         versions up to {known}: it was written by a newer scim-bridge. Run that version or a \
         later one; this one leaves the store untouched"
    )]
    Newer {
        path: String,
        found: u32,
        known: u32,
        binary: &'static str,
    },
    /// Older than this binary, and no migration leads from it.
    #[error(
        "the store in {path} has format version {found}; this scim-bridge ({binary}) uses \
         version {known} and has no migration from it, so the store was left untouched. Keep \
         running the scim-bridge that wrote it, or upgrade through a release that migrates \
         version {found} (every layout change ships with its migration)"
    )]
    Older {
        path: String,
        found: u32,
        known: u32,
        binary: &'static str,
    },
}

impl From<StoreError> for crate::scim::ScimError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        crate::scim::ScimError::unavailable("the bridge's store is temporarily unavailable", 5)
    }
}

/// One atomic write: every insert and remove of one tree, applied together or not at all. The
/// store's own type, so that sled stays inside `src/store`. It also remembers which keys it
/// writes, so that a commit can tell readers what it touched ([`touches`]).
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: sled::Batch,
    touched: touches::Touched,
}

impl Batch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.touched.key(key.as_ref());
        self.ops.insert(key.as_ref(), value.as_ref());
    }
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.touched.key(key.as_ref());
        self.ops.remove(key.as_ref());
    }
}

/// One tenant's tree for one purpose: ordered keys and values.
#[derive(Clone)]
pub struct Tree(sled::Tree);

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key.as_ref())?.map(|v| v.to_vec()))
    }
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.0.contains_key(key.as_ref())?)
    }
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.0.insert(key.as_ref(), value.as_ref())?;
        Ok(())
    }
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        self.0.remove(key.as_ref())?;
        Ok(())
    }
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        Ok(self.0.apply_batch(batch.ops)?)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keys and values under `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.0.scan_prefix(prefix.as_ref()).map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }
    /// Values of the whole tree, in key order.
    pub fn values(&self) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> {
        self.0
            .iter()
            .values()
            .map(|v| v.map(|v| v.to_vec()).map_err(StoreError::from))
    }
    pub(crate) fn raw(&self) -> &sled::Tree {
        &self.0
    }
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    flusher: std::sync::Arc<GroupCommit>,
    /// The data dir (the sled files are under `{dir}/store`).
    dir: std::sync::Arc<PathBuf>,
}

type FlushWaiter = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Group commit: one thread runs `fsync`s for the whole store; every caller that asked before a
/// flush began is answered by that flush. sled's own `flush_async` runs on its shared I/O pool,
/// where concurrent callers can occupy every thread waiting for a log write queued behind them
/// (found by the concurrency tests: a burst of 12+ writes hung the process).
struct GroupCommit {
    requests: parking_lot::Mutex<Option<std::sync::mpsc::Sender<FlushWaiter>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    /// The thread holds a handle on the database: stop it and wait, so that dropping the last
    /// `Store` releases the data dir's lock at once (a restart in the same process reopens it).
    fn drop(&mut self) {
        self.requests.lock().take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl GroupCommit {
    fn start(db: sled::Db) -> GroupCommit {
        let (tx, rx) = std::sync::mpsc::channel::<FlushWaiter>();
        let thread = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .expect("spawn the store flush thread");
        GroupCommit {
            requests: parking_lot::Mutex::new(Some(tx)),
            thread: Some(thread),
        }
    }
}

/// The page cache's bound: `SCIM_BRIDGE_STORE_CACHE_MB` (default 128 MiB). A store whose
/// working set outgrows it pages sled's nodes in and out on every pass:
/// - lookups spread over 1,000 tenants of 100 users (a 144 MB store on disk) ran at 72–78 % of
///   one tenant's rate at 64 MiB and 78.9–86.4 % (median 82.7 %) at 128 MiB, side by side
///   (`scripts/bench-tenants.sh`, README "Many tenants"); resident memory after the lookups
///   stayed near 200 MB, while the write-heavy `deploy/measure-rss.sh` peak at that size rose
///   from 202 to 285 MiB;
/// - the dry-run plan of a 100,000-user tenant, which reads every user, took 1.76 s at 64 MiB
///   and 1.0–1.2 s at 256 MiB (`cargo bench --bench console_pages`).
///
/// Memory grows with the cache at most by its size, so the operator sets it to what they
/// budget.
fn cache_bytes() -> u64 {
    cache_mb(std::env::var("SCIM_BRIDGE_STORE_CACHE_MB").ok().as_deref()) * 1024 * 1024
}

/// `SCIM_BRIDGE_STORE_CACHE_MB`'s value in MiB: from 8 on, else (logged) the default 128.
fn cache_mb(value: Option<&str>) -> u64 {
    const DEFAULT_MB: u64 = 128;
    let Some(v) = value else {
        return DEFAULT_MB;
    };
    match v.trim().parse::<u64>() {
        Ok(mb) if (8..=1 << 20).contains(&mb) => mb,
        _ => {
            tracing::warn!(value = %v, "SCIM_BRIDGE_STORE_CACHE_MB is not a size in MiB from 8 on; the default 128 is used");
            DEFAULT_MB
        }
    }
}

impl Store {
    /// Opens (or creates) the store under `dir`. The page cache is bounded so a large directory
    /// does not grow resident memory past what the operator budgets.
    ///
    /// The store is private to the bridge's user (issue 15): see [`private`]. The data dir is
    /// created 0700, the store's directories 0700 and its files 0600; an existing store that
    /// group or others can read is tightened, with a warning naming it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io = |e: std::io::Error| StoreError::Sled(sled::Error::Io(e));
        private::restrict_umask();
        private::create_dir(dir).map_err(io)?;
        let store_dir = dir.join("store");
        private::check_data_dir(dir);
        private::tighten_store(&store_dir);
        let db = sled::Config::new()
            .path(&store_dir)
            .cache_capacity(cache_bytes())
            .mode(sled::Mode::HighThroughput)
            .open()?;
        check_format_version(&db, dir)?;
        let flusher = std::sync::Arc::new(GroupCommit::start(db.clone()));
        Ok(Store {
            db,
            flusher,
            dir: std::sync::Arc::new(dir.to_path_buf()),
        })
    }

    /// The data dir this store was opened in.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The store's layout version, as stamped (see [`FORMAT_VERSION`]).
    pub fn format_version(&self) -> Result<u32, StoreError> {
        Ok(read_format_version(&self.db)?.unwrap_or(FORMAT_VERSION))
    }

    /// Every tenant that has a tree in the store, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| split_tree_name(n).0.map(str::to_string))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The tree of one tenant for one purpose (`local`, `idmap`, `audit`…).
    pub fn tree(&self, tenant: &str, purpose: &str) -> Result<Tree, StoreError> {
        Ok(Tree(self.db.open_tree(format!("t/{tenant}/{purpose}"))?))
    }

    /// Durably persists everything written so far. Concurrent callers share one flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match self.flusher.requests.lock().as_ref() {
            Some(requests) => requests.send(tx),
            None => Err(std::sync::mpsc::SendError(tx)),
        };
        let unavailable =
            |reason: String| StoreError::Sled(sled::Error::Io(std::io::Error::other(reason)));
        if sent.is_err() {
            return Err(unavailable("the flush thread has stopped".into()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(unavailable(reason)),
            Err(_) => Err(unavailable("the flush thread has stopped".into())),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.db.was_recovered() || self.db.size_on_disk().is_ok()
    }
}

/// `(Some(tenant), purpose)` for a tenant's tree `t/{tenant}/{purpose}` (tenant ids hold no
/// `/`); `(None, name)` for a global tree (`meta`, sled's default tree). `None` names are not
/// UTF-8 (the bridge makes none; a dump carries them in base64).
pub(crate) fn split_tree_name(name: &[u8]) -> (Option<&str>, Option<&str>) {
    let Ok(name) = std::str::from_utf8(name) else {
        return (None, None);
    };
    match name
        .strip_prefix("t/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((tenant, purpose)) if !tenant.is_empty() => (Some(tenant), Some(purpose)),
        _ => (None, Some(name)),
    }
}

fn read_format_version(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_KEY)? {
        None => Ok(None),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                key: "meta/format_version".into(),
                reason: format!("not a version number: {:?}", String::from_utf8_lossy(&v)),
            }),
    }
}

fn stamp_format_version(db: &sled::Db, version: u32) -> Result<(), StoreError> {
    db.open_tree(META_TREE)?
        .insert(FORMAT_KEY, version.to_string().as_bytes())?;
    db.flush()?;
    Ok(())
}

/// The check at open (issue 14). A store without a stamp is either new or was written before
/// the stamp existed, when the layout was already version 1's: it is stamped 1. A newer store is
/// refused untouched; an older one is migrated step by step, or refused naming the
/// export/import path when no migration leads from it.
fn check_format_version(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    check_format_version_with(db, dir, FORMAT_VERSION, MIGRATIONS)
}

fn check_format_version_with(
    db: &sled::Db,
    dir: &Path,
    current: u32,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let binary = concat!("version ", env!("CARGO_PKG_VERSION"));
    let path = dir.display().to_string();
    let mut found = match read_format_version(db)? {
        None => {
            stamp_format_version(db, 1)?;
            1
        }
        Some(v) => v,
    };
    if found > current {
        return Err(StoreError::Newer {
            path,
            found,
            known: current,
            binary,
        });
    }
    while found < current {
        let Some(m) = migrations.iter().find(|m| m.from == found) else {
            return Err(StoreError::Older {
                path,
                found,
                known: current,
                binary,
            });
        };
        (m.run)(db)?;
        stamp_format_version(db, found + 1)?;
        tracing::info!(path = %path, from = found, to = found + 1, "store migrated");
        found += 1;
    }
    Ok(())
}

/// Keeping the store private to the bridge's user (issue 15): the data dir holds every user's
/// name and email, the ID maps and the audit log.
///
/// Why the umask, and not only `chmod` after the fact: sled creates its files itself (`conf`,
/// `db`, `blobs/…`, and snapshot files written later by its own threads) with
/// `std::fs` defaults, that is `0666 & !umask`. No sled option sets a mode, and a `chmod` after
/// `open` would leave a window and miss every file sled creates afterwards. So the first
/// `Store::open` adds `0o077` to the process umask: only ever stricter (the old mask is kept
/// and OR-ed), never looser. This is process-wide, which is what the bridge wants anyway: it
/// writes no file meant for another user (the default token and the store are private; exports
/// go to stdout). An embedding program that needs group-readable files should create them with
/// an explicit `set_permissions`.
///
/// An existing store (made by an earlier version, or under a loose umask) that group or others
/// can read is **tightened, with a warning**, rather than only warned about: everything under
/// `<data_dir>/store` belongs to the bridge and nobody else has a reason to read it, leaving it
/// open keeps the exposure the warning reports, and `chmod` only removes bits, so it cannot
/// break the bridge. The data dir itself is **warned about only**: it is the operator's choice
/// and may be a shared path (`--data-dir /tmp`, a volume root managed by `fsGroup`), which a
/// `chmod 700` could break for others; the store inside it is private either way.
pub mod private {
    use std::path::Path;

    /// Adds `0o077` to the process umask (Unix; a no-op elsewhere).
    pub fn restrict_umask() {
        #[cfg(unix)]
        // SAFETY: umask(2) only swaps the process's file-mode creation mask and cannot fail.
        // Between the two calls the mask is 0o077, stricter than either value, so a file
        // created concurrently by another thread is never looser than intended.
        unsafe {
            let old = libc::umask(0o077);
            libc::umask(old | 0o077);
        }
    }

    /// Creates `dir` (and any missing parent) with mode 0700; an existing one is left as it is.
    pub fn create_dir(dir: &Path) -> std::io::Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)
    }

    /// The mode bits (permissions only) of `path`, not following a symlink.
    #[cfg(unix)]
    fn mode_of(path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    /// Warns when the data dir grants group or others any access.
    pub fn check_data_dir(dir: &Path) {
        #[cfg(unix)]
        if let Some(mode) = mode_of(dir).filter(|m| m & 0o077 != 0) {
            tracing::warn!(
                path = %dir.display(),
                mode = %format!("{mode:04o}"),
                "the data dir is accessible to group or others; the store inside it is kept \
                 private, but run `chmod 700` on it so that everything else there is too"
            );
        }
        #[cfg(not(unix))]
        let _ = dir;
    }

    /// Removes group and other permissions from `store_dir` and everything under it (symlinks
    /// are neither followed nor changed), with one warning naming the store when anything was
    /// open. Failures are warned about and do not stop the store from opening.
    pub fn tighten_store(store_dir: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mut loose = Vec::new();
            let mut failed = Vec::new();
            let mut pending = vec![store_dir.to_path_buf()];
            while let Some(path) = pending.pop() {
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.file_type().is_symlink() {
                    continue;
                }
                if meta.is_dir() {
                    if let Ok(entries) = std::fs::read_dir(&path) {
                        pending.extend(entries.flatten().map(|e| e.path()));
                    }
                }
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    let private = std::fs::Permissions::from_mode(mode & 0o700);
                    match std::fs::set_permissions(&path, private) {
                        Ok(()) => loose.push(path),
                        Err(e) => failed.push((path, e)),
                    }
                }
            }
            if let Some(first) = loose.first() {
                tracing::warn!(
                    path = %store_dir.display(),
                    entries = loose.len(),
                    first = %first.display(),
                    "the store was readable by group or others; it has been made private \
                     (directories 0700, files 0600)"
                );
            }
            for (path, e) in failed {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "the store is readable by group or others and could not be made private; \
                     run `chmod -R go-rwx` on it"
                );
            }
        }
        #[cfg(not(unix))]
        let _ = store_dir;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::private;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn set(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn tighten_store_removes_group_and_other_bits_without_following_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        std::fs::create_dir_all(store.join("blobs")).unwrap();
        std::fs::write(store.join("db"), b"x").unwrap();
        std::fs::write(store.join("blobs/1"), b"x").unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        std::os::unix::fs::symlink(&outside, store.join("link")).unwrap();
        set(&store, 0o755);
        set(&store.join("blobs"), 0o775);
        set(&store.join("db"), 0o644);
        set(&store.join("blobs/1"), 0o666);
        set(&outside, 0o644);

        private::tighten_store(&store);

        assert_eq!(mode(&store), 0o700);
        assert_eq!(mode(&store.join("blobs")), 0o700);
        assert_eq!(mode(&store.join("db")), 0o600);
        assert_eq!(mode(&store.join("blobs/1")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a symlink's target is left alone");
        // Nothing to do the second time, and a missing store is no error.
        private::tighten_store(&store);
        private::tighten_store(&root.path().join("absent"));
    }

    #[test]
    fn create_dir_makes_every_missing_directory_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private::create_dir(&dir).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        // An existing directory is kept as it is (the data dir is only warned about).
        set(&dir, 0o755);
        private::create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::cache_mb;

    #[test]
    fn the_cache_size_is_read_in_mib_and_a_bad_one_falls_back_to_the_default() {
        assert_eq!(cache_mb(None), 128);
        assert_eq!(cache_mb(Some("64")), 64);
        assert_eq!(cache_mb(Some("256")), 256);
        assert_eq!(cache_mb(Some(" 512 ")), 512);
        for bad in ["", "big", "-1", "7", "0", "256MB"] {
            assert_eq!(cache_mb(Some(bad)), 128, "{bad:?}");
        }
    }
}

/// The format version check at open, on real sled dirs.
#[cfg(test)]
mod version_tests {
    use super::*;

    fn stamp(dir: &Path, version: &[u8]) {
        let db = sled::open(dir.join("store")).unwrap();
        db.open_tree(META_TREE)
            .unwrap()
            .insert(FORMAT_KEY, version)
            .unwrap();
        db.flush().unwrap();
    }

    fn read(dir: &Path) -> Option<Vec<u8>> {
        let db = sled::open(dir.join("store")).unwrap();
        let v = db.open_tree(META_TREE).unwrap().get(FORMAT_KEY).unwrap();
        v.map(|v| v.to_vec())
    }

    #[test]
    fn a_new_store_and_an_unstamped_one_are_stamped_with_the_current_version() {
        let new = tempfile::tempdir().unwrap();
        let store = Store::open(new.path()).unwrap();
        assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
        drop(store);
        assert_eq!(read(new.path()), Some(b"1".to_vec()));

        // A store from before the stamp: data, no meta tree.
        let old = tempfile::tempdir().unwrap();
        {
            let db = sled::open(old.path().join("store")).unwrap();
            db.open_tree("t/acme/local")
                .unwrap()
                .insert("u/1", "{}")
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(old.path()).unwrap();
        assert_eq!(store.tree("acme", "local").unwrap().len(), 1);
        drop(store);
        assert_eq!(read(old.path()), Some(b"1".to_vec()));
    }

    #[test]
    fn a_newer_store_is_refused_untouched_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        stamp(dir.path(), b"7");
        let err = Store::open(dir.path()).err().expect("refused");
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                StoreError::Newer {
                    found: 7,
                    known: 1,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("format version 7") && msg.contains("up to 1"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert_eq!(read(dir.path()), Some(b"7".to_vec()), "left as it was");
    }

    #[test]
    fn a_garbled_stamp_is_a_corrupt_record() {
        let dir = tempfile::tempdir().unwrap();
        stamp(dir.path(), b"one");
        let err = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    fn add_marker(db: &sled::Db) -> Result<(), StoreError> {
        db.open_tree("meta")?.insert("migrated", "yes")?;
        Ok(())
    }

    #[test]
    fn an_older_store_is_migrated_step_by_step_or_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("store")).unwrap();
        db.open_tree(META_TREE)
            .unwrap()
            .insert(FORMAT_KEY, "1")
            .unwrap();
        // Version 2 knows a migration from 1: it runs once and the stamp moves.
        let steps = [Migration {
            from: 1,
            run: add_marker,
        }];
        check_format_version_with(&db, dir.path(), 2, &steps).unwrap();
        assert_eq!(read_format_version(&db).unwrap(), Some(2));
        assert!(db
            .open_tree("meta")
            .unwrap()
            .get("migrated")
            .unwrap()
            .is_some());
        check_format_version_with(&db, dir.path(), 2, &steps).unwrap();
        // Version 3 has no step from 2: refused, the store untouched.
        let err = check_format_version_with(&db, dir.path(), 3, &steps).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                StoreError::Older {
                    found: 2,
                    known: 3,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("no migration from it") && msg.contains("left untouched"),
            "{msg}"
        );
        assert_eq!(read_format_version(&db).unwrap(), Some(2));
    }
}
