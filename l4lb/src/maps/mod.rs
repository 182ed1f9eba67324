//! Wrappers over aya's typed maps, one module each (aya's typed maps already refuse a map
//! whose key or value size differs from the Rust type's when they are constructed).

pub mod percpu;

use std::io;

use aya::maps::MapError;

/// A map error as the reconcilers' `io::Result` (they count and retry, whatever it is).
pub(crate) fn io_error(e: MapError) -> io::Error {
    match e {
        MapError::SyscallError(s) => s.io_error,
        e => io::Error::other(e),
    }
}

/// A delete of something already gone is a success.
pub(crate) fn gone_ok(r: Result<(), MapError>) -> io::Result<()> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        r => r.map_err(io_error),
    }
}
