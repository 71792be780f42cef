//! Ids and the `IdGen` that makes them: UUIDv7 event ids, session, saga,
//! correlation and causation ids, and a seeded generator for simulations.
//!
//! Only [`RandomIdGen`] reads a random source; everything else takes an
//! `&dyn IdGen`, so a seeded run reproduces every id.
use std::fmt;
use std::sync::Mutex;

use uuid::Uuid;

use crate::clock::Timestamp;

/// A source of random bits for ids.
pub trait IdGen: Send + Sync {
    fn next_u128(&self) -> u128;
}

/// Production ids: the operating system's random source, read 4 KiB at a
/// time so that an id costs no system call.
#[derive(Debug, Default)]
pub struct RandomIdGen {
    pool: Mutex<RandomPool>,
}

#[derive(Debug)]
struct RandomPool {
    bytes: Box<[u8; 4096]>,
    used: usize,
}

impl Default for RandomPool {
    fn default() -> Self {
        // Empty: the first id fills it.
        RandomPool { bytes: Box::new([0; 4096]), used: 4096 }
    }
}

impl RandomIdGen {
    pub fn new() -> Self {
        RandomIdGen::default()
    }
}

impl IdGen for RandomIdGen {
    #[allow(clippy::disallowed_methods)] // the one sanctioned random-source read
    fn next_u128(&self) -> u128 {
        let mut pool = self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.used + 16 > pool.bytes.len() {
            // The OS random source failing is not something to continue from.
            getrandom::fill(&mut pool.bytes[..]).expect("the operating system's random source failed");
            pool.used = 0;
        }
        let at = pool.used;
        pool.used += 16;
        u128::from_le_bytes(pool.bytes[at..at + 16].try_into().expect("16 bytes"))
    }
}

/// Simulation and test ids: the same seed gives the same ids, in order.
#[derive(Debug)]
pub struct SeededIdGen {
    rng: Mutex<SplitMix64>,
}

impl SeededIdGen {
    pub fn new(seed: u64) -> Self {
        SeededIdGen { rng: Mutex::new(SplitMix64::new(seed ^ 0x1D5_1D5_1D5)) }
    }
}

impl IdGen for SeededIdGen {
    fn next_u128(&self) -> u128 {
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
    }
}

/// SplitMix64: a tiny, fast, well-distributed deterministic generator
/// (Steele, Lea, Flood 2014). Not for secrets; for seeded simulations.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % bound;
            }
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A UUIDv7: 48 bits of Unix milliseconds, then random bits from `ids`.
pub fn uuid_v7(ts: Timestamp, ids: &dyn IdGen) -> Uuid {
    let random = ids.next_u128().to_le_bytes();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&random[..10]);
    uuid::Builder::from_unix_timestamp_millis(ts.as_millis(), &tail).into_uuid()
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new(ts: Timestamp, ids: &dyn IdGen) -> Self {
                $name(uuid_v7(ts, ids))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// From the 16 bytes an envelope carries; `None` when absent or
            /// not 16 bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// The id of one event (UUIDv7, so ids sort roughly by time).
    EventId
);
uuid_id!(
    /// An agent's session.
    SessionId
);
uuid_id!(
    /// A saga: a unit of work spanning several aggregates.
    SagaId
);
uuid_id!(
    /// Ties together every event caused by one request.
    CorrelationId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_repeat_and_differ_by_seed() {
        let ts = Timestamp::from_nanos(1_700_000_000_000_000_000);
        let take = |seed| {
            let ids = SeededIdGen::new(seed);
            (0..4).map(|_| EventId::new(ts, &ids)).collect::<Vec<_>>()
        };
        assert_eq!(take(7), take(7));
        assert_ne!(take(7), take(8));
    }

    #[test]
    fn event_ids_are_version_7_with_the_clock_millis() {
        let ts = Timestamp::from_nanos(1_700_000_000_123_456_789);
        let id = EventId::new(ts, &SeededIdGen::new(1));
        assert_eq!(id.0.get_version_num(), 7);
        let (secs, nanos) = id.0.get_timestamp().expect("v7 has a timestamp").to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, 1_700_000_000_123);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(3);
        for bound in 1..50 {
            assert!(rng.below(bound) < bound);
        }
    }
}
