//! The forwarder's answer cache: upstream answers kept for their TTL (RFC 2308 for negative
//! ones) and, once expired, kept a while longer for serve-stale (RFC 8767).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::packet::ClientQuery;

/// No answer is kept longer than a day, whatever its TTL says.
pub(super) const MAX_TTL: u32 = 86_400;
/// Enough shards that the forward path's concurrency rarely meets on one lock.
const SHARDS: usize = 16;

/// What makes two queries share an answer. The flags hold RD, CD and DO, since each of them
/// changes what an upstream answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CacheKey {
    qname: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    flags: u8,
}

impl CacheKey {
    pub fn new(client: &ClientQuery<'_>) -> Self {
        let qname = client.qname().to_ascii_lowercase().into_boxed_slice();
        let flags = u8::from(client.recursion_desired())
            | u8::from(client.checking_disabled()) << 1
            | u8::from(client.dnssec_ok()) << 2;
        CacheKey {
            qname,
            qtype: client.qtype,
            qclass: client.qclass,
            flags,
        }
    }

    /// The lowercased question name, in wire form.
    pub fn qname(&self) -> &[u8] {
        &self.qname
    }
}

/// A cached answer: the message without OPT, TTL fields already capped at the entry's TTL.
#[derive(Debug)]
pub(super) struct Entry {
    pub message: Box<[u8]>,
    pub qend: usize,
    pub ttl_offsets: Box<[u16]>,
    ttl: u32,
    stored: Instant,
}

impl Entry {
    /// Caps every TTL field at `ttl`, so no record outlives the entry that carries it (this is
    /// also how a negative answer's SOA gets the RFC 2308 TTL).
    pub fn new(
        mut message: Vec<u8>,
        qend: usize,
        ttl_offsets: Vec<u16>,
        ttl: u32,
        now: Instant,
    ) -> Self {
        let ttl = ttl.min(MAX_TTL);
        for &offset in &ttl_offsets {
            let at = usize::from(offset);
            if let Some(field) = message.get_mut(at..at + 4) {
                let stored = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                field.copy_from_slice(&stored.min(ttl).to_be_bytes());
            }
        }
        Entry {
            message: message.into_boxed_slice(),
            qend,
            ttl_offsets: ttl_offsets.into_boxed_slice(),
            ttl,
            stored: now,
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl.into())
    }

    fn expires(&self) -> Instant {
        self.stored + self.ttl()
    }
}

#[derive(Debug)]
pub(super) enum Lookup {
    /// Within its TTL; `age` whole seconds old.
    Fresh {
        entry: Arc<Entry>,
        age: u32,
    },
    /// Expired, but within the serve-stale window.
    Stale(Arc<Entry>),
    Miss,
}

#[derive(Debug)]
struct Shard {
    entries: Mutex<HashMap<CacheKey, Arc<Entry>>>,
    /// The shards' capacities add up to the configured size exactly.
    capacity: usize,
}

#[derive(Debug)]
pub(super) struct Cache {
    shards: Box<[Shard]>,
    max_stale: Duration,
    hasher: RandomState,
}

impl Cache {
    pub fn new(entries: usize, max_stale: Duration) -> Self {
        Self::with_shards(entries, max_stale, SHARDS)
    }

    fn with_shards(entries: usize, max_stale: Duration, shards: usize) -> Self {
        let count = entries.clamp(1, shards.max(1));
        let shards = (0..count)
            .map(|i| Shard {
                entries: Mutex::default(),
                capacity: entries / count + usize::from(i < entries % count),
            })
            .collect();
        Cache {
            shards,
            max_stale,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &CacheKey) -> &Shard {
        let index = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[index]
    }

    fn is_stale_beyond_use(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.stored) > entry.ttl().saturating_add(self.max_stale)
    }

    pub fn get(&self, key: &CacheKey, now: Instant) -> Lookup {
        let shard = self.shard(key);
        if shard.capacity == 0 {
            return Lookup::Miss;
        }
        let mut shard = shard.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = shard.get(key) else {
            return Lookup::Miss;
        };
        let age = now.saturating_duration_since(entry.stored);
        if age < entry.ttl() {
            let age = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
            Lookup::Fresh {
                entry: Arc::clone(entry),
                age,
            }
        } else if !self.is_stale_beyond_use(entry, now) {
            Lookup::Stale(Arc::clone(entry))
        } else {
            shard.remove(key);
            Lookup::Miss
        }
    }

    /// Stores `entry`. A full shard first drops what is too stale to serve, then the entry
    /// closest to (or furthest past) expiry: the one least worth keeping.
    pub fn insert(&self, key: CacheKey, entry: Entry) {
        let Shard { entries, capacity } = self.shard(&key);
        if *capacity == 0 {
            return;
        }
        let now = entry.stored;
        let mut shard = entries.lock().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= *capacity && !shard.contains_key(&key) {
            shard.retain(|_, e| !self.is_stale_beyond_use(e, now));
            if shard.len() >= *capacity {
                let oldest = shard
                    .iter()
                    .min_by_key(|(_, e)| e.expires())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    shard.remove(&oldest);
                }
            }
        }
        shard.insert(key, Arc::new(entry));
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.entries
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::{parse_query, test_query};
    use super::*;

    fn key(name: &str) -> CacheKey {
        CacheKey::new(&parse_query(&test_query(1, name, 1, false)).unwrap())
    }

    fn entry(ttl: u32, stored: Instant) -> Entry {
        Entry::new(vec![0; 12], 12, Vec::new(), ttl, stored)
    }

    fn is_fresh(lookup: Lookup) -> bool {
        matches!(lookup, Lookup::Fresh { .. })
    }

    #[test]
    fn key_ignores_case() {
        assert_eq!(key("WWW.Example.com"), key("www.example.COM"));
        assert_ne!(key("www.example.com"), key("ww.example.com"));
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let cache = Cache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        cache.insert(key("a.example"), entry(10, t0));
        assert!(matches!(
            cache.get(&key("a.example"), t0 + Duration::from_millis(4500)),
            Lookup::Fresh { age: 4, .. }
        ));
        assert!(matches!(
            cache.get(&key("a.example"), t0 + Duration::from_secs(10)),
            Lookup::Stale(_)
        ));
        assert!(matches!(
            cache.get(&key("a.example"), t0 + Duration::from_secs(70)),
            Lookup::Stale(_)
        ));
        assert!(matches!(
            cache.get(&key("a.example"), t0 + Duration::from_secs(71)),
            Lookup::Miss
        ));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn ttl_fields_are_capped_at_the_entry_ttl() {
        let mut message = vec![0; 16];
        message[12..16].copy_from_slice(&1_000_000u32.to_be_bytes());
        let entry = Entry::new(message, 12, vec![12], 1_000_000, Instant::now());
        assert_eq!(entry.message[12..16], MAX_TTL.to_be_bytes());
    }

    #[test]
    fn size_is_bounded_exactly() {
        for entries in [0, 1, 5, 20, 100] {
            let cache = Cache::new(entries, Duration::ZERO);
            let now = Instant::now();
            for i in 0..(entries * 3 + 3) {
                cache.insert(key(&format!("n{i}.example")), entry(60, now));
                assert!(cache.len() <= entries, "{entries}");
            }
            if entries > 0 {
                assert!(is_fresh(
                    cache.get(&key(&format!("n{}.example", entries * 3 + 2)), now)
                ));
            }
        }
    }

    #[test]
    fn eviction_takes_expired_entries_first_then_the_soonest_to_expire() {
        let cache = Cache::with_shards(3, Duration::from_secs(86_400), 1);
        let now = Instant::now();
        let past = now - Duration::from_secs(10);
        cache.insert(key("long.example"), entry(100, now));
        cache.insert(key("expired.example"), entry(1, past));
        cache.insert(key("short.example"), entry(50, now));
        cache.insert(key("new.example"), entry(200, now));
        assert!(matches!(
            cache.get(&key("expired.example"), now),
            Lookup::Miss
        ));
        cache.insert(key("newer.example"), entry(200, now));
        assert!(matches!(
            cache.get(&key("short.example"), now),
            Lookup::Miss
        ));
        for kept in ["long.example", "new.example", "newer.example"] {
            assert!(is_fresh(cache.get(&key(kept), now)), "{kept}");
        }
    }
}
