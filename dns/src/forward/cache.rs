//! The forwarder's answer cache: upstream answers kept for their TTL (RFC 2308 for negative
//! ones) and, once expired, kept a while longer for serve-stale (RFC 8767).
//!
//! Each shard indexes its entries by expiry as well as by key, so that making room in a full
//! shard takes the entry least worth keeping in O(log n) rather than a scan of the shard: a
//! flood of random names (each a miss, each an insert) costs the same per query whatever the
//! cache's size.

use std::collections::{BTreeMap, HashMap};
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
    entries: Mutex<Entries>,
    /// The shards' capacities add up to the configured size exactly.
    capacity: usize,
}

/// A shard's entries by key, and the same entries by expiry (soonest first; a sequence
/// number keeps equal expiries apart).
#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Arc<CacheKey>, (Arc<Entry>, u64)>,
    by_expiry: BTreeMap<(Instant, u64), Arc<CacheKey>>,
    next: u64,
    /// Entries looked at to make room, for the test that eviction does not scan the shard.
    #[cfg(test)]
    examined: usize,
}

impl Entries {
    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn get(&self, key: &CacheKey) -> Option<&Arc<Entry>> {
        self.by_key.get(key).map(|(entry, _)| entry)
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some((entry, seq)) = self.by_key.remove(key) {
            self.by_expiry.remove(&(entry.expires(), seq));
        }
    }

    fn insert(&mut self, key: CacheKey, entry: Arc<Entry>) {
        self.remove(&key);
        let key = Arc::new(key);
        let seq = self.next;
        self.next += 1;
        self.by_expiry
            .insert((entry.expires(), seq), Arc::clone(&key));
        self.by_key.insert(key, (entry, seq));
    }

    /// Drops the entry that expires (or expired) first: a stale one beyond use before any other,
    /// then the one closest to expiry.
    fn evict_one(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            #[cfg(test)]
            {
                self.examined += 1;
            }
            self.by_key.remove(&*key);
        }
    }
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

    fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, Entries> {
        shard.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, key: &CacheKey, now: Instant) -> Lookup {
        let shard = self.shard(key);
        if shard.capacity == 0 {
            return Lookup::Miss;
        }
        let mut shard = Self::lock(shard);
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

    /// Stores `entry`. A full shard first drops the entry that expires (or expired) first:
    /// one too stale to serve if there is any, else the one closest to expiry, the one least
    /// worth keeping.
    pub fn insert(&self, key: CacheKey, entry: Entry) {
        let shard = self.shard(&key);
        if shard.capacity == 0 {
            return;
        }
        let mut entries = Self::lock(shard);
        if entries.len() >= shard.capacity && entries.get(&key).is_none() {
            entries.evict_one();
        }
        entries.insert(key, Arc::new(entry));
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::lock(s).len()).sum()
    }

    #[cfg(test)]
    fn examined(&self) -> usize {
        self.shards.iter().map(|s| Self::lock(s).examined).sum()
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
    fn a_full_shard_makes_room_without_scanning_it() {
        // One shard of 4,096 answers, then 4,096 misses of random names (each an insert): the
        // scan this replaced looked at the whole shard twice per insert, 33 million entries.
        let cache = Cache::with_shards(4096, Duration::from_secs(86_400), 1);
        let now = Instant::now();
        for i in 0..4096u32 {
            cache.insert(key(&format!("n{i}.example")), entry(60 + i % 600, now));
        }
        assert_eq!(cache.examined(), 0);
        for i in 0..4096u32 {
            cache.insert(key(&format!("r{i}.example")), entry(300, now));
        }
        assert_eq!(cache.len(), 4096);
        assert_eq!(cache.examined(), 4096, "one entry looked at per eviction");
        // And it still evicted the soonest to expire: the survivors of the first fill are
        // its latest-expiring names.
        assert!(is_fresh(cache.get(&key("n599.example"), now)));
        assert!(matches!(cache.get(&key("n0.example"), now), Lookup::Miss));
    }

    #[test]
    fn replacing_an_entry_keeps_one_index_entry() {
        let cache = Cache::with_shards(2, Duration::ZERO, 1);
        let now = Instant::now();
        for ttl in [10, 20, 30] {
            cache.insert(key("same.example"), entry(ttl, now));
        }
        cache.insert(key("other.example"), entry(5, now));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.examined(), 0);
        let shard = Cache::lock(&cache.shards[0]);
        assert_eq!(shard.by_expiry.len(), 2);
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
