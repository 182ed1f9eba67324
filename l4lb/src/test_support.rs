//! What the unit tests of both reconcilers share: a plan builder, and a model of a slot table
//! over an array of members (`ls_slots` over `ls_backends`, `lx_ring` over `lx_reals`) that
//! checks the write order the BPF side relies on.

use std::collections::HashMap;
use std::net::IpAddr;

use lodestar_control::model::Protocol;

use crate::plan::{BackendAddr, Locality, Plan, PlannedBackend, PlannedService, ServiceAddr};

/// VIPs 198.19.0.`v`:80/tcp, each with backends 198.18.`v`.`b`:8080 of `slots` slots (and that
/// weight), on node 198.18.`v`.`b`.
pub(crate) fn plan(vips: &[(u8, &[(u8, u32)])]) -> Plan {
    vips.iter()
        .map(|(v, backends)| {
            let backend = |(b, slots): &(u8, u32)| {
                let ip = IpAddr::from([198, 18, *v, *b]);
                let planned = PlannedBackend {
                    task: format!("t{b}"),
                    weight: *slots,
                    healthy: true,
                    active_down: false,
                    local: false,
                    node: ip,
                    slots: *slots,
                };
                (BackendAddr { ip, port: 8080 }, planned)
            };
            let svc = PlannedService {
                vip: format!("v{v}"),
                fail_open: false,
                locality: Locality::Any,
                backends: backends.iter().map(backend).collect(),
            };
            let addr = ServiceAddr {
                ip: IpAddr::from([198, 19, 0, *v]),
                port: 80,
                protocol: Protocol::Tcp,
            };
            (addr, svc)
        })
        .collect()
}

/// Slot (owner id, slot) -> member id, over members by id.
#[derive(Debug, PartialEq)]
pub(crate) struct SlotTable<M> {
    pub slots: HashMap<(u32, u32), u32>,
    pub members: HashMap<u32, M>,
}

impl<M> Default for SlotTable<M> {
    fn default() -> Self {
        SlotTable {
            slots: HashMap::new(),
            members: HashMap::new(),
        }
    }
}

impl<M: Copy> SlotTable<M> {
    pub fn put_slot(&mut self, owner: u32, slot: u32, member: u32) {
        assert!(
            self.members.contains_key(&member),
            "slot points at member {member}, not written yet"
        );
        self.slots.insert((owner, slot), member);
    }

    pub fn delete_slot(&mut self, owner: u32, slot: u32) {
        self.slots.remove(&(owner, slot));
    }

    /// Writes a member; an invalid one is a cleared entry.
    pub fn put_member(&mut self, id: u32, member: &M, valid: bool) {
        if valid {
            self.members.insert(id, *member);
        } else {
            assert!(
                !self.slots.values().any(|m| *m == id),
                "member {id} cleared while a slot points at it"
            );
            self.members.remove(&id);
        }
    }

    /// The slots as a dump has them, with keys made by `key(owner, slot)`.
    pub fn slot_entries<K>(&self, key: impl Fn(u32, u32) -> K) -> Vec<(K, u32)> {
        self.slots
            .iter()
            .map(|((o, s), m)| (key(*o, *s), *m))
            .collect()
    }

    pub fn member_entries(&self) -> Vec<(u32, M)> {
        self.members.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
