//! The attach points, one module each: cgroup hooks ([`cgroup`]), XDP ([`xdp`]) and tcx
//! ([`tc`]). Each attaches through a BPF link pinned under the pin directory's `links/`, so the
//! programs stay attached while no agent runs, and a new agent swaps its programs into the
//! links it finds (the hook is never empty) instead of attaching anew.

pub mod cgroup;
pub mod tc;
pub mod xdp;

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use tracing::warn;

use crate::error::L4lbError;

/// The aya link API's part, shared by XDP and tcx: swap the program into the link pinned at
/// `pin` (`take_over`, given the pinned link), or else attach anew (`attach`, which hands back
/// the new link) and pin that. Whether a link was taken over.
pub(crate) fn pinned_link(
    pin: &Path,
    take_over: impl FnOnce(FdLink) -> Result<(), Box<dyn std::error::Error>>,
    attach: impl FnOnce() -> Result<FdLink, L4lbError>,
) -> Result<bool, L4lbError> {
    if let Ok(link) = PinnedLink::from_pin(pin) {
        match take_over(link.into()) {
            Ok(()) => return Ok(true),
            // A link of another kind, or one whose interface went (the kernel keeps it,
            // defunct): a new link replaces it.
            Err(e) => warn!(link = %pin.display(), "replacing a pinned link: {e}"),
        }
        let _ = std::fs::remove_file(pin);
    }
    attach()?
        .pin(pin)
        .map_err(|source| L4lbError::Pin {
            path: pin.to_path_buf(),
            source,
        })
        .map(|_| false)
}
