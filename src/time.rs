//! The one timestamp of an image, and RFC 3339 formatting without a clock.

use crate::{Error, Result};

/// Seconds since the Unix epoch used for every mtime, `created` and history
/// entry. Taken from SOURCE_DATE_EPOCH when set, else 0: never the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Parses a SOURCE_DATE_EPOCH value (whole non-negative seconds).
    pub fn parse(value: &str) -> Result<Self> {
        let trimmed = value.trim();
        trimmed.parse::<u64>().map(Timestamp).map_err(|_| {
            Error::invalid(
                "SOURCE_DATE_EPOCH",
                value,
                "expected whole seconds since 1970-01-01 UTC, e.g. 1700000000 (`git log -1 --pretty=%ct` prints one)",
            )
        })
    }

    /// A wall-clock time (run details only; never an image's timestamp).
    pub fn at(t: std::time::SystemTime) -> Self {
        Timestamp(
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }

    /// RFC 3339 in UTC with a `Z` suffix, e.g. `1970-01-01T00:00:00Z`.
    pub fn rfc3339(self) -> String {
        let secs = self.0;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400).rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(Timestamp(1_700_000_000).rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(Timestamp(4_102_444_799).rfc3339(), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Timestamp::parse("1700000000").unwrap(), Timestamp(1_700_000_000));
        assert!(Timestamp::parse("-1").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
