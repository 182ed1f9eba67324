//! The pin directory on bpffs (default `/sys/fs/bpf/lodestar`): the maps of both paths by
//! name (`ls_*`, `lx_*`), and `links/`, the BPF links that keep programs attached while no
//! agent runs (`links/ls_connect4`, `links/lx_xdp@eth0`, ...).
//!
//! One lock guards it all: an exclusive `flock` on the directory, held by whoever loads or
//! removes anything there, so a second agent on the node (or a `detach` under a running
//! agent) is refused.

use std::fs::File;
use std::path::{Path, PathBuf};

use tracing::info;

use crate::error::L4lbError;
use crate::sys;

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/lodestar";

/// The pin directory, ready for pins, and its lock when this side holds it.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
    _lock: Option<File>,
}

impl PinDir {
    /// Makes the directory (on bpffs, mounting bpffs at its parent if nothing is there) and
    /// `links/`, and takes the lock.
    pub fn lock(path: &Path) -> Result<PinDir, L4lbError> {
        let mut dir = PinDir::prepare(path)?;
        dir._lock = Some(take_lock(path)?);
        Ok(dir)
    }

    /// The directory without its lock, for a caller that holds it already.
    pub fn prepare(path: &Path) -> Result<PinDir, L4lbError> {
        ensure_bpffs(path)?;
        let links = path.join("links");
        std::fs::create_dir_all(&links)
            .map_err(L4lbError::io(format!("creating {}", links.display())))?;
        Ok(PinDir {
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the link of `name` (a program, or `program@interface`) is pinned.
    pub fn link(&self, name: &str) -> PathBuf {
        self.path.join("links").join(name)
    }

    /// Unpins (which detaches) every link whose name starts with `prefix`, except `keep`;
    /// the ones that went.
    pub fn unpin_links(&self, prefix: &str, keep: &[PathBuf]) -> Vec<PathBuf> {
        std::fs::read_dir(self.path.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                    && !keep.contains(p)
                    && unpin_link(p).is_ok()
            })
            .collect()
    }
}

/// Detaches the link pinned at `path` (at once, see `sys::bpf::link_detach`) and unpins it.
fn unpin_link(path: &Path) -> std::io::Result<()> {
    // A pin that is not a link (or a kernel without BPF_LINK_DETACH) still goes: the kernel
    // then detaches when it lets go of the last reference.
    if let Ok(link) = sys::bpf::obj_get(path) {
        let _ = sys::bpf::link_detach(std::os::fd::AsFd::as_fd(&link));
    }
    std::fs::remove_file(path)
}

/// Makes sure the pin directory is on bpffs, mounting bpffs at its parent if nothing is there.
fn ensure_bpffs(pin: &Path) -> Result<(), L4lbError> {
    let parent = pin.parent().unwrap_or(Path::new("/"));
    if sys::fs_magic(parent).ok() == Some(sys::BPF_FS_MAGIC) {
        return Ok(());
    }
    std::fs::create_dir_all(parent)
        .map_err(L4lbError::io(format!("creating {}", parent.display())))?;
    if sys::fs_magic(parent).ok() == Some(sys::BPF_FS_MAGIC) {
        return Ok(());
    }
    sys::mount_bpffs(parent).map_err(|source| L4lbError::NoBpffs {
        path: parent.to_path_buf(),
        source,
    })?;
    info!(path = %parent.display(), "mounted bpffs");
    Ok(())
}

/// Takes the directory's lock, or says who holds it.
fn take_lock(pin: &Path) -> Result<File, L4lbError> {
    let dir = File::open(pin).map_err(L4lbError::io(format!("opening {}", pin.display())))?;
    match sys::try_lock_exclusive(&dir) {
        Ok(true) => Ok(dir),
        Ok(false) => Err(L4lbError::Busy {
            path: pin.to_path_buf(),
        }),
        Err(e) => Err(L4lbError::io(format!("locking {}", pin.display()))(e)),
    }
}

/// What `detach` removed.
#[derive(Debug, Default)]
pub struct Detached {
    pub links: usize,
    pub maps: usize,
}

/// Removes every trace of the load balancer: unpins the links (which detaches the programs)
/// and the maps, and removes the pin directory. Refused while an agent runs.
/// Detaches every link pinned under `pin` and keeps the maps (a later agent adopts their
/// flows): for an agent that does not run the load balancer (off, or failed to start), so that
/// an earlier agent's programs do not go on steering from maps that nobody updates. Refused
/// while another agent holds the directory. How many links went.
pub fn detach_links(pin: &Path) -> Result<usize, L4lbError> {
    if !pin.join("links").exists() {
        return Ok(0);
    }
    let _lock = take_lock(pin)?;
    let mut n = 0;
    for e in std::fs::read_dir(pin.join("links"))
        .map_err(L4lbError::io(format!("reading {}", pin.display())))?
        .flatten()
    {
        unpin_link(&e.path()).map_err(L4lbError::io(format!("removing {}", e.path().display())))?;
        n += 1;
    }
    Ok(n)
}

pub fn detach(pin: &Path) -> Result<Detached, L4lbError> {
    let mut out = Detached::default();
    if !pin.exists() {
        return Ok(out);
    }
    let _lock = take_lock(pin)?;
    let links = pin.join("links");
    if let Ok(entries) = std::fs::read_dir(&links) {
        for e in entries.flatten() {
            unpin_link(&e.path())
                .map_err(L4lbError::io(format!("removing {}", e.path().display())))?;
            out.links += 1;
        }
        std::fs::remove_dir(&links)
            .map_err(L4lbError::io(format!("removing {}", links.display())))?;
    }
    for e in std::fs::read_dir(pin)
        .map_err(L4lbError::io(format!("reading {}", pin.display())))?
        .flatten()
    {
        std::fs::remove_file(e.path())
            .map_err(L4lbError::io(format!("removing {}", e.path().display())))?;
        out.maps += 1;
    }
    std::fs::remove_dir(pin).map_err(L4lbError::io(format!("removing {}", pin.display())))?;
    Ok(out)
}
