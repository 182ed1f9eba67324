//! Per-CPU counters (`BPF_MAP_TYPE_PERCPU_ARRAY` of counter structs): read summed over the
//! CPUs, and zeroed when an id is given to something new.

use std::io;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};

use crate::error::L4lbError;
use crate::layout::{BackendStats, RealStats, SvcStats, XVipStats};

/// A struct of counters that add up field by field.
pub trait Counters: aya::Pod + Default {
    fn add(&mut self, other: &Self);
}

macro_rules! counters {
    ($($t:ty { $($f:ident),* })*) => {
        $(impl Counters for $t {
            fn add(&mut self, o: &Self) {
                $(self.$f += o.$f;)*
            }
        })*
    };
}

counters! {
    SvcStats { connects, datagrams, no_backend, fail_open, skipped }
    BackendStats { connects, datagrams }
    XVipStats { packets, bytes, new_flows, lru_misses }
    RealStats { packets, bytes, new_flows }
}

impl Counters for u64 {
    fn add(&mut self, o: &Self) {
        *self += o;
    }
}

pub struct PerCpuCounters<T: Counters> {
    map: PerCpuArray<MapData, T>,
    cpus: usize,
}

impl<T: Counters> PerCpuCounters<T> {
    /// Takes the map `name` out of a loaded object.
    pub(crate) fn take(
        ebpf: &mut aya::Ebpf,
        object: &'static str,
        name: &'static str,
    ) -> Result<Self, L4lbError> {
        let map = crate::loader::take_map(ebpf, object, name)?;
        let cpus =
            aya::util::nr_cpus().map_err(|(_, e)| L4lbError::io("counting possible CPUs")(e))?;
        Ok(PerCpuCounters { map, cpus })
    }

    /// Entry `id`'s counters over all CPUs (zero for an id out of range).
    pub fn sum(&self, id: u32) -> T {
        let mut total = T::default();
        if let Ok(v) = self.map.get(&id, 0) {
            for c in v.iter() {
                total.add(c);
            }
        }
        total
    }

    /// Zeroes entry `id` on every CPU.
    pub fn reset(&mut self, id: u32) -> io::Result<()> {
        let zero =
            PerCpuValues::try_from(vec![T::default(); self.cpus]).map_err(io::Error::other)?;
        self.map.set(id, zero, 0).map_err(super::io_error)
    }
}
