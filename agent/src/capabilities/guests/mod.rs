//! Guests: provisioning a guest from an archive (journaled, resumable or compensated).

pub mod provision;
