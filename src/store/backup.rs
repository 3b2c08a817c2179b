//! `store backup --to DIR` (issue 14): a consistent copy of the store taken while the bridge
//! serves. The copy is itself a data dir (`DIR/store`, plus `DIR/backup.json` describing it), so
//! restoring is pointing `data_dir` (or `--data-dir`) at it with the bridge stopped, or
//! `store export --data-dir DIR | store import --data-dir NEW` to move it elsewhere.
//!
//! ## Why not copy the files, or just iterate
//!
//! sled 0.34 has no snapshot. Its files, copied while it writes, are not a crash image (its
//! I/O threads write buffers and rewrite segments behind the callers), and iterating its trees
//! is not a point in time: an audit entry and its directory change are one transaction, the
//! audit `head` key sorts after the entries, so a plain scan under write load can copy a head
//! whose entry it missed, and `audit verify` fails on the copy. `Db::export` is such a scan.
//!
//! ## How
//!
//! sled serialises every write (insert, batch, transaction commit) against its global
//! concurrency lock, which a transaction holds exclusively while its closure runs; inside, a
//! transactional `get` reads without that lock. And `watch_prefix` reports every key each later
//! write touches. So:
//!
//! 1. inside a transaction (no write in flight), subscribe to every tree;
//! 2. copy every tree by iteration, without stopping anyone; a thread drains the
//!    subscriptions meanwhile into the set of keys written since step 1;
//! 3. inside a transaction over every tree (writers wait), drain the subscriptions once more
//!    and read each written key's current value (or its absence) with the transactional `get`;
//! 4. write those into the copy.
//!
//! A key nobody wrote since step 1 was the same all along, so the scan read the value it had at
//! step 3; a written key was read again at step 3. The copy is the store as it was at step 3.
//! Writers wait only during step 3, for as long as it takes to re-read the keys written during
//! the scan. Trees created meanwhile (a tenant's first use of a tree) are found after step 3
//! and the steps are run for them too.

use super::{Store, StoreError};
use serde::Serialize;
use sled::Transactional;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds of step 3 (each one after new trees appeared) before giving up.
const MAX_ROUNDS: usize = 8;
/// Records copied into the backup per batch.
const BATCH: usize = 10_000;
/// The description written next to the copied store.
pub const MANIFEST: &str = "backup.json";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target cannot be used (not empty, not a directory, inside the store…).
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the backup: {0}")]
    Io(#[from] std::io::Error),
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub to: PathBuf,
    pub created: String,
    pub store_version: u32,
    pub trees: usize,
    pub records: u64,
    /// Keys written by the bridge while the copy was taken (re-read at the end).
    pub written_during_copy: u64,
    pub took_ms: u64,
}

/// Checks `to` and creates it (0700) when absent: it must not exist, or be an empty directory,
/// and must not overlap the store's data dir. `true` when this backup created it (then it is
/// the backup's alone to remove again).
fn prepare_target(store: &Store, to: &Path) -> Result<bool, BackupError> {
    match std::fs::symlink_metadata(to) {
        Ok(m) if !m.is_dir() => {
            return Err(BackupError::Target(format!(
                "{} exists and is not a directory",
                to.display()
            )))
        }
        Ok(_) => {
            if std::fs::read_dir(to)?.next().is_some() {
                return Err(BackupError::Target(format!(
                    "{} is not empty: a backup goes into a new or empty directory",
                    to.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let (to_c, data_c) = (resolved(to), resolved(store.data_dir()));
    if to_c.starts_with(&data_c) || data_c.starts_with(&to_c) {
        return Err(BackupError::Target(format!(
            "{} overlaps the store's data dir {}",
            to.display(),
            store.data_dir().display()
        )));
    }
    // A target the bridge cannot create (permissions, a missing parent) is the caller's to fix:
    // a Target error (4xx), not an I/O failure of the backup. The parents are made as needed;
    // the target itself only if nothing made it meanwhile, so that `true` means it is ours.
    let cannot =
        |e: std::io::Error| BackupError::Target(format!("cannot create {}: {e}", to.display()));
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        super::private::create_dir(parent).map_err(cannot)?;
    }
    let mut dir = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        dir.mode(0o700);
    }
    match dir.create(to) {
        Ok(()) => Ok(true),
        // It existed (empty, checked above) or appeared since: not ours to remove.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(cannot(e)),
    }
}

/// `p` made absolute with symlinks resolved, as far as it exists (a target is usually new).
fn resolved(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

/// The subscriptions of the tracked trees, drained by a thread into the written key sets.
struct Watch {
    written: Arc<parking_lot::Mutex<Vec<BTreeSet<Vec<u8>>>>>,
    subs: Arc<parking_lot::Mutex<Vec<sled::Subscriber>>>,
    requested: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start() -> Watch {
        let written: Arc<parking_lot::Mutex<Vec<BTreeSet<Vec<u8>>>>> = Default::default();
        let subs: Arc<parking_lot::Mutex<Vec<sled::Subscriber>>> = Default::default();
        let requested = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (written, subs, requested, done, stop) = (
                written.clone(),
                subs.clone(),
                requested.clone(),
                done.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("store-backup-watch".into())
                .spawn(move || {
                    // The subscriptions' channels hold 1,024 events; a full one blocks the
                    // writer, so this never waits on anything but a short sleep.
                    while !stop.load(Ordering::Acquire) {
                        let pass = requested.load(Ordering::Acquire);
                        let mut got = 0usize;
                        {
                            let mut subs = subs.lock();
                            let mut written = written.lock();
                            // Polled as a future, not with `next_timeout`: sled 0.34's
                            // `next_timeout` never gets past a reservation its writer dropped
                            // (a retried insert), the queue fills and writers block; `poll`
                            // skips those.
                            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                            for (i, s) in subs.iter_mut().enumerate() {
                                while let std::task::Poll::Ready(Some(ev)) =
                                    std::pin::Pin::new(&mut *s).poll(&mut cx)
                                {
                                    written[i].insert(ev.key().to_vec());
                                    got += 1;
                                }
                            }
                        }
                        done.store(pass, Ordering::Release);
                        if got == 0 && requested.load(Ordering::Acquire) == pass {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    // Dropping the subscriptions unregisters them: no writer waits on them.
                    subs.lock().clear();
                })
                .expect("spawn the backup watch thread")
        };
        Watch {
            written,
            subs,
            requested,
            done,
            stop,
            thread: Some(thread),
        }
    }

    /// Adds subscriptions (called with sled's write lock held, so none misses a write).
    fn add(&self, trees: &[sled::Tree]) {
        let mut subs = self.subs.lock();
        let mut written = self.written.lock();
        for t in trees {
            subs.push(t.watch_prefix(Vec::<u8>::new()));
            written.push(BTreeSet::new());
        }
    }

    /// Waits for a full drain that started after this call (with sled's write lock held: then
    /// every write made has delivered its event).
    fn drain(&self) {
        let pass = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        while self.done.load(Ordering::Acquire) < pass {
            std::thread::yield_now();
        }
    }

    fn take_written(&self) -> Vec<BTreeSet<Vec<u8>>> {
        let mut w = self.written.lock();
        w.iter_mut().map(std::mem::take).collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl From<sled::Error> for BackupError {
    fn from(e: sled::Error) -> Self {
        BackupError::Store(StoreError::Sled(e))
    }
}

fn tx_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
            key: "backup".into(),
            reason: "the snapshot transaction was aborted".into(),
        },
    }
}

/// A key written during the copy: its tree's index, the key, its value at step 3 (`None`:
/// removed).
type Reread = (usize, Vec<u8>, Option<sled::IVec>);

/// Copies one tree by iteration; the records copied.
fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<u64, StoreError> {
    let mut batch = sled::Batch::default();
    let (mut n, mut pending) = (0u64, 0usize);
    for kv in from.iter() {
        let (k, v) = kv?;
        batch.insert(k, v);
        n += 1;
        pending += 1;
        if pending >= BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(n)
}

/// Takes a consistent copy of `store` into `to` (see the module doc). Safe while the bridge
/// serves; blocking (run it off the async workers).
///
/// A backup that fails leaves no partial copy behind: what it wrote is removed again (the
/// whole target when the backup created it), so that a half-written store cannot later be
/// taken for a backup. (The manifest, written last, marks a finished one in any case.)
pub fn backup(store: &Store, to: &Path) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let created = prepare_target(store, to)?;
    let copy = match Store::open(to) {
        Ok(copy) => copy,
        Err(e) => {
            // Nothing of this backup's was written: a store in `to` that will not open (one
            // another backup holds, say) is not ours to remove. A target it made, it removes.
            if created {
                discard_partial(to, true);
            }
            return Err(e.into());
        }
    };
    let result = copy_store(store, &copy, to, started);
    drop(copy);
    if let Err(e) = &result {
        discard_partial(to, created);
        tracing::warn!(target_dir = %to.display(), error = %e, "the backup failed; its partial copy was removed");
    }
    result
}

/// Removes what a failed backup wrote into `to`: the whole directory when the backup made it,
/// else only the store it opened there and its manifest.
fn discard_partial(to: &Path, created: bool) {
    let removed = if created {
        std::fs::remove_dir_all(to)
    } else {
        std::fs::remove_dir_all(to.join("store")).and_then(|()| {
            match std::fs::remove_file(to.join(MANIFEST)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        })
    };
    if let Err(e) = removed {
        tracing::warn!(target_dir = %to.display(), error = %e, "could not remove a failed backup's partial copy");
    }
}

/// The copy itself, into `copy`, the store opened in the prepared, empty `to`.
fn copy_store(
    store: &Store,
    copy: &Store,
    to: &Path,
    started: Instant,
) -> Result<BackupReport, BackupError> {
    let src = &store.db;
    let watch = Watch::start();
    // Tracked trees, in the order of the watch's sets.
    let mut names: Vec<sled::IVec> = Vec::new();
    let mut trees: Vec<sled::Tree> = Vec::new();
    let mut targets: Vec<sled::Tree> = Vec::new();
    let mut records = 0u64;
    let mut written_total = 0u64;
    for _round in 0..MAX_ROUNDS {
        // Steps 1 and 2 for the trees not tracked yet.
        let known: BTreeSet<sled::IVec> = names.iter().cloned().collect();
        let new: Vec<sled::IVec> = src
            .tree_names()
            .into_iter()
            .filter(|n| !known.contains(n))
            .collect();
        if !new.is_empty() {
            let opened: Vec<sled::Tree> = new
                .iter()
                .map(|n| src.open_tree(n))
                .collect::<Result<_, _>>()?;
            // A retried closure must not subscribe twice: the first run's subscriptions were
            // already made with no write in flight.
            let added = AtomicBool::new(false);
            opened[..]
                .transaction(|_| {
                    if !added.swap(true, Ordering::AcqRel) {
                        watch.add(&opened);
                    }
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(tx_error)?;
            for (n, t) in new.iter().zip(&opened) {
                let target = copy.db.open_tree(n)?;
                records += copy_tree(t, &target)?;
                targets.push(target);
            }
            names.extend(new);
            trees.extend(opened);
        }
        // Step 3: with every writer waiting, the keys written since and their values now.
        // Written keys are kept outside the closure, which sled may run again.
        let written: parking_lot::Mutex<Vec<BTreeSet<Vec<u8>>>> =
            parking_lot::Mutex::new(vec![BTreeSet::new(); trees.len()]);
        let reread: parking_lot::Mutex<Vec<Reread>> = Default::default();
        trees[..]
            .transaction(|views| {
                watch.drain();
                let mut written = written.lock();
                for (i, keys) in watch.take_written().into_iter().enumerate() {
                    written[i].extend(keys);
                }
                let mut out = reread.lock();
                out.clear();
                for (i, keys) in written.iter().enumerate() {
                    for k in keys {
                        out.push((i, k.clone(), views[i].get(k)?));
                    }
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        // Step 4.
        let reread = reread.into_inner();
        written_total += reread.len() as u64;
        let mut per_tree: BTreeMap<usize, sled::Batch> = BTreeMap::new();
        for (i, k, v) in reread {
            let had = targets[i].contains_key(&k)?;
            let batch = per_tree.entry(i).or_default();
            match v {
                Some(v) => {
                    records += u64::from(!had);
                    batch.insert(k, v);
                }
                None => {
                    records -= u64::from(had);
                    batch.remove(k);
                }
            }
        }
        for (i, batch) in per_tree {
            targets[i].apply_batch(batch)?;
        }
        // Trees are never dropped, so one not tracked now did not exist at step 3 either —
        // unless it was created meanwhile: then it is copied in another round, and the copy
        // moves to that round's point in time.
        let now: BTreeSet<sled::IVec> = src.tree_names().into_iter().collect();
        if now.iter().all(|n| names.contains(n)) {
            drop(watch);
            copy.db.flush()?;
            let report = BackupReport {
                to: to.to_path_buf(),
                created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                store_version: copy.format_version()?,
                trees: names.len(),
                records,
                written_during_copy: written_total,
                took_ms: started.elapsed().as_millis() as u64,
            };
            write_manifest(to, &report)?;
            return Ok(report);
        }
    }
    Err(BackupError::Target(
        "trees kept appearing while the backup was taken; try again".into(),
    ))
}

fn write_manifest(to: &Path, report: &BackupReport) -> Result<(), BackupError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(to.join(MANIFEST))?;
    let mut body = serde_json::to_vec_pretty(&serde_json::json!({
        "format": "scim-bridge-backup",
        "created": report.created,
        "store_version": report.store_version,
        "scim_bridge": env!("CARGO_PKG_VERSION"),
        "trees": report.trees,
        "records": report.records,
        "written_during_copy": report.written_during_copy,
        "restore": "stop the bridge and use this directory as its data_dir (or --data-dir); or `scim-bridge store export --data-dir THIS_DIR | scim-bridge store import --data-dir NEW_DIR`",
    }))
    .unwrap_or_default();
    body.push(b'\n');
    f.write_all(&body)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers move units between two trees of one store in transactions (the sum stays 1,000)
    /// and append to a log whose `head` key sorts after its entries, while backups are taken: a
    /// copy that is not one point in time breaks one of the two.
    #[test]
    fn a_backup_under_transactional_writes_is_one_point_in_time() {
        use sled::transaction::ConflictableTransactionError as Cte;
        let src_dir = tempfile::tempdir().unwrap();
        let store = Store::open(src_dir.path()).unwrap();
        let a = store.tree("acme", "a").unwrap().raw().clone();
        let b = store.tree("acme", "b").unwrap().raw().clone();
        let log = store.tree("beta", "log").unwrap().raw().clone();
        for i in 0..100u32 {
            a.insert(i.to_be_bytes(), &10u64.to_be_bytes()).unwrap();
        }
        let num = |v: Option<sled::IVec>| {
            v.map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3u32 {
            let (a, b, log, stop) = (a.clone(), b.clone(), log.clone(), stop.clone());
            writers.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = ((n as u32).wrapping_mul(7).wrapping_add(w) % 100).to_be_bytes();
                    (&a, &b)
                        .transaction(|(a, b)| {
                            let x = num(a.get(key)?);
                            if x > 0 {
                                a.insert(&key, &(x - 1).to_be_bytes())?;
                                b.insert(&key, &(num(b.get(key)?) + 1).to_be_bytes())?;
                            } else {
                                a.insert(&key, &(num(b.get(key)?)).to_be_bytes())?;
                                b.insert(&key, &0u64.to_be_bytes())?;
                            }
                            Ok::<_, Cte<()>>(())
                        })
                        .unwrap();
                    log.transaction(|t| {
                        let seq = num(t.get("head")?) + 1;
                        let mut k = b"e".to_vec();
                        k.extend_from_slice(&seq.to_be_bytes());
                        t.insert(k, &seq.to_be_bytes())?;
                        t.insert("head", &seq.to_be_bytes())?;
                        Ok::<_, Cte<()>>(())
                    })
                    .unwrap();
                    // A plain insert too: these notify the backup as transactions do.
                    a.insert(b"plain", &n.to_be_bytes()).unwrap();
                    n += 1;
                }
                n
            }));
        }
        let root = tempfile::tempdir().unwrap();
        let mut written = 0;
        for i in 0..3 {
            std::thread::sleep(Duration::from_millis(50));
            let to = root.path().join(format!("b{i}"));
            let report = backup(&store, &to).unwrap();
            written += report.written_during_copy;
            let copy = Store::open(&to).unwrap();
            let (ca, cb) = (
                copy.tree("acme", "a").unwrap(),
                copy.tree("acme", "b").unwrap(),
            );
            let mut sum = 0;
            for k in 0..100u32 {
                sum += num(ca.get(k.to_be_bytes()).unwrap().map(Into::into))
                    + num(cb.get(k.to_be_bytes()).unwrap().map(Into::into));
            }
            assert_eq!(sum, 1000, "backup {i}: the units add up");
            let clog = copy.tree("beta", "log").unwrap();
            let head = num(clog.get("head").unwrap().map(Into::into));
            let entries = clog.scan_prefix("e").count() as u64;
            assert_eq!(
                entries, head,
                "backup {i}: every entry up to the head, none after"
            );
            assert_eq!(
                report.records,
                (ca.len() + cb.len() + clog.len()) as u64 + 1,
                "backup {i}: meta counted"
            );
        }
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(
            ops > 0 && written > 0,
            "the writers wrote during the backups: {ops} {written}"
        );
    }

    #[test]
    fn the_target_must_be_new_or_empty_and_outside_the_store() {
        let src_dir = tempfile::tempdir().unwrap();
        let store = Store::open(src_dir.path()).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("file"), b"x").unwrap();
        for (to, says) in [
            (root.path().to_path_buf(), "not empty"),
            (root.path().join("file"), "not a directory"),
            (src_dir.path().join("inside"), "overlaps"),
        ] {
            let err = backup(&store, &to).unwrap_err();
            assert!(err.to_string().contains(says), "{}: {err}", to.display());
        }
        let to = root.path().join("new/dir");
        backup(&store, &to).unwrap();
        assert!(to.join(MANIFEST).exists() && to.join("store").is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&to), 0o700);
            assert_eq!(mode(&to.join(MANIFEST)), 0o600);
        }
    }
}
