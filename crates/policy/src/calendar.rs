//! UTC calendar fields for time-of-day rules, and RFC 3339 timestamps for fixtures.

const SECONDS_PER_DAY: i64 = 86_400;

/// The calendar fields of an instant that policies see under `context.time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcClock {
    /// Hour of the day, 0..=23.
    pub(crate) hour: i64,
    /// Minute of the hour, 0..=59.
    pub(crate) minute: i64,
    /// ISO weekday: 1 Monday ..= 7 Sunday.
    pub(crate) weekday: i64,
}

impl UtcClock {
    /// The UTC fields of `unix` seconds.
    pub(crate) fn at(unix: i64) -> Self {
        let seconds = unix.rem_euclid(SECONDS_PER_DAY);
        let days = unix.div_euclid(SECONDS_PER_DAY);
        // 1970-01-01 was a Thursday (ISO 4).
        Self { hour: seconds / 3600, minute: seconds % 3600 / 60, weekday: (days + 3).rem_euclid(7) + 1 }
    }
}

/// Parses an RFC 3339 timestamp (`2026-01-05T09:30:00Z`, `2026-01-05T10:30:00.5+01:00`) into unix seconds.
///
/// Fractional seconds are dropped.
pub(crate) fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let invalid = || format!("'{text}' is not an rfc 3339 timestamp (like 2026-01-05T09:30:00Z)");
    let b = text.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[4] != b'-' || b[7] != b'-' {
        return Err(invalid());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(invalid());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let digits = text.get(range).ok_or_else(invalid)?;
        if !digits.bytes().all(|d| d.is_ascii_digit()) {
            return Err(invalid());
        }
        digits.parse::<i64>().map_err(|_| invalid())
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(invalid());
    }
    // 60 admits a leap second, which counts as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(invalid());
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return Err(invalid());
            }
            let start = text.len() - 6;
            let (oh, om) = (number(start + 1..start + 3)?, number(start + 4..start + 6)?);
            if oh > 23 || om > 59 {
                return Err(invalid());
            }
            let sign = if ob[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Ok(days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_a_thursday_at_midnight() {
        assert_eq!(UtcClock::at(0), UtcClock { hour: 0, minute: 0, weekday: 4 });
    }

    #[test]
    fn fields_of_a_known_monday_morning() {
        let unix = parse_rfc3339("2026-01-05T09:30:00Z").unwrap_or_default();
        assert_eq!(unix, 1_767_605_400);
        assert_eq!(UtcClock::at(unix), UtcClock { hour: 9, minute: 30, weekday: 1 });
    }

    #[test]
    fn negative_instants_wrap_to_the_previous_day() {
        assert_eq!(UtcClock::at(-1), UtcClock { hour: 23, minute: 59, weekday: 3 });
    }

    #[test]
    fn offsets_and_fractions_are_applied() {
        assert_eq!(parse_rfc3339("2026-01-05T10:30:00.75+01:00"), Ok(1_767_605_400));
        assert_eq!(parse_rfc3339("2026-01-05t04:00:00-05:30"), Ok(1_767_605_400));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800));
    }

    #[test]
    fn malformed_timestamps_are_rejected() {
        for bad in [
            "",
            "2026-01-05",
            "2026-02-30T00:00:00Z",
            "2026-01-05T24:00:00Z",
            "2026-01-05T10:00:00",
            "2026-01-05T10:00:00+0100",
            "2026-01-05T10:00:00.Z",
            "2026-01-05T10:00:00Zjunk",
            "２026-01-05T10:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
