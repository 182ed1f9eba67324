//! Lodestar's DNS side: zones built from a catalog `Snapshot`, authoritative answers for the
//! `mesos` and `thisdcos.directory` zones, forwarding with a cache, and the servers.

pub mod acl;
pub mod config;
pub mod forward;
pub mod http;
pub mod names;
pub mod records;
pub mod server;
pub mod stats;
pub mod wire;
pub mod zone;
