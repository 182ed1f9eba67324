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
    }
}
