//! Time as Inlet reads and writes it: unix seconds in their several spellings, and RFC 3339
//! with offsets, once for the providers, the envelope, the DLQ and the pollers. Every reader
//! answers `None` for "absent or not usable" and never panics on what a sender writes.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

/// Unix ms as RFC 3339 UTC with milliseconds (`2026-01-01T00:00:00.000Z`), as envelopes and
/// the trail write times; before 1970 is written as 1970.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

// ---------------------------------------------------------------------------------------------
// Unix times

/// A unix time as sent: ASCII digits only (no sign, no spaces, no fraction), so the text that
/// was signed and the number that is checked cannot disagree. `None` for anything else and on
/// overflow.
pub(crate) fn unix_digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whole unix seconds as plain ASCII digits ([`unix_digits`]) → unix ms; `None` on overflow.
pub(crate) fn unix_seconds_text_ms(text: &str) -> Option<i64> {
    unix_digits(text).and_then(seconds_to_ms)
}

fn seconds_to_ms(seconds: i64) -> Option<i64> {
    seconds.checked_mul(1000)
}

/// Unix seconds as a JSON integer (`"created": 1767225600`) → unix ms. Strings and floats are
/// `None`; so is overflow.
pub(crate) fn unix_seconds_ms(value: Option<&Value>) -> Option<i64> {
    value?.as_i64().and_then(seconds_to_ms)
}

/// Unix seconds as a JSON integer or as a string of digits (WhatsApp `"timestamp":
/// "1767225600"`) → unix ms.
pub(crate) fn unix_seconds_int_or_text_ms(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(s) => unix_seconds_text_ms(s),
        other => unix_seconds_ms(Some(other)),
    }
}

/// Fractional unix seconds (`1767225598.5`) → unix ms, rounded to the nearest. Not finite or
/// beyond ±9·10¹⁵ ms (where an `f64` stops counting single milliseconds) is `None`.
pub(crate) fn fractional_seconds_ms(seconds: f64) -> Option<i64> {
    let ms = seconds * 1000.0;
    (ms.is_finite() && ms.abs() < 9.0e15).then(|| ms.round() as i64)
}

// ---------------------------------------------------------------------------------------------
// RFC 3339

/// An RFC 3339 time with any UTC offset (`2019-05-06T17:15:34.121+02:00`, `…Z`, `…z`) → unix
/// ms. Surrounding whitespace is ignored; the date must exist (no 30 February) and be from 1970
/// on (the offset may then move the instant slightly before it); a leap second `:60` counts as
/// `:59`; fractions beyond milliseconds are truncated. Provider payloads and headers.
///
/// The date-time before the offset is read by humantime, which on its own ignores a non-zero
/// offset after a fraction and refuses one without a fraction: hence the offset is split off
/// and applied here.
pub(crate) fn rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if !text.is_ascii() {
        return None;
    }
    let (naive, offset_s) = if let Some(naive) = text.strip_suffix(['Z', 'z']) {
        (naive, 0)
    } else {
        let at = text.len().checked_sub(6)?;
        let (naive, offset) = (text.get(..at)?, text.get(at..)?.as_bytes());
        let sign = match offset.first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if offset.get(3) != Some(&b':') || naive.len() < 19 {
            return None;
        }
        let two = |i: usize| -> Option<i64> {
            let d = |b: &u8| b.is_ascii_digit().then(|| i64::from(b - b'0'));
            Some(d(offset.get(i)?)? * 10 + d(offset.get(i + 1)?)?)
        };
        let (hours, minutes) = (two(1)?, two(4)?);
        if hours > 23 || minutes > 59 {
            return None;
        }
        (naive, sign * (hours * 3600 + minutes * 60))
    };
    let utc = humantime::parse_rfc3339_weak(&format!("{naive}Z")).ok()?;
    let ms = i64::try_from(utc.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()?;
    ms.checked_sub(offset_s.checked_mul(1000)?)
}

/// [`rfc3339_ms`], except that a date-time with no zone at all
/// (`YYYY-MM-DD[T ]HH:MM:SS[.digits]`, such as Discord's webhook events
/// `2024-10-18T14:42:53.064834`) is read as UTC, as humantime always read it. The envelope's
/// `received_at`, DLQ times, and provider times that have always been read this way.
pub(crate) fn rfc3339_ms_utc_if_unzoned(text: &str) -> Option<i64> {
    rfc3339_ms(text).or_else(|| {
        let text = text.trim();
        let rest = text.get(19..)?;
        let unzoned = rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
        if !unzoned {
            return None;
        }
        let utc = humantime::parse_rfc3339_weak(text).ok()?;
        i64::try_from(utc.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
    })
}

/// The generic scheme's RFC 3339 reader (`2026-01-01T00:00:00.123456789Z`, `…+02:00`) → unix
/// ms. It differs from [`rfc3339_ms`], and is kept apart so that configured `generic` sources
/// read times exactly as before: any four-digit year (before 1970 too); `T`, `t` or a space
/// between date and time; the day only checked to be 1–31 (30 February is 2 March) and
/// second 60 rolling into the next minute; at least one fraction digit after a `.` (truncated
/// to ms); no surrounding whitespace.
pub(crate) fn rfc3339_ms_any_year(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<i64> {
        let s = text.get(from..to)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = text.get(start..i)?;
        let ms3: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = ms3.parse::<i64>().ok()?;
    }
    let offset_min = match text.get(i..)? {
        "Z" | "z" => 0,
        tz => {
            let sign = match tz.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if tz.len() != 6 || tz.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let h: i64 = tz.get(1..3)?.parse().ok()?;
            let m: i64 = tz.get(4..6)?.parse().ok()?;
            sign * (h * 60 + m)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    secs.checked_mul(1000)?.checked_add(millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn formatted_times_are_utc_with_milliseconds() {
        assert_eq!(
            format_rfc3339_ms(1_767_225_600_123),
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(format_rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_ms(&format_rfc3339_ms(1_767_225_600_123)),
            Some(1_767_225_600_123)
        );
    }

    #[test]
    fn unix_seconds_become_milliseconds_and_overflow_is_none() {
        assert_eq!(unix_seconds_text_ms("1767225600"), Some(1_767_225_600_000));
        for bad in [
            "",
            " 1",
            "1 ",
            "+1",
            "-1",
            "1.5",
            "1e9",
            "١٢",
            "9223372036854776",
        ] {
            assert_eq!(unix_seconds_text_ms(bad), None, "{bad:?}");
        }
        assert_eq!(unix_seconds_ms(Some(&json!(1))), Some(1000));
        assert_eq!(unix_seconds_ms(Some(&json!(-1))), Some(-1000));
        assert_eq!(unix_seconds_ms(Some(&json!(1.5))), None);
        assert_eq!(unix_seconds_ms(Some(&json!("1"))), None);
        assert_eq!(unix_seconds_ms(Some(&json!(i64::MAX))), None);
        assert_eq!(unix_seconds_ms(None), None);
        let either = |v: Value| unix_seconds_int_or_text_ms(Some(&v));
        assert_eq!(either(json!("1767225600")), Some(1_767_225_600_000));
        assert_eq!(either(json!(1_767_225_600)), Some(1_767_225_600_000));
        assert_eq!(either(json!(-5)), Some(-5000));
        assert_eq!(either(json!("-5")), None);
        assert_eq!(either(json!("")), None);
        assert_eq!(either(json!(1.5)), None);
    }

    #[test]
    fn fractional_seconds_round_to_milliseconds_within_f64_precision() {
        assert_eq!(
            fractional_seconds_ms(1_767_225_598.5),
            Some(1_767_225_598_500)
        );
        assert_eq!(fractional_seconds_ms(0.0004), Some(0));
        assert_eq!(fractional_seconds_ms(0.0005), Some(1));
        assert_eq!(fractional_seconds_ms(-1.25), Some(-1250));
        assert_eq!(fractional_seconds_ms(8.999e12), Some(8_999_000_000_000_000));
        for bad in [9.0e12, -9.0e12, f64::INFINITY, f64::NAN, f64::MAX] {
            assert_eq!(fractional_seconds_ms(bad), None, "{bad}");
        }
    }

    const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn rfc3339_applies_offsets_with_and_without_fractions() {
        for (text, ms) in [
            ("2026-01-01T00:00:00Z", NOW_MS),
            ("2026-01-01T00:00:00z", NOW_MS),
            ("  2026-01-01T00:00:00Z\n", NOW_MS),
            ("2026-01-01 00:00:00Z", NOW_MS),
            ("2026-01-01T01:00:00+01:00", NOW_MS),
            ("2026-01-01T01:00:00.250+01:00", NOW_MS + 250),
            ("2025-12-31T23:30:00.000-00:30", NOW_MS),
            ("2026-01-01T00:00:00+00:00", NOW_MS),
            ("2026-01-01T00:00:00.123456789Z", NOW_MS + 123),
            ("2026-01-01T00:00:00.9999999999Z", NOW_MS + 999),
            ("2014-08-01T13:28:10.2735393-04:00", 1_406_914_090_273),
            ("2025-12-31T23:59:60Z", NOW_MS - 1000),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("1970-01-01T00:30:00+01:00", -1_800_000),
        ] {
            assert_eq!(rfc3339_ms(text), Some(ms), "{text:?}");
        }
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.123",
            "2026-01-01t00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00+01:60",
            "2026-01-01T00:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "２026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Zé",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_utc_if_unzoned_reads_a_missing_zone_as_utc_and_still_applies_offsets() {
        for (text, ms) in [
            ("2024-10-18T14:42:53.064834", 1_729_262_573_064),
            ("2026-01-01T00:00:00", NOW_MS),
            ("2026-01-01 00:00:00.5", NOW_MS + 500),
            (" 2026-01-01T00:00:00 ", NOW_MS),
            ("2026-01-01T00:00:00Z", NOW_MS),
            ("2026-01-01T02:00:00.5+02:00", NOW_MS + 500),
            ("2025-12-31T19:00:00-05:00", NOW_MS),
        ] {
            assert_eq!(rfc3339_ms_utc_if_unzoned(text), Some(ms), "{text:?}");
        }
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00",
            "2026-01-01T00:00:00.",
            "2026-01-01T00:00:00.5x",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00Zjunk",
            "1969-12-31T23:59:59",
            "2026-01-01T00:00:00.٣",
        ] {
            assert_eq!(rfc3339_ms_utc_if_unzoned(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_any_year_keeps_the_generic_schemes_reading() {
        for (text, ms) in [
            ("2026-01-01T00:00:00.123456789Z", NOW_MS + 123),
            ("2026-01-01T02:00:00+02:00", NOW_MS),
            ("2026-01-01t00:00:00z", NOW_MS),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.5Z", -500),
            ("0000-03-01T00:00:00Z", -62_162_035_200_000),
            ("2019-05-06T17:15:34.1+02:00", 1_557_155_734_100),
            ("2026-02-30T00:00:00Z", 1_772_409_600_000),
            ("2025-12-31T23:59:60Z", NOW_MS),
        ] {
            assert_eq!(rfc3339_ms_any_year(text), Some(ms), "{text:?}");
        }
        for bad in [
            "",
            " 2026-01-01T00:00:00Z",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0200",
            "2026-01-01T00:00:00Zjunk",
            "yesterday at noon, roughly",
            "２026-01-01T00:00:00Z",
            "2026-01-01T00:00:00ü",
        ] {
            assert_eq!(rfc3339_ms_any_year(bad), None, "{bad:?}");
        }
    }
}
