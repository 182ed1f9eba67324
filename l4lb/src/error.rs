//! The load balancer's errors: one enum, each variant with what was being done and the error
//! underneath as its source, said so an operator knows what to fix.

use std::io;
use std::path::PathBuf;

use aya::sys::SyscallError;

/// What to do when the kernel refused for want of privilege.
const NEEDS_ROOT: &str =
    ": the VIP load balancer needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)";

/// Why the load balancer could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum L4lbError {
    #[error("neither the socket load balancer nor any XDP interface is configured")]
    NothingToRun,
    #[error("the VIP load balancer needs root: this process lacks {}", .missing.join(" and "))]
    MissingCapabilities { missing: Vec<&'static str> },
    #[error(
        "no cgroup v2 hierarchy is mounted (nothing of type cgroup2 in /proc/mounts); \
         the socket load balancer attaches there"
    )]
    NoCgroup2,
    #[error("{} is not a cgroup v2 directory", .path.display())]
    NotCgroup2 { path: PathBuf },
    #[error(
        "{} is not on a BPF filesystem and mounting one there failed ({source}); \
         mount it with: mount -t bpf bpf {}", .path.display(), .path.display()
    )]
    NoBpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another lodestar agent is running on this node: it holds {} (stop it first)", .path.display())]
    Busy { path: PathBuf },
    #[error("l4lb.xdp: interface {interface}: {source}")]
    NoInterface {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("{action}: {source}{}", io_hint(.source))]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("{action}: {source}: {}{}", .source.io_error, hint(.source))]
    Syscall {
        action: String,
        #[source]
        source: SyscallError,
    },
    #[error("loading the {object} object: {source}{}", hint(.source))]
    Load {
        object: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// Loading or attaching a program; a refused load carries the verifier's log.
    #[error("program {program}: {action}: {source}{}", hint(.source))]
    Program {
        program: String,
        action: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program {program}: its link: {source}{}", hint(.source))]
    Link {
        program: String,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("link {}: {source}{}", .path.display(), hint(.source))]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error("map {map}: {source}{}", hint(.source))]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("the {object} object has no {kind} {name}")]
    Missing {
        object: &'static str,
        kind: &'static str,
        name: String,
    },
    #[error("program {program} is not of the type its hook needs")]
    ProgramType { program: String },
    #[error("the compiled objects do not match the Rust side: {}", join(.problems))]
    Layout {
        problems: Vec<crate::layout::LayoutProblem>,
    },
}

impl L4lbError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> L4lbError {
        let action = action.into();
        move |source| L4lbError::Io { action, source }
    }

    pub(crate) fn syscall(action: impl Into<String>) -> impl FnOnce(SyscallError) -> L4lbError {
        let action = action.into();
        move |source| L4lbError::Syscall { action, source }
    }

    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> L4lbError {
        move |source| L4lbError::Map {
            map,
            source: Box::new(source),
        }
    }

    /// Loading or attaching `program` failed.
    pub(crate) fn program(
        program: &str,
        action: &'static str,
    ) -> impl FnOnce(aya::programs::ProgramError) -> L4lbError {
        let program = program.to_string();
        move |source| L4lbError::Program {
            program,
            action,
            source: Box::new(source),
        }
    }

    /// Whether the kernel refused for want of privilege: EPERM under a `bpf(2)` error (EACCES
    /// there is the verifier refusing a program), EPERM or EACCES under a file's.
    pub fn needs_root(&self) -> bool {
        match self {
            L4lbError::MissingCapabilities { .. } => true,
            L4lbError::Io { source, .. } => !io_hint(source).is_empty(),
            e => std::error::Error::source(e).is_some_and(|s| !hint(s).is_empty()),
        }
    }
}

/// The first `io::Error` under an error (itself included).
fn io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

fn hint(e: &(dyn std::error::Error + 'static)) -> &'static str {
    match io_error(e).and_then(io::Error::raw_os_error) {
        Some(libc::EPERM) => NEEDS_ROOT,
        _ => "",
    }
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => NEEDS_ROOT,
        _ => "",
    }
}

fn join(problems: &[crate::layout::LayoutProblem]) -> String {
    let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    all.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(errno: i32) -> L4lbError {
        L4lbError::syscall("attaching ls_connect4")(SyscallError {
            call: "BPF_LINK_CREATE",
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn the_error_is_small_enough_to_return() {
        assert!(std::mem::size_of::<L4lbError>() <= 64);
    }

    #[test]
    fn eperm_from_bpf_says_root_is_needed_and_the_verifiers_eacces_does_not() {
        let e = syscall(libc::EPERM);
        assert!(e.needs_root());
        assert!(e.to_string().ends_with(NEEDS_ROOT), "{e}");
        assert!(e
            .to_string()
            .starts_with("attaching ls_connect4: `BPF_LINK_CREATE` failed"));
        let source = std::error::Error::source(&e).expect("the syscall error is kept");
        assert!(source.downcast_ref::<SyscallError>().is_some());
        let e = syscall(libc::EACCES);
        assert!(!e.needs_root());
        assert!(!e.to_string().contains("needs root"), "{e}");
        // A file the process may not open: EACCES is a privilege matter there.
        let e = L4lbError::io("opening /sys/fs/bpf/lodestar")(io::Error::from_raw_os_error(
            libc::EACCES,
        ));
        assert!(e.needs_root());
    }
}
