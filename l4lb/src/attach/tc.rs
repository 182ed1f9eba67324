//! tc programs on an interface as tcx links (kernel 6.6), through aya's link API: the same
//! calls as XDP (`attach_with_options` with a `TcxOrder`, `FdLink::pin`, `attach_to_link`).

use std::path::Path;

use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};

use crate::error::L4lbError;

/// Attaches `prog` (loaded) to `interface`'s ingress or egress through the link pinned at
/// `pin`, after any other tcx program there; whether it took over an earlier agent's link.
pub(crate) fn attach(
    prog: &mut SchedClassifier,
    program: &str,
    interface: &str,
    direction: TcAttachType,
    pin: &Path,
) -> Result<bool, L4lbError> {
    super::pinned_link(
        prog,
        program,
        pin,
        |p, link| {
            Ok(p.attach_to_link(SchedClassifierLink::try_from(link)?)
                .map(drop)?)
        },
        |p| {
            let order = TcAttachOptions::TcxOrder(LinkOrder::default());
            let id = p.attach_with_options(interface, direction, order)?;
            p.take_link(id)
        },
    )
}
