//! Time: UTC instants in milliseconds and whole-minute durations.
//!
//! The core never reads a clock: every function that needs "now" takes a [`Timestamp`] argument,
//! which keeps `decide` and `evolve` deterministic and lets tests drive time by hand.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a timestamp or duration could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not an RFC 3339 date-time (for example `2026-04-01T10:00:00Z`).
    #[error("`{input}` is not an RFC 3339 date-time: {reason}")]
    NotRfc3339 {
        /// The rejected input, cut to 64 characters.
        input: String,
        /// What the parser objected to.
        reason: String,
    },
    /// The instant is before 1970-01-01 or after 9999-12-31, outside the range jitflow stores.
    #[error("date-time out of range (1970-01-01 to 9999-12-31)")]
    OutOfRange,
    /// The text is not a human duration such as `5m` or `1h 30m`.
    #[error("`{input}` is not a duration: {reason}")]
    NotDuration {
        /// The rejected input, cut to 64 characters.
        input: String,
        /// What the parser objected to.
        reason: String,
    },
}

fn cut(input: &str) -> String {
    input.chars().take(64).collect()
}

/// A UTC instant with millisecond precision, counted from the Unix epoch.
///
/// *Invariant*: `0 <= millis <= Timestamp::MAX.as_millis()`, so every value formats as RFC 3339
/// and adding a bounded duration cannot overflow.
///
/// Serialised as RFC 3339 text in human-readable formats (JSON) and as milliseconds in binary
/// ones (the store's bincode), so the stored format does not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            // The bytes a derived newtype produces, which the golden fixtures pin.
            serializer.serialize_newtype_struct("Timestamp", &self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
        } else {
            // The store checks the range after decoding (its pair assertions), as before.
            #[derive(Deserialize)]
            struct Millis(u64);
            Millis::deserialize(deserializer).map(|Millis(ms)| Timestamp(ms))
        }
    }
}

impl Timestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// 9999-12-31T23:59:59.999Z, the last instant jitflow stores.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// The instant `millis` milliseconds after the epoch, or `None` past [`Timestamp::MAX`].
    pub const fn from_millis(millis: u64) -> Option<Timestamp> {
        if millis <= Self::MAX.0 {
            Some(Timestamp(millis))
        } else {
            None
        }
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The instant of a [`SystemTime`], for clocks outside the core.
    pub fn from_system_time(time: SystemTime) -> Result<Timestamp, Error> {
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::OutOfRange)?;
        u64::try_from(since.as_millis())
            .ok()
            .and_then(Timestamp::from_millis)
            .ok_or(Error::OutOfRange)
    }

    /// This instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// `self + duration`, clamped to [`Timestamp::MAX`].
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis).min(Self::MAX.0))
    }

    /// `self + minutes`, clamped to [`Timestamp::MAX`].
    pub fn plus_minutes(self, minutes: Minutes) -> Timestamp {
        self.saturating_add(minutes.to_duration())
    }

    /// `self` plus `months` calendar months (UTC), the day clamped to the target month's length
    /// and the time of day kept; clamped to [`Timestamp::MAX`].
    pub fn plus_months(self, months: u32) -> Timestamp {
        const DAY: u64 = 86_400_000;
        let (days, time) = (self.0 / DAY, self.0 % DAY);
        let (year, month, day) = civil_from_days(days);
        let total = u64::from(month - 1) + u64::from(months);
        let year = year + total / 12;
        let month = u32::try_from(total % 12).expect("below 12") + 1;
        let day = day.min(days_in_month(year, month));
        let millis = days_from_civil(year, month, day)
            .saturating_mul(DAY)
            .saturating_add(time);
        Timestamp::from_millis(millis).unwrap_or(Timestamp::MAX)
    }

    /// `self - duration`, clamped to the epoch.
    pub fn saturating_sub(self, duration: Duration) -> Timestamp {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Parses an RFC 3339 date-time with any offset (`2026-04-01T10:00:00Z`,
    /// `2025-10-30T15:02:12.345-05:00`) into the UTC instant it names.
    pub fn parse_rfc3339(input: &str) -> Result<Timestamp, Error> {
        let (local, offset_secs) = split_offset(input).ok_or_else(|| Error::NotRfc3339 {
            input: cut(input),
            reason: "missing or malformed UTC offset".into(),
        })?;
        let utc_text = format!("{local}Z");
        let time = humantime::parse_rfc3339_weak(&utc_text).map_err(|e| Error::NotRfc3339 {
            input: cut(input),
            reason: e.to_string(),
        })?;
        let local_ms = Timestamp::from_system_time(time)?.0 as i128;
        let utc_ms = local_ms - i128::from(offset_secs) * 1000;
        u64::try_from(utc_ms)
            .ok()
            .and_then(Timestamp::from_millis)
            .ok_or(Error::OutOfRange)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-04-01T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_millis(self.to_system_time()).to_string()
    }
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("a day of the month");
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("a month");
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a date on or after the epoch.
fn days_from_civil(year: u64, month: u32, day: u32) -> u64 {
    let year = year - u64::from(month <= 2);
    let era = year / 400;
    let yoe = year - era * 400;
    let m = u64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + u64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits `input` into its local date-time part and its offset from UTC in seconds.
fn split_offset(input: &str) -> Option<(&str, i32)> {
    if let Some(local) = input.strip_suffix('Z').or_else(|| input.strip_suffix('z')) {
        return Some((local, 0));
    }
    // An offset is the last 6 bytes: `+hh:mm` or `-hh:mm`.
    let split = input.len().checked_sub(6)?;
    if !input.is_char_boundary(split) {
        return None;
    }
    let (local, offset) = input.split_at(split);
    let bytes = offset.as_bytes();
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if bytes[3] != b':' {
        return None;
    }
    let hours: i32 = offset.get(1..3)?.parse().ok()?;
    let minutes: i32 = offset.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 || !offset[1..3].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((local, sign * (hours * 3600 + minutes * 60)))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A whole number of minutes, the unit of the contract's `*Mins` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Minutes(pub u32);

impl Minutes {
    /// The minutes as a [`Duration`].
    pub const fn to_duration(self) -> Duration {
        Duration::from_secs(self.0 as u64 * 60)
    }

    /// The number of minutes.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Minutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} min", self.0)
    }
}

/// Parses a human duration such as `5m`, `90s` or `1h 30m` (for configuration and logs).
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    humantime::parse_duration(input).map_err(|e| Error::NotDuration {
        input: cut(input),
        reason: e.to_string(),
    })
}

/// Formats a duration for humans, e.g. `1h 30m`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_conversions_round_trip() {
        for days in (0..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // Against humantime's calendar (the RFC 3339 text) at month and leap-day edges.
        for text in [
            "2024-02-29T00:00:00Z",
            "2100-03-01T00:00:00Z",
            "2026-12-31T23:59:59Z",
        ] {
            let t = Timestamp::parse_rfc3339(text).unwrap();
            let (y, m, d) = civil_from_days(t.as_millis() / 86_400_000);
            assert_eq!(format!("{y:04}-{m:02}-{d:02}"), text[..10]);
        }
    }

    #[test]
    fn json_uses_rfc3339_text() {
        let t = Timestamp::parse_rfc3339("2026-04-01T10:00:00.250Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#""2026-04-01T10:00:00.250Z""#);
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>(r#""yesterday""#).is_err());
        assert!(serde_json::from_str::<Timestamp>("1775037600250").is_err());
    }

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = Timestamp::parse_rfc3339("2026-04-01T10:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-04-01T10:00:00.000Z");
        let offset = Timestamp::parse_rfc3339("2025-10-30T15:02:12.345-05:00").unwrap();
        assert_eq!(offset.to_rfc3339(), "2025-10-30T20:02:12.345Z");
        let plus = Timestamp::parse_rfc3339("2025-12-03T10:15:30+01:00").unwrap();
        assert_eq!(plus.to_rfc3339(), "2025-12-03T09:15:30.000Z");
    }

    #[test]
    fn rfc3339_rejects_garbage_with_typed_errors() {
        for bad in [
            "",
            "yesterday",
            "2026-04-01",
            "2026-04-01T10:00:00",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(
                matches!(Timestamp::parse_rfc3339(bad), Err(Error::NotRfc3339 { .. })),
                "{bad}"
            );
        }
        // An offset that moves the instant before the epoch.
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T00:30:00+01:00"),
            Err(Error::OutOfRange)
        );
    }

    #[test]
    fn arithmetic_saturates_within_range() {
        assert_eq!(Timestamp::MAX.plus_minutes(Minutes(10)), Timestamp::MAX);
        assert_eq!(
            Timestamp::EPOCH.saturating_sub(Duration::from_secs(1)),
            Timestamp::EPOCH
        );
        assert_eq!(Timestamp::from_millis(Timestamp::MAX.as_millis() + 1), None);
        let t = Timestamp::from_millis(1_000).unwrap();
        assert_eq!(t.plus_minutes(Minutes(2)).as_millis(), 121_000);
    }

    #[test]
    fn human_durations() {
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(matches!(
            parse_duration("soon"),
            Err(Error::NotDuration { .. })
        ));
        assert_eq!(format_duration(Duration::from_secs(90)), "1m 30s");
    }
}
