//! Lodestar's DNS side: zones built from a catalog `Snapshot`, authoritative answers for the
//! `mesos` and `thisdcos.directory` zones and dcos-net's own names, forwarding with a cache,
//! the servers, and the Mesos-DNS and dcos-net HTTP APIs.
//!
//! A query goes: `server` (UDP/TCP) -> `wire::parse_query`, once, into a `catalog::Request` ->
//! the `catalog::Catalog`, which picks the `AnswerSource` with the longest matching origin:
//! a `zone::Zone` (prepared bytes), one of dcos-net's zones (`spartan`, `zk`, `localhost`,
//! `thisnode`, the `mesos.thisdcos.directory` mirror, the renamed `thisdcos.global` and `dclb`
//! zones), or the `forward::Forwarder` (cache, then upstreams).

pub mod acl;
pub mod catalog;
pub mod config;
pub mod dcos_api;
pub mod forward;
pub mod http;
pub mod local_zone;
pub mod mesos_mirror;
pub mod metrics;
pub mod names;
pub mod records;
pub mod rename;
pub mod reverse;
pub mod rrl;
pub mod server;
pub mod spartan;
pub mod stats;
pub mod thisnode;
pub mod wire;
pub mod zk;
pub mod zone;
