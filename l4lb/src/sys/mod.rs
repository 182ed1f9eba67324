//! The system calls the loader makes besides aya's: `bpf(2)` ones in [`bpf`] (what aya 0.13.1
//! lacks), and the filesystem, interface, lock and clock calls around them.

pub mod bpf;

pub use bpf::TestRun;

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An interface's index in this network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name} in this network namespace"),
        ))
    } else {
        Ok(i)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// Takes an exclusive `flock` on an open file without waiting; false: someone else holds it.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// This process's id as BPF programs see it (`bpf_get_current_pid_tgid`, which reports the
/// initial PID namespace's); `None` in another PID namespace, where `getpid` says otherwise.
pub fn bpf_visible_pid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    // PROC_PID_INIT_INO: the initial PID namespace's inode number, fixed by the kernel.
    const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;
    let ino = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    (ino == INITIAL_PID_NS).then(std::process::id)
}

/// A cgroup v2 directory's id (its inode number on cgroupfs, as BPF reports it).
pub fn cgroup_id(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

/// The filesystem magic of a path (`statfs`).
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    let p = c_path(path)?;
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        if libc::statfs(p.as_ptr(), &mut s) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s.f_type as i64)
    }
}

pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Mounts bpffs at `dir`.
pub fn mount_bpffs(dir: &Path) -> io::Result<()> {
    let target = c_path(dir)?;
    let fs = CString::new("bpf").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe {
        libc::mount(
            fs.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
