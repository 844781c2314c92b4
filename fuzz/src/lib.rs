//! Shared pieces of the fuzz targets (`fuzz_targets/*.rs`, one binary each; `fuzz/run` runs
//! them). Most targets read a small line-based text format, so the committed corpora stay
//! readable and seeds can be written by hand: real UPIDs, PVE error texts, schedules.

/// Splits at the first `\n`: the line (without it) and everything after. No newline: the whole
/// input is the line and the rest is empty.
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// [`split_line`] for text.
pub fn split_str_line(text: &str) -> (&str, &str) {
    text.split_once('\n').unwrap_or((text, ""))
}
