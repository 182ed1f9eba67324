//! Response-rate limiting of UDP answers from our zones, as Knot's `rrl` module (3.3) does it:
//! a token bucket per source network (/24, /56), response class and name; past its rate a
//! response is dropped, and every `slip`-th of those is sent truncated instead (TC=1), so a
//! real client behind a spoofed flood still gets through over TCP.
//!
//! Knot's scheme: a bucket holds up to four seconds of tokens and gains `rate` each second; a
//! new bucket starts full; one that displaces a live bucket after a hash collision starts at
//! 1.5 seconds' worth (its slow start). Classes as Knot's: a positive answer, an empty one
//! (NODATA) and a large one (1,024 bytes or more) are counted by the name asked, so a flood of
//! one name does not limit the others; NXDOMAIN and errors by the zone (the origin that
//! matched, else the root), so random names under one zone share one bucket. The table is a
//! fixed array of 64-bit slots updated lock-free (fingerprint, second, tokens), shared by
//! every UDP worker, so a flood spread over workers by SO_REUSEPORT is counted once.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use ipnet::IpNet;

use crate::config::RrlConfig;
use crate::wire;

/// Seconds of tokens a bucket holds (Knot's `RRL_CAPACITY`).
const CAPACITY_SECONDS: u64 = 4;
/// Responses from this size on are their own class (Knot's `RRL_PSIZE_LARGE`).
const LARGE: usize = 1024;
/// The highest rate a slot's 24-bit token count can hold four seconds of.
pub const MAX_RATE: u32 = (1 << 22) - 1;

/// Knot's response classes (no wildcards or DNSSEC here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseClass {
    Positive,
    Empty,
    Large,
    Any,
    NxDomain,
    Error,
}

impl ResponseClass {
    /// The class of `response` (a complete message) to a query of `qtype`.
    pub fn of(response: &[u8], qtype: u16) -> ResponseClass {
        match wire::header_rcode(response) {
            Some(wire::RCODE_NOERROR) => {}
            Some(wire::RCODE_NXDOMAIN) => return ResponseClass::NxDomain,
            _ => return ResponseClass::Error,
        }
        if qtype == wire::TYPE_ANY {
            ResponseClass::Any
        } else if response.len() >= LARGE {
            ResponseClass::Large
        } else if response.get(6..8).is_some_and(|an| an == [0, 0]) {
            ResponseClass::Empty
        } else {
            ResponseClass::Positive
        }
    }

    /// Whether the bucket is the zone's (true) or the name's.
    pub fn by_zone(self) -> bool {
        matches!(self, ResponseClass::NxDomain | ResponseClass::Error)
    }
}

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Over the rate: send it truncated (header and question, TC=1).
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// The shared bucket table.
pub struct Rrl {
    rate: u64,
    slip: u64,
    exempt: Vec<IpNet>,
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
}

impl std::fmt::Debug for Rrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rrl")
            .field("rate", &self.rate)
            .field("slip", &self.slip)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// A slot: fingerprint (24 bits) | second (16 bits, wrapping) | tokens (24 bits); 0 is empty.
#[derive(Clone, Copy)]
struct Bucket {
    fingerprint: u64,
    second: u64,
    tokens: u64,
}

impl Bucket {
    fn unpack(v: u64) -> Bucket {
        Bucket {
            fingerprint: v >> 40,
            second: (v >> 24) & 0xffff,
            tokens: v & 0xff_ffff,
        }
    }

    fn pack(self) -> u64 {
        self.fingerprint << 40 | (self.second & 0xffff) << 24 | self.tokens.min(0xff_ffff)
    }
}

impl Rrl {
    /// The table for `config`, or `None` when rate limiting is off (rate 0).
    pub fn new(config: &RrlConfig) -> Option<Rrl> {
        if config.responses_per_second == 0 {
            return None;
        }
        let size = config.table_size.clamp(1, 1 << 26).next_power_of_two();
        Some(Rrl {
            rate: u64::from(config.responses_per_second.min(MAX_RATE)),
            slip: u64::from(config.slip),
            exempt: config.exempt.clone(),
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        })
    }

    /// The verdict on a response of `class` about `name` (lowercase wire form: the name asked,
    /// or for NXDOMAIN and errors the zone) to `peer`, sent at `now`. `limited` counts the
    /// responses this worker has limited, for the slip.
    pub fn check(
        &self,
        peer: IpAddr,
        class: ResponseClass,
        name: &[u8],
        now: Instant,
        limited: &AtomicU64,
    ) -> Verdict {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        if !self.exempt.is_empty() && self.exempt.iter().any(|n| n.contains(&peer)) {
            return Verdict::Send;
        }
        let network = match peer {
            IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xffff_ff00),
            IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 72) - 1) | 1,
        };
        let hash = self.hasher.hash_one((class, network, name));
        let slot = &self.slots[(hash as usize) & (self.slots.len() - 1)];
        // Never 0, so that a taken slot is never mistaken for an empty one.
        let fingerprint = (hash >> 40).max(1);
        let second = now.saturating_duration_since(self.epoch).as_secs() & 0xffff;
        let full = self.rate * CAPACITY_SECONDS;
        let mut current = slot.load(Relaxed);
        loop {
            let old = Bucket::unpack(current);
            let elapsed = second.wrapping_sub(old.second) & 0xffff;
            let tokens = if current == 0 {
                full
            } else if old.fingerprint != fingerprint {
                // Another bucket's slot: taken over, from a slow start if that one is in use.
                if elapsed > 1 {
                    full
                } else {
                    self.rate + self.rate / 2
                }
            } else {
                (old.tokens + self.rate * elapsed.min(CAPACITY_SECONDS)).min(full)
            };
            let new = Bucket {
                fingerprint,
                second,
                tokens: tokens.saturating_sub(1),
            };
            match slot.compare_exchange_weak(current, new.pack(), Relaxed, Relaxed) {
                Ok(_) if tokens > 0 => return Verdict::Send,
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        let n = limited.fetch_add(1, Relaxed) + 1;
        if self.slip != 0 && n % self.slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// Cuts the response in `out` to its header and question, with TC set and no records: what a
/// slipped response is (small, so it amplifies nothing, and it sends the client to TCP).
pub fn truncate_in_place(out: &mut Vec<u8>) {
    if out.len() < wire::HEADER {
        return;
    }
    let mut end = wire::HEADER;
    if out[4..6] != [0, 0] {
        // The question is echoed as asked: labels, no compression, then type and class.
        while let Some(&len) = out.get(end) {
            end += 1 + usize::from(len);
            if len == 0 || len > 63 {
                break;
            }
        }
        end = (end + 4).min(out.len());
    }
    out.truncate(end);
    out[2] |= 0x02;
    out[6..12].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(&RrlConfig {
            responses_per_second: rate,
            slip,
            table_size: 1024,
            exempt: vec!["198.19.0.0/16".parse().unwrap()],
        })
        .unwrap()
    }

    fn tally(rrl: &Rrl, peer: &str, name: &[u8], n: usize, at: Instant) -> [usize; 3] {
        let limited = AtomicU64::new(0);
        let mut counts = [0; 3];
        for _ in 0..n {
            let v = rrl.check(
                peer.parse().unwrap(),
                ResponseClass::Positive,
                name,
                at,
                &limited,
            );
            counts[v as usize] += 1;
        }
        counts
    }

    #[test]
    fn a_bucket_gives_four_seconds_of_tokens_then_the_rate_and_slips_every_nth() {
        let rrl = rrl(10, 3);
        let t0 = rrl.epoch;
        let [sent, slipped, dropped] = tally(&rrl, "198.18.1.1", b"\x01a\x00", 100, t0);
        assert_eq!(sent, 40);
        assert_eq!(slipped, 20);
        assert_eq!(dropped, 40);
        // The same /24 shares the bucket; another /24, or another name, has its own.
        assert_eq!(tally(&rrl, "198.18.1.200", b"\x01a\x00", 1, t0)[0], 0);
        assert_eq!(tally(&rrl, "198.18.2.1", b"\x01a\x00", 1, t0)[0], 1);
        assert_eq!(tally(&rrl, "198.18.1.1", b"\x01b\x00", 1, t0)[0], 1);
        // A second later, one second's worth again.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(tally(&rrl, "198.18.1.1", b"\x01a\x00", 30, t1)[0], 10);
        // Exempt networks are never limited.
        assert_eq!(tally(&rrl, "198.19.5.5", b"\x01a\x00", 100, t0)[0], 100);
    }

    #[test]
    fn slip_zero_drops_all_and_one_slips_all() {
        let t0 = Instant::now();
        assert_eq!(tally(&rrl(1, 0), "198.18.1.1", b"\x00", 10, t0), [4, 0, 6]);
        assert_eq!(tally(&rrl(1, 1), "198.18.1.1", b"\x00", 10, t0), [4, 6, 0]);
    }

    #[test]
    fn ipv6_clients_share_a_slash_56() {
        let rrl = rrl(1, 0);
        let t0 = rrl.epoch;
        assert_eq!(tally(&rrl, "2001:db8:0:100::1", b"\x00", 4, t0)[0], 4);
        assert_eq!(tally(&rrl, "2001:db8:0:1ff::2", b"\x00", 1, t0)[0], 0);
        assert_eq!(tally(&rrl, "2001:db8:0:200::1", b"\x00", 1, t0)[0], 1);
    }

    #[test]
    fn classes_follow_knot() {
        let mut r = vec![0u8; 12];
        assert_eq!(ResponseClass::of(&r, wire::TYPE_A), ResponseClass::Empty);
        r[7] = 1;
        assert_eq!(ResponseClass::of(&r, wire::TYPE_A), ResponseClass::Positive);
        assert_eq!(ResponseClass::of(&r, wire::TYPE_ANY), ResponseClass::Any);
        r.resize(LARGE, 0);
        assert_eq!(ResponseClass::of(&r, wire::TYPE_A), ResponseClass::Large);
        r[3] = wire::RCODE_NXDOMAIN;
        assert_eq!(ResponseClass::of(&r, wire::TYPE_A), ResponseClass::NxDomain);
        r[3] = wire::RCODE_REFUSED;
        assert_eq!(ResponseClass::of(&r, wire::TYPE_A), ResponseClass::Error);
        assert!(ResponseClass::Error.by_zone() && !ResponseClass::Large.by_zone());
    }

    #[test]
    fn a_slipped_response_is_header_and_question_with_tc() {
        let mut r = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 2, 0, 1, 0, 1];
        r.extend_from_slice(b"\x03web\x05mesos\x00\x00\x01\x00\x01");
        let question_end = r.len();
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
        truncate_in_place(&mut r);
        assert_eq!(r.len(), question_end);
        assert_eq!(r[2] & 0x02, 0x02);
        assert_eq!(r[4..12], [0, 1, 0, 0, 0, 0, 0, 0]);
        // Without a question, the header alone; garbage never panics.
        let mut header = vec![0u8; 12];
        truncate_in_place(&mut header);
        assert_eq!(header.len(), 12);
        let mut cut = vec![0, 0, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 60];
        truncate_in_place(&mut cut);
        assert!(cut.len() <= 13);
    }
}
