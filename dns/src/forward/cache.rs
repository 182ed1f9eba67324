//! The forwarder's answer cache: upstream answers kept for their TTL (RFC 2308 for negative
//! ones) and, once expired, kept a while longer for serve-stale (RFC 8767).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::answer::UpstreamAnswer;
use crate::catalog::Request;

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
    pub fn new(request: &Request<'_>) -> Self {
        let client = &request.query;
        let flags =
            u8::from(client.rd) | u8::from(client.cd) << 1 | u8::from(client.dnssec_ok()) << 2;
        CacheKey {
            qname: request.lower_qname().into(),
            qtype: client.qtype,
            qclass: client.qclass,
            flags,
        }
    }
}

/// A cached answer: an upstream's, its TTL fields already capped at the entry's TTL.
#[derive(Debug)]
pub(super) struct Entry {
    pub answer: UpstreamAnswer,
    ttl: u32,
    stored: Instant,
}

impl Entry {
    pub fn new(mut answer: UpstreamAnswer, ttl: u32, now: Instant) -> Self {
        let ttl = ttl.min(MAX_TTL);
        answer.cap_ttls(ttl);
        Entry {
            answer,
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
    use super::super::answer::tests::test_query;
    use super::*;
    use crate::wire;

    fn key(name: &str) -> CacheKey {
        let query = test_query(1, name, 1, false);
        let query = wire::parse_query(&query).unwrap().into_owned();
        CacheKey::new(&Request::new(query, [127, 0, 0, 1].into(), 512, true, 0))
    }

    fn answer(records: Vec<u8>, ttl_offsets: Vec<u16>) -> UpstreamAnswer {
        UpstreamAnswer {
            rcode: hickory_proto::op::ResponseCode::NoError,
            flags: 0,
            records: records.into(),
            question_len: 5,
            answers: 0,
            authorities: 0,
            additionals: 0,
            additional_at: 0,
            ttl_offsets: ttl_offsets.into(),
            cache_ttl: None,
        }
    }

    fn entry(ttl: u32, stored: Instant) -> Entry {
        Entry::new(answer(Vec::new(), Vec::new()), ttl, stored)
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
        let mut records = vec![0; 16];
        records[12..16].copy_from_slice(&1_000_000u32.to_be_bytes());
        let entry = Entry::new(answer(records, vec![12]), 1_000_000, Instant::now());
        assert_eq!(entry.answer.records[12..16], MAX_TTL.to_be_bytes());
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
