//! Retry classification and backoff (exponential, full jitter, total budget).
//!
//! Pure: the random source is injected and elapsed time is passed in, so tests are deterministic.

use std::time::Duration;

use crate::config::RetryPolicy;

/// What to do with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retry with backoff.
    Retry,
    /// Final.
    Fatal,
}

/// Classifies an HTTP status. `conflict_retryable` is set for `POST Requests`, where 409 comes
/// from the per-account "Concurrent Requests" limit during rollouts.
pub(crate) fn classify_status(status: u16, conflict_retryable: bool) -> Class {
    match status {
        408 | 429 => Class::Retry,
        409 if conflict_retryable => Class::Retry,
        500..=599 => Class::Retry,
        _ => Class::Fatal,
    }
}

/// Classifies a transport error: everything short of a malformed request is worth retrying
/// (connect, TLS handshake, timeouts, resets, truncated bodies). Builder errors, bad URLs and
/// redirect loops are not.
pub(crate) fn classify_transport(err: &reqwest::Error) -> Class {
    if err.is_builder() || err.is_redirect() || is_tls_failure(err) {
        Class::Fatal
    } else {
        Class::Retry
    }
}

/// Whether a TLS error (untrusted or invalid certificate, refused client certificate, protocol
/// mismatch) is in the chain: retrying cannot fix those.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<rustls::Error>() {
            return true;
        }
        // io::Error::source() skips the error it wraps (and TLS errors arrive as io::Errors
        // nested in io::Errors); look inside explicitly.
        let mut io = e.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if inner.is::<rustls::Error>() {
                return true;
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = e.source();
    }
    false
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is ignored: servers that throttle
/// send seconds, and a clock-skewed date is worse than the backoff).
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// The backoff state of one call.
pub(crate) struct Backoff {
    policy: RetryPolicy,
    rng: fastrand::Rng,
    retries: u32,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Backoff {
        Backoff::with_rng(policy, fastrand::Rng::new())
    }

    pub(crate) fn with_rng(policy: RetryPolicy, rng: fastrand::Rng) -> Backoff {
        Backoff {
            policy,
            rng,
            retries: 0,
        }
    }

    /// The cap of the n-th retry's wait (n from 0): `min(max, initial × multiplier^n)`.
    pub(crate) fn cap(&self, n: u32) -> Duration {
        let initial = self.policy.initial_interval.as_secs_f64();
        let mult = if self.policy.multiplier.is_finite() && self.policy.multiplier >= 1.0 {
            self.policy.multiplier
        } else {
            1.0
        };
        let cap = initial * mult.powi(n.min(64) as i32);
        let max = self.policy.max_interval.as_secs_f64();
        Duration::from_secs_f64(if cap.is_finite() { cap.min(max) } else { max })
    }

    /// The wait before the next attempt, or `None` when the budget does not allow one.
    /// `elapsed` is the time since the first attempt started; `retry_after` is the server's
    /// minimum wait. The jitter is added on top of `Retry-After` rather than folded into it:
    /// clients refused together are told the same `Retry-After`, and would otherwise all come
    /// back in the same instant.
    pub(crate) fn next_delay(
        &mut self,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        self.next_delay_within(elapsed, retry_after, self.policy.max_elapsed)
    }

    /// The policy's total budget.
    pub(crate) fn budget(&self) -> Duration {
        self.policy.max_elapsed
    }

    /// [`Backoff::next_delay`] with another total budget.
    pub(crate) fn next_delay_within(
        &mut self,
        elapsed: Duration,
        retry_after: Option<Duration>,
        max_elapsed: Duration,
    ) -> Option<Duration> {
        let cap = self.cap(self.retries);
        let jittered = Duration::from_nanos(self.rng.u64(0..=cap.as_nanos().min(u64::MAX as u128) as u64));
        let delay = match retry_after {
            Some(ra) => ra.checked_add(jittered)?,
            None => jittered,
        };
        if elapsed.checked_add(delay)? >= max_elapsed {
            return None;
        }
        self.retries += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(200),
            multiplier: 2.0,
            max_interval: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        }
    }

    #[test]
    fn status_classes() {
        for s in [500, 502, 503, 504, 599, 408, 429] {
            assert_eq!(classify_status(s, false), Class::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 410, 422] {
            assert_eq!(classify_status(s, false), Class::Fatal, "{s}");
        }
        assert_eq!(classify_status(409, true), Class::Retry);
        assert_eq!(classify_status(403, true), Class::Fatal);
    }

    #[test]
    fn caps_grow_then_saturate() {
        let b = Backoff::with_rng(policy(), fastrand::Rng::with_seed(1));
        let caps: Vec<u128> = (0..8).map(|n| b.cap(n).as_millis()).collect();
        assert_eq!(caps, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.cap(10_000), Duration::from_secs(5));
    }

    #[test]
    fn delays_stay_within_caps_for_many_seeds() {
        for seed in 0..200 {
            let mut b = Backoff::with_rng(policy(), fastrand::Rng::with_seed(seed));
            for n in 0..10 {
                let cap = b.cap(n);
                let d = b.next_delay(Duration::ZERO, None).unwrap();
                assert!(d <= cap, "seed {seed} retry {n}: {d:?} > {cap:?}");
            }
        }
    }

    #[test]
    fn jitter_is_spread_full_range() {
        let mut b = Backoff::with_rng(policy(), fastrand::Rng::with_seed(7));
        let first: Vec<Duration> = (0..100)
            .map(|_| {
                b.retries = 0;
                b.next_delay(Duration::ZERO, None).unwrap()
            })
            .collect();
        assert!(first.iter().any(|d| *d < Duration::from_millis(50)));
        assert!(first.iter().any(|d| *d > Duration::from_millis(150)));
    }

    #[test]
    fn budget_stops_retries() {
        let mut b = Backoff::with_rng(policy(), fastrand::Rng::with_seed(3));
        assert!(
            b.next_delay(Duration::from_secs(59), Some(Duration::from_secs(2)))
                .is_none()
        );
        assert!(b.next_delay(Duration::from_secs(60), None).is_none());
        assert!(b.next_delay(Duration::from_secs(10), None).is_some());
        let mut zero = Backoff::with_rng(
            RetryPolicy {
                max_elapsed: Duration::ZERO,
                ..policy()
            },
            fastrand::Rng::new(),
        );
        assert!(zero.next_delay(Duration::ZERO, None).is_none());
    }

    #[test]
    fn retry_after_is_a_minimum_with_jitter_on_top() {
        let mut waits = Vec::new();
        for seed in 0..50 {
            let mut b = Backoff::with_rng(policy(), fastrand::Rng::with_seed(seed));
            let d = b
                .next_delay(Duration::ZERO, Some(Duration::from_secs(3)))
                .unwrap();
            assert!(d >= Duration::from_secs(3), "{d:?}");
            assert!(d <= Duration::from_secs(3) + b.cap(0), "{d:?}");
            waits.push(d);
        }
        // Clients told the same Retry-After do not come back in the same instant.
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 40, "{} distinct waits", waits.len());
        assert_eq!(parse_retry_after(Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(None), None);
        assert_eq!(parse_retry_after(Some("999999")), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn odd_policies_do_not_panic() {
        let p = RetryPolicy {
            multiplier: f64::NAN,
            ..policy()
        };
        let b = Backoff::with_rng(p, fastrand::Rng::with_seed(1));
        assert_eq!(b.cap(5), Duration::from_millis(200));
        let p = RetryPolicy {
            multiplier: 1e300,
            ..policy()
        };
        let b = Backoff::with_rng(p, fastrand::Rng::with_seed(1));
        assert_eq!(b.cap(60), Duration::from_secs(5));
    }
}
