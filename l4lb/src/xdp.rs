//! The per-packet path's maps from the same plan as the socket path (so health, drain,
//! weights and locality follow one rule): per VIP address a Maglev table over the backends that
//! get new connections, written by difference, and the VIP's forwarding mode.
//!
//! The tables share one array (`lx_ring`) in units of `LX_RING_UNIT` slots. A table's room is
//! found before anything of it is written; a VIP whose table does not fit gets the largest
//! smaller one that does (and grows back when room comes), and one that fits in none is refused
//! whole, with why. A table that changes size is written in full into new room, then the VIP is
//! switched to it, then the old room is given back: no packet sees it half-written.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use lodestar_control::model::Protocol;

use crate::layout::{
    Real, SvcKey, XRev, XVip, LX_FILTER_WORDS, LX_MODE_GUE, LX_MODE_NAT, LX_REAL_SHARED,
    LX_REAL_VALID, LX_REV_SHARED, LX_RING_UNIT,
};
use crate::maglev;
use crate::plan::{BackendAddr, Plan, ServiceAddr};
use crate::reconcile::{addr_bytes, gone, svc_key, Ids, Report};

/// How the XDP path forwards a VIP's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rewrite the destination to the backend; replies come back through this node, where tc
    /// egress restores the VIP. Nothing is needed on the backends.
    #[default]
    Nat,
    /// Encapsulate in UDP (GUE) to the backend's node, whose tc ingress decapsulates; the
    /// backend holds the VIP locally and replies directly (direct server return).
    Gue,
}

impl Mode {
    fn code(self) -> u32 {
        match self {
            Mode::Nat => LX_MODE_NAT,
            Mode::Gue => LX_MODE_GUE,
        }
    }
}

/// The BPF side's flow hash (`flow_hash` in xdp_lb.c) of a flow key: which Maglev slot a
/// new flow takes is `flow_hash(flow) % table size`. Kept here so tests can predict it.
pub fn flow_hash(flow: &crate::layout::Flow) -> u32 {
    // SAFETY: Flow is repr(C), 40 bytes of integers with explicit padding.
    let bytes: &[u8] = unsafe {
        std::slice::from_raw_parts(
            (flow as *const crate::layout::Flow).cast::<u8>(),
            std::mem::size_of::<crate::layout::Flow>(),
        )
    };
    let mut h: u32 = 0x9e37_79b9;
    for w in bytes.chunks_exact(4) {
        h ^= u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
    }
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The BPF side's VIP filter bit (`filter_bit` in xdp_lb.c) of a VIP: a packet whose bit is
/// clear in `lx_vip_filter` is no VIP's, and passes without a hash lookup.
pub fn filter_bit(key: &SvcKey) -> u32 {
    let w = |i: usize| {
        u32::from_ne_bytes([
            key.addr[i],
            key.addr[i + 1],
            key.addr[i + 2],
            key.addr[i + 3],
        ])
    };
    let x = w(0) ^ w(4) ^ w(8) ^ w(12) ^ ((u32::from(key.port) << 16) | u32::from(key.proto));
    x.wrapping_mul(0x9e37_79b1) >> 16
}

/// The filter's words (index, bits) for a set of VIPs: what `lx_vip_filter` must hold.
pub(crate) fn filter_words(keys: impl Iterator<Item = SvcKey>) -> BTreeMap<u32, u64> {
    let mut words = BTreeMap::new();
    for k in keys {
        let bit = filter_bit(&k);
        debug_assert!(bit >> 6 < LX_FILTER_WORDS);
        *words.entry(bit >> 6).or_insert(0) |= 1u64 << (bit & 63);
    }
    words
}

/// The map operations the XDP reconciler needs.
pub trait XdpMaps {
    /// `lx_vips`: the VIP by address (the path of a packet not yet tracked).
    fn put_vip(&mut self, key: &SvcKey, vip: &XVip) -> io::Result<()>;
    fn delete_vip(&mut self, key: &SvcKey) -> io::Result<()>;
    /// `lx_vip_live`: the VIP by id (the path of a tracked flow); all zero: no VIP has the id.
    fn put_live(&mut self, id: u32, vip: &XVip) -> io::Result<()>;
    /// `lx_vip_filter`: one 64-bit word of the filter.
    fn put_filter_word(&mut self, word: u32, bits: u64) -> io::Result<()>;
    /// `lx_ring`: slots (index, real id), written at once.
    fn put_ring(&mut self, slots: &[(u32, u32)]) -> io::Result<()>;
    fn put_real(&mut self, id: u32, real: &Real) -> io::Result<()>;
    fn reset_vip_stats(&mut self, id: u32) -> io::Result<()>;
    fn reset_real_stats(&mut self, id: u32) -> io::Result<()>;
    /// `lx_nat_backends`: the VIP a NAT backend's replies leave as.
    fn put_nat_backend(&mut self, key: &SvcKey, rev: &XRev) -> io::Result<()>;
    fn delete_nat_backend(&mut self, key: &SvcKey) -> io::Result<()>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct XVipState {
    pub id: u32,
    pub mode: Mode,
    /// Drawn anew when the id is given to the VIP and when its mode changes: a tracked flow
    /// whose entry holds another generation is decided again.
    pub gen: u32,
    /// Its table's first slot in `lx_ring`.
    pub base: u32,
    /// Real id per Maglev slot (empty: no backend).
    pub ring: Vec<u32>,
    /// The table size its backend count asks for (`ring` is smaller while there is no room).
    pub preferred: u32,
    pub reals: BTreeMap<BackendAddr, (u32, Real)>,
}

/// What the pinned maps held at takeover.
#[derive(Default, Debug)]
pub struct XDump {
    pub vips: Vec<(SvcKey, XVip)>,
    /// `lx_vip_live` entries that are not all zero.
    pub live: Vec<(u32, XVip)>,
    /// `lx_vip_filter` words that are not zero.
    pub filter: Vec<(u32, u64)>,
    /// `lx_ring` slots (index, real id) of the VIPs' tables.
    pub ring: Vec<(u32, u32)>,
    pub reals: Vec<(u32, Real)>,
    pub nat_backends: Vec<(SvcKey, XRev)>,
}

/// The units of `lx_ring`, each free or holding (part of) one VIP's table.
#[derive(Debug, Clone)]
pub struct RingSpace {
    used: Vec<bool>,
}

impl RingSpace {
    pub fn new(slots: u32) -> RingSpace {
        RingSpace {
            used: vec![false; (slots / LX_RING_UNIT) as usize],
        }
    }

    fn units(slots: u32) -> usize {
        slots.div_ceil(LX_RING_UNIT) as usize
    }

    /// The first run of free units for a table of `slots`; its first slot.
    fn alloc(&mut self, slots: u32) -> Option<u32> {
        let need = Self::units(slots);
        let mut run = 0;
        for i in 0..self.used.len() {
            run = if self.used[i] { 0 } else { run + 1 };
            if run == need {
                let first = i + 1 - need;
                self.used[first..=i].fill(true);
                return Some(first as u32 * LX_RING_UNIT);
            }
        }
        None
    }

    /// Marks a table found at takeover as placed; false if it is out of range or overlaps one.
    fn claim(&mut self, base: u32, slots: u32) -> bool {
        let first = (base / LX_RING_UNIT) as usize;
        let units = Self::units(slots);
        let fits = base % LX_RING_UNIT == 0
            && first + units <= self.used.len()
            && !self.used[first..first + units].iter().any(|u| *u);
        if fits {
            self.used[first..first + units].fill(true);
        }
        fits
    }

    fn free(&mut self, base: u32, slots: u32) {
        let first = (base / LX_RING_UNIT) as usize;
        let last = (first + Self::units(slots)).min(self.used.len());
        self.used[first.min(last)..last].fill(false);
    }

    /// Slots in use (whole units) and the array's size.
    pub fn usage(&self) -> (u64, u64) {
        let used = self.used.iter().filter(|u| **u).count() as u64;
        (
            used * u64::from(LX_RING_UNIT),
            self.used.len() as u64 * u64::from(LX_RING_UNIT),
        )
    }

    /// The longest run of free units, in slots: the largest table that fits now.
    fn largest_free(&self) -> u64 {
        let (mut best, mut run) = (0u64, 0u64);
        for u in &self.used {
            run = if *u { 0 } else { run + 1 };
            best = best.max(run);
        }
        best * u64::from(LX_RING_UNIT)
    }
}

pub struct XdpReconciler {
    vips: BTreeMap<ServiceAddr, XVipState>,
    vip_ids: Ids,
    real_ids: Ids,
    space: RingSpace,
    /// Bound on a VIP's Maglev table.
    pub max_ring: u32,
    pub seed: u64,
    stale: XDump,
    /// `lx_vip_filter` as written (words that are not zero).
    filter: BTreeMap<u32, u64>,
    /// `lx_nat_backends` as written.
    nat_backends: BTreeMap<SvcKey, XRev>,
    /// VIPs whose `lx_vip_live` entry did not match at takeover.
    dirty: BTreeSet<ServiceAddr>,
    /// VIPs whose table is smaller than their backends ask for (said once in the log).
    cramped: BTreeSet<ServiceAddr>,
    last_gen: u32,
}

/// The `lx_nat_backends` key of a backend of a VIP of `protocol`.
fn backend_key(b: &BackendAddr, protocol: Protocol) -> SvcKey {
    svc_key(&ServiceAddr {
        ip: b.ip,
        port: b.port,
        protocol,
    })
}

fn real_entry(
    b: &crate::plan::PlannedBackend,
    addr: &BackendAddr,
    vip_id: u32,
    shared: bool,
) -> Real {
    let (a, family) = addr_bytes(addr.ip);
    let (node, _) = addr_bytes(b.node);
    Real {
        addr: a,
        node,
        port: addr.port.to_be(),
        family,
        flags: LX_REAL_VALID | if shared { LX_REAL_SHARED } else { 0 },
        vip_id,
    }
}

/// Where a VIP's new table goes: over the old one (same size), or in new room.
#[derive(Clone, Copy)]
enum Place {
    InPlace,
    New(u32),
}

impl XdpReconciler {
    pub fn new(max_ring: u32, seed: u64) -> XdpReconciler {
        let capacity = crate::layout::capacities();
        XdpReconciler {
            vips: BTreeMap::new(),
            vip_ids: Ids::new(capacity.vips),
            real_ids: Ids::new(capacity.reals),
            space: RingSpace::new(capacity.ring),
            max_ring,
            seed,
            stale: XDump::default(),
            filter: BTreeMap::new(),
            nat_backends: BTreeMap::new(),
            dirty: Default::default(),
            cramped: Default::default(),
            // Generations start somewhere new on every start: an entry a flow cache kept from
            // an earlier agent's VIP is not taken for one of ours.
            last_gen: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| {
                    d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
                })
                ^ std::process::id().rotate_left(8),
        }
    }

    fn next_gen(&mut self) -> u32 {
        self.last_gen = self.last_gen.wrapping_add(1).max(1);
        self.last_gen
    }

    /// Takes over maps an earlier agent wrote: their content becomes the mirror, so the next
    /// apply writes only differences (and removes what no VIP uses).
    pub fn restore(dump: XDump, max_ring: u32, seed: u64) -> XdpReconciler {
        let mut r = XdpReconciler::new(max_ring, seed);
        let ring: std::collections::HashMap<u32, u32> = dump.ring.iter().copied().collect();
        let live: std::collections::HashMap<u32, XVip> = dump.live.iter().copied().collect();
        let mut by_id = BTreeMap::new();
        for (key, vip) in &dump.vips {
            match crate::reconcile::service_addr(key) {
                Some(addr)
                    if !by_id.values().any(|a| *a == addr)
                        && (vip.ring_size == 0 || r.space.claim(vip.ring_base, vip.ring_size)) =>
                {
                    by_id.insert(vip.id, addr);
                    if vip.gen == 0 || live.get(&vip.id) != Some(vip) {
                        r.dirty.insert(addr);
                    }
                    r.vips.insert(
                        addr,
                        XVipState {
                            id: vip.id,
                            gen: vip.gen,
                            mode: if vip.mode == LX_MODE_GUE {
                                Mode::Gue
                            } else {
                                Mode::Nat
                            },
                            base: vip.ring_base,
                            ring: (vip.ring_base..vip.ring_base + vip.ring_size)
                                .map(|i| ring.get(&i).copied().unwrap_or(u32::MAX))
                                .collect(),
                            preferred: vip.ring_size,
                            reals: BTreeMap::new(),
                        },
                    );
                }
                _ => r.stale.vips.push((*key, *vip)),
            }
        }
        for (id, v) in &dump.live {
            if !by_id.contains_key(id) {
                r.stale.live.push((*id, *v));
            }
        }
        r.filter = dump
            .filter
            .iter()
            .copied()
            .filter(|(_, b)| *b != 0)
            .collect();
        r.nat_backends = dump.nat_backends.iter().copied().collect();
        for (id, real) in &dump.reals {
            let owner = by_id.get(&real.vip_id).and_then(|a| r.vips.get_mut(a));
            let addr = crate::reconcile::addr_ip(&real.addr, real.family).map(|ip| BackendAddr {
                ip,
                port: u16::from_be(real.port),
            });
            match (owner, addr) {
                (Some(v), Some(a)) if !v.reals.contains_key(&a) => {
                    v.reals.insert(a, (*id, *real));
                }
                _ => r.stale.reals.push((*id, *real)),
            }
        }
        r.vip_ids = Ids::rebuild(r.vip_ids.max_id(), r.vips.values().map(|v| v.id));
        r.real_ids = Ids::rebuild(
            r.real_ids.max_id(),
            r.vips
                .values()
                .flat_map(|v| v.reals.values().map(|(id, _)| *id)),
        );
        r
    }

    pub fn vips(&self) -> &BTreeMap<ServiceAddr, XVipState> {
        &self.vips
    }

    /// `lx_ring`'s slots in use (whole units) and its size.
    pub fn ring_usage(&self) -> (u64, u64) {
        self.space.usage()
    }

    /// Makes the maps hold `plan`, each VIP in the mode `mode_of` gives it.
    pub fn apply(
        &mut self,
        plan: &Plan,
        mode_of: &dyn Fn(&str) -> Mode,
        maps: &mut dyn XdpMaps,
    ) -> Report {
        let mut report = Report::default();
        let stale = std::mem::take(&mut self.stale);
        for (k, _) in stale.vips {
            report.writes += 1;
            let _ = maps.delete_vip(&k);
        }
        for (id, _) in stale.reals {
            report.writes += 1;
            let _ = maps.put_real(id, &Real::default());
        }
        for (id, _) in stale.live {
            report.writes += 1;
            let _ = maps.put_live(id, &XVip::default());
        }
        // The filter lets every VIP that is or will be programmed through before any is; bits
        // of the VIPs that went are cleared at the end.
        let mut widened = filter_words(self.vips.keys().chain(plan.keys()).map(svc_key));
        for (w, bits) in &self.filter {
            *widened.entry(*w).or_insert(0) |= bits;
        }
        self.sync_filter(&widened, maps, &mut report);
        // NAT backends: where their replies go is written before any flow can reach them, and
        // what no VIP uses any more is removed once no VIP points at it.
        let modes: BTreeMap<ServiceAddr, Mode> = plan
            .iter()
            .map(|(addr, p)| (*addr, mode_of(&p.vip)))
            .collect();
        let nat = nat_backends(plan, &modes);
        self.sync_nat_backends(&nat, false, maps, &mut report);
        for addr in gone(&self.vips, plan) {
            self.forget(&addr, maps, &mut report);
        }
        for (addr, planned) in plan {
            let was_new = !self.vips.contains_key(addr);
            if let Err(e) = self.program(addr, planned, modes[addr], &nat, maps, &mut report) {
                report.failed(format!("XDP VIP {}", planned.vip), e);
                if was_new {
                    // Undo what was written, so the next apply programs it whole.
                    self.forget(addr, maps, &mut report);
                }
            }
        }
        self.sync_nat_backends(&nat, true, maps, &mut report);
        let exact = filter_words(self.vips.keys().map(svc_key));
        self.sync_filter(&exact, maps, &mut report);
        report
    }

    /// Writes the filter words that differ from `want`.
    fn sync_filter(
        &mut self,
        want: &BTreeMap<u32, u64>,
        maps: &mut dyn XdpMaps,
        report: &mut Report,
    ) {
        let words: BTreeSet<u32> = want.keys().chain(self.filter.keys()).copied().collect();
        for w in words {
            let new = want.get(&w).copied().unwrap_or(0);
            if self.filter.get(&w).copied().unwrap_or(0) == new {
                continue;
            }
            report.writes += 1;
            match maps.put_filter_word(w, new) {
                Ok(()) if new == 0 => {
                    self.filter.remove(&w);
                }
                Ok(()) => {
                    self.filter.insert(w, new);
                }
                Err(e) => report.failed(format!("XDP VIP filter word {w}"), e),
            }
        }
    }

    /// Writes the `lx_nat_backends` entries that `want` adds or changes, or (`remove`) deletes
    /// the ones it no longer has.
    fn sync_nat_backends(
        &mut self,
        want: &BTreeMap<SvcKey, XRev>,
        remove: bool,
        maps: &mut dyn XdpMaps,
        report: &mut Report,
    ) {
        if remove {
            for k in gone(&self.nat_backends, want) {
                report.writes += 1;
                match maps.delete_nat_backend(&k) {
                    Ok(()) => {
                        self.nat_backends.remove(&k);
                    }
                    Err(e) => report.failed("removing a NAT backend", e),
                }
            }
            return;
        }
        for (k, v) in want {
            if self.nat_backends.get(k) == Some(v) {
                continue;
            }
            report.writes += 1;
            match maps.put_nat_backend(k, v) {
                Ok(()) => {
                    self.nat_backends.insert(*k, *v);
                }
                Err(e) => report.failed("writing a NAT backend", e),
            }
        }
    }

    /// Removes a VIP from the maps and the mirror. Its id is only reused once its entry is
    /// gone (a failed delete keeps it, and the VIP, for the next apply).
    fn forget(&mut self, addr: &ServiceAddr, maps: &mut dyn XdpMaps, report: &mut Report) {
        let Some(v) = self.vips.get(addr) else {
            return;
        };
        report.writes += 1;
        if let Err(e) = maps.delete_vip(&svc_key(addr)) {
            report.failed(format!("removing XDP VIP {addr:?}"), e);
            return;
        }
        let v = v.clone();
        self.vips.remove(addr);
        self.dirty.remove(addr);
        self.cramped.remove(addr);
        // Tracked flows of the VIP find no generation under its id any more; its slots are
        // left as they are (no VIP reads them) until the room is given to another.
        report.writes += 1 + v.reals.len();
        let _ = maps.put_live(v.id, &XVip::default());
        self.space.free(v.base, v.ring.len() as u32);
        for (id, _) in v.reals.values() {
            let _ = maps.put_real(*id, &Real::default());
            self.real_ids.release(*id);
        }
        self.vip_ids.release(v.id);
    }

    /// The size and room of a VIP's next table (`None`: no backend), taken from `space` now;
    /// the preferred size. Nothing is written.
    fn place(
        &mut self,
        addr: &ServiceAddr,
        vip: &str,
        members: usize,
    ) -> io::Result<(Option<(u32, Place)>, u32)> {
        if members == 0 {
            return Ok((None, 0));
        }
        let preferred = maglev::table_size(members, self.max_ring);
        let old = self.vips.get(addr).map_or(0, |v| v.ring.len() as u32);
        let mut sizes = vec![preferred];
        sizes.extend(maglev::smaller_sizes(preferred, self.max_ring));
        if old > preferred {
            sizes.push(old);
        }
        for size in sizes {
            if size == old {
                return Ok((Some((size, Place::InPlace)), preferred));
            }
            if let Some(base) = self.space.alloc(size) {
                return Ok((Some((size, Place::New(base))), preferred));
            }
        }
        let (used, total) = self.space.usage();
        Err(io::Error::other(format!(
            "no room for VIP {vip}'s Maglev table in lx_ring: it needs {} slots ({} of {} units \
             of {LX_RING_UNIT} slots are in use; the largest free run holds {} slots); lower \
             l4lb.xdp.max_table or the number of XDP VIPs",
            maglev::smaller_sizes(preferred, self.max_ring)
                .last()
                .copied()
                .unwrap_or(preferred),
            used / u64::from(LX_RING_UNIT),
            total / u64::from(LX_RING_UNIT),
            self.space.largest_free(),
        )))
    }

    fn program(
        &mut self,
        addr: &ServiceAddr,
        planned: &crate::plan::PlannedService,
        mode: Mode,
        nat: &BTreeMap<SvcKey, XRev>,
        maps: &mut dyn XdpMaps,
        report: &mut Report,
    ) -> io::Result<()> {
        // The Maglev table's members: the backends that get new connections, by their slots.
        let members: Vec<(BackendAddr, maglev::Member)> = planned
            .backends
            .iter()
            .filter(|(_, p)| p.slots > 0)
            .map(|(b, p)| {
                (
                    *b,
                    maglev::Member {
                        key: format!("{}", std::net::SocketAddr::new(b.ip, b.port)).into_bytes(),
                        weight: p.slots,
                    },
                )
            })
            .collect();
        // Room first: a table that does not fit is refused before anything of it is written.
        let (placed, preferred) = self.place(addr, &planned.vip, members.len())?;
        let release = |space: &mut RingSpace| {
            if let Some((size, Place::New(base))) = placed {
                space.free(base, size);
            }
        };
        let is_new = !self.vips.contains_key(addr);
        if is_new {
            let id = self
                .vip_ids
                .alloc(|max| {
                    format!("more VIP addresses than the XDP path holds ({max}, LX_MAX_VIPS)")
                })
                .inspect_err(|_| release(&mut self.space))?;
            report.writes += 1;
            if let Err(e) = maps.reset_vip_stats(id) {
                self.vip_ids.release(id);
                release(&mut self.space);
                return Err(e);
            }
            self.vips.insert(
                *addr,
                XVipState {
                    id,
                    mode,
                    gen: 0,
                    base: 0,
                    ring: Vec::new(),
                    preferred,
                    reals: BTreeMap::new(),
                },
            );
        }
        let r = self.write(addr, planned, mode, nat, &members, placed, maps, report);
        if r.is_err() {
            release(&mut self.space);
            return r;
        }
        let st = self.vips.get_mut(addr).expect("inserted");
        st.preferred = preferred;
        let cramped = st.ring.len() < preferred as usize;
        let (size, base) = (st.ring.len(), st.base);
        if cramped && self.cramped.insert(*addr) {
            let (used, total) = self.space.usage();
            tracing::warn!(vip = %planned.vip, table = size, preferred, ring_used = used,
                ring_slots = total, "no room in lx_ring for the VIP's Maglev table: a smaller one is used until there is");
        } else if !cramped && self.cramped.remove(addr) {
            tracing::info!(vip = %planned.vip, table = size, base, "the VIP's Maglev table has its full size again");
        }
        Ok(())
    }

    /// Writes a VIP's reals, table and entries, its table going where `placed` says.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        addr: &ServiceAddr,
        planned: &crate::plan::PlannedService,
        mode: Mode,
        nat: &BTreeMap<SvcKey, XRev>,
        members: &[(BackendAddr, maglev::Member)],
        placed: Option<(u32, Place)>,
        maps: &mut dyn XdpMaps,
        report: &mut Report,
    ) -> io::Result<()> {
        let key = svc_key(addr);
        // A new VIP, one whose mode changes (its tracked flows must be decided again: a flow
        // that began in GUE mode has no reverse-NAT entry), or one taken over without a
        // generation gets a new one.
        let old = &self.vips[addr];
        let gen = if old.gen == 0 || old.mode != mode {
            self.next_gen()
        } else {
            old.gen
        };
        let dirty = self.dirty.remove(addr);
        let st = self.vips.get_mut(addr).expect("inserted");
        let vip_id = st.id;
        // Reals: every planned backend (draining ones too: tracked flows keep their entry).
        for (b, p) in &planned.backends {
            let shared = mode == Mode::Nat
                && nat
                    .get(&backend_key(b, addr.protocol))
                    .is_some_and(|r| r.flags & LX_REV_SHARED != 0);
            let entry = real_entry(p, b, vip_id, shared);
            match st.reals.get(b) {
                Some((_, old)) if *old == entry => {}
                Some((id, _)) => {
                    let id = *id;
                    report.writes += 1;
                    maps.put_real(id, &entry)?;
                    st.reals.insert(*b, (id, entry));
                }
                None => {
                    let id = self.real_ids.alloc(|max| {
                        format!("more backends than the XDP path holds ({max}, LX_MAX_REALS)")
                    })?;
                    report.writes += 2;
                    if let Err(e) = maps
                        .reset_real_stats(id)
                        .and_then(|()| maps.put_real(id, &entry))
                    {
                        self.real_ids.release(id);
                        return Err(e);
                    }
                    st.reals.insert(*b, (id, entry));
                }
            }
        }
        let ring: Vec<u32> = match placed {
            None => Vec::new(),
            Some((size, _)) => {
                let list: Vec<maglev::Member> = members.iter().map(|(_, m)| m.clone()).collect();
                maglev::build(&list, size, self.seed)
                    .into_iter()
                    .map(|i| st.reals[&members[i.unwrap_or(0) as usize].0].0)
                    .collect()
            }
        };
        let (old_base, old_len) = (st.base, st.ring.len() as u32);
        let base = match placed {
            Some((_, Place::New(base))) => base,
            _ => st.base,
        };
        // The slots that differ (all of them, in new room), in one write.
        let slots: Vec<(u32, u32)> = ring
            .iter()
            .enumerate()
            .filter(|(i, rid)| base != old_base || st.ring.get(*i) != Some(*rid))
            .map(|(i, rid)| (base + i as u32, *rid))
            .collect();
        if !slots.is_empty() {
            report.writes += slots.len();
            maps.put_ring(&slots)?;
        }
        let resized = base != old_base || ring.len() as u32 != old_len;
        st.ring = ring;
        st.base = base;
        if resized || dirty || st.mode != mode || st.gen != gen {
            let vip = XVip {
                id: vip_id,
                ring_size: st.ring.len() as u32,
                mode: mode.code(),
                gen,
                ring_base: base,
                pad: 0,
            };
            // By id first: a packet that finds the VIP by address then finds its generation.
            report.writes += 2;
            if let Err(e) = maps
                .put_live(vip_id, &vip)
                .and_then(|()| maps.put_vip(&key, &vip))
            {
                self.dirty.insert(*addr);
                return Err(e);
            }
            st.mode = mode;
            st.gen = gen;
        }
        if !matches!(placed, Some((_, Place::InPlace))) && old_len > 0 {
            // Nothing reads the old room any more.
            self.space.free(old_base, old_len);
        }
        for b in gone(&st.reals, &planned.backends) {
            // Forgotten only once its entry is cleared: a failed write is retried by the next
            // pass, and its id is not given to another backend while the entry still names it.
            let id = st.reals[&b].0;
            report.writes += 1;
            maps.put_real(id, &Real::default())?;
            st.reals.remove(&b);
            self.real_ids.release(id);
        }
        Ok(())
    }
}

/// `lx_nat_backends` for a plan: every backend of a NAT VIP, with its one VIP, or
/// `LX_REV_SHARED` when several NAT VIPs share it.
fn nat_backends(plan: &Plan, modes: &BTreeMap<ServiceAddr, Mode>) -> BTreeMap<SvcKey, XRev> {
    let mut users: BTreeMap<SvcKey, Vec<&ServiceAddr>> = BTreeMap::new();
    for (addr, planned) in plan {
        if modes[addr] != Mode::Nat {
            continue;
        }
        for b in planned.backends.keys() {
            users
                .entry(backend_key(b, addr.protocol))
                .or_default()
                .push(addr);
        }
    }
    users
        .into_iter()
        .map(|(k, vips)| {
            let rev = match vips.as_slice() {
                [one] => {
                    let (a, family) = addr_bytes(one.ip);
                    XRev {
                        addr: a,
                        port: one.port.to_be(),
                        family,
                        flags: 0,
                    }
                }
                _ => XRev {
                    flags: LX_REV_SHARED,
                    ..XRev::default()
                },
            };
            (k, rev)
        })
        .collect()
}

#[cfg(test)]
impl XdpReconciler {
    /// A reconciler whose `lx_ring` has `slots` slots (tests of a full array).
    pub(crate) fn with_ring_slots(mut self, slots: u32) -> XdpReconciler {
        self.space = RingSpace::new(slots);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::IpAddr;

    /// The XDP maps as plain collections, checking the order of writes the data path relies on.
    #[derive(Default)]
    struct Model {
        vips: HashMap<SvcKey, XVip>,
        live: HashMap<u32, XVip>,
        filter: HashMap<u32, u64>,
        ring: HashMap<u32, u32>,
        reals: HashMap<u32, Real>,
        nat: HashMap<SvcKey, XRev>,
        /// Clearing a real fails (a kernel that refuses the write).
        refuse_clear: bool,
    }

    impl Model {
        /// What an agent taking the maps over would read.
        fn dump(&self) -> XDump {
            XDump {
                vips: self.vips.iter().map(|(k, v)| (*k, *v)).collect(),
                ring: self
                    .vips
                    .values()
                    .flat_map(|v| v.ring_base..v.ring_base + v.ring_size)
                    .filter_map(|i| self.ring.get(&i).map(|r| (i, *r)))
                    .collect(),
                reals: self.reals.iter().map(|(k, v)| (*k, *v)).collect(),
                live: self.live.iter().map(|(k, v)| (*k, *v)).collect(),
                filter: self.filter.iter().map(|(k, v)| (*k, *v)).collect(),
                nat_backends: self.nat.iter().map(|(k, v)| (*k, *v)).collect(),
            }
        }

        /// The slots of every VIP's table, as the data path reads them.
        fn tables(&self) -> impl Iterator<Item = (&XVip, u32)> + '_ {
            self.vips
                .values()
                .flat_map(|v| (v.ring_base..v.ring_base + v.ring_size).map(move |i| (v, i)))
        }

        /// The backends behind one VIP's table, slot by slot.
        fn table_of(&self, vip: &XVip) -> Vec<Real> {
            (vip.ring_base..vip.ring_base + vip.ring_size)
                .map(|i| self.reals[&self.ring[&i]])
                .collect()
        }
    }

    impl XdpMaps for Model {
        fn put_vip(&mut self, key: &SvcKey, vip: &XVip) -> io::Result<()> {
            assert_eq!(self.live.get(&vip.id), Some(vip), "by address before by id");
            let bit = filter_bit(key);
            assert!(
                self.filter.get(&(bit >> 6)).copied().unwrap_or(0) & (1 << (bit & 63)) != 0,
                "a VIP before its filter bit"
            );
            // Its whole table, of its own backends, before anything can read it.
            for i in vip.ring_base..vip.ring_base + vip.ring_size {
                let real = self.ring.get(&i).and_then(|r| self.reals.get(r));
                assert!(
                    real.is_some_and(|r| r.vip_id == vip.id),
                    "slot {i} of VIP {} is not written before the VIP points at it",
                    vip.id
                );
            }
            self.vips.insert(*key, *vip);
            Ok(())
        }
        fn put_live(&mut self, id: u32, vip: &XVip) -> io::Result<()> {
            if vip.gen == 0 {
                assert!(
                    !self.vips.values().any(|v| v.id == id),
                    "id cleared while in use"
                );
                self.live.remove(&id);
            } else {
                self.live.insert(id, *vip);
            }
            Ok(())
        }
        fn put_filter_word(&mut self, word: u32, bits: u64) -> io::Result<()> {
            assert!(word < LX_FILTER_WORDS);
            if bits == 0 {
                self.filter.remove(&word);
            } else {
                self.filter.insert(word, bits);
            }
            Ok(())
        }
        fn delete_vip(&mut self, key: &SvcKey) -> io::Result<()> {
            self.vips.remove(key);
            Ok(())
        }
        fn put_ring(&mut self, slots: &[(u32, u32)]) -> io::Result<()> {
            for (i, real) in slots {
                assert!(
                    self.reals.contains_key(real),
                    "slot {i} points at real {real}, not written yet"
                );
                self.ring.insert(*i, *real);
            }
            Ok(())
        }
        fn put_real(&mut self, id: u32, real: &Real) -> io::Result<()> {
            if real.flags & LX_REAL_VALID != 0 {
                self.reals.insert(id, *real);
            } else if self.refuse_clear {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            } else {
                let used: Vec<u32> = self.tables().map(|(_, i)| i).collect();
                assert!(
                    !used.iter().any(|i| self.ring.get(i) == Some(&id)),
                    "real {id} cleared while a VIP's table points at it"
                );
                self.reals.remove(&id);
            }
            Ok(())
        }
        fn reset_vip_stats(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn reset_real_stats(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn put_nat_backend(&mut self, key: &SvcKey, rev: &XRev) -> io::Result<()> {
            self.nat.insert(*key, *rev);
            Ok(())
        }
        fn delete_nat_backend(&mut self, key: &SvcKey) -> io::Result<()> {
            self.nat.remove(key);
            Ok(())
        }
    }

    fn plan(backends: &[(u8, u32)]) -> Plan {
        crate::test_support::plan(&[(1, backends)])
    }

    fn vip1() -> ServiceAddr {
        ServiceAddr {
            ip: IpAddr::from([198, 19, 0, 1]),
            port: 80,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_backend_change_rewrites_only_the_slots_that_move() {
        let mut r = XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        let mut m = Model::default();
        let nat = |_: &str| Mode::Nat;
        let ten: Vec<(u8, u32)> = (1..=10).map(|b| (b, 1)).collect();
        let first = r.apply(&plan(&ten), &nat, &mut m);
        let size = maglev::table_size(10, maglev::DEFAULT_MAX) as usize;
        assert_eq!(m.tables().count(), size);
        assert!(first.writes > size);
        assert_eq!(r.apply(&plan(&ten), &nat, &mut m).writes, 0);
        // Drain backend 4 (weight 0): its real stays for tracked flows, only its slots move
        // (the table keeps its size), a little over a tenth of them.
        let mut drained = ten.clone();
        drained[3].1 = 0;
        let rep = r.apply(&plan(&drained), &nat, &mut m);
        assert_eq!(m.reals.len(), 10);
        assert_eq!(m.tables().count(), size);
        let v = *m.vips.values().next().unwrap();
        assert!(!m.table_of(&v).iter().any(|real| real.addr[3] == 4));
        assert!(rep.writes < size / 10 + size / 100, "{rep:?}");
        // A mode change writes the VIP by id and by address, with a new generation (its
        // tracked flows are decided again).
        let gen = m.vips.values().next().unwrap().gen;
        let rep = r.apply(&plan(&drained), &|_| Mode::Gue, &mut m);
        // The VIP twice, and its ten backends leave lx_nat_backends (GUE replies skip us).
        assert_eq!(rep.writes, 2 + 10, "{rep:?}");
        assert!(m.nat.is_empty());
        let v = *m.vips.values().next().unwrap();
        assert_eq!(v.mode, LX_MODE_GUE);
        assert_ne!(v.gen, gen);
        assert_eq!(m.live[&v.id], v);
        // Takeover: nothing to write.
        let dump = m.dump();
        let mut again = XdpReconciler::restore(dump, maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        assert_eq!(
            again.apply(&plan(&drained), &|_| Mode::Gue, &mut m).writes,
            0
        );
        // A takeover that finds the VIP's entry by id missing (maps of an agent from before
        // it existed) writes it, keeping the generation its tracked flows hold.
        m.live.clear();
        let dump = m.dump();
        let mut again = XdpReconciler::restore(dump, maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        assert_eq!(
            again.apply(&plan(&drained), &|_| Mode::Gue, &mut m).writes,
            2
        );
        assert_eq!(m.live[&v.id], m.vips[&svc_key(&vip1())]);
        again.apply(&Plan::new(), &nat, &mut m);
        assert!(m.vips.is_empty() && m.reals.is_empty() && m.nat.is_empty());
        assert!(m.live.is_empty() && m.filter.is_empty());
        assert_eq!(again.ring_usage().0, 0, "every unit of lx_ring given back");
    }

    #[test]
    fn a_real_whose_clearing_failed_is_cleared_by_the_next_apply() {
        let mut r = XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        let mut m = Model::default();
        let nat = |_: &str| Mode::Nat;
        r.apply(&plan(&[(1, 1), (2, 1)]), &nat, &mut m);
        assert_eq!(m.reals.len(), 2);
        m.refuse_clear = true;
        let rep = r.apply(&plan(&[(1, 1)]), &nat, &mut m);
        assert_eq!(rep.errors.len(), 1, "{rep:?}");
        assert_eq!(
            m.reals.len(),
            2,
            "the write failed: the entry still names backend 2"
        );
        // The next pass sees backend 2 still held, and clears it.
        m.refuse_clear = false;
        let rep = r.apply(&plan(&[(1, 1)]), &nat, &mut m);
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!(m.reals.len(), 1);
    }

    #[test]
    fn a_table_that_changes_size_is_written_whole_in_new_room_before_the_vip_moves() {
        let mut r = XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        let mut m = Model::default();
        let nat = |_: &str| Mode::Nat;
        let four: Vec<(u8, u32)> = (1..=4).map(|b| (b, 1)).collect();
        r.apply(&plan(&four), &nat, &mut m);
        let small = *m.vips.values().next().unwrap();
        assert_eq!(small.ring_size, maglev::TIERS[0]);
        // A fifth backend: the next tier. The model checks the new table is whole before the VIP
        // points at it; the old room is given back.
        let five: Vec<(u8, u32)> = (1..=5).map(|b| (b, 1)).collect();
        let rep = r.apply(&plan(&five), &nat, &mut m);
        assert!(rep.errors.is_empty(), "{rep:?}");
        let big = *m.vips.values().next().unwrap();
        assert_eq!(big.ring_size, maglev::TIERS[1]);
        assert_ne!(big.ring_base, small.ring_base);
        assert_eq!(
            r.ring_usage().0,
            u64::from(maglev::TIERS[1].div_ceil(LX_RING_UNIT) * LX_RING_UNIT)
        );
    }

    #[test]
    fn a_full_ring_gives_smaller_tables_refuses_whole_and_grows_back() {
        // Room for 17 units: one VIP of 17 backends takes 16 (65,537 slots).
        let slots = 17 * LX_RING_UNIT;
        let mut r =
            XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED).with_ring_slots(slots);
        let mut m = Model::default();
        let nat = |_: &str| Mode::Nat;
        let many: Vec<(u8, u32)> = (1..=17).map(|b| (b, 1)).collect();
        let five: Vec<(u8, u32)> = (1..=5).map(|b| (b, 1)).collect();
        let one: Vec<(u8, u32)> = vec![(1, 1)];
        let both = |second: &[(u8, u32)]| crate::test_support::plan(&[(1, &many), (2, second)]);
        let rep = r.apply(&both(&five), &nat, &mut m);
        assert!(rep.errors.is_empty(), "{rep:?}");
        // The second VIP wants 16,381 slots (4 units); one unit is left: it gets 4,099.
        let second = r.vips().values().find(|v| v.id != 0).unwrap().clone();
        assert_eq!(second.ring.len() as u32, maglev::TIERS[0]);
        assert_eq!(second.preferred, maglev::TIERS[1]);
        // A third VIP finds no room at all: refused with the reason, nothing of it written.
        let three = crate::test_support::plan(&[(1, &many), (2, &five), (3, &one)]);
        let before = m.ring.len();
        let rep = r.apply(&three, &nat, &mut m);
        assert_eq!(rep.errors.len(), 1, "{rep:?}");
        assert!(
            rep.errors[0].what.contains("v3")
                && rep.errors[0].source.to_string().contains("no room"),
            "{rep:?}"
        );
        assert_eq!(m.vips.len(), 2);
        assert_eq!(
            m.ring.len(),
            before,
            "not one slot of the refused table written"
        );
        assert!(!r
            .vips()
            .keys()
            .any(|a| a.ip == IpAddr::from([198, 19, 0, 3])));
        // The big VIP goes: the second grows to its preferred size, the third fits.
        let rep = r.apply(
            &crate::test_support::plan(&[(2, &five), (3, &one)]),
            &nat,
            &mut m,
        );
        assert!(rep.errors.is_empty(), "{rep:?}");
        let sizes: Vec<u32> = m.vips.values().map(|v| v.ring_size).collect();
        assert!(sizes.contains(&maglev::TIERS[1]) && sizes.contains(&maglev::TIERS[0]));
    }

    #[test]
    fn nat_backends_carry_their_one_vip_or_say_they_are_shared() {
        let mut r = XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        let mut m = Model::default();
        let mut p = crate::test_support::plan(&[(1, &[(1, 1), (2, 1)])]);
        // A second VIP over backend 198.18.1.1:8080 too.
        let mut other = p.values().next().unwrap().clone();
        other.vip = "v9".into();
        other
            .backends
            .retain(|b, _| b.ip == IpAddr::from([198, 18, 1, 1]));
        let addr9 = ServiceAddr {
            ip: IpAddr::from([198, 19, 0, 9]),
            ..vip1()
        };
        p.insert(addr9, other);
        let rep = r.apply(&p, &|_| Mode::Nat, &mut m);
        assert!(rep.errors.is_empty(), "{rep:?}");
        let key = |last: u8| {
            backend_key(
                &BackendAddr {
                    ip: IpAddr::from([198, 18, 1, last]),
                    port: 8080,
                },
                Protocol::Tcp,
            )
        };
        assert_eq!(m.nat[&key(1)].flags, LX_REV_SHARED);
        assert_eq!(m.nat[&key(2)].flags, 0);
        assert_eq!(m.nat[&key(2)].addr[..4], [198, 19, 0, 1]);
        assert_eq!(m.nat[&key(2)].port, 80u16.to_be());
        // The shared backend's reals say so (new flows to it keep a per-flow entry).
        for real in m.reals.values() {
            let shared = real.addr[3] == 1;
            assert_eq!(real.flags & LX_REAL_SHARED != 0, shared, "{real:?}");
        }
        // In GUE mode the second VIP's replies skip this node: the backend is no longer shared.
        let rep = r.apply(
            &p,
            &|v: &str| if v == "v9" { Mode::Gue } else { Mode::Nat },
            &mut m,
        );
        assert!(rep.errors.is_empty(), "{rep:?}");
        assert_eq!(m.nat[&key(1)].flags, 0);
        assert!(m
            .reals
            .values()
            .all(|real| real.flags & LX_REAL_SHARED == 0));
    }
}
