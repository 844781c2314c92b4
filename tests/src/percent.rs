//! Percent-encoding for the simulators and their clients (the `percent-encoding` crate).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`) is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `s` for a path segment or query value: every byte outside the unreserved
/// set as `%XX` (uppercase hex).
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// Percent-decodes a path segment or form value (`+` is a space only in forms). A `%` not
/// followed by two hex digits stays as it is; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    if plus_is_space && s.contains('+') {
        // A literal `+` only: an encoded one (`%2B`) is decoded after this and stays a `+`.
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    } else {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_handles_upid_characters() {
        assert_eq!(
            percent_decode("UPID%3Apve1%3Aa%40pve%21t%3A", false),
            "UPID:pve1:a@pve!t:"
        );
        assert_eq!(percent_decode("a+b%2", true), "a b%2");
    }
}
