//! Cgroup hooks (socket address hooks and sockops) through BPF links made by hand
//! (`sys::bpf`): aya 0.13.1 creates cgroup links but can neither pin them nor update them.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use aya_obj::generated::bpf_attach_type;
use tracing::warn;

use crate::error::L4lbError;
use crate::sys::bpf;

/// Attaches `prog` to `cgroup`'s hook `attach_type` through the link pinned at `pin`. An
/// earlier agent's link on the same cgroup and hook gets the program swapped in place (the
/// hook never goes missing); anything else pinned there is replaced. Whether it took over.
pub(crate) fn attach(
    prog: BorrowedFd<'_>,
    program: &'static str,
    cgroup: BorrowedFd<'_>,
    cgroup_id: u64,
    attach_type: bpf_attach_type,
    pin: &Path,
) -> Result<bool, L4lbError> {
    if let Ok(link) = bpf::obj_get(pin) {
        let same = bpf::cgroup_link_target(link.as_fd())
            .is_ok_and(|(cg, at)| cg == cgroup_id && at == attach_type as u32);
        if same && bpf::link_update(link.as_fd(), prog).is_ok() {
            return Ok(true);
        }
        warn!(link = %pin.display(), "replacing a pinned link for another cgroup or hook");
        let _ = std::fs::remove_file(pin);
    }
    let link = bpf::cgroup_link_create(prog, cgroup, attach_type)
        .map_err(L4lbError::syscall(format!("attaching {program}")))?;
    bpf::obj_pin(link.as_fd(), pin)
        .map_err(L4lbError::syscall(format!("pinning {}", pin.display())))?;
    Ok(false)
}
