//! UTC days: parsing and printing `YYYY-MM-DD`, the day an instant falls
//! in, and the rule that assigns each event to exactly one day.
use std::fmt;
use std::str::FromStr;

use agentlog_log::Timestamp;

const NANOS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// A UTC calendar day, as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(u64);

impl Day {
    pub fn of(ts: Timestamp) -> Day {
        Day(ts.as_nanos() / NANOS_PER_DAY)
    }

    /// The first instant of the day.
    pub fn start(self) -> Timestamp {
        Timestamp::from_nanos(self.0.saturating_mul(NANOS_PER_DAY))
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    /// The day before (the epoch's first day has none).
    pub fn previous(self) -> Option<Day> {
        self.0.checked_sub(1).map(Day)
    }

    /// The Hive partition directory: `date=YYYY-MM-DD`.
    pub fn partition(self) -> String {
        format!("date={self}")
    }

    /// Reads a partition directory name back.
    pub fn from_partition(name: &str) -> Option<Day> {
        name.strip_prefix("date=")?.parse().ok()
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.start().date())
    }
}

impl FromStr for Day {
    type Err = String;

    /// `YYYY-MM-DD`, from 1970-01-01 on.
    fn from_str(text: &str) -> Result<Day, String> {
        let bad = || format!("{text:?} is not a date: write it as YYYY-MM-DD, for example 2026-01-31");
        let parts: Vec<&str> = text.split('-').collect();
        let [y, m, d] = parts.as_slice() else { return Err(bad()) };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let (y, m, d): (i64, u32, u32) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return Err(bad());
        }
        let days = days_from_civil(y, m, d);
        let day =
            u64::try_from(days).map_err(|_| format!("{text:?} is before 1970-01-01, where agentlog's time starts"))?;
        Ok(Day(day))
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days-from-civil (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Assigns events, in seq order, to days so that every day is one
/// contiguous range of seqs: an event belongs to the day of the latest
/// timestamp at or before it (its own, whenever timestamps rise with seq).
/// An event decided just before midnight but appended after a later one
/// therefore lands in the later day, never in a day already closed.
#[derive(Clone, Copy, Debug)]
pub struct DayAssigner {
    current: Option<Day>,
}

impl DayAssigner {
    /// `floor`: the first day still open (the day after the last archived one).
    pub fn new(floor: Option<Day>) -> Self {
        DayAssigner { current: floor }
    }

    pub fn assign(&mut self, ts: Timestamp) -> Day {
        let day = Day::of(ts).max(self.current.unwrap_or(Day(0)));
        self.current = Some(day);
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_text() {
        for text in ["1970-01-01", "2000-02-29", "2026-01-01", "2026-12-31", "2100-03-01"] {
            let day: Day = text.parse().unwrap();
            assert_eq!(day.to_string(), text);
            assert_eq!(Day::of(day.start()), day);
            assert_eq!(Day::from_partition(&day.partition()), Some(day));
        }
        assert_eq!("2026-01-01".parse::<Day>().unwrap().start(), Timestamp::from_nanos(1_767_225_600 * 1_000_000_000));
    }

    #[test]
    fn bad_dates_are_refused_with_the_expected_form() {
        for text in ["2026-02-29", "2026-13-01", "2026-1-01", "yesterday", "1969-12-31", ""] {
            let err = text.parse::<Day>().unwrap_err();
            assert!(err.contains("YYYY-MM-DD") || err.contains("1970"), "{text}: {err}");
        }
    }

    #[test]
    fn a_late_event_joins_the_later_day() {
        let day: Day = "2026-01-01".parse().unwrap();
        let at = |d: Day, secs: u64| d.start().plus(std::time::Duration::from_secs(secs));
        let mut days = DayAssigner::new(None);
        assert_eq!(days.assign(at(day, 10)), day);
        assert_eq!(days.assign(at(day.next(), 1)), day.next());
        assert_eq!(days.assign(at(day, 86_399)), day.next(), "never back into a day that may be closed");
        let mut after_archive = DayAssigner::new(Some(day.next()));
        assert_eq!(after_archive.assign(at(day, 5)), day.next());
    }
}
