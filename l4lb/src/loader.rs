//! The one way an object gets into the kernel: the layout check, the privilege check, aya's
//! loader with the maps pinned by name in the pin directory (so a restart finds them), and
//! typed access to its programs and maps.

use std::sync::LazyLock;

use aya::maps::Map;
use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};

use crate::error::L4lbError;
use crate::layout::{self, LayoutProblem, Object};
use crate::pin::PinDir;

/// The capabilities the load balancer needs that this process lacks (from /proc/self/status).
pub fn missing_capabilities() -> Vec<&'static str> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Some(eff) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
    else {
        return Vec::new();
    };
    let has = |c: u32| eff & (1u64 << c) != 0;
    let mut out = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        out.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

static LAYOUT: LazyLock<Result<(), Vec<LayoutProblem>>> = LazyLock::new(layout::verify_objects);

/// Checks that the embedded objects match the Rust side and that this process may load them.
pub fn preflight() -> Result<(), L4lbError> {
    if let Err(problems) = &*LAYOUT {
        return Err(L4lbError::Layout {
            problems: problems.clone(),
        });
    }
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(L4lbError::MissingCapabilities { missing });
    }
    Ok(())
}

/// Loads `object` with its maps pinned in `pins`: an earlier agent's pinned maps are reused,
/// contents and all, when their shape is the object's, and migrated or recreated when it is not
/// (`adopt`). The programs are not loaded yet: [`program`] does that.
pub fn load(object: Object, pins: &PinDir) -> Result<Ebpf, L4lbError> {
    preflight()?;
    let adoption = crate::adopt::prepare(object, pins)?;
    let mut loader = EbpfLoader::new();
    loader.map_pin_path(pins.path());
    for (map, entries) in &adoption.sized {
        loader.set_max_entries(map, *entries);
    }
    let loaded = loader
        .load(object.bytes())
        .map_err(|source| L4lbError::Load {
            object: object.name(),
            source: Box::new(source),
        });
    match loaded {
        Ok(ebpf) => {
            adoption.finish()?;
            Ok(ebpf)
        }
        Err(e) => {
            adoption.undo();
            Err(e)
        }
    }
}

/// Loads the program `name` of the object into the kernel (the verifier's log, on refusal, is
/// in the error).
pub fn program<'a>(
    ebpf: &'a mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<&'a mut Program, L4lbError> {
    let prog = ebpf.program_mut(name).ok_or_else(|| L4lbError::Missing {
        object,
        kind: "program",
        name: name.into(),
    })?;
    match prog {
        Program::CgroupSockAddr(p) => p.load(),
        Program::SockOps(p) => p.load(),
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        _ => {
            return Err(L4lbError::ProgramType {
                program: name.into(),
            })
        }
    }
    .map_err(L4lbError::program(name, "loading"))?;
    Ok(prog)
}

/// Takes the map `name` out of the object as a typed map (aya checks key and value sizes).
pub fn take_map<T>(
    ebpf: &mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<T, L4lbError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| L4lbError::Missing {
        object,
        kind: "map",
        name: name.into(),
    })?;
    T::try_from(map).map_err(L4lbError::map(name))
}
