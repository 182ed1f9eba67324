//! Every `bpf(2)` call Lodestar makes itself, over the kernel's `union bpf_attr` (aya's
//! generated bindings). Everything else goes through aya; these are what aya 0.13.1 lacks:
//!
//! - cgroup links that can be pinned and swapped: its `CgroupSockAddr::attach` and
//!   `SockOps::attach` create a BPF link, but give no way to turn it into an `FdLink` (so no
//!   `pin`), and have no `attach_to_link` (no `BPF_LINK_UPDATE`); a `PinnedLink` hides its fd.
//!   So a cgroup link is created, pinned, opened, updated and read here.
//! - `BPF_PROG_TEST_RUN` (the packet fixtures and the benchmarks), which aya has no call for.
//! - `BPF_LINK_DETACH`, so that `lodestar l4lb detach` has detached every program when it
//!   returns (aya's links only close their fd).
//! - Map entries as bytes of a size known only at run time (`BPF_MAP_GET_NEXT_KEY`,
//!   `BPF_MAP_LOOKUP_ELEM`, `BPF_MAP_UPDATE_ELEM`), for copying a pinned map of another
//!   capacity into a new one (aya's maps are typed at compile time); and the batch calls
//!   (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_UPDATE_BATCH`), which aya 0.13.1 lacks, for the Maglev
//!   array's tables of up to 65,537 slots.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use aya::sys::SyscallError;
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info};

/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const TEST_XDP_LIVE_FRAMES: u32 = aya_obj::generated::BPF_F_TEST_XDP_LIVE_FRAMES;

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr, call: &'static str) -> Result<i64, SyscallError> {
    // SAFETY: `attr` is a whole `union bpf_attr`, zeroed where the command does not use it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if r < 0 {
        Err(SyscallError {
            call,
            io_error: io::Error::last_os_error(),
        })
    } else {
        Ok(r)
    }
}

fn zeroed() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integers; all zero is what the kernel wants for
    // every field a command does not set.
    unsafe { std::mem::zeroed() }
}

fn new_fd(fd: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn c_path(path: &Path, call: &'static str) -> Result<CString, SyscallError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SyscallError {
        call,
        io_error: io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"),
    })
}

/// `BPF_LINK_CREATE` of a program on a cgroup hook.
pub fn cgroup_link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: bpf_attach_type,
) -> Result<OwnedFd, SyscallError> {
    let mut attr = zeroed();
    // Writing a union's integer fields is safe; reading them back (below) is not.
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_fd = cgroup.as_raw_fd() as u32;
    attr.link_create.attach_type = attach_type as u32;
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr, "BPF_LINK_CREATE").map(new_fd)
}

/// `BPF_OBJ_PIN`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), SyscallError> {
    let p = c_path(path, "BPF_OBJ_PIN")?;
    let mut attr = zeroed();
    attr.__bindgen_anon_4.pathname = p.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr, "BPF_OBJ_PIN").map(drop)
}

/// `BPF_OBJ_GET`: opens a pinned object.
pub fn obj_get(path: &Path) -> Result<OwnedFd, SyscallError> {
    let p = c_path(path, "BPF_OBJ_GET")?;
    let mut attr = zeroed();
    attr.__bindgen_anon_4.pathname = p.as_ptr() as u64;
    bpf(bpf_cmd::BPF_OBJ_GET, &mut attr, "BPF_OBJ_GET").map(new_fd)
}

/// `BPF_LINK_DETACH`: takes the link's program off its hook now, whoever still holds the
/// link. Unpinning alone leaves that to the kernel's deferred release of the last reference,
/// so programs would stay attached for a moment after `detach` said they were gone.
pub fn link_detach(link: BorrowedFd<'_>) -> Result<(), SyscallError> {
    let mut attr = zeroed();
    attr.link_detach.link_fd = link.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr, "BPF_LINK_DETACH").map(drop)
}

/// `BPF_LINK_UPDATE`: the link runs `prog` from now on, atomically.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), SyscallError> {
    let mut attr = zeroed();
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = prog.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr, "BPF_LINK_UPDATE").map(drop)
}

/// A cgroup link's cgroup id and attach type (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn cgroup_link_target(link: BorrowedFd<'_>) -> Result<(u64, u32), SyscallError> {
    // SAFETY: plain integers.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed();
    attr.info.bpf_fd = link.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of_val(&info) as u32;
    attr.info.info = &mut info as *mut bpf_link_info as u64;
    bpf(
        bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
        &mut attr,
        "BPF_OBJ_GET_INFO_BY_FD",
    )?;
    // SAFETY: the kernel filled the cgroup member for a cgroup link (and zeroes otherwise).
    let cg = unsafe { info.__bindgen_anon_1.cgroup };
    Ok((cg.cgroup_id, cg.attach_type))
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone)]
pub struct TestRun {
    pub retval: u32,
    pub data: Vec<u8>,
    /// Mean run time per repetition, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs a loaded program on a packet `repeat` times (`BPF_PROG_TEST_RUN`).
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
) -> Result<TestRun, SyscallError> {
    let mut out = vec![0u8; data.len() + 512];
    let mut attr = zeroed();
    attr.test.prog_fd = prog.as_raw_fd() as u32;
    attr.test.data_size_in = data.len() as u32;
    attr.test.data_size_out = out.len() as u32;
    attr.test.data_in = data.as_ptr() as u64;
    attr.test.data_out = out.as_mut_ptr() as u64;
    attr.test.repeat = repeat;
    bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr, "BPF_PROG_TEST_RUN")?;
    // SAFETY: the kernel wrote the results into the same struct.
    let t = unsafe { attr.test };
    out.truncate(t.data_size_out as usize);
    Ok(TestRun {
        retval: t.retval,
        data: out,
        duration_ns: t.duration,
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
) -> Result<u32, SyscallError> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
    let ctx: [u32; 6] = [0, data.len() as u32, 0, ifindex, 0, 0];
    let mut attr = zeroed();
    attr.test.prog_fd = prog.as_raw_fd() as u32;
    attr.test.data_size_in = data.len() as u32;
    attr.test.data_in = data.as_ptr() as u64;
    attr.test.repeat = repeat;
    attr.test.ctx_size_in = std::mem::size_of_val(&ctx) as u32;
    attr.test.ctx_in = ctx.as_ptr() as u64;
    attr.test.flags = TEST_XDP_LIVE_FRAMES;
    attr.test.batch_size = batch;
    bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr, "BPF_PROG_TEST_RUN")?;
    // SAFETY: as in `prog_test_run`.
    Ok(unsafe { attr.test.duration })
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first with `None`) into `next`; false when
/// there is none.
pub fn map_next_key(
    map: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> Result<bool, SyscallError> {
    let mut attr = zeroed();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.map_or(0, |k| k.as_ptr() as u64);
    attr.__bindgen_anon_2.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
    absent_ok(bpf(
        bpf_cmd::BPF_MAP_GET_NEXT_KEY,
        &mut attr,
        "BPF_MAP_GET_NEXT_KEY",
    ))
}

/// `BPF_MAP_LOOKUP_ELEM` into `value` (for a per-CPU map, every possible CPU's value, each
/// rounded up to 8 bytes); false when the key is absent.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<bool, SyscallError> {
    let mut attr = zeroed();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
    absent_ok(bpf(
        bpf_cmd::BPF_MAP_LOOKUP_ELEM,
        &mut attr,
        "BPF_MAP_LOOKUP_ELEM",
    ))
}

/// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY`.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<(), SyscallError> {
    let mut attr = zeroed();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_ptr() as u64;
    bpf(
        bpf_cmd::BPF_MAP_UPDATE_ELEM,
        &mut attr,
        "BPF_MAP_UPDATE_ELEM",
    )
    .map(drop)
}

/// `BPF_MAP_LOOKUP_BATCH` of an array: up to `count` entries from index `from` on, their values
/// into `values` (`count` values of the map's value size); how many were read.
pub fn array_lookup_batch(
    map: BorrowedFd<'_>,
    from: u32,
    count: u32,
    values: &mut [u8],
) -> Result<u32, SyscallError> {
    // The batch goes on after `in_batch`: the entry before the first one wanted.
    let prev = from.wrapping_sub(1);
    let mut out = 0u32;
    let mut keys = vec![0u32; count as usize];
    let mut attr = zeroed();
    attr.batch.map_fd = map.as_raw_fd() as u32;
    attr.batch.in_batch = if from == 0 {
        0
    } else {
        &prev as *const u32 as u64
    };
    attr.batch.out_batch = &mut out as *mut u32 as u64;
    attr.batch.keys = keys.as_mut_ptr() as u64;
    attr.batch.values = values.as_mut_ptr() as u64;
    attr.batch.count = count;
    match bpf(
        bpf_cmd::BPF_MAP_LOOKUP_BATCH,
        &mut attr,
        "BPF_MAP_LOOKUP_BATCH",
    ) {
        Ok(_) => {}
        // The end of the array: what was read is in count.
        Err(e) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: the kernel wrote the count back into the same struct.
    Ok(unsafe { attr.batch.count })
}

/// `BPF_MAP_UPDATE_BATCH`: `keys.len()` entries at once (`values`: as many of the map's values).
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), SyscallError> {
    let mut attr = zeroed();
    attr.batch.map_fd = map.as_raw_fd() as u32;
    attr.batch.keys = keys.as_ptr() as u64;
    attr.batch.values = values.as_ptr() as u64;
    attr.batch.count = count;
    bpf(
        bpf_cmd::BPF_MAP_UPDATE_BATCH,
        &mut attr,
        "BPF_MAP_UPDATE_BATCH",
    )
    .map(drop)
}

/// ENOENT (no such key, no next key) as `false`.
fn absent_ok(r: Result<i64, SyscallError>) -> Result<bool, SyscallError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
