//! The time rules that depend on it (billing above all) read it from a
//! [`Clock`], so tests move time forward instead of sleeping. Production runs
//! on [`SystemClock`]; tests set a [`ManualClock`].

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound as _, Utc};

pub trait Clock: fmt::Debug + Send + Sync {
    /// The current time, at the microsecond precision both databases keep.
    fn now(&self) -> DateTime<Utc>;
}

/// A shared clock, as services hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The real time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that only moves when told; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at.trunc_subsecs(6))))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("the clock's lock is never poisoned") = at.trunc_subsecs(6);
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().expect("the clock's lock is never poisoned");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("the clock's lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_follow() {
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 10, 30, 0).unwrap();
        let clock = ManualClock::new(start);
        let shared: SharedClock = Arc::new(clock.clone());
        assert_eq!(shared.now(), start);
        clock.advance(chrono::Duration::hours(2));
        assert_eq!(shared.now(), start + chrono::Duration::hours(2));
        clock.set(start);
        assert_eq!(shared.now(), start);
    }
}
