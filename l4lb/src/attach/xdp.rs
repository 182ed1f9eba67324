//! XDP on an interface, through aya's link API: `Xdp::attach_to_if_index` makes a BPF link,
//! `FdLink::pin` keeps it, `PinnedLink::from_pin` and `Xdp::attach_to_link` take it over.

use std::path::Path;

use aya::programs::links::FdLink;
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpFlags};

use crate::error::L4lbError;

/// Attaches `prog` (loaded) to the interface `ifindex` through the link pinned at `pin`;
/// whether it took over an earlier agent's link.
pub(crate) fn attach(
    prog: &mut Xdp,
    program: &'static str,
    ifindex: u32,
    pin: &Path,
) -> Result<bool, L4lbError> {
    let failed = |source| L4lbError::Program {
        program: program.into(),
        action: "attaching",
        source,
    };
    // Two uses of `prog`, one at a time: the take-over, or the new link.
    let prog = std::cell::RefCell::new(prog);
    super::pinned_link(
        pin,
        |link| {
            let link = XdpLink::try_from(link)?;
            prog.borrow_mut().attach_to_link(link)?;
            Ok(())
        },
        || {
            let mut prog = prog.borrow_mut();
            let id = prog
                .attach_to_if_index(ifindex, XdpFlags::default())
                .map_err(failed)?;
            let link = prog.take_link(id).map_err(failed)?;
            FdLink::try_from(link).map_err(|source| L4lbError::Link {
                program: program.into(),
                source,
            })
        },
    )
}
