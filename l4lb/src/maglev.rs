//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as the XDP path's backend table.
//!
//! The table is a pure, deterministic function of the backends (their addresses and weights),
//! the table size and a seed: every node builds the same table from the same snapshot, so
//! load balancers agree on a flow's backend without sharing state, and a flow whose
//! connection-tracking entry was lost still lands on the same backend. Removing one of N
//! backends moves little more than the 1/N of the slots it held.

/// A backend as the table sees it: an identity (hashed) and a weight (0: no slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub key: Vec<u8>,
    pub weight: u32,
}

/// The seed every node uses unless configured otherwise.
pub const DEFAULT_SEED: u64 = 0x6c6f_6465_7374_6172; // "lodestar"

/// A 64-bit hash of bytes with a seed (FNV-1a folded through a splitmix finaliser): stable
/// across processes, builds and machines, unlike std's randomised hasher.
pub fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The table sizes (primes), smallest first: a VIP uses the first that gives each backend at
/// least 1,000 slots, else the largest. The size is a function of the backend count alone, so
/// every node agrees; tiers keep it from changing with every backend that comes or goes
/// (a new size moves most flows' slots). Maglev's balance is exact at any size; its
/// disruption shrinks as the table grows: at 100 slots per backend removing one of ten moves
/// about 3% more slots than the ideal 1/N, at 1,000 or more under 1%.
pub const TIERS: [u32; 3] = [4099, 16_381, 65_537];

/// The default bound on a VIP's table (a prime, as Katran's).
pub const DEFAULT_MAX: u32 = 65_537;

/// The table size for `backends` backends, bounded by `max` (rounded down to a prime).
/// 65,537 gives at least 100 slots to each of up to 655 backends.
pub fn table_size(backends: usize, max: u32) -> u32 {
    let n = backends.max(1) as u64;
    let tier = TIERS
        .iter()
        .copied()
        .find(|t| u64::from(*t) >= n * 1000)
        .unwrap_or(TIERS[TIERS.len() - 1]);
    bounded(tier, max)
}

/// The sizes below `size` that a table may fall back to when the shared array has no room
/// for it, largest first (the tiers, bounded by `max`).
pub fn smaller_sizes(size: u32, max: u32) -> Vec<u32> {
    let mut out: Vec<u32> = TIERS
        .iter()
        .rev()
        .map(|t| bounded(*t, max))
        .filter(|m| *m < size)
        .collect();
    out.dedup();
    out
}

/// A tier bounded by `max`, rounded down to a prime.
fn bounded(tier: u32, max: u32) -> u32 {
    let mut m = tier.min(max.max(3));
    while m > 2 && !is_prime(m) {
        m -= 1;
    }
    m
}

/// The lookup table: slot -> index into `members` (`None` only when no member has weight).
/// Weighted as in Katran: in each round a member takes as many turns as its weight says,
/// relative to the heaviest.
pub fn build(members: &[Member], size: u32, seed: u64) -> Vec<Option<u32>> {
    let m = size as u64;
    let mut table: Vec<Option<u32>> = vec![None; size as usize];
    let live: Vec<usize> = (0..members.len())
        .filter(|i| members[*i].weight > 0)
        .collect();
    if live.is_empty() || m == 0 {
        return table;
    }
    let max_w = live.iter().map(|i| members[*i].weight).max().unwrap_or(1) as u64;
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|i| {
            let k = &members[*i].key;
            let offset = hash(k, seed) % m;
            let skip = hash(k, seed ^ 0x9e37_79b9_7f4a_7c15) % (m - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    // Credit so that a member of weight w takes w/max_w turns per round on average.
    let mut credit = vec![0u64; live.len()];
    let mut filled = 0u64;
    while filled < m {
        for (j, i) in live.iter().enumerate() {
            credit[j] += members[*i].weight as u64;
            if credit[j] < max_w {
                continue;
            }
            credit[j] -= max_w;
            let (offset, skip) = perms[j];
            loop {
                let c = (offset + next[j] * skip) % m;
                next[j] += 1;
                if table[c as usize].is_none() {
                    table[c as usize] = Some(*i as u32);
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                key: format!("198.18.{}.{}:8080", i / 250, i % 250 + 1).into_bytes(),
                weight: 1,
            })
            .collect()
    }

    fn counts(t: &[Option<u32>], n: usize) -> Vec<u64> {
        let mut c = vec![0u64; n];
        for s in t.iter().flatten() {
            c[*s as usize] += 1;
        }
        c
    }

    #[test]
    fn sizes_are_prime_tiers_of_at_least_100_per_backend_within_the_bound() {
        assert!(TIERS.iter().all(|t| is_prime(*t)));
        assert_eq!(table_size(1, 65_537), 4099);
        assert_eq!(table_size(4, 65_537), 4099);
        assert_eq!(table_size(5, 65_537), 16_381);
        assert_eq!(table_size(16, 65_537), 16_381);
        assert_eq!(table_size(17, 65_537), 65_537);
        assert_eq!(table_size(655, 65_537), 65_537);
        assert!(table_size(655, 65_537) >= 100 * 655);
        assert_eq!(table_size(10_000, 65_536), 65_521);
        assert_eq!(table_size(5, 1000), 997);
        // Removing a backend rarely changes the size (only across a tier).
        assert_eq!(table_size(10, DEFAULT_MAX), table_size(9, DEFAULT_MAX));
    }

    #[test]
    fn deterministic_and_seeded() {
        let m = members(7);
        assert_eq!(build(&m, 701, 1), build(&m, 701, 1));
        assert_ne!(build(&m, 701, 1), build(&m, 701, 2));
        // The order members are given in does not matter... for which member gets a slot.
        let mut rev = m.clone();
        rev.reverse();
        let a: Vec<Vec<u8>> = build(&m, 701, 1)
            .iter()
            .map(|s| m[s.unwrap() as usize].key.clone())
            .collect();
        let b: Vec<Vec<u8>> = build(&rev, 701, 1)
            .iter()
            .map(|s| rev[s.unwrap() as usize].key.clone())
            .collect();
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same as f64 > 0.95 * a.len() as f64, "{same} of {}", a.len());
    }

    #[test]
    fn balance_within_one_percent_of_fair_share() {
        // At exactly 100 slots per backend (the least the sizing allows) and at our sizes.
        for (n, size) in [
            (2usize, 211),
            (10, 1009),
            (100, 10_007),
            (3, table_size(3, DEFAULT_MAX)),
            (50, table_size(50, DEFAULT_MAX)),
        ] {
            let c = counts(&build(&members(n), size, DEFAULT_SEED), n);
            let fair = size as f64 / n as f64;
            for (i, k) in c.iter().enumerate() {
                let off = (*k as f64 - fair).abs() / fair;
                assert!(
                    off <= 0.01 + 1.0 / fair,
                    "n={n} backend {i}: {k} slots, fair {fair:.1}"
                );
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_at_most_one_percent_more_than_ideal() {
        for (n, removed) in [(2usize, 0), (3, 1), (5, 4), (10, 3), (50, 17), (200, 101)] {
            let size = table_size(n, DEFAULT_MAX);
            let all = members(n);
            let before = build(&all, size, DEFAULT_SEED);
            let mut fewer = all.clone();
            let gone = fewer.remove(removed);
            let after = build(&fewer, size, DEFAULT_SEED);
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| all[b.unwrap() as usize].key != fewer[a.unwrap() as usize].key)
                .count();
            let ideal = size as f64 / n as f64;
            let extra = (moved as f64 - ideal) / size as f64;
            assert!(
                extra <= 0.01,
                "n={n}: {moved} moved, ideal {ideal:.0} ({:?} removed)",
                gone.key
            );
        }
    }

    #[test]
    fn weights_are_honoured_and_zero_gets_nothing() {
        let mut m = members(3);
        m[0].weight = 2;
        m[2].weight = 0;
        let size = table_size(3, 1 << 20);
        let c = counts(&build(&m, size, DEFAULT_SEED), 3);
        assert_eq!(c[2], 0);
        let ratio = c[0] as f64 / c[1] as f64;
        assert!((ratio - 2.0).abs() < 0.05, "{c:?}");
        assert!(build(&[], 101, 1).iter().all(Option::is_none));
    }
}
