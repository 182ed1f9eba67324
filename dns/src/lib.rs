//! Lodestar's DNS side: zones built from a catalog `Snapshot`, authoritative answers for the
//! `mesos` and `thisdcos.directory` zones, forwarding with a cache, and the servers.

pub mod forward;
