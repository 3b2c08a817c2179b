//! What the commits to a tenant's tree touched, for a reader that keeps something derived from
//! the whole tree (the plan of a 100,000-user tenant, issue 13) and brings it up to date from
//! the objects the commits since named, not by reading every object again.
//!
//! A commit names its objects by id: every key the plan reads for an object holds that
//! object's id as a whole segment (`u/{id}`, `x/g/{id}`, `o/{member}\0{group}`, `E/ob/u/{id}`,
//! `E/am/{group}/{member}`). Keys that do not (an index entry `i/…` keyed by a value, the
//! counts, `E/gone/{vendor id}`) are written in the same batch as the object's document, or are
//! not read by the plan. So the ids a commit touched are the segments of its keys, split at `/`
//! and NUL. The segments that are not ids (prefixes, indexed values, vendor
//! ids) are extra names a reader looks up and finds little or nothing for: a superset, which is
//! what a cache needs. It may do more work than it had to, and it never misses a change.

use std::collections::{HashSet, VecDeque};

/// Keys a batch remembers at most. A larger batch (an import's, an observe adopting a whole
/// vendor) counts as touching everything: a reader rebuilds from the tree.
const BATCH_KEYS_MAX: usize = 4096;

/// Keys a watched tree's log keeps at most (a few MB); older ones are forgotten, and a reader
/// that needed them rebuilds.
const LOG_KEYS_MAX: usize = 65_536;

/// The keys one batch writes or removes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Touched {
    keys: Vec<Box<[u8]>>,
    overflow: bool,
}

impl Touched {
    pub(crate) fn key(&mut self, key: &[u8]) {
        if self.overflow {
            return;
        }
        if self.keys.len() >= BATCH_KEYS_MAX {
            self.overflow = true;
            self.keys = Vec::new();
            return;
        }
        self.keys.push(key.into());
    }
}

/// The keys of one tree's commits, from when a reader first asked ([`TouchLog::watch`]): a
/// tree nobody derives from keeps nothing.
#[derive(Debug, Default)]
pub(crate) struct TouchLog {
    watching: bool,
    /// The newest commit whose keys may be missing from the log: a reader whose state is older
    /// than this cannot be brought up to date from it.
    floor: u64,
    keys: VecDeque<(u64, Box<[u8]>)>,
}

impl TouchLog {
    /// Starts keeping keys, the tree being at commit `now`.
    pub(crate) fn watch(&mut self, now: u64) {
        if !self.watching {
            self.watching = true;
            self.floor = now;
        }
    }

    /// Commit `generation` wrote `touched`. Called in commit order.
    pub(crate) fn record(&mut self, generation: u64, touched: Touched) {
        if !self.watching {
            return;
        }
        if touched.overflow {
            self.keys.clear();
            self.floor = generation;
            return;
        }
        self.keys
            .extend(touched.keys.into_iter().map(|k| (generation, k)));
        while self.keys.len() > LOG_KEYS_MAX {
            if let Some((g, _)) = self.keys.pop_front() {
                self.floor = self.floor.max(g);
            }
        }
    }

    /// The keys of the commits after `after` up to `upto`; `None` when the log does not hold
    /// all of them. What is at or before `after` is dropped: the reader is past it (a second
    /// reader further behind rebuilds).
    pub(crate) fn keys_between(&mut self, after: u64, upto: u64) -> Option<Vec<Box<[u8]>>> {
        if after < self.floor || !self.watching {
            return None;
        }
        while self.keys.front().is_some_and(|(g, _)| *g <= after) {
            self.keys.pop_front();
        }
        self.floor = after;
        Some(
            self.keys
                .iter()
                .take_while(|(g, _)| *g <= upto)
                .map(|(_, k)| k.clone())
                .collect(),
        )
    }
}

/// The ids `keys` name: their segments, split at `/` and NUL.
pub(crate) fn ids_in(keys: &[Box<[u8]>]) -> HashSet<String> {
    let mut ids = HashSet::new();
    for key in keys {
        for seg in key.split(|b| *b == b'/' || *b == 0) {
            if let Ok(s) = std::str::from_utf8(seg) {
                if !s.is_empty() && !ids.contains(s) {
                    ids.insert(s.to_string());
                }
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    impl TouchLog {
        fn ids_between(&mut self, after: u64, upto: u64) -> Option<HashSet<String>> {
            self.keys_between(after, upto).map(|k| ids_in(&k))
        }
    }

    fn batch(keys: &[&str]) -> Touched {
        let mut t = Touched::default();
        for k in keys {
            t.key(k.as_bytes());
        }
        t
    }

    #[test]
    fn the_ids_of_a_commit_are_the_segments_of_its_keys() {
        let mut log = TouchLog::default();
        log.record(1, batch(&["u/before-watch"]));
        log.watch(1);
        log.record(2, batch(&["u/aaa", "o/aaa\0ggg", "E/ob/u/aaa"]));
        log.record(3, batch(&["E/am/ggg/bbb"]));
        let ids = log.ids_between(1, 2).expect("the log holds commit 2");
        for id in ["aaa", "ggg", "u", "o", "ob"] {
            assert!(ids.contains(id), "{id} in {ids:?}");
        }
        assert!(!ids.contains("bbb"), "commit 3 is past `upto`");
        assert!(!ids.contains("before-watch"));
        // Before the watch nothing was kept.
        assert!(log.ids_between(0, 3).is_none());
        // Commit 2 is dropped once a reader is past it; 3 is still there.
        let ids = log.ids_between(2, 3).unwrap();
        assert!(ids.contains("bbb") && !ids.contains("aaa"));
        assert!(
            log.ids_between(1, 3).is_none(),
            "a reader further behind rebuilds"
        );
    }

    #[test]
    fn a_batch_too_large_to_remember_makes_readers_rebuild() {
        let mut log = TouchLog::default();
        log.watch(0);
        let mut big = Touched::default();
        for i in 0..=BATCH_KEYS_MAX {
            big.key(format!("u/{i}").as_bytes());
        }
        log.record(1, batch(&["u/a"]));
        log.record(2, big);
        log.record(3, batch(&["u/b"]));
        assert!(log.ids_between(1, 3).is_none());
        assert_eq!(
            log.ids_between(2, 3).unwrap(),
            HashSet::from(["u".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn an_unwatched_tree_keeps_nothing() {
        let mut log = TouchLog::default();
        log.record(1, batch(&["u/a"]));
        assert!(log.keys.is_empty());
        assert!(log.ids_between(0, 1).is_none());
    }
}
