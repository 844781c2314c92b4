//! The PBS paperkey of a key file, as `proxmox-backup-client key paperkey --output-format text`
//! prints it (`pbs-datastore/src/paperkey.rs`): the pretty JSON between `-----BEGIN PROXMOX
//! BACKUP KEY-----` and `-----END PROXMOX BACKUP KEY-----`, and one QR code (error correction
//! level M) of those same lines joined by `\n`.

use qrcode::render::unicode;
use qrcode::{EcLevel, QrCode};

use super::key_config::KeyConfig;

const BEGIN: &str = "-----BEGIN PROXMOX BACKUP KEY-----";
const END: &str = "-----END PROXMOX BACKUP KEY-----";

/// The printable sheet: the text block, then its QR code drawn with Unicode half blocks.
pub fn sheet(cfg: &KeyConfig) -> String {
    let block = text_block(cfg);
    let qr = match QrCode::with_error_correction_level(block.as_bytes(), EcLevel::M) {
        Ok(code) => code.render::<unicode::Dense1x2>().quiet_zone(true).build(),
        // A key file is a few hundred bytes; level M holds up to 2,331.
        Err(e) => format!("(no QR code: {e})"),
    };
    format!("{block}\n\n{qr}\n")
}

/// The text block the QR code holds.
pub fn text_block(cfg: &KeyConfig) -> String {
    let json = cfg.to_pretty_json();
    let mut lines = vec![BEGIN];
    lines.extend(json.lines());
    lines.push(END);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::escrow::PbsKey;

    #[test]
    fn the_text_block_is_the_pretty_key_json_between_the_markers() {
        let cfg = PbsKey::from_bytes([1; 32], 0).to_plain(0);
        let block = text_block(&cfg);
        let inner: Vec<&str> = block.lines().collect();
        assert_eq!(inner[0], BEGIN);
        assert_eq!(inner[inner.len() - 1], END);
        let json = inner[1..inner.len() - 1].join("\n");
        assert_eq!(KeyConfig::parse(&json).unwrap(), cfg);
    }

    #[test]
    fn the_sheet_carries_a_qr_code() {
        let cfg = PbsKey::from_bytes([1; 32], 0).to_plain(0);
        let sheet = sheet(&cfg);
        assert!(sheet.contains('█') || sheet.contains('▀'), "{sheet}");
    }
}
