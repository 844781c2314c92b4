//! The per-operation marker a journaled restore gives the guest it creates.
//!
//! A vmid is not an identity: once an operator deletes a leftover, Proxmox hands the same vmid
//! to the next guest anyone creates. So the restore POST itself tags the new guest with a
//! random marker that the journal records beside the vmid, and compensation destroys a guest
//! only while its configuration still carries that tag.

use rand::RngCore;

/// Every marker starts with this; the rest is 64 random bits in lower-case hex.
const PREFIX: &str = "felhom-op-";

/// A random marker tag, valid as a Proxmox tag (`pve-tag`: `[a-z0-9_][a-z0-9_+.-]*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMarker(String);

impl GuestMarker {
    /// A fresh marker from the OS-seeded thread RNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `tag` is a marker of any operation (kept when a later step rewrites tags).
    pub fn is_marker(tag: &str) -> bool {
        tag.strip_prefix(PREFIX)
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// `tags` (`;`-separated, possibly empty) with this marker added.
    pub fn add_to(&self, tags: Option<&str>) -> String {
        match tags.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => format!("{t};{}", self.0),
            None => self.0.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_distinct_valid_tags() {
        let (a, b) = (GuestMarker::random(), GuestMarker::random());
        assert_ne!(a, b);
        for m in [&a, &b] {
            assert!(GuestMarker::is_marker(m.as_str()), "{m:?}");
            assert!(
                m.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{m:?}"
            );
        }
    }

    #[test]
    fn a_marker_is_appended_to_existing_tags() {
        let m = GuestMarker("felhom-op-0123456789abcdef".into());
        assert_eq!(m.add_to(None), "felhom-op-0123456789abcdef");
        assert_eq!(m.add_to(Some("")), "felhom-op-0123456789abcdef");
        assert_eq!(
            m.add_to(Some("felhom-scratch")),
            "felhom-scratch;felhom-op-0123456789abcdef"
        );
    }

    #[test]
    fn only_well_formed_markers_are_recognised() {
        assert!(GuestMarker::is_marker("felhom-op-0123456789abcdef"));
        assert!(!GuestMarker::is_marker("felhom-op-0123"));
        assert!(!GuestMarker::is_marker("felhom-scratch"));
        assert!(!GuestMarker::is_marker("felhom-op-0123456789abcdeg"));
    }
}
