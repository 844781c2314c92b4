//! Core types every layer shares: validated identifiers ([`Vmid`], storage ids, snapshot names),
//! who acted ([`Actor`]), the storage speed class, the shared [`fill`] thresholds, and the one way an error chain is printed. Depends on nothing else
//! in the crate.

mod actor;
pub mod fill;
mod ids;
mod storage_class;

pub use actor::Actor;
pub use ids::{InvalidValue, Vmid, validate_snapshot_name, validate_storage_id};
pub use storage_class::StorageClass;

/// `error: source: source…` on one line: how every failure is shown to an operator, a guest or
/// the journal (the whole chain, printed once, at the top).
pub fn error_chain(e: &(dyn std::error::Error + '_)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Restore failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_every_source() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "Restore failed: disk full");
    }
}
