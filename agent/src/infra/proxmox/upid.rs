//! The UPID parsing both products share.
//!
//! A UPID is `UPID:<field>:<field>:…:` — a fixed prefix, a product-specific number of
//! colon-separated fields, none of which can hold a colon, and a trailing colon. PVE has 8
//! fields (`node:pid:pstart:starttime:type:id:authid`), PBS 9 (a task id after `pstart`); each
//! grammar (`pve::Upid`, `pbs::PbsUpid`) is built from the pieces here and words the errors
//! for its product. UPIDs go into URL paths percent-encoded ([`encode_path_segment`]).

/// A shape problem of a UPID's text, product-neutral; each grammar converts it into its own
/// worded error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpidShape {
    #[error("UPID must start with 'UPID:'")]
    Prefix,
    #[error("UPID has {0} colon-separated fields")]
    FieldCount(usize),
    #[error("UPID field '{0}' is empty")]
    Empty(&'static str),
    #[error("UPID field '{field}' is not hexadecimal: '{value}'")]
    Hex { field: &'static str, value: String },
    #[error("UPID is too long")]
    TooLong,
}

/// Refuses texts longer than the grammar's limit (before anything else is looked at).
pub(crate) fn check_len(s: &str, max_len: usize) -> Result<(), UpidShape> {
    if s.len() > max_len {
        Err(UpidShape::TooLong)
    } else {
        Ok(())
    }
}

/// Splits `UPID:<f1>:…:<fn>:` into exactly `count` fields. No field may hold `:`, so a plain
/// split is exact; a wrong count reports how many fields there were (a trailing colon does not
/// count as starting one).
pub(crate) fn split_fields(s: &str, count: usize) -> Result<Vec<&str>, UpidShape> {
    let rest = s.strip_prefix("UPID:").ok_or(UpidShape::Prefix)?;
    let mut fields: Vec<&str> = rest.split(':').collect();
    if fields.len() != count + 1 || !fields[count].is_empty() {
        let counted = fields.len() - usize::from(fields.last().is_some_and(|f| f.is_empty()));
        return Err(UpidShape::FieldCount(counted));
    }
    fields.pop();
    Ok(fields)
}

/// A field that must not be empty.
pub(crate) fn non_empty<'a>(field: &'static str, value: &'a str) -> Result<&'a str, UpidShape> {
    if value.is_empty() {
        Err(UpidShape::Empty(field))
    } else {
        Ok(value)
    }
}

/// A hex field of `min..=max` digits (Proxmox writes them upper-case with `%08X`, so at least
/// 8; longer once a counter outgrows 32 bits).
pub(crate) fn hex_field(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<u64, UpidShape> {
    non_empty(field, value)?;
    let bad = || UpidShape::Hex {
        field,
        value: value.to_owned(),
    };
    if value.len() < min || value.len() > max || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u64::from_str_radix(value, 16).map_err(|_| bad())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one URL path segment
/// (UPIDs, whose `:`, `!`, `@` and PBS's `\` must not be read as URL syntax), as Proxmox's own
/// clients do.
pub(crate) fn encode_path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_exactly_the_expected_fields() {
        assert_eq!(split_fields("UPID:a:b::", 3).unwrap(), ["a", "b", ""]);
        assert_eq!(split_fields("UPID:a:b:c", 3), Err(UpidShape::FieldCount(3)));
        assert_eq!(split_fields("UPID:a:b:", 3), Err(UpidShape::FieldCount(2)));
        assert_eq!(
            split_fields("UPID:a:b:c:d:", 3),
            Err(UpidShape::FieldCount(4))
        );
        assert_eq!(split_fields("upid:a:b:c:", 3), Err(UpidShape::Prefix));
    }

    #[test]
    fn hex_fields_have_a_digit_range() {
        assert_eq!(hex_field("pid", "000004D2", 8, 8), Ok(0x4D2));
        assert_eq!(hex_field("pid", "", 8, 8), Err(UpidShape::Empty("pid")));
        for bad in ["4D2", "000004D2A", "0000004G"] {
            assert!(
                matches!(hex_field("pid", bad, 8, 8), Err(UpidShape::Hex { .. })),
                "{bad}"
            );
        }
        assert_eq!(hex_field("pstart", "1000A1B2C", 8, 9), Ok(0x1_000A_1B2C));
    }

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(
            encode_path_segment(r"UPID:n:1:a@pve!t:x\y~"),
            "UPID%3An%3A1%3Aa%40pve%21t%3Ax%5Cy~"
        );
    }
}
