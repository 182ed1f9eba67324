//! XDP on an interface, through aya's link API: `Xdp::attach_to_if_index` makes a BPF link,
//! `FdLink::pin` keeps it, `PinnedLink::from_pin` and `Xdp::attach_to_link` take it over.

use std::path::Path;

use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpFlags};

use crate::error::L4lbError;

/// Attaches `prog` (loaded) to the interface `ifindex` through the link pinned at `pin`;
/// whether it took over an earlier agent's link.
pub(crate) fn attach(
    prog: &mut Xdp,
    program: &str,
    ifindex: u32,
    pin: &Path,
) -> Result<bool, L4lbError> {
    super::pinned_link(
        prog,
        program,
        pin,
        |p, link| Ok(p.attach_to_link(XdpLink::try_from(link)?).map(drop)?),
        |p| {
            let id = p.attach_to_if_index(ifindex, XdpFlags::default())?;
            p.take_link(id)
        },
    )
}
