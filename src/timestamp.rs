//! Timestamps written as text on the request path. Every CBSS call carries a .NET `DateTime` and
//! every progress answer an RFC 3339 expiry; chrono's conversions and formatting took more
//! instructions than the rest of building the CBSS envelope. The civil date is a few integer
//! operations (Howard Hinnant's `civil_from_days`) and the digits are written in place. Tests
//! hold both forms to chrono's output, which stays the reference.

use std::time::{SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: i64 = 86_400;

/// `(year, month 1-12, day 1-31)` of a day counted from 1970-01-01 (negative before it), in the
/// proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Days are shifted to count from 0000-03-01, so a year's leap day is its last day.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The two decimal digits of `value` (below 100).
fn two_digits(value: u32) -> [u8; 2] {
    [b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]
}

fn push_two(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&two_digits(value));
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` since the epoch, or `None` (nothing written) when the year
/// does not have four digits. Each thread keeps the last two it wrote: a start writes two (the
/// CBSS envelope's local time and the reset's expiry), each the same for a whole second, so most
/// requests find both made (about 150 instructions each otherwise).
fn push_date_time(out: &mut Vec<u8>, secs: i64) -> Option<()> {
    let recent = RECENT_DATE_TIMES.get();
    if secs != NOT_WRITTEN {
        if let Some((_, text)) = recent.iter().find(|(at, _)| *at == secs) {
            out.extend_from_slice(text);
            return Some(());
        }
    }
    let text = date_time(secs)?;
    // The newest first; a hit changes nothing, so two seconds in turn both stay.
    RECENT_DATE_TIMES.set([(secs, text), recent[0]]);
    out.extend_from_slice(&text);
    Some(())
}

/// `secs` no text is kept for (it is not a four-digit year), marking an empty place.
const NOT_WRITTEN: i64 = i64::MIN;

thread_local! {
    static RECENT_DATE_TIMES: std::cell::Cell<[(i64, [u8; 19]); 2]> =
        const { std::cell::Cell::new([(NOT_WRITTEN, [0; 19]); 2]) };
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` since the epoch, written on the stack, or `None` when the
/// year does not have four digits.
fn date_time(secs: i64) -> Option<[u8; 19]> {
    let (year, month, day) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let second_of_day = secs.rem_euclid(SECS_PER_DAY) as u32;
    let year = year as u32;
    let mut text = *b"0000-00-00T00:00:00";
    for (at, value) in [
        (0, year / 100),
        (2, year % 100),
        (5, month),
        (8, day),
        (11, second_of_day / 3600),
        (14, second_of_day % 3600 / 60),
        (17, second_of_day % 60),
    ] {
        text[at..at + 2].copy_from_slice(&two_digits(value));
    }
    Some(text)
}

/// `secs` since the epoch as RFC 3339 UTC with whole seconds (`2026-11-24T07:00:00Z`), as
/// chrono's `to_rfc3339_opts(SecondsFormat::Secs, true)` writes it.
pub fn push_rfc3339_utc(out: &mut Vec<u8>, secs: i64) {
    if push_date_time(out, secs).is_some() {
        out.push(b'Z');
    } else {
        // Years past 9999 or before 0 never come from a reset's lifetime; chrono writes them.
        let text = chrono::DateTime::from_timestamp(secs, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        out.extend_from_slice(text.as_bytes());
    }
}

/// A moment in .NET's round-trip form: local time at `offset_secs` east of UTC, seven
/// fractional digits and the offset (`2024-11-18T12:34:23.6965096+08:00`).
fn push_dotnet_at(out: &mut Vec<u8>, unix_secs: i64, nanos: u32, offset_secs: i32) {
    let local = unix_secs.saturating_add(i64::from(offset_secs));
    if push_date_time(out, local).is_none() {
        // A clock outside years 0 to 9999 is broken; chrono still writes something parseable.
        let text = chrono::DateTime::from_timestamp(local, nanos)
            .unwrap_or_default()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'.');
    let ticks = nanos % 1_000_000_000 / 100;
    let mut digits = [b'0'; 7];
    let mut rest = ticks;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(if offset_secs < 0 { b'-' } else { b'+' });
    let offset = offset_secs.unsigned_abs();
    push_two(out, offset / 3600);
    out.push(b':');
    push_two(out, offset % 3600 / 60);
}

/// Seconds since the Unix epoch, from the kernel's coarse wall clock: the time of its last tick
/// (a few milliseconds behind at most), read without the hardware clock read a precise reading
/// makes, which is slow on virtual machines (about 45 ns a reading on the benchmark machine).
/// For times the request path needs only to the second: the `Date` field, a reset id's expiry.
pub fn unix_secs_coarse() -> i64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(now) => now.tv_sec(),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    }
}

/// Now, in .NET's round-trip form at `offset_secs` east of UTC.
pub fn dotnet_now(offset_secs: i32) -> String {
    let mut out = Vec::with_capacity(33);
    push_dotnet_now(&mut out, offset_secs);
    String::from_utf8(out).expect("digits and ASCII punctuation")
}

/// `dotnet_now`, appended to `out`: digits and ASCII punctuation only (`-`, `:`, `T`, `.`, `+`),
/// so it can go into a JSON string or XML text as it is.
pub fn push_dotnet_now(out: &mut Vec<u8>, offset_secs: i32) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    push_dotnet_at(
        out,
        since_epoch.as_secs() as i64,
        since_epoch.subsec_nanos(),
        offset_secs,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

    fn rfc3339(secs: i64) -> String {
        let mut out = Vec::new();
        push_rfc3339_utc(&mut out, secs);
        String::from_utf8(out).unwrap()
    }

    fn chrono_rfc3339(secs: i64) -> String {
        DateTime::from_timestamp(secs, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// Seconds to try: every day from 1600 to 2400 at a second that moves through the day, the
    /// edges of the four-digit years, and the ends of days around leap days and centuries.
    fn moments() -> impl Iterator<Item = i64> {
        let first_day = -135_140; // 1600-01-01
        let last_day = 157_099; // 2400-02-14
        let daily = (first_day..last_day)
            .map(|day| day * SECS_PER_DAY + (day * 7_919).rem_euclid(SECS_PER_DAY));
        let edges = [
            0,
            -1,
            1,
            951_868_799,     // 2000-02-29T23:59:59Z
            951_868_800,     // 2000-03-01
            4_107_542_399,   // 2100-02-28T23:59:59Z
            4_107_542_400,   // 2100-03-01
            -62_167_219_200, // 0000-01-01
            -62_167_219_201, // the second before: year -1
            253_402_300_799, // 9999-12-31T23:59:59Z
            253_402_300_800, // 10000-01-01
            i64::MAX,
            i64::MIN,
        ];
        daily.chain(edges)
    }

    #[test]
    fn rfc3339_is_what_chrono_writes() {
        for secs in moments() {
            assert_eq!(rfc3339(secs), chrono_rfc3339(secs), "{secs}");
        }
    }

    #[test]
    fn dotnet_form_is_chrono_local_time_with_seven_digits() {
        let offsets = [
            0,
            8 * 3600,
            -(3 * 3600 + 1800),
            5 * 3600 + 2700,
            -12 * 3600,
            14 * 3600,
        ];
        let nanos = [0, 1, 99, 100, 696_509_600, 999_999_999];
        for (n, secs) in moments()
            .filter(|s| (-62_000_000_000..253_000_000_000).contains(s))
            .enumerate()
        {
            let offset_secs = offsets[n % offsets.len()];
            let nano = nanos[n % nanos.len()];
            let mut out = Vec::new();
            push_dotnet_at(&mut out, secs, nano, offset_secs);
            let offset = FixedOffset::east_opt(offset_secs).unwrap();
            let expected = DateTime::<Utc>::from_timestamp(secs, nano)
                .unwrap()
                .with_timezone(&offset)
                .format("%Y-%m-%dT%H:%M:%S.%f%:z")
                .to_string();
            // chrono's %f writes nine digits; .NET's form has seven (ticks of 100 ns).
            let expected = format!("{}{}", &expected[..27], &expected[29..]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "{secs} {offset_secs} {nano}"
            );
        }
    }

    #[test]
    fn remembered_texts_are_the_seconds_asked_for() {
        // Two seconds in turn (both remembered), a third (one forgotten), and back again.
        let order = [
            100, 5_000, 100, 5_000, 100, 7_777, 5_000, 100, 7_777, 100, 100,
        ];
        for secs in order.map(|s| 1_700_000_000 + s) {
            assert_eq!(rfc3339(secs), chrono_rfc3339(secs), "{secs}");
        }
        // Out of range is never taken for the empty places' marker.
        assert_eq!(rfc3339(i64::MIN), chrono_rfc3339(i64::MIN));
    }

    #[test]
    fn the_coarse_clock_is_at_most_one_tick_behind() {
        use nix::time::{clock_getres, ClockId};
        let tick = clock_getres(ClockId::CLOCK_REALTIME_COARSE).unwrap();
        let tick = std::time::Duration::from(tick);
        assert!(tick < std::time::Duration::from_millis(100), "{tick:?}");
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let coarse = unix_secs_coarse();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(coarse <= after.as_secs() as i64);
        assert!(coarse >= (before - tick).as_secs() as i64 - 1);
    }

    #[test]
    fn now_parses_back_within_the_call() {
        let before = Utc::now();
        let text = dotnet_now(8 * 3600);
        let after = Utc::now();
        let written = DateTime::parse_from_rfc3339(&text).unwrap();
        assert_eq!(written.offset().local_minus_utc(), 8 * 3600);
        assert!(written >= before - chrono::Duration::nanoseconds(100) && written <= after);
        assert_eq!(text.len(), "2024-11-18T12:34:23.6965096+08:00".len());
    }
}
