//! PBS key escrow (design seed §8a): the offsite PBS tier is encrypted client-side with a key
//! `K` that lives only on the box. The escrow is a copy of `K` wrapped under a recovery code `R`
//! that only the customer ever sees, in the `KeyConfig` format `proxmox-backup-client` itself
//! reads (so no felhom code is needed to open it), and the way `K` comes back on a new box.
//!
//! - [`key_config`]: the key-file JSON; [`pbs_key`]: `K`, its fingerprint and the wrap;
//! - [`recovery_code`]: `R` as 12 BIP-39 words with a checksum;
//! - [`lifecycle`]: create / rotate / status / recover, as files (run by root);
//! - [`paperkey`]: the optional printable sheet.
//!
//! Limits: the escrow's upload to the hub lands with the hub protocol; until then the wrapped
//! copy is a file the operator keeps off the box. The running agent never reads `K`: it
//! checks encrypted backups by the key's fingerprint only.

pub mod key_config;
pub mod lifecycle;
pub mod paperkey;
pub mod pbs_key;
pub mod recovery_code;

pub use key_config::{KeyConfig, KeyFingerprint};
pub use lifecycle::EscrowPaths;
pub use pbs_key::PbsKey;
pub use recovery_code::RecoveryCode;

use std::path::Path;

impl EscrowPaths {
    /// PVE's key file of `storage` under `pve_priv_dir` (`/etc/pve/priv`), and the escrow's
    /// file under `escrow_dir`.
    pub fn for_storage(storage: &str, pve_priv_dir: &Path, escrow_dir: &Path) -> Self {
        Self {
            live_key: pve_priv_dir.join("storage").join(format!("{storage}.enc")),
            blob: escrow_dir.join(format!("{storage}.json")),
        }
    }
}
