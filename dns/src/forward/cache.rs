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
        let count = entries.clamp(1, SHARDS);
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
