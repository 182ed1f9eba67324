//! Pinned maps are checked before the loader adopts them: aya 0.13 takes a pinned map by name
//! whatever its type, key size, value size, capacity or flags, so maps pinned by an agent of
//! another version would be used with the wrong layout or size.
//!
//! Each pinned map of the object is compared with the object's definition. One that matches is
//! adopted as it is. One whose type and key and value sizes match but whose capacity or flags
//! differ is migrated: its pin is moved aside, the loader creates the map the object defines,
//! and its entries are copied into it (as many as fit). One whose type or key or value layout
//! differs cannot be read with the new layout: it is recreated empty, and the log says which
//! entries were lost. Until the new programs are swapped into the pinned links the old ones keep
//! running on the old maps, so what they write in that moment is not copied.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

use aya::maps::MapData;
use aya_obj::generated::bpf_map_type as mt;
use tracing::{info, warn};

use crate::error::L4lbError;
use crate::layout::Object;
use crate::pin::PinDir;
use crate::sys;

/// A map's shape, as the kernel reports it and as the object defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} key {} value {} entries {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// What to do with a pinned map of shape `pinned` that the object defines as `wanted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Adopt,
    /// Same entries, another capacity or flags: copy them into a new map.
    Migrate,
    /// Another layout: a new, empty map.
    Recreate,
}

pub fn verdict(pinned: &Shape, wanted: &Shape) -> Verdict {
    if pinned == wanted {
        Verdict::Adopt
    } else if pinned.map_type == wanted.map_type
        && pinned.key_size == wanted.key_size
        && pinned.value_size == wanted.value_size
    {
        Verdict::Migrate
    } else {
        Verdict::Recreate
    }
}

struct Moved {
    map: &'static str,
    path: PathBuf,
    old: MapData,
    pinned: Shape,
    wanted: Shape,
    verdict: Verdict,
}

/// Maps that earlier versions pinned and this one does not use: `lx_nat_marks` (first-reply
/// marks, replaced by the `lx_first` records).
const RETIRED: [&str; 1] = ["lx_nat_marks"];

/// The pinned maps moved aside before the object is loaded.
pub(crate) struct Adoption {
    moved: Vec<Moved>,
    /// Maps created with another size than the object declares (`layout::created_entries`).
    pub(crate) sized: Vec<(&'static str, u32)>,
}

/// Compares every pinned map of `object` in `pins` with the object's definition, and moves
/// aside (unpins, keeping it open) each that does not match, so that the loader creates it anew.
pub(crate) fn prepare(object: Object, pins: &PinDir) -> Result<Adoption, L4lbError> {
    for map in RETIRED {
        let path = pins.path().join(map);
        if path.exists() {
            info!(pin = %path.display(), "removing the pin of a map this version has no use for");
            std::fs::remove_file(&path)
                .map_err(L4lbError::io(format!("removing {}", path.display())))?;
        }
    }
    let parsed = aya_obj::Object::parse(object.bytes()).map_err(|e| L4lbError::Io {
        action: format!("reading the {} object's map definitions", object.name()),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut moved = Vec::new();
    let mut sized = Vec::new();
    for &map in object.maps() {
        let Some(def) = parsed.maps.get(map) else {
            continue;
        };
        let max_entries = crate::layout::created_entries(map, def.map_type(), def.max_entries());
        if max_entries != def.max_entries() {
            sized.push((map, max_entries));
        }
        let path = pins.path().join(map);
        if !path.exists() {
            continue;
        }
        let wanted = Shape {
            map_type: def.map_type(),
            key_size: def.key_size(),
            value_size: def.value_size(),
            max_entries,
            flags: def.map_flags(),
        };
        let old = match MapData::from_pin(&path) {
            Ok(m) => m,
            Err(e) => {
                // Not a map (or not one this process can open): nothing to adopt.
                warn!(pin = %path.display(), "removing a pin that is not a usable map: {e}");
                std::fs::remove_file(&path)
                    .map_err(L4lbError::io(format!("removing {}", path.display())))?;
                continue;
            }
        };
        let info = old.info().map_err(L4lbError::map(map))?;
        let pinned = Shape {
            map_type: info.map_type().map_err(L4lbError::map(map))? as u32,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        let verdict = verdict(&pinned, &wanted);
        if verdict == Verdict::Adopt {
            continue;
        }
        std::fs::remove_file(&path)
            .map_err(L4lbError::io(format!("moving {} aside", path.display())))?;
        moved.push(Moved {
            map,
            path,
            old,
            pinned,
            wanted,
            verdict,
        });
    }
    Ok(Adoption { moved, sized })
}

impl Adoption {
    /// After the load (which created and pinned the maps moved aside): copies the entries of
    /// each migrated map into its new one, and says what happened to each.
    pub(crate) fn finish(self) -> Result<(), L4lbError> {
        for m in self.moved {
            if m.verdict == Verdict::Recreate {
                warn!(map = m.map, pinned = %m.pinned, object = %m.wanted,
                    "a pinned map had another layout: recreated empty, its entries are lost");
                continue;
            }
            let new = MapData::from_pin(&m.path).map_err(L4lbError::map(m.map))?;
            let (copied, left) =
                copy_entries(m.old.fd().as_fd(), new.fd().as_fd(), &m.pinned, &m.wanted)
                    .map_err(L4lbError::syscall(format!("copying map {}", m.map)))?;
            if left > 0 {
                warn!(map = m.map, pinned = %m.pinned, object = %m.wanted, copied, left,
                    "a pinned map had another capacity: migrated, but not every entry fitted");
            } else {
                info!(map = m.map, pinned = %m.pinned, object = %m.wanted, copied,
                    "a pinned map had another capacity or flags: migrated with its entries");
            }
        }
        Ok(())
    }

    /// The load failed: the maps moved aside go back where they were, as they were.
    pub(crate) fn undo(self) {
        for m in self.moved {
            if let Err(e) = m.old.pin(&m.path) {
                warn!(map = m.map, "cannot pin the earlier map back: {e}");
            }
        }
    }
}

fn per_cpu(map_type: u32) -> bool {
    [
        mt::BPF_MAP_TYPE_PERCPU_ARRAY,
        mt::BPF_MAP_TYPE_PERCPU_HASH,
        mt::BPF_MAP_TYPE_LRU_PERCPU_HASH,
    ]
    .iter()
    .any(|t| *t as u32 == map_type)
}

fn is_array(map_type: u32) -> bool {
    [mt::BPF_MAP_TYPE_ARRAY, mt::BPF_MAP_TYPE_PERCPU_ARRAY]
        .iter()
        .any(|t| *t as u32 == map_type)
}

/// Copies the entries of `old` into `new` (of the same type and entry layout): (copied, left
/// out for want of room).
fn copy_entries(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    pinned: &Shape,
    wanted: &Shape,
) -> Result<(u64, u64), aya::sys::SyscallError> {
    // The kernel hands per-CPU values over as one 8-byte-aligned slot per possible CPU.
    let value_len = if per_cpu(pinned.map_type) {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1));
        (pinned.value_size as usize).div_ceil(8) * 8 * cpus
    } else {
        pinned.value_size as usize
    };
    if is_array(pinned.map_type) {
        return copy_array(old, new, pinned, wanted, value_len);
    }
    let key_len = pinned.key_size as usize;
    let (mut key, mut next) = (vec![0u8; key_len], vec![0u8; key_len]);
    let mut value = vec![0u8; value_len];
    let (mut copied, mut left) = (0u64, 0u64);
    let mut first = true;
    // The old programs may still change the map: a deleted key makes iteration start over, so
    // it is bounded.
    for _ in 0..u64::from(pinned.max_entries) + 1024 {
        if !sys::bpf::map_next_key(old, (!first).then_some(key.as_slice()), &mut next)? {
            break;
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        if !sys::bpf::map_lookup(old, &key, &mut value)? {
            continue;
        }
        match sys::bpf::map_update(new, &key, &value) {
            Ok(()) => copied += 1,
            Err(e) if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOMEM)) => {
                left += 1
            }
            Err(e) => return Err(e),
        }
    }
    Ok((copied, left))
}

/// Arrays: indices below both capacities, in batches; what lies past the new capacity is left.
fn copy_array(
    old: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    pinned: &Shape,
    wanted: &Shape,
    value_len: usize,
) -> Result<(u64, u64), aya::sys::SyscallError> {
    let n = pinned.max_entries.min(wanted.max_entries);
    let batch = ((8 << 20) / value_len.max(1)).clamp(1, 65_536) as u32;
    let mut values = vec![0u8; value_len * batch as usize];
    let mut from = 0u32;
    while from < n {
        let want = batch.min(n - from);
        let got = sys::bpf::array_lookup_batch(old, from, want, &mut values)?.min(want);
        if got == 0 {
            break;
        }
        let keys: Vec<u8> = (from..from + got).flat_map(u32::to_ne_bytes).collect();
        sys::bpf::map_update_batch(new, &keys, &values[..value_len * got as usize], got)?;
        from += got;
    }
    Ok((
        u64::from(from),
        u64::from(pinned.max_entries.saturating_sub(n)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(t: mt, key: u32, value: u32, entries: u32, flags: u32) -> Shape {
        Shape {
            map_type: t as u32,
            key_size: key,
            value_size: value,
            max_entries: entries,
            flags,
        }
    }

    #[test]
    fn only_a_capacity_or_flags_change_keeps_the_entries() {
        let want = shape(mt::BPF_MAP_TYPE_LRU_HASH, 40, 48, 262_144, 2);
        assert_eq!(verdict(&want, &want), Verdict::Adopt);
        let smaller = Shape {
            max_entries: 1024,
            ..want
        };
        assert_eq!(verdict(&smaller, &want), Verdict::Migrate);
        let common_lru = Shape { flags: 0, ..want };
        assert_eq!(verdict(&common_lru, &want), Verdict::Migrate);
        let wider = Shape {
            value_size: 56,
            ..want
        };
        assert_eq!(verdict(&wider, &want), Verdict::Recreate);
        let other_key = Shape {
            key_size: 8,
            ..want
        };
        assert_eq!(verdict(&other_key, &want), Verdict::Recreate);
        let hash = Shape {
            map_type: mt::BPF_MAP_TYPE_HASH as u32,
            ..want
        };
        assert_eq!(verdict(&hash, &want), Verdict::Recreate);
    }
}
