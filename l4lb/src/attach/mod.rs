//! The attach points, one module each: cgroup hooks ([`cgroup`]), XDP ([`xdp`]) and tcx
//! ([`tc`]). Each attaches through a BPF link pinned under the pin directory's `links/`, so the
//! programs stay attached while no agent runs, and a new agent swaps its programs into the
//! links it finds (the hook is never empty) instead of attaching anew.

pub mod cgroup;
pub mod tc;
pub mod xdp;

use std::path::Path;

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::ProgramError;
use tracing::warn;

use crate::error::L4lbError;

/// The aya link API's part, shared by XDP and tcx: swap `prog` into the link pinned at `pin`
/// (`take_over`, given the pinned link), or else attach anew (`attach`, which hands back the
/// program's new link) and pin that. Whether a link was taken over.
pub(crate) fn pinned_link<P, L>(
    prog: &mut P,
    program: &str,
    pin: &Path,
    take_over: impl FnOnce(&mut P, FdLink) -> Result<(), Box<dyn std::error::Error>>,
    attach: impl FnOnce(&mut P) -> Result<L, ProgramError>,
) -> Result<bool, L4lbError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    if let Ok(link) = PinnedLink::from_pin(pin) {
        match take_over(prog, link.into()) {
            Ok(()) => return Ok(true),
            // A link of another kind, or one whose interface went (the kernel keeps it,
            // defunct): a new link replaces it.
            Err(e) => warn!(link = %pin.display(), "replacing a pinned link: {e}"),
        }
        let _ = std::fs::remove_file(pin);
    }
    let link = attach(prog).map_err(L4lbError::program(program, "attaching"))?;
    FdLink::try_from(link)
        .map_err(|source| L4lbError::Link {
            program: program.into(),
            source: Box::new(source),
        })?
        .pin(pin)
        .map_err(|source| L4lbError::Pin {
            path: pin.to_path_buf(),
            source: Box::new(source),
        })?;
    Ok(false)
}
