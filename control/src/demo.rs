//! The demo catalog embedded in the binary: the default when no store is configured.

use crate::file::{CatalogDocument, Format};
use crate::snapshot::{Snapshot, Source};

/// The demo catalog's text (TOML, the catalog file format).
pub const DEMO_CATALOG: &str = include_str!("demo.toml");

/// The demo catalog as a snapshot at revision 1.
pub fn snapshot() -> Snapshot {
    CatalogDocument::parse(DEMO_CATALOG, Format::Toml, "the embedded demo catalog")
        .expect("the embedded demo catalog is valid (checked by a unit test)")
        .into_state()
        .snapshot(1, Source::Demo)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_catalog_is_valid_and_has_vips() {
        let s = super::snapshot();
        assert_eq!(s.tasks.len(), 4);
        assert_eq!(s.agents.len(), 2);
        let vips = s.vips();
        assert_eq!(vips.len(), 2);
        let web = vips
            .iter()
            .find(|v| v.key.to_string() == "/web:80/tcp")
            .unwrap();
        assert_eq!(web.backends.len(), 2);
        assert_eq!(
            web.addresses,
            ["198.19.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(vips.iter().any(|v| v.key.to_string() == "198.19.0.7:7/udp"));
    }

    /// A demo never points at an address this machine does not have: every task, agent,
    /// framework and master address is on loopback, and VIPs are in 198.19.0.0/16.
    #[test]
    fn every_demo_address_is_on_loopback_or_a_vip() {
        let s = super::snapshot();
        let vip_range: ipnet::IpNet = "198.19.0.0/16".parse().unwrap();
        let mut addresses = Vec::new();
        for t in s.tasks.values() {
            addresses.extend(t.ips.iter().map(|i| i.ip));
        }
        for a in s.agents.values() {
            addresses.extend(a.addresses.iter().copied());
        }
        for f in s.frameworks.values() {
            addresses.extend(f.addresses.iter().copied());
        }
        for m in s.masters.values() {
            addresses.push(m.address);
        }
        addresses.extend(s.leader.as_ref().map(|l| l.address));
        assert!(addresses.len() > 10, "{addresses:?}");
        for a in addresses {
            assert!(a.is_loopback(), "{a} is not on loopback");
        }
        for v in s.vips() {
            for a in &v.addresses {
                assert!(vip_range.contains(a), "VIP {} at {a}", v.key);
            }
            for b in &v.backends {
                assert!(b.ips.iter().all(|ip| ip.is_loopback()), "{b:?}");
            }
        }
    }
}
