//! tc programs on an interface as tcx links (kernel 6.6), through aya's link API: the same
//! calls as XDP (`attach_with_options` with a `TcxOrder`, `FdLink::pin`, `attach_to_link`).

use std::path::Path;

use aya::programs::links::FdLink;
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};

use crate::error::L4lbError;

/// Attaches `prog` (loaded) to `interface`'s ingress or egress through the link pinned at
/// `pin`, after any other tcx program there; whether it took over an earlier agent's link.
pub(crate) fn attach(
    prog: &mut SchedClassifier,
    program: &'static str,
    interface: &str,
    direction: TcAttachType,
    pin: &Path,
) -> Result<bool, L4lbError> {
    let failed = |source| L4lbError::Program {
        program: program.into(),
        action: "attaching",
        source,
    };
    let prog = std::cell::RefCell::new(prog);
    super::pinned_link(
        pin,
        |link| {
            let link = SchedClassifierLink::try_from(link)?;
            prog.borrow_mut().attach_to_link(link)?;
            Ok(())
        },
        || {
            let mut prog = prog.borrow_mut();
            let id = prog
                .attach_with_options(
                    interface,
                    direction,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(failed)?;
            let link = prog.take_link(id).map_err(failed)?;
            FdLink::try_from(link).map_err(|source| L4lbError::Link {
                program: program.into(),
                source,
            })
        },
    )
}
