//! Fuzzes the DNS request path: any bytes through `Shared::handle` (parse, zone lookup,
//! response assembly) must not panic, and a reply must echo the ID with QR set.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lodestar_dns::config::ZoneConfig;
use lodestar_dns::server::{Outcome, Shared};
use lodestar_dns::zone::ZoneBuilder;

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let snapshot = Arc::new(lodestar_control::demo::snapshot());
        let zone = ZoneBuilder::new(ZoneConfig::default(), vec!["127.0.0.1".parse().unwrap()])
            .unwrap()
            .update(&snapshot);
        Shared::authoritative(zone)
    })
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    let mut out = Vec::new();
    for tcp in [false, true] {
        if let Outcome::Reply = shared.handle(data, "127.0.0.1".parse().unwrap(), tcp, 0, shared.stats.worker(0), &mut out) {
            assert!(out.len() >= 12);
            assert_eq!(&out[..2], &data[..2]);
            assert_eq!(out[2] & 0x80, 0x80);
        }
    }
});
