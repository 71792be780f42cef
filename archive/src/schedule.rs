//! When the nightly archive runs: a time of day in UTC, read from the
//! `Clock` by the caller. Pure, so it is tested without waiting.
use std::fmt;
use std::str::FromStr;

use agentlog_log::Timestamp;

use crate::day::Day;

/// A time of day, UTC, to the minute: `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtTime {
    minutes: u32,
}

impl AtTime {
    pub const fn new(hours: u32, minutes: u32) -> Self {
        AtTime { minutes: hours * 60 + minutes }
    }

    /// The first instant at this time of day strictly after `now`.
    pub fn next_after(self, now: Timestamp) -> Timestamp {
        let offset = std::time::Duration::from_secs(u64::from(self.minutes) * 60);
        let today = Day::of(now).start().plus(offset);
        if today > now { today } else { Day::of(now).next().start().plus(offset) }
    }
}

/// Shortly after midnight: late events of the day before have arrived.
impl Default for AtTime {
    fn default() -> Self {
        AtTime::new(0, 5)
    }
}

impl fmt::Display for AtTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl FromStr for AtTime {
    type Err = String;

    fn from_str(text: &str) -> Result<AtTime, String> {
        let bad = || format!("{text:?} is not a time of day: write it as HH:MM in UTC, for example 00:05");
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(AtTime::new(h, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_today_or_tomorrow() {
        let day: Day = "2026-03-01".parse().unwrap();
        let at: AtTime = "00:05".parse().unwrap();
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        assert_eq!(at.next_after(day.start()), day.start().plus(minutes(5)));
        assert_eq!(at.next_after(day.start().plus(minutes(5))), day.next().start().plus(minutes(5)));
        assert_eq!(at.next_after(day.start().plus(minutes(600))), day.next().start().plus(minutes(5)));
        assert_eq!(at.to_string(), "00:05");
        for bad in ["24:00", "0:05", "00:60", "noon"] {
            assert!(bad.parse::<AtTime>().is_err(), "{bad}");
        }
    }
}
