//! The per-packet path's maps from the same plan as the socket path (so health, drain,
//! weights and locality follow one rule): per VIP address a Maglev table over the backends that
//! get new connections, written by difference, and the VIP's forwarding mode.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};

use crate::layout::{
    Real, RingKey, SvcKey, XVip, LX_FILTER_WORDS, LX_MODE_GUE, LX_MODE_NAT, LX_REAL_VALID,
};
use crate::maglev;
use crate::plan::{BackendAddr, Plan, ServiceAddr};
use crate::reconcile::{addr_bytes, svc_key, Ids, Report};

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
    fn put_slot(&mut self, key: &RingKey, real: u32) -> io::Result<()>;
    fn delete_slot(&mut self, key: &RingKey) -> io::Result<()>;
    fn put_real(&mut self, id: u32, real: &Real) -> io::Result<()>;
    fn reset_vip_stats(&mut self, id: u32) -> io::Result<()>;
    fn reset_real_stats(&mut self, id: u32) -> io::Result<()>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct XVipState {
    pub id: u32,
    pub mode: Mode,
    /// Drawn anew when the id is given to the VIP and when its mode changes: a tracked flow
    /// whose entry holds another generation is decided again.
    pub gen: u32,
    /// Real id per Maglev slot (empty: no backend).
    pub ring: Vec<u32>,
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
    pub ring: Vec<(RingKey, u32)>,
    pub reals: Vec<(u32, Real)>,
}

pub struct XdpReconciler {
    vips: BTreeMap<ServiceAddr, XVipState>,
    vip_ids: Ids,
    real_ids: Ids,
    /// Bound on a VIP's Maglev table.
    pub max_ring: u32,
    pub seed: u64,
    stale: XDump,
    /// `lx_vip_filter` as written (words that are not zero).
    filter: BTreeMap<u32, u64>,
    /// VIPs whose `lx_vip_live` entry did not match at takeover.
    dirty: std::collections::BTreeSet<ServiceAddr>,
    last_gen: u32,
}

fn real_entry(b: &crate::plan::PlannedBackend, addr: &BackendAddr, vip_id: u32) -> Real {
    let (a, family) = addr_bytes(addr.ip);
    let (node, _) = addr_bytes(b.node);
    Real {
        addr: a,
        node,
        port: addr.port.to_be(),
        family,
        flags: LX_REAL_VALID,
        vip_id,
    }
}

impl XdpReconciler {
    pub fn new(max_ring: u32, seed: u64) -> XdpReconciler {
        let capacity = crate::layout::capacities();
        XdpReconciler {
            vips: BTreeMap::new(),
            vip_ids: Ids::new(capacity.vips),
            real_ids: Ids::new(capacity.reals),
            max_ring,
            seed,
            stale: XDump::default(),
            filter: BTreeMap::new(),
            dirty: Default::default(),
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
        let ring: std::collections::HashMap<(u32, u32), u32> = dump
            .ring
            .iter()
            .map(|(k, v)| ((k.vip_id, k.slot), *v))
            .collect();
        let live: std::collections::HashMap<u32, XVip> = dump.live.iter().copied().collect();
        let mut by_id = BTreeMap::new();
        for (key, vip) in &dump.vips {
            match crate::reconcile::service_addr(key) {
                Some(addr) if !by_id.values().any(|a| *a == addr) => {
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
                            ring: (0..vip.ring_size)
                                .map(|i| ring.get(&(vip.id, i)).copied().unwrap_or(u32::MAX))
                                .collect(),
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
        for (k, v) in &dump.ring {
            let live = by_id
                .get(&k.vip_id)
                .and_then(|a| r.vips.get(a))
                .is_some_and(|s| (k.slot as usize) < s.ring.len());
            if !live {
                r.stale.ring.push((*k, *v));
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
        for (k, _) in stale.ring {
            report.writes += 1;
            let _ = maps.delete_slot(&k);
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
        let gone: Vec<ServiceAddr> = self
            .vips
            .keys()
            .filter(|k| !plan.contains_key(k))
            .copied()
            .collect();
        for addr in gone {
            self.forget(&addr, maps, &mut report);
        }
        for (addr, planned) in plan {
            let mode = mode_of(&planned.vip);
            let was_new = !self.vips.contains_key(addr);
            if let Err(e) = self.program(addr, planned, mode, maps, &mut report) {
                report.errors.push(format!("XDP VIP {}: {e}", planned.vip));
                if was_new {
                    // Undo what was written, so the next apply programs it whole.
                    self.forget(addr, maps, &mut report);
                }
            }
        }
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
        let words: std::collections::BTreeSet<u32> =
            want.keys().chain(self.filter.keys()).copied().collect();
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
                Err(e) => report.errors.push(format!("XDP VIP filter word {w}: {e}")),
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
            report
                .errors
                .push(format!("removing XDP VIP {addr:?}: {e}"));
            return;
        }
        let v = v.clone();
        self.vips.remove(addr);
        self.dirty.remove(addr);
        // Tracked flows of the VIP find no generation under its id any more.
        report.writes += 1 + v.ring.len() + v.reals.len();
        let _ = maps.put_live(v.id, &XVip::default());
        for slot in 0..v.ring.len() as u32 {
            let _ = maps.delete_slot(&RingKey { vip_id: v.id, slot });
        }
        for (id, _) in v.reals.values() {
            let _ = maps.put_real(*id, &Real::default());
            self.real_ids.release(*id);
        }
        self.vip_ids.release(v.id);
    }

    fn program(
        &mut self,
        addr: &ServiceAddr,
        planned: &crate::plan::PlannedService,
        mode: Mode,
        maps: &mut dyn XdpMaps,
        report: &mut Report,
    ) -> io::Result<()> {
        let key = svc_key(addr);
        let is_new = !self.vips.contains_key(addr);
        if is_new {
            let id = self
                .vip_ids
                .alloc()
                .ok_or_else(|| io::Error::other("more VIP addresses than LX_MAX_VIPS"))?;
            report.writes += 1;
            if let Err(e) = maps.reset_vip_stats(id) {
                self.vip_ids.release(id);
                return Err(e);
            }
            self.vips.insert(
                *addr,
                XVipState {
                    id,
                    mode,
                    gen: 0,
                    ring: Vec::new(),
                    reals: BTreeMap::new(),
                },
            );
        }
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
            let entry = real_entry(p, b, vip_id);
            match st.reals.get(b) {
                Some((_, old)) if *old == entry => {}
                Some((id, _)) => {
                    let id = *id;
                    report.writes += 1;
                    maps.put_real(id, &entry)?;
                    st.reals.insert(*b, (id, entry));
                }
                None => {
                    let id = self
                        .real_ids
                        .alloc()
                        .ok_or_else(|| io::Error::other("more backends than LX_MAX_REALS"))?;
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
        // The Maglev table over the backends that get new connections, by their slots.
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
        let ring: Vec<u32> = if members.is_empty() {
            Vec::new()
        } else {
            let size = maglev::table_size(members.len(), self.max_ring);
            let list: Vec<maglev::Member> = members.iter().map(|(_, m)| m.clone()).collect();
            maglev::build(&list, size, self.seed)
                .into_iter()
                .map(|i| st.reals[&members[i.unwrap_or(0) as usize].0].0)
                .collect()
        };
        let old_len = st.ring.len();
        for (i, rid) in ring.iter().enumerate() {
            if st.ring.get(i) != Some(rid) {
                report.writes += 1;
                maps.put_slot(
                    &RingKey {
                        vip_id,
                        slot: i as u32,
                    },
                    *rid,
                )?;
                if i < st.ring.len() {
                    st.ring[i] = *rid;
                } else {
                    st.ring.push(*rid);
                }
            }
        }
        if is_new || dirty || old_len != ring.len() || st.mode != mode || st.gen != gen {
            let vip = XVip {
                id: vip_id,
                ring_size: ring.len() as u32,
                mode: mode.code(),
                gen,
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
        for slot in ring.len()..old_len {
            report.writes += 1;
            maps.delete_slot(&RingKey {
                vip_id,
                slot: slot as u32,
            })?;
        }
        st.ring.truncate(ring.len());
        let gone: Vec<BackendAddr> = st
            .reals
            .keys()
            .filter(|b| !planned.backends.contains_key(b))
            .copied()
            .collect();
        for b in gone {
            let (id, _) = st.reals.remove(&b).expect("listed");
            report.writes += 1;
            maps.put_real(id, &Real::default())?;
            self.real_ids.release(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::SlotTable;
    use std::collections::HashMap;
    use std::net::IpAddr;

    #[derive(Default)]
    struct Model {
        vips: HashMap<SvcKey, XVip>,
        live: HashMap<u32, XVip>,
        filter: HashMap<u32, u64>,
        /// `lx_ring` over `lx_reals`.
        table: SlotTable<Real>,
    }

    impl Model {
        /// What an agent taking the maps over would read.
        fn dump(&self) -> XDump {
            XDump {
                vips: self.vips.iter().map(|(k, v)| (*k, *v)).collect(),
                ring: self
                    .table
                    .slot_entries(|vip_id, slot| RingKey { vip_id, slot }),
                reals: self.table.member_entries(),
                live: self.live.iter().map(|(k, v)| (*k, *v)).collect(),
                filter: self.filter.iter().map(|(k, v)| (*k, *v)).collect(),
            }
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
        fn put_slot(&mut self, key: &RingKey, real: u32) -> io::Result<()> {
            self.table.put_slot(key.vip_id, key.slot, real);
            Ok(())
        }
        fn delete_slot(&mut self, key: &RingKey) -> io::Result<()> {
            self.table.delete_slot(key.vip_id, key.slot);
            Ok(())
        }
        fn put_real(&mut self, id: u32, real: &Real) -> io::Result<()> {
            self.table
                .put_member(id, real, real.flags & LX_REAL_VALID != 0);
            Ok(())
        }
        fn reset_vip_stats(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn reset_real_stats(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
    }

    fn plan(backends: &[(u8, u32)]) -> Plan {
        crate::test_support::plan(&[(1, backends)])
    }

    #[test]
    fn a_backend_change_rewrites_only_the_slots_that_move() {
        let mut r = XdpReconciler::new(maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        let mut m = Model::default();
        let nat = |_: &str| Mode::Nat;
        let ten: Vec<(u8, u32)> = (1..=10).map(|b| (b, 1)).collect();
        let first = r.apply(&plan(&ten), &nat, &mut m);
        let size = maglev::table_size(10, maglev::DEFAULT_MAX) as usize;
        assert_eq!(m.table.slots.len(), size);
        assert!(first.writes > size);
        assert_eq!(r.apply(&plan(&ten), &nat, &mut m).writes, 0);
        // Drain backend 4 (weight 0): its real stays for tracked flows, only its slots move
        // (the table keeps its size), a little over a tenth of them.
        let mut drained = ten.clone();
        drained[3].1 = 0;
        let rep = r.apply(&plan(&drained), &nat, &mut m);
        assert_eq!(m.table.members.len(), 10);
        assert_eq!(m.table.slots.len(), size);
        assert!(!m
            .table
            .slots
            .values()
            .any(|id| m.table.members[id].addr[3] == 4));
        assert!(rep.writes < size / 10 + size / 100, "{rep:?}");
        // A mode change writes the VIP by id and by address, with a new generation (its
        // tracked flows are decided again).
        let gen = m.vips.values().next().unwrap().gen;
        let rep = r.apply(&plan(&drained), &|_| Mode::Gue, &mut m);
        assert_eq!(rep.writes, 2);
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
        let v = *m.vips.values().next().unwrap();
        m.live.clear();
        let dump = m.dump();
        let mut again = XdpReconciler::restore(dump, maglev::DEFAULT_MAX, maglev::DEFAULT_SEED);
        assert_eq!(
            again.apply(&plan(&drained), &|_| Mode::Gue, &mut m).writes,
            2
        );
        assert_eq!(
            m.live[&v.id],
            m.vips[&svc_key(&ServiceAddr {
                ip: IpAddr::from([198, 19, 0, 1]),
                port: 80,
                protocol: lodestar_control::model::Protocol::Tcp
            })]
        );
        again.apply(&Plan::new(), &nat, &mut m);
        assert!(m.vips.is_empty() && m.table.slots.is_empty() && m.table.members.is_empty());
        assert!(m.live.is_empty() && m.filter.is_empty());
    }
}
