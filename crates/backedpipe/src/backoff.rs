//! The reconnect policy, [`Backoff`]: how long the dialling side waits
//! between failed attempts, and when it gives up. Plain arithmetic: the
//! caller passes the random draw, so the core and tests stay deterministic.

use std::time::Duration;

/// When to try again after a failed attempt: exponential growth with
/// jitter, a cap, and an optional deadline after which the pipe gives up.
///
/// The first attempt after a connection is lost is immediate; the `n`-th
/// consecutive failure waits `initial_delay * factor^(n-1)`, at most
/// `max_delay`, reduced by a random fraction of up to `jitter` so that many
/// clients cut at once do not come back in lockstep.
///
/// ```
/// use std::time::Duration;
/// use backedpipe::Backoff;
///
/// let backoff = Backoff::new()
///     .initial_delay(Duration::from_millis(10))
///     .max_delay(Duration::from_secs(1))
///     .jitter(0.0)
///     .give_up_after(Some(Duration::from_secs(60)));
/// assert_eq!(backoff.delay(0, 0.3), Duration::ZERO);
/// assert_eq!(backoff.delay(1, 0.3), Duration::from_millis(10));
/// assert_eq!(backoff.delay(2, 0.3), Duration::from_millis(20));
/// assert_eq!(backoff.delay(100, 0.3), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub(crate) initial_delay: Duration,
    pub(crate) factor: f64,
    pub(crate) max_delay: Duration,
    pub(crate) jitter: f64,
    pub(crate) give_up_after: Option<Duration>,
}

impl Backoff {
    /// The defaults: 10 ms after the first failure, doubling up to 5 s,
    /// up to half of each wait removed at random, never giving up.
    pub fn new() -> Self {
        Backoff {
            initial_delay: Duration::from_millis(10),
            factor: 2.0,
            max_delay: Duration::from_secs(5),
            jitter: 0.5,
            give_up_after: None,
        }
    }

    /// The wait after the first failure (default 10 ms).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Growth of the wait per further failure (default 2.0; below 1.0, or
    /// not finite, counts as 1.0).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The longest wait (default 5 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The largest fraction removed at random from each wait, 0.0..=1.0
    /// (default 0.5; out of range values are clamped, not finite ones
    /// count as 0.0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Give up (the pipe fails with [`Error::GaveUp`](crate::Error::GaveUp))
    /// when no handshake succeeded for this long after the connection was
    /// lost (default `None`: never).
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// The wait before the next attempt after `failures` consecutive failed
    /// attempts; `unit_random` (in `0.0..1.0`, drawn fresh each time) picks
    /// the jitter.
    pub fn delay(&self, failures: u32, unit_random: f64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(failures - 1).unwrap_or(i32::MAX);
        let factor = if self.factor.is_finite() { self.factor.max(1.0) } else { 1.0 };
        let max = self.max_delay.as_secs_f64();
        let base = (self.initial_delay.as_secs_f64() * factor.powi(exponent)).min(max);
        let base = if base.is_finite() { base } else { max };
        let jitter = if self.jitter.is_finite() { self.jitter.clamp(0.0, 1.0) } else { 0.0 };
        let unit_random = if unit_random.is_finite() { unit_random.clamp(0.0, 1.0) } else { 0.0 };
        let scaled = base * (1.0 - jitter * unit_random);
        Duration::try_from_secs_f64(scaled.max(0.0)).unwrap_or(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jitter_stays_in_range() {
        let backoff = Backoff::new();
        // Draws across the whole unit range, both ends included.
        let draws = (0..=20).map(|step| f64::from(step) / 20.0);
        let mut previous_cap = Duration::ZERO;
        for failures in 1..40 {
            let cap = (backoff.initial_delay.as_secs_f64() * 2f64.powi(failures as i32 - 1))
                .min(backoff.max_delay.as_secs_f64());
            for unit_random in draws.clone() {
                let delay = backoff.delay(failures, unit_random).as_secs_f64();
                assert!(delay <= cap + 1e-9, "{delay} > {cap}");
                assert!(delay >= cap * 0.5 - 1e-9, "{delay} < half of {cap}");
            }
            assert!(Duration::from_secs_f64(cap) >= previous_cap);
            previous_cap = Duration::from_secs_f64(cap);
        }
        assert_eq!(previous_cap, backoff.max_delay);
    }

    #[test]
    fn nonsense_settings_do_not_panic() {
        let backoff = Backoff::new().factor(f64::NAN).jitter(f64::INFINITY);
        assert_eq!(backoff.delay(u32::MAX, 0.3), backoff.initial_delay);
        let huge = Backoff::new().factor(1e300).max_delay(Duration::MAX).jitter(0.0);
        assert!(huge.delay(1000, 0.7) > Duration::from_secs(1));
    }
}
