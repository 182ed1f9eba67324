//! The few `bpf(2)` commands aya 0.13 does not expose for cgroup links: create a link (so it
//! can be pinned), replace a pinned link's program in place, and read a link's cgroup.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `enum bpf_attach_type` values of the hooks Lodestar uses.
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
pub const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
pub const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
pub const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
pub const BPF_CGROUP_UDP6_RECVMSG: u32 = 20;
pub const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
pub const BPF_CGROUP_INET6_GETPEERNAME: u32 = 30;
pub const BPF_CGROUP_SOCK_OPS: u32 = 3;
pub const BPF_XDP: u32 = 37;
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone)]
pub struct TestRun {
    pub retval: u32,
    pub data: Vec<u8>,
    /// Mean run time per repetition, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs a loaded program on a packet `repeat` times (`BPF_PROG_TEST_RUN`).
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; data.len() + 512];
    let mut attr = [0u64; 16];
    attr[0] = pack32(prog.as_raw_fd() as u32, 0);
    attr[1] = pack32(data.len() as u32, out.len() as u32);
    attr[2] = data.as_ptr() as u64;
    attr[3] = out.as_mut_ptr() as u64;
    attr[4] = pack32(repeat, 0);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate((attr[1] >> 32) as usize);
    Ok(TestRun {
        retval: (attr[0] >> 32) as u32,
        data: out,
        duration_ns: (attr[4] >> 32) as u32,
    })
}

/// `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): `repeat` frames
/// made from `data`, as if received on `ifindex` (of the caller's network namespace), in
/// batches of `batch`; what the program returns is carried out (XDP_TX leaves by `ifindex`,
/// XDP_REDIRECT by its target). Returns the kernel's time per frame in ns.
pub fn prog_test_run_live(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ifindex: u32,
    repeat: u32,
    batch: u32,
) -> io::Result<u32> {
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
    let ctx: [u32; 6] = [0, data.len() as u32, 0, ifindex, 0, 0];
    let mut attr = [0u64; 16];
    attr[0] = pack32(prog.as_raw_fd() as u32, 0);
    attr[1] = pack32(data.len() as u32, 0);
    attr[2] = data.as_ptr() as u64;
    attr[4] = pack32(repeat, 0);
    attr[5] = pack32(std::mem::size_of_val(&ctx) as u32, 0);
    attr[6] = ctx.as_ptr() as u64;
    attr[8] = pack32(BPF_F_TEST_XDP_LIVE_FRAMES, 0);
    attr[9] = pack32(batch, 0);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok((attr[4] >> 32) as u32)
}

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

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed, 128-byte union bpf_attr as the kernel expects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn pack32(a: u32, b: u32) -> u64 {
    u64::from(a) | u64::from(b) << 32
}

fn c_path(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
}

/// `BPF_LINK_CREATE` for a cgroup hook.
pub fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    link_create_raw(prog, cgroup.as_raw_fd() as u32, attach_type)
}

/// `BPF_LINK_CREATE` on an interface (XDP, tcx): `target` is the ifindex.
pub fn link_create_raw(prog: BorrowedFd<'_>, target: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    attr[0] = pack32(prog.as_raw_fd() as u32, target);
    attr[1] = pack32(attach_type, 0);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_PIN`.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    let mut attr = [0u64; 16];
    attr[0] = p.as_ptr() as u64;
    attr[1] = pack32(fd.as_raw_fd() as u32, 0);
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// `BPF_OBJ_GET`: opens a pinned object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut attr = [0u64; 16];
    attr[0] = p.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: as in `link_create`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_LINK_UPDATE`: the link runs `prog` from now on, atomically.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = [0u64; 16];
    attr[0] = pack32(link.as_raw_fd() as u32, prog.as_raw_fd() as u32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// A cgroup link's (link id, program id, cgroup id, attach type).
pub fn cgroup_link_info(link: BorrowedFd<'_>) -> io::Result<(u32, u32, u64, u32)> {
    let mut info = [0u64; 16];
    let mut attr = [0u64; 16];
    attr[0] = pack32(link.as_raw_fd() as u32, std::mem::size_of_val(&info) as u32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((
        (info[0] >> 32) as u32,
        info[1] as u32,
        info[2],
        info[3] as u32,
    ))
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
