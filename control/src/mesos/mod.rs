//! The Mesos source: `lodestar mesos-sync` reads the leading master's state, translates it
//! into catalog records, and keeps etcd in step, writing only what changed.

pub mod election;
pub mod fetch;
pub mod guard;
pub mod operator;
pub mod recordio;
pub mod state;
pub mod stream;
pub mod subscribe;
pub mod sync;
pub mod translate;
pub mod vipalloc;
