//! Plan -> map writes, by difference. The reconciler keeps a mirror of what the maps hold
//! and writes only what changed: one backend added to or removed from one VIP is a handful of
//! writes whatever the catalog's size.
//!
//! Write order keeps every lookup the BPF side can make valid at every moment: backends are
//! written before slots point at them, slots before the service's count grows, the count
//! shrinks before tail slots go, and a backend is cleared only when no slot points at it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;

use lodestar_control::model::Protocol;

use crate::layout::{
    BackendEntry, SlotKey, Svc, SvcKey, AF_INET, AF_INET6, BE_VALID, IPPROTO_TCP, IPPROTO_UDP,
    SVC_FAIL_OPEN,
};
use crate::plan::{BackendAddr, Plan, ServiceAddr};

/// The map operations the reconciler needs (the kernel maps, or a model in unit tests).
pub trait MapWriter {
    fn put_service(&mut self, key: &SvcKey, svc: &Svc) -> io::Result<()>;
    fn delete_service(&mut self, key: &SvcKey) -> io::Result<()>;
    fn put_slot(&mut self, key: &SlotKey, backend: u32) -> io::Result<()>;
    fn delete_slot(&mut self, key: &SlotKey) -> io::Result<()>;
    fn put_backend(&mut self, id: u32, entry: &BackendEntry) -> io::Result<()>;
    fn reset_service_stats(&mut self, id: u32) -> io::Result<()>;
    fn reset_backend_stats(&mut self, id: u32) -> io::Result<()>;
    /// Starts passive health tracking of a backend address (keeps an existing entry).
    fn watch_backend(&mut self, key: &SvcKey) -> io::Result<()>;
    fn unwatch_backend(&mut self, key: &SvcKey) -> io::Result<()>;
}

/// What the maps held when the reconciler took them over (pinned by an earlier agent).
#[derive(Default, Debug)]
pub struct Dump {
    pub services: Vec<(SvcKey, Svc)>,
    pub slots: Vec<(SlotKey, u32)>,
    pub backends: Vec<(u32, BackendEntry)>,
    /// Backend addresses under passive health tracking.
    pub watched: Vec<SvcKey>,
}

#[derive(Debug, Default)]
pub(crate) struct Ids {
    next: u32,
    free: Vec<u32>,
    max: u32,
}

impl Ids {
    pub(crate) fn new(max: u32) -> Ids {
        Ids {
            max,
            ..Ids::default()
        }
    }
    /// A free id, or (all `max` in use) the error that `exhausted` words from `max`.
    pub(crate) fn alloc(&mut self, exhausted: impl FnOnce(u32) -> String) -> io::Result<u32> {
        self.free
            .pop()
            .or_else(|| {
                (self.next < self.max).then(|| {
                    self.next += 1;
                    self.next - 1
                })
            })
            .ok_or_else(|| io::Error::other(exhausted(self.max)))
    }
    pub(crate) fn max_id(&self) -> u32 {
        self.max
    }
    pub(crate) fn release(&mut self, id: u32) {
        self.free.push(id);
    }
    /// After a takeover: ids in use are exactly `used`.
    pub(crate) fn rebuild(max: u32, used: impl Iterator<Item = u32>) -> Ids {
        let used: std::collections::BTreeSet<u32> = used.collect();
        let next = used.iter().next_back().map_or(0, |m| m + 1);
        let free = (0..next).rev().filter(|i| !used.contains(i)).collect();
        Ids { next, free, max }
    }
}

/// The keys of `have` (what the maps hold) that `want` lacks: what a reconciler removes.
pub(crate) fn gone<K: Ord + Copy, V, W>(have: &BTreeMap<K, V>, want: &BTreeMap<K, W>) -> Vec<K> {
    have.keys()
        .filter(|k| !want.contains_key(k))
        .copied()
        .collect()
}

/// The mirror of one service in the maps.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub id: u32,
    pub flags: u16,
    /// Backend id per slot.
    pub slots: Vec<u32>,
    pub backends: BTreeMap<BackendAddr, u32>,
}

/// The outcome of one `apply`.
#[derive(Debug, Default)]
pub struct Report {
    /// Map writes and deletes made.
    pub writes: usize,
    /// What could not be (fully) programmed, with why; retried on the next apply.
    pub errors: Vec<ApplyError>,
}

impl Report {
    /// Notes that writing `what` failed with `source`.
    pub(crate) fn failed(&mut self, what: impl Into<String>, source: io::Error) {
        self.errors.push(ApplyError {
            what: what.into(),
            source,
        });
    }
}

/// A write of one `apply` that failed: what was being written or removed, and the kernel's
/// error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ApplyError {
    /// A VIP (`VIP /web:80 (198.19.0.10:80)`) or a shared entry (`a NAT backend`).
    pub what: String,
    #[source]
    pub source: io::Error,
}

pub struct Reconciler {
    services: BTreeMap<ServiceAddr, ServiceState>,
    svc_ids: Ids,
    be_ids: Ids,
    max_slots: usize,
    slots_in_use: usize,
    /// Leftovers found at takeover, removed by the next apply.
    stale_slots: Vec<SlotKey>,
    stale_backends: Vec<u32>,
    stale_services: Vec<SvcKey>,
    stale_watched: Vec<SvcKey>,
    /// Backend address -> how many services use it (tracked passively while > 0).
    watched: BTreeMap<BackendAddr, u32>,
}

pub fn svc_key(s: &ServiceAddr) -> SvcKey {
    let (addr, family) = addr_bytes(s.ip);
    SvcKey {
        addr,
        port: s.port.to_be(),
        proto: match s.protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        },
        family,
    }
}

pub(crate) fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (addr, AF_INET)
        }
        IpAddr::V6(v6) => (v6.octets(), AF_INET6),
    }
}

pub(crate) fn addr_ip(addr: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::from([addr[0], addr[1], addr[2], addr[3]])),
        AF_INET6 => Some(IpAddr::from(*addr)),
        _ => None,
    }
}

/// A kernel service key back to its address (None for an entry Lodestar did not write).
pub fn service_addr(k: &SvcKey) -> Option<ServiceAddr> {
    Some(ServiceAddr {
        ip: addr_ip(&k.addr, k.family)?,
        port: u16::from_be(k.port),
        protocol: match k.proto {
            IPPROTO_TCP => Protocol::Tcp,
            IPPROTO_UDP => Protocol::Udp,
            _ => return None,
        },
    })
}

/// The passive-health key of a backend address (TCP whatever the service's protocol).
pub fn health_key(b: &BackendAddr) -> SvcKey {
    let (addr, family) = addr_bytes(b.ip);
    SvcKey {
        addr,
        port: b.port.to_be(),
        proto: IPPROTO_TCP,
        family,
    }
}

fn backend_entry(b: &BackendAddr, svc_id: u32) -> BackendEntry {
    let (addr, family) = addr_bytes(b.ip);
    BackendEntry {
        addr,
        port: b.port.to_be(),
        family,
        flags: BE_VALID,
        svc_id,
    }
}

impl Default for Reconciler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reconciler {
    pub fn new() -> Reconciler {
        let capacity = crate::layout::capacities();
        Reconciler {
            services: BTreeMap::new(),
            svc_ids: Ids::new(capacity.services),
            be_ids: Ids::new(capacity.backends),
            max_slots: capacity.slots as usize,
            slots_in_use: 0,
            stale_slots: Vec::new(),
            stale_backends: Vec::new(),
            stale_services: Vec::new(),
            stale_watched: Vec::new(),
            watched: BTreeMap::new(),
        }
    }

    /// Takes over maps written by an earlier agent: rebuilds the mirror from them, so the next
    /// `apply` writes only the differences (an agent restart rewrites nothing that is right).
    pub fn restore(dump: Dump) -> Reconciler {
        let mut r = Reconciler::new();
        let slots: HashMap<(u32, u32), u32> = dump
            .slots
            .iter()
            .map(|(k, v)| ((k.svc_id, k.slot), *v))
            .collect();
        let mut by_id: HashMap<u32, ServiceAddr> = HashMap::new();
        for (key, svc) in &dump.services {
            match service_addr(key) {
                Some(addr) if svc.id < r.svc_ids.max && !by_id.contains_key(&svc.id) => {
                    by_id.insert(svc.id, addr);
                    let table = (0..u32::from(svc.slots))
                        .map(|i| slots.get(&(svc.id, i)).copied().unwrap_or(u32::MAX))
                        .collect::<Vec<_>>();
                    r.slots_in_use += table.len();
                    r.services.insert(
                        addr,
                        ServiceState {
                            id: svc.id,
                            flags: svc.flags,
                            slots: table,
                            backends: BTreeMap::new(),
                        },
                    );
                }
                _ => r.stale_services.push(*key),
            }
        }
        for (id, entry) in &dump.backends {
            if entry.flags & BE_VALID == 0 {
                continue;
            }
            let addr = addr_ip(&entry.addr, entry.family).map(|ip| BackendAddr {
                ip,
                port: u16::from_be(entry.port),
            });
            let owner = by_id.get(&entry.svc_id).and_then(|a| r.services.get_mut(a));
            match (addr, owner) {
                (Some(addr), Some(svc)) if !svc.backends.contains_key(&addr) => {
                    svc.backends.insert(addr, *id);
                }
                _ => r.stale_backends.push(*id),
            }
        }
        for (key, _) in &dump.slots {
            let live = by_id
                .get(&key.svc_id)
                .and_then(|a| r.services.get(a))
                .is_some_and(|s| (key.slot as usize) < s.slots.len());
            if !live {
                r.stale_slots.push(*key);
            }
        }
        for svc in r.services.values() {
            for b in svc.backends.keys() {
                *r.watched.entry(*b).or_default() += 1;
            }
        }
        let live: std::collections::HashSet<SvcKey> = r.watched.keys().map(health_key).collect();
        r.stale_watched = dump
            .watched
            .iter()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        // Entries that should exist but do not (a crash between writes) are created by the
        // first apply: watch_backend keeps existing ones.
        r.svc_ids = Ids::rebuild(r.svc_ids.max, r.services.values().map(|s| s.id));
        r.be_ids = Ids::rebuild(
            r.be_ids.max,
            r.services
                .values()
                .flat_map(|s| s.backends.values().copied()),
        );
        r
    }

    pub fn services(&self) -> &BTreeMap<ServiceAddr, ServiceState> {
        &self.services
    }

    /// Makes the maps hold `plan`.
    pub fn apply(&mut self, plan: &Plan, maps: &mut dyn MapWriter) -> Report {
        let mut report = Report::default();
        let w = |r: io::Result<()>, report: &mut Report| -> io::Result<()> {
            report.writes += 1;
            r
        };
        for key in std::mem::take(&mut self.stale_services) {
            let _ = w(maps.delete_service(&key), &mut report);
        }
        for key in std::mem::take(&mut self.stale_slots) {
            let _ = w(maps.delete_slot(&key), &mut report);
        }
        for id in std::mem::take(&mut self.stale_backends) {
            let _ = w(maps.put_backend(id, &BackendEntry::default()), &mut report);
        }
        for key in std::mem::take(&mut self.stale_watched) {
            let _ = w(maps.unwatch_backend(&key), &mut report);
        }

        for addr in gone(&self.services, plan) {
            if let Err(e) = self.remove_service(&addr, maps, &mut report) {
                report.failed(format!("removing {addr:?}"), e);
            }
        }
        for (addr, planned) in plan {
            let was_new = !self.services.contains_key(addr);
            if let Err(e) = self.program_service(addr, planned, maps, &mut report) {
                report.failed(format!("VIP {} ({})", planned.vip, sock(addr)), e);
                if was_new {
                    // Undo what was written, so the next apply programs it whole.
                    let _ = self.remove_service(addr, maps, &mut report);
                }
            }
        }
        report
    }

    fn remove_service(
        &mut self,
        addr: &ServiceAddr,
        maps: &mut dyn MapWriter,
        report: &mut Report,
    ) -> io::Result<()> {
        let Some(state) = self.services.get(addr).cloned() else {
            return Ok(());
        };
        report.writes += 1;
        maps.delete_service(&svc_key(addr))?;
        self.services.remove(addr);
        self.svc_ids.release(state.id);
        self.slots_in_use -= state.slots.len();
        for slot in 0..state.slots.len() as u32 {
            report.writes += 1;
            let _ = maps.delete_slot(&SlotKey {
                svc_id: state.id,
                slot,
            });
        }
        for (b, id) in &state.backends {
            report.writes += 1;
            let _ = maps.put_backend(*id, &BackendEntry::default());
            self.be_ids.release(*id);
            unwatch(&mut self.watched, b, maps, report);
        }
        Ok(())
    }

    fn program_service(
        &mut self,
        addr: &ServiceAddr,
        planned: &crate::plan::PlannedService,
        maps: &mut dyn MapWriter,
        report: &mut Report,
    ) -> io::Result<()> {
        let key = svc_key(addr);
        let is_new = !self.services.contains_key(addr);
        if is_new {
            let id = self.svc_ids.alloc(|max| {
                format!("more than {max} VIP addresses and ports: raise LS_MAX_SERVICES")
            })?;
            report.writes += 1;
            if let Err(e) = maps.reset_service_stats(id) {
                self.svc_ids.release(id);
                return Err(e);
            }
            self.services.insert(
                *addr,
                ServiceState {
                    id,
                    flags: 0,
                    slots: Vec::new(),
                    backends: BTreeMap::new(),
                },
            );
        }
        let state = self.services.get_mut(addr).expect("just inserted");
        let svc_id = state.id;

        // 1. New backends.
        for b in planned.backends.keys() {
            if state.backends.contains_key(b) {
                continue;
            }
            let id = self.be_ids.alloc(|max| {
                format!("more than {max} backends over all VIPs: raise LS_MAX_BACKENDS")
            })?;
            report.writes += 2;
            let r = maps
                .reset_backend_stats(id)
                .and_then(|()| maps.put_backend(id, &backend_entry(b, svc_id)));
            if let Err(e) = r {
                self.be_ids.release(id);
                return Err(e);
            }
            state.backends.insert(*b, id);
            let n = self.watched.entry(*b).or_default();
            *n += 1;
            if *n == 1 {
                report.writes += 1;
                if let Err(e) = maps.watch_backend(&health_key(b)) {
                    // Steering works without it; passive health for this address does not.
                    tracing::warn!("cannot track {b:?} passively: {e}");
                }
            }
        }

        // 2. The slot table.
        let want: BTreeMap<u32, u32> = planned
            .backends
            .iter()
            .filter(|(_, p)| p.slots > 0)
            .map(|(b, p)| (state.backends[b], p.slots))
            .collect();
        let table = stable_assign(&state.slots, &want);
        let grow = table.len().saturating_sub(state.slots.len());
        if self.slots_in_use + grow > self.max_slots {
            return Err(io::Error::other(format!(
                "slot tables full ({} of LS_MAX_SLOTS {})",
                self.slots_in_use, self.max_slots
            )));
        }
        let old_len = state.slots.len();
        for (i, be) in table.iter().enumerate() {
            if state.slots.get(i) != Some(be) {
                report.writes += 1;
                maps.put_slot(
                    &SlotKey {
                        svc_id,
                        slot: i as u32,
                    },
                    *be,
                )?;
                if i < state.slots.len() {
                    state.slots[i] = *be;
                } else {
                    state.slots.push(*be);
                    self.slots_in_use += 1;
                }
            }
        }
        let flags = if planned.fail_open { SVC_FAIL_OPEN } else { 0 };
        if is_new || old_len != table.len() || state.flags != flags {
            report.writes += 1;
            maps.put_service(
                &key,
                &Svc {
                    id: svc_id,
                    slots: table.len() as u16,
                    flags,
                },
            )?;
            state.flags = flags;
        }
        for slot in table.len()..old_len {
            report.writes += 1;
            maps.delete_slot(&SlotKey {
                svc_id,
                slot: slot as u32,
            })?;
            self.slots_in_use -= 1;
        }
        state.slots.truncate(table.len());

        // 3. Backends no longer in the plan (no slot points at them any more).
        for b in gone(&state.backends, &planned.backends) {
            let id = state.backends[&b];
            report.writes += 1;
            maps.put_backend(id, &BackendEntry::default())?;
            state.backends.remove(&b);
            self.be_ids.release(id);
            unwatch(&mut self.watched, &b, maps, report);
        }
        Ok(())
    }
}

/// One service less uses `b`; the last one stops its passive tracking.
fn unwatch(
    watched: &mut BTreeMap<BackendAddr, u32>,
    b: &BackendAddr,
    maps: &mut dyn MapWriter,
    report: &mut Report,
) {
    if let Some(n) = watched.get_mut(b) {
        *n -= 1;
        if *n == 0 {
            watched.remove(b);
            report.writes += 1;
            let _ = maps.unwatch_backend(&health_key(b));
        }
    }
}

fn sock(a: &ServiceAddr) -> String {
    format!("{}/{}", std::net::SocketAddr::new(a.ip, a.port), a.protocol)
}

/// The new slot table for per-backend counts `want`, changing as few positions of `old` as
/// possible: a backend's surplus slots become holes, deficits fill holes first, then the end;
/// leftover holes are filled from the tail and the table shrinks.
pub fn stable_assign(old: &[u32], want: &BTreeMap<u32, u32>) -> Vec<u32> {
    let mut seen: HashMap<u32, u32> = HashMap::new();
    let mut out = old.to_vec();
    let mut holes = Vec::new();
    for (i, b) in old.iter().enumerate() {
        let keep = want.get(b).copied().unwrap_or(0);
        let n = seen.entry(*b).or_insert(0);
        if *n < keep {
            *n += 1;
        } else {
            holes.push(i);
        }
    }
    // New slots interleaved across backends (a, b, a, b, ...), so that one backend's slots
    // are not a run the BPF side's retry-the-next-slot (passive health) would stay inside.
    let mut deficits: Vec<(u32, u32)> = want
        .iter()
        .map(|(b, n)| (*b, n.saturating_sub(seen.get(b).copied().unwrap_or(0))))
        .filter(|(_, d)| *d > 0)
        .collect();
    let mut adds = Vec::new();
    while !deficits.is_empty() {
        for (b, d) in deficits.iter_mut() {
            adds.push(*b);
            *d -= 1;
        }
        deficits.retain(|(_, d)| *d > 0);
    }
    let mut holes = holes.into_iter();
    let mut adds = adds.into_iter();
    let mut left: Vec<usize> = Vec::new();
    for h in holes.by_ref() {
        match adds.next() {
            Some(b) => out[h] = b,
            None => left.push(h),
        }
    }
    out.extend(adds);
    if left.is_empty() {
        return out;
    }
    let new_len = out.len() - left.len();
    let hole_set: std::collections::HashSet<usize> = left.iter().copied().collect();
    let mut movers = (new_len..out.len()).filter(|i| !hole_set.contains(i));
    for h in left.iter().filter(|h| **h < new_len) {
        let from = movers
            .next()
            .expect("as many movers as holes below the new length");
        out[*h] = out[from];
    }
    out.truncate(new_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{plan, SlotTable};

    /// The maps as plain collections (a unit-test model of the kernel side).
    #[derive(Default, Debug, PartialEq)]
    struct Model {
        services: HashMap<SvcKey, Svc>,
        /// `ls_slots` over `ls_backends`.
        table: SlotTable<BackendEntry>,
        watched: std::collections::HashSet<SvcKey>,
    }

    impl MapWriter for Model {
        fn watch_backend(&mut self, key: &SvcKey) -> io::Result<()> {
            self.watched.insert(*key);
            Ok(())
        }
        fn unwatch_backend(&mut self, key: &SvcKey) -> io::Result<()> {
            self.watched.remove(key);
            Ok(())
        }
        fn put_service(&mut self, key: &SvcKey, svc: &Svc) -> io::Result<()> {
            self.services.insert(*key, *svc);
            Ok(())
        }
        fn delete_service(&mut self, key: &SvcKey) -> io::Result<()> {
            self.services.remove(key);
            Ok(())
        }
        fn put_slot(&mut self, key: &SlotKey, backend: u32) -> io::Result<()> {
            self.table.put_slot(key.svc_id, key.slot, backend);
            Ok(())
        }
        fn delete_slot(&mut self, key: &SlotKey) -> io::Result<()> {
            self.table.delete_slot(key.svc_id, key.slot);
            Ok(())
        }
        fn put_backend(&mut self, id: u32, entry: &BackendEntry) -> io::Result<()> {
            self.table
                .put_member(id, entry, entry.flags & BE_VALID != 0);
            Ok(())
        }
        fn reset_service_stats(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
        fn reset_backend_stats(&mut self, _: u32) -> io::Result<()> {
            Ok(())
        }
    }

    impl Model {
        /// Every service's backends by share of slots, as the BPF side would choose them.
        fn shares(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
            let mut out = BTreeMap::new();
            for (k, s) in &self.services {
                let a = service_addr(k).unwrap();
                let mut m = BTreeMap::new();
                for i in 0..u32::from(s.slots) {
                    let be = self.table.members[&self.table.slots[&(s.id, i)]];
                    let ip = addr_ip(&be.addr, be.family).unwrap();
                    *m.entry(format!("{ip}:{}", u16::from_be(be.port)))
                        .or_insert(0) += 1;
                }
                out.insert(format!("{}:{}", a.ip, a.port), m);
            }
            out
        }

        fn dump(&self) -> Dump {
            Dump {
                services: self.services.iter().map(|(k, v)| (*k, *v)).collect(),
                slots: self
                    .table
                    .slot_entries(|svc_id, slot| SlotKey { svc_id, slot }),
                backends: self.table.member_entries(),
                watched: self.watched.iter().copied().collect(),
            }
        }
    }

    #[test]
    fn one_backend_change_is_a_few_writes_whatever_the_size() {
        let backends: Vec<(u8, u32)> = (1..=50).map(|b| (b, 1)).collect();
        let vips: Vec<(u8, &[(u8, u32)])> = (1..=200).map(|v| (v as u8, &backends[..])).collect();
        let mut r = Reconciler::new();
        let mut m = Model::default();
        let first = r.apply(&plan(&vips), &mut m);
        assert!(first.errors.is_empty(), "{first:?}");
        assert!(first.writes > 200 * 50 * 2);
        assert_eq!(
            r.apply(&plan(&vips), &mut m).writes,
            0,
            "no change, no writes"
        );

        // Remove backend 7 of VIP 3: move one slot, shrink, delete the tail and the backend,
        // stop watching its address.
        let fewer: Vec<(u8, u32)> = backends.iter().copied().filter(|(b, _)| *b != 7).collect();
        let mut changed = vips.clone();
        changed[2].1 = &fewer;
        let rep = r.apply(&plan(&changed), &mut m);
        assert!(rep.writes <= 5, "{rep:?}");
        assert_eq!(m.shares()["198.19.0.3:80"].len(), 49);
        assert!(!m.shares()["198.19.0.3:80"].contains_key("198.18.3.7:8080"));

        // Add it back: a backend, its stats, its watch, one slot and the count.
        let rep = r.apply(&plan(&vips), &mut m);
        assert!(rep.writes <= 5, "{rep:?}");
        assert_eq!(m.shares()["198.19.0.3:80"].len(), 50);
    }

    #[test]
    fn weights_drain_and_removal_converge() {
        let mut r = Reconciler::new();
        let mut m = Model::default();
        let steps: [&[(u8, u32)]; 5] = [
            &[(1, 1), (2, 1), (3, 1)],
            &[(1, 3), (2, 1), (3, 0)],
            &[(2, 2), (3, 0), (4, 1)],
            &[(3, 0)],
            &[],
        ];
        for backends in steps {
            let p = plan(&[(1, backends)]);
            let rep = r.apply(&p, &mut m);
            assert!(rep.errors.is_empty());
            let expect: BTreeMap<String, u32> = backends
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(b, n)| (format!("198.18.1.{b}:8080"), *n))
                .collect();
            assert_eq!(m.shares()["198.19.0.1:80"], expect);
            // Draining backends keep their entry (and counters) but get no slot.
            assert_eq!(m.table.members.len(), backends.len());
            assert_eq!(m.watched.len(), backends.len());
        }
        r.apply(&Plan::new(), &mut m);
        assert_eq!(m, Model::default(), "everything removed");
    }

    #[test]
    fn takeover_rewrites_nothing_that_is_right_and_cleans_leftovers() {
        let p = plan(&[(1, &[(1, 1), (2, 2)]), (2, &[(1, 1)])]);
        let mut m = Model::default();
        Reconciler::new().apply(&p, &mut m);
        // Leftovers of a crash: a slot past the end and a backend of no service.
        m.table.slots.insert((0, 99), 0);
        m.table.members.insert(
            500,
            BackendEntry {
                flags: BE_VALID,
                svc_id: 77,
                ..BackendEntry::default()
            },
        );
        let orphan = health_key(&BackendAddr {
            ip: IpAddr::from([198, 18, 9, 9]),
            port: 1,
        });
        m.watched.insert(orphan);
        let mut r = Reconciler::restore(m.dump());
        let rep = r.apply(&p, &mut m);
        assert_eq!(rep.writes, 3, "only the leftovers: {rep:?}");
        assert!(!m.watched.contains(&orphan));
        assert!(!m.table.slots.contains_key(&(0, 99)));
        assert!(!m.table.members.contains_key(&500));
        // And it goes on diffing from there: VIP 2 goes (service, slot, backend, watch).
        let rep = r.apply(&plan(&[(1, &[(1, 1), (2, 2)])]), &mut m);
        assert_eq!(rep.writes, 4, "{rep:?}");
        assert_eq!(m.services.len(), 1);
    }

    #[test]
    fn a_backend_address_shared_by_two_vips_is_watched_until_both_let_go() {
        let shared = ServiceAddr {
            ip: IpAddr::from([198, 19, 0, 9]),
            port: 80,
            protocol: Protocol::Tcp,
        };
        let mut p = plan(&[(1, &[(1, 1)])]);
        // VIP .9 uses VIP .1's backend address 198.18.1.1:8080.
        let mut second = p.values().next().unwrap().clone();
        second.vip = "v9".into();
        p.insert(shared, second);
        let mut r = Reconciler::new();
        let mut m = Model::default();
        r.apply(&p, &mut m);
        assert_eq!(m.watched.len(), 1);
        p.remove(&shared);
        r.apply(&p, &mut m);
        assert_eq!(m.watched.len(), 1, "still used by VIP .1");
        r.apply(&Plan::new(), &mut m);
        assert!(m.watched.is_empty());
    }

    #[test]
    fn a_fresh_table_interleaves_backends() {
        let want: BTreeMap<u32, u32> = [(1, 3), (2, 3), (3, 1)].into_iter().collect();
        assert_eq!(stable_assign(&[], &want), [1, 2, 3, 1, 2, 1, 2]);
    }

    #[test]
    fn stable_assign_properties() {
        let mut rng = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut table: Vec<u32> = Vec::new();
        for _ in 0..2000 {
            let want: BTreeMap<u32, u32> = (0..(next() % 8) as u32)
                .map(|_| ((next() % 10) as u32, (next() % 5) as u32))
                .filter(|(_, n)| *n > 0)
                .collect();
            let new = stable_assign(&table, &want);
            let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
            for b in &new {
                *counts.entry(*b).or_default() += 1;
            }
            assert_eq!(counts, want);
            table = new;
        }
    }
}
