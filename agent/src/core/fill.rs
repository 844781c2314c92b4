//! How full is too full: the fill thresholds every part of the agent shares (the host-health
//! watch raises its events at them; guest snapshots are refused from the warning level on).

/// Fraction of a storage's (or a thin pool's data or metadata) capacity in use at which the
/// agent warns and stops taking optional space, such as guest-requested snapshots.
pub const FILL_WARN: f64 = 0.80;

/// Fraction at which the fill is critical.
pub const FILL_CRITICAL: f64 = 0.90;

/// `used / total`, or `None` when the total is unknown (0).
pub fn fraction(used: u64, total: u64) -> Option<f64> {
    // Byte counts stay far below 2^53, where f64 is exact.
    #[allow(clippy::cast_precision_loss)]
    (total > 0).then(|| used as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_total_has_no_fraction() {
        assert_eq!(fraction(5, 0), None);
        assert_eq!(fraction(80, 100), Some(0.8));
    }
}
