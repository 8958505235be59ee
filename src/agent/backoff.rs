//! [`Backoff`]: the one schedule of growing waits, used wherever the gateway retries or polls
//! (reconnecting to an absent agent, resending an unanswered resync, polling a guest
//! process), so that every loop that could spin has the same bounded, tested shape.

use std::time::Duration;

/// Waits that start at `first`, stay there for the first `steady` waits, then double up to
/// `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Backoff {
    max: Duration,
    /// Steps still to take at `first` before the doubling starts.
    steady: u32,
    current: Duration,
}

impl Backoff {
    /// Doubling from `first` up to `max`.
    pub(super) const fn doubling(first: Duration, max: Duration) -> Backoff {
        Backoff::after_steady(first, 0, max)
    }

    /// `steady` waits of `first`, then doubling up to `max`.
    pub(super) const fn after_steady(first: Duration, steady: u32, max: Duration) -> Backoff {
        Backoff {
            max,
            steady,
            current: first,
        }
    }

    /// The next wait, and the schedule moves on.
    pub(super) fn next_wait(&mut self) -> Duration {
        let wait = self.current;
        self.steady = self.steady.saturating_sub(1);
        if self.steady == 0 {
            self.current = (self.current * 2).min(self.max);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn waits(backoff: &mut Backoff, count: usize) -> Vec<Duration> {
        (0..count).map(|_| backoff.next_wait()).collect()
    }

    #[test]
    fn waits_double_up_to_the_maximum() {
        let mut backoff = Backoff::doubling(50 * MS, 300 * MS);
        assert_eq!(
            waits(&mut backoff, 5),
            [50 * MS, 100 * MS, 200 * MS, 300 * MS, 300 * MS]
        );
    }

    #[test]
    fn steady_steps_come_before_the_doubling() {
        let mut backoff = Backoff::after_steady(MS, 3, 8 * MS);
        assert_eq!(
            waits(&mut backoff, 7),
            [MS, MS, MS, 2 * MS, 4 * MS, 8 * MS, 8 * MS]
        );
    }
}
