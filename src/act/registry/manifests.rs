//! The manifests this controller read or wrote lately, so that giving the same image another tag
//! (each commit's revision tag on an image whose inputs did not change, a floating tag moved
//! back) needs only the `PUT`, not the `GET` of bytes it already has.
//!
//! An entry is keyed by credential, registry host, repository and digest: bytes read with one
//! ServiceBuild's credentials are never written with another's, nor to another repository. Its
//! body is the one whose sha256 is the digest (checked when it was read). Entries live at most
//! [`MAX_AGE`], and all of them together hold at most [`MAX_BYTES`] of manifests; the least
//! recently used go first.
//!
//! What an entry cannot know is whether the registry still has the image. A registry refuses
//! a manifest whose blobs it does not have, and such a refusal drops the entry so the caller
//! reads the manifest again (and learns the image is gone). A manifest deleted while its blobs
//! are kept (until the registry's garbage collection) is written back by the tag: the same
//! image a reproducible rebuild would push.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transport::lock;

/// How long an entry is used after it was read or written.
pub(super) const MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// The most manifest bytes kept (about 4000 single-platform manifests).
pub(super) const MAX_BYTES: usize = 4 * 1024 * 1024;

/// A manifest's bytes as a registry served them, and their media type.
#[derive(Debug)]
pub(super) struct Manifest {
    pub body: Vec<u8>,
    pub media_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Key {
    pub credential: u64,
    pub host: String,
    pub name: String,
    pub digest: String,
}

struct Entry {
    manifest: Arc<Manifest>,
    stored: Instant,
    used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

#[derive(Default)]
pub(super) struct ManifestCache {
    entries: Mutex<Entries>,
}

impl ManifestCache {
    /// The manifest kept for `key`, if it is younger than [`MAX_AGE`].
    pub fn get(&self, key: &Key) -> Option<Arc<Manifest>> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &Key, now: Instant) -> Option<Arc<Manifest>> {
        let mut entries = lock(&self.entries);
        let entries = &mut *entries;
        entries.clock += 1;
        let entry = entries.map.get_mut(key)?;
        if now.saturating_duration_since(entry.stored) > MAX_AGE {
            let gone = entries.map.remove(key)?;
            entries.bytes -= gone.manifest.body.len();
            return None;
        }
        entry.used = entries.clock;
        Some(entry.manifest.clone())
    }

    /// Keep `manifest` for `key` (a manifest larger than a quarter of [`MAX_BYTES`] is not
    /// kept), making room by dropping the least recently used entries.
    pub fn put(&self, key: Key, manifest: Arc<Manifest>) {
        self.put_at(key, manifest, Instant::now());
    }

    fn put_at(&self, key: Key, manifest: Arc<Manifest>, now: Instant) {
        let size = manifest.body.len();
        if size > MAX_BYTES / 4 {
            return;
        }
        let mut entries = lock(&self.entries);
        let entries = &mut *entries;
        entries.clock += 1;
        if let Some(old) = entries.map.remove(&key) {
            entries.bytes -= old.manifest.body.len();
        }
        if entries.bytes + size > MAX_BYTES {
            // Evict in bulk (at least the oldest quarter, by last use, and as many more as the
            // new one needs), so a full cache costs one sort per many insertions rather than a
            // scan per insertion.
            let mut by_use: Vec<(u64, Key)> = entries
                .map
                .iter()
                .map(|(key, entry)| (entry.used, key.clone()))
                .collect();
            by_use.sort_unstable_by_key(|(used, _)| *used);
            let quarter = by_use.len().div_ceil(4);
            for (dropped, (_, key)) in by_use.into_iter().enumerate() {
                if dropped >= quarter && entries.bytes + size <= MAX_BYTES {
                    break;
                }
                if let Some(gone) = entries.map.remove(&key) {
                    entries.bytes -= gone.manifest.body.len();
                }
            }
        }
        entries.bytes += size;
        let used = entries.clock;
        entries.map.insert(
            key,
            Entry {
                manifest,
                stored: now,
                used,
            },
        );
    }

    /// Drop what is kept for `key`: the registry refused it.
    pub fn forget(&self, key: &Key) {
        let mut entries = lock(&self.entries);
        if let Some(gone) = entries.map.remove(key) {
            entries.bytes -= gone.manifest.body.len();
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> (usize, usize) {
        let entries = lock(&self.entries);
        (entries.map.len(), entries.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Key {
        Key {
            credential: 1,
            host: "registry.example".into(),
            name: format!("svc-{n}"),
            digest: format!("sha256:{n:064x}"),
        }
    }

    fn manifest(size: usize) -> Arc<Manifest> {
        Arc::new(Manifest {
            body: vec![b' '; size],
            media_type: "application/vnd.oci.image.manifest.v1+json",
        })
    }

    #[test]
    fn entries_are_kept_per_key_and_for_a_bounded_time() {
        let cache = ManifestCache::default();
        let start = Instant::now();
        cache.put_at(key(1), manifest(100), start);
        assert!(cache.get_at(&key(1), start).is_some());
        let other_credential = Key {
            credential: 2,
            ..key(1)
        };
        assert!(cache.get_at(&other_credential, start).is_none());
        let other_repository = Key {
            name: "svc-2".into(),
            ..key(1)
        };
        assert!(cache.get_at(&other_repository, start).is_none());
        let late = start + MAX_AGE + Duration::from_secs(1);
        assert!(cache.get_at(&key(1), late).is_none(), "too old");
        assert_eq!(cache.bytes(), (0, 0), "an expired entry is dropped");
        cache.put_at(key(1), manifest(100), start);
        cache.forget(&key(1));
        assert!(cache.get_at(&key(1), start).is_none());
        assert_eq!(cache.bytes(), (0, 0));
    }

    #[test]
    fn the_bytes_kept_are_bounded_and_the_least_recently_used_go_first() {
        let cache = ManifestCache::default();
        let now = Instant::now();
        let size = 4096;
        let fits = MAX_BYTES / size;
        for n in 0..fits {
            cache.put_at(key(n), manifest(size), now);
        }
        assert_eq!(cache.bytes(), (fits, MAX_BYTES));
        // The first is used again: it is now the most recent.
        assert!(cache.get_at(&key(0), now).is_some());
        cache.put_at(key(fits), manifest(size), now);
        let (entries, bytes) = cache.bytes();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert_eq!(entries, fits - fits.div_ceil(4) + 1);
        assert!(cache.get_at(&key(0), now).is_some(), "recently used, kept");
        assert!(
            cache.get_at(&key(1), now).is_none(),
            "least recently used, dropped"
        );
        assert!(
            cache.get_at(&key(fits), now).is_some(),
            "the new one is kept"
        );
        // However the sizes mix, the bound holds: old small entries go until a large one fits.
        let mixed = ManifestCache::default();
        for n in 0..3 {
            mixed.put_at(key(n), manifest(MAX_BYTES / 4), now);
        }
        for n in 3..100 {
            mixed.put_at(key(n), manifest(100), now);
        }
        // The large ones were used last: the oldest quarter is all small ones.
        for n in 0..3 {
            assert!(mixed.get_at(&key(n), now).is_some());
        }
        mixed.put_at(key(100), manifest(MAX_BYTES / 4), now);
        let (_, bytes) = mixed.bytes();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert!(mixed.get_at(&key(100), now).is_some());
        // A manifest too large to be worth keeping is not kept.
        cache.put_at(key(fits + 1), manifest(MAX_BYTES / 4 + 1), now);
        assert!(cache.get_at(&key(fits + 1), now).is_none());
    }
}
