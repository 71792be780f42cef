//! Time: the `Clock` trait, a hybrid logical clock for production and a
//! manual clock for tests and simulations, and the `Timestamp` they return.
//!
//! This module is the only place in the core crates that reads the wall
//! clock. Every decision takes its `now` from a `Clock`, and the time is
//! recorded in the event, never re-read.
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// Saturating: a deadline past the year 2554 stays at the end of time.
    pub fn plus(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The UTC calendar date and time of day: (year, month, day, seconds of day).
    pub fn to_civil(self) -> (i64, u32, u32, u64) {
        let secs = self.0 / 1_000_000_000;
        let days = (secs / 86_400) as i64;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, secs % 86_400)
    }

    /// `YYYY-MM-DD`, the UTC date.
    pub fn date(self) -> String {
        let (y, m, d, _) = self.to_civil();
        format!("{y:04}-{m:02}-{d:02}")
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 in UTC with nanoseconds: `2026-11-22T08:15:00.000000001Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, sod) = self.to_civil();
        let nanos = self.0 % 1_000_000_000;
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, (sod / 60) % 60, sod % 60)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// Where decisions get their `now`.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The physical time source of a [`HybridClock`].
pub trait PhysicalTime: Send + Sync {
    fn nanos_since_epoch(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTime;

impl PhysicalTime for SystemTime {
    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn nanos_since_epoch(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A hybrid logical clock: physical time while it moves forward, and one
/// nanosecond past the last reading when it does not (the system clock
/// stepped back, or two readings landed in the same nanosecond). So readings
/// strictly increase, whatever the system clock does.
pub struct HybridClock<P = SystemTime> {
    physical: P,
    last: Mutex<u64>,
}

impl HybridClock<SystemTime> {
    pub fn system() -> Self {
        HybridClock::new(SystemTime)
    }
}

impl<P: PhysicalTime> HybridClock<P> {
    pub fn new(physical: P) -> Self {
        HybridClock { physical, last: Mutex::new(0) }
    }

    /// Merge a timestamp seen elsewhere (an event from another node), so
    /// later readings come after it.
    pub fn observe(&self, seen: Timestamp) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(seen.as_nanos());
    }
}

impl<P: PhysicalTime> Clock for HybridClock<P> {
    fn now(&self) -> Timestamp {
        let physical = self.physical.nanos_since_epoch();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let next = physical.max(last.saturating_add(1));
        *last = next;
        Timestamp(next)
    }
}

impl<P> fmt::Debug for HybridClock<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridClock").finish_non_exhaustive()
    }
}

/// A clock that moves only when told: tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock { nanos: AtomicU64::new(start.as_nanos()) }
    }

    /// Moves the clock; it may move backwards, as a test may need.
    pub fn set(&self, to: Timestamp) {
        self.nanos.store(to.as_nanos(), Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) -> Timestamp {
        let next = self.now().plus(by);
        self.set(next);
        next
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Scripted(Arc<AtomicU64>);
    impl PhysicalTime for Scripted {
        fn nanos_since_epoch(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn hybrid_clock_never_goes_backwards_when_the_system_clock_does() {
        let wall = Arc::new(AtomicU64::new(1_000));
        let clock = HybridClock::new(Scripted(wall.clone()));
        let a = clock.now();
        wall.store(500, Ordering::SeqCst); // the system clock steps back
        let b = clock.now();
        let c = clock.now();
        wall.store(5_000, Ordering::SeqCst);
        let d = clock.now();
        assert_eq!(a.as_nanos(), 1_000);
        assert_eq!((b.as_nanos(), c.as_nanos()), (1_001, 1_002));
        assert_eq!(d.as_nanos(), 5_000);
    }

    #[test]
    fn hybrid_clock_observes_remote_time() {
        let wall = Arc::new(AtomicU64::new(10));
        let clock = HybridClock::new(Scripted(wall));
        clock.observe(Timestamp::from_nanos(100));
        assert_eq!(clock.now().as_nanos(), 101);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_nanos(7));
        assert_eq!(clock.now(), clock.now());
        clock.advance(Duration::from_nanos(3));
        assert_eq!(clock.now().as_nanos(), 10);
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        let ts = Timestamp::from_nanos(1_763_799_300_000_000_001);
        assert_eq!(ts.to_string(), "2025-11-22T08:15:00.000000001Z");
        assert_eq!(Timestamp::ZERO.date(), "1970-01-01");
        assert_eq!(Timestamp::from_nanos(951_782_400 * 1_000_000_000).date(), "2000-02-29");
    }
}
