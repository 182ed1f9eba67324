//! Lodestar's DNS side: zones built from a catalog `Snapshot`, authoritative answers for the
//! `mesos` and `thisdcos.directory` zones, forwarding with a cache, and the servers.
//!
//! A query goes: `server` (UDP/TCP) -> `wire::parse_query`, once, into a `catalog::Request` ->
//! the `catalog::Catalog`, which picks the `AnswerSource` with the longest matching origin:
//! a `zone::Zone` (prepared bytes) or the `forward::Forwarder` (cache, then upstreams).

pub mod acl;
pub mod catalog;
pub mod config;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod names;
pub mod records;
pub mod server;
pub mod stats;
pub mod wire;
pub mod zone;
