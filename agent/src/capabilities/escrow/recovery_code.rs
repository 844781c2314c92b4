//! The customer's recovery code `R`: 128 bits from the operating system's RNG, written as the
//! 12 words of a BIP-39 English phrase (the published 2048-word list; the last word carries a
//! 4-bit checksum), so a household can copy it off paper and a mistyped or swapped word is
//! caught before any decryption is tried.
//!
//! The passphrase handed to the key wrap is the phrase in its normal form: the 12 lower-case
//! words joined by single spaces — exactly what an operator would give
//! `proxmox-backup-client` as `PBS_ENCRYPTION_PASSWORD` to open the escrow copy by hand.

use zeroize::Zeroizing;

/// Words in a recovery code (128 bits of entropy + 4 checksum bits).
pub const WORDS: usize = 12;

/// Why a typed recovery code is refused. Never carries the code itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("a recovery code has {WORDS} words; this has {0}")]
    WordCount(usize),
    #[error("word {position} is not in the recovery word list (check its spelling)")]
    UnknownWord { position: usize },
    #[error(
        "the {WORDS} words do not add up (their checksum is wrong): one is mistyped or two are swapped"
    )]
    Checksum,
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
}

/// A recovery code. Debug never shows it; it is wiped from memory when dropped.
pub struct RecoveryCode {
    phrase: Zeroizing<String>,
}

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

impl RecoveryCode {
    /// A fresh code from 16 bytes of the OS RNG.
    pub fn generate() -> Result<Self, CodeError> {
        let mut entropy = Zeroizing::new([0u8; 16]);
        super::pbs_key::os_random(&mut entropy[..])
            .map_err(|e| CodeError::Random(e.to_string()))?;
        let mnemonic = bip39::Mnemonic::from_entropy_in(bip39::Language::English, &entropy[..])
            .expect("16 bytes is a valid BIP-39 entropy length");
        Ok(Self {
            phrase: Zeroizing::new(mnemonic.to_string()),
        })
    }

    /// Reads a typed code: any case, words separated by any whitespace (or `-`), checked
    /// against the word list and its checksum.
    pub fn parse(typed: &str) -> Result<Self, CodeError> {
        let lower = Zeroizing::new(typed.to_lowercase());
        let words: Vec<&str> = lower
            .split(|c: char| c.is_whitespace() || c == '-')
            .filter(|w| !w.is_empty())
            .collect();
        if words.len() != WORDS {
            return Err(CodeError::WordCount(words.len()));
        }
        let list = bip39::Language::English;
        if let Some(i) = words.iter().position(|w| list.find_word(w).is_none()) {
            return Err(CodeError::UnknownWord { position: i + 1 });
        }
        let phrase = Zeroizing::new(words.join(" "));
        match bip39::Mnemonic::parse_in_normalized(list, &phrase) {
            Ok(_) => Ok(Self { phrase }),
            Err(bip39::Error::InvalidChecksum) => Err(CodeError::Checksum),
            Err(bip39::Error::UnknownWord(i)) => Err(CodeError::UnknownWord { position: i + 1 }),
            Err(bip39::Error::BadWordCount(n)) => Err(CodeError::WordCount(n)),
            // Entropy length and language ambiguity cannot happen for 12 English words.
            Err(_) => Err(CodeError::Checksum),
        }
    }

    /// The words, for showing the code once.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.phrase.split(' ')
    }

    /// The passphrase bytes for the key wrap (the normal-form phrase).
    pub fn passphrase(&self) -> &[u8] {
        self.phrase.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // BIP-39 English test vector: entropy 0x00 × 16.
    const ZEROS: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    #[test]
    fn a_generated_code_has_twelve_listed_words_and_parses_back() {
        let code = RecoveryCode::generate().unwrap();
        let words: Vec<&str> = code.words().collect();
        assert_eq!(words.len(), WORDS);
        let typed = words.join(" ");
        let back = RecoveryCode::parse(&typed).unwrap();
        assert_eq!(back.passphrase(), code.passphrase());
    }

    #[test]
    fn two_generated_codes_differ() {
        let a = RecoveryCode::generate().unwrap();
        let b = RecoveryCode::generate().unwrap();
        assert_ne!(a.passphrase(), b.passphrase());
    }

    #[test]
    fn case_and_spacing_do_not_matter() {
        let typed = format!("  {}\n", ZEROS.to_uppercase().replace(' ', "   "));
        let code = RecoveryCode::parse(&typed).unwrap();
        assert_eq!(code.passphrase(), ZEROS.as_bytes());
    }

    #[test]
    fn one_wrong_word_is_caught_by_the_checksum() {
        let typed = ZEROS.replacen("abandon", "ability", 1);
        assert_eq!(
            RecoveryCode::parse(&typed).unwrap_err(),
            CodeError::Checksum
        );
    }

    #[test]
    fn a_misspelt_word_is_named_by_its_position() {
        let typed = ZEROS.replace("about", "abuot");
        assert_eq!(
            RecoveryCode::parse(&typed).unwrap_err(),
            CodeError::UnknownWord { position: 12 }
        );
    }

    #[test]
    fn a_missing_word_is_counted() {
        let typed = ZEROS.replacen("abandon ", "", 1);
        assert_eq!(
            RecoveryCode::parse(&typed).unwrap_err(),
            CodeError::WordCount(11)
        );
    }

    #[test]
    fn debug_and_errors_never_show_the_code() {
        let code = RecoveryCode::parse(ZEROS).unwrap();
        assert_eq!(format!("{code:?}"), "RecoveryCode(<redacted>)");
        let e = RecoveryCode::parse(&ZEROS.replace("about", "abuot")).unwrap_err();
        assert!(!e.to_string().contains("abuot"));
    }
}
