//! Appliance-like limits on API calls, and the load counters that show how clients behave
//! under them.
//!
//! A real Password Safe appliance (IIS in front of the API) has a finite capacity: it answers
//! **503** when too many calls are in progress and a rate limiter in front of it answers **429**
//! when calls arrive faster than it allows, both with `Retry-After`. The emulator offers both,
//! off by default:
//!
//! - `max_concurrent`: at most this many API calls are served at once (from admission to the
//!   response, injected latency included); one more is refused at once with 503;
//! - `rate_per_second` and `burst`: a token bucket; a call finding it empty is refused at once
//!   with 429.
//!
//! Refusals cost the emulator almost nothing, like a front-end's. They carry `Retry-After`
//! (`retry_after_seconds`, or longer for 429 when the bucket needs longer to refill).
//!
//! Counters: calls in flight (admitted or being refused) and their peak, admitted calls in
//! flight and their peak, 429s, 503s, and **early retries**: a call repeated before the
//! `Retry-After` of its refusal had passed. A call is identified by its client (the session
//! cookie, else its TCP connection, numbered at accept) and its method, path, query and body, so
//! a retry of a refused call is recognised when it comes from the same session or connection;
//! one sent over another connection before sign-in is not (never a false alarm: a connection
//! number, unlike a port, is never reused).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::state::lock;

/// The configurable limits; 0 turns a limit off. The default has no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// API calls served at once; beyond it 503. 0: no limit.
    pub max_concurrent: u32,
    /// Calls admitted per second on average; beyond it 429. 0: no limit.
    pub rate_per_second: u32,
    /// Calls admitted at once after an idle period (bucket size); 0 means `rate_per_second`.
    pub burst: u32,
    /// `Retry-After` of a refusal, in seconds (at least 1). Default 1.
    pub retry_after_seconds: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            max_concurrent: 0,
            rate_per_second: 0,
            burst: 0,
            retry_after_seconds: 1,
        }
    }
}

/// Why a call was refused, with its `Retry-After` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 429: the rate limit.
    Throttled(u32),
    /// 503: the concurrency limit.
    Overloaded(u32),
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Remembered refusals are forgotten this long after their `Retry-After` passed.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);
/// Above this many remembered refusals, stale ones are swept on insert.
const REFUSAL_SWEEP_AT: usize = 10_000;

pub(crate) struct Limits {
    max_concurrent: AtomicU32,
    rate_per_second: AtomicU32,
    burst: AtomicU32,
    retry_after_seconds: AtomicU32,
    bucket: Mutex<Bucket>,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    admitted: AtomicU64,
    peak_admitted: AtomicU64,
    throttled: AtomicU64,
    overloaded: AtomicU64,
    early_retries: AtomicU64,
    /// Call key → when its retry may come.
    refused: Mutex<HashMap<u64, Instant>>,
    /// `refused` is not empty (lets the hot path skip the lock).
    any_refused: AtomicU32,
}

/// The load counters, as `/_emulator/state` shows them.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LoadCounters {
    pub in_flight: u64,
    pub peak_in_flight: u64,
    pub admitted_in_flight: u64,
    pub peak_admitted: u64,
    pub throttled: u64,
    pub overloaded: u64,
    pub early_retries: u64,
}

/// One API call in progress; dropping it ends the call for the counters.
pub(crate) struct Flight<'a> {
    limits: &'a Limits,
    admitted: bool,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.limits.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.admitted {
            self.limits.admitted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Limits {
    pub(crate) fn new(cfg: LimitConfig) -> Limits {
        let limits = Limits {
            max_concurrent: AtomicU32::new(0),
            rate_per_second: AtomicU32::new(0),
            burst: AtomicU32::new(0),
            retry_after_seconds: AtomicU32::new(0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            peak_admitted: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            early_retries: AtomicU64::new(0),
            refused: Mutex::new(HashMap::new()),
            any_refused: AtomicU32::new(0),
        };
        limits.set(cfg);
        limits
    }

    /// Replaces the limits; the token bucket starts full.
    pub(crate) fn set(&self, cfg: LimitConfig) {
        self.max_concurrent.store(cfg.max_concurrent, Ordering::Release);
        self.rate_per_second.store(cfg.rate_per_second, Ordering::Release);
        self.burst.store(cfg.burst, Ordering::Release);
        self.retry_after_seconds
            .store(cfg.retry_after_seconds, Ordering::Release);
        let mut b = lock(&self.bucket);
        b.tokens = f64::from(effective_burst(cfg.burst, cfg.rate_per_second));
        b.last = Instant::now();
    }

    pub(crate) fn config(&self) -> LimitConfig {
        LimitConfig {
            max_concurrent: self.max_concurrent.load(Ordering::Acquire),
            rate_per_second: self.rate_per_second.load(Ordering::Acquire),
            burst: self.burst.load(Ordering::Acquire),
            retry_after_seconds: self.retry_after_seconds.load(Ordering::Acquire),
        }
    }

    pub(crate) fn counters(&self) -> LoadCounters {
        LoadCounters {
            in_flight: self.in_flight.load(Ordering::Acquire),
            peak_in_flight: self.peak_in_flight.load(Ordering::Acquire),
            admitted_in_flight: self.admitted.load(Ordering::Acquire),
            peak_admitted: self.peak_admitted.load(Ordering::Acquire),
            throttled: self.throttled.load(Ordering::Acquire),
            overloaded: self.overloaded.load(Ordering::Acquire),
            early_retries: self.early_retries.load(Ordering::Acquire),
        }
    }

    /// Zeroes the event counters; peaks restart from the calls in flight now.
    pub(crate) fn reset_counters(&self) {
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::Acquire), Ordering::Release);
        self.peak_admitted
            .store(self.admitted.load(Ordering::Acquire), Ordering::Release);
        for c in [&self.throttled, &self.overloaded, &self.early_retries] {
            c.store(0, Ordering::Release);
        }
        lock(&self.refused).clear();
        self.any_refused.store(0, Ordering::Release);
    }

    /// Starts an API call: counts it in flight, and as an early retry when it repeats a refused
    /// call before that refusal's `Retry-After` passed. `key` is computed only when needed.
    pub(crate) fn enter(&self, key: impl FnOnce() -> u64) -> Flight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        if self.any_refused.load(Ordering::Acquire) > 0 {
            let k = key();
            let mut refused = lock(&self.refused);
            if let Some(not_before) = refused.remove(&k) {
                if Instant::now() < not_before {
                    self.early_retries.fetch_add(1, Ordering::AcqRel);
                }
                if refused.is_empty() {
                    self.any_refused.store(0, Ordering::Release);
                }
            }
        }
        Flight {
            limits: self,
            admitted: false,
        }
    }

    /// Admits the call or refuses it (concurrency first, then rate). A refusal is remembered
    /// under `key` to recognise an early retry.
    pub(crate) fn admit(&self, flight: &mut Flight<'_>, key: impl FnOnce() -> u64) -> Result<(), Refusal> {
        let cfg = self.config();
        let retry_after = cfg.retry_after_seconds.max(1);
        let now = self.admitted.fetch_add(1, Ordering::AcqRel) + 1;
        if cfg.max_concurrent > 0 && now > u64::from(cfg.max_concurrent) {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            self.overloaded.fetch_add(1, Ordering::AcqRel);
            self.remember(key(), retry_after);
            return Err(Refusal::Overloaded(retry_after));
        }
        if cfg.rate_per_second > 0
            && let Err(wait) = self.take_token(cfg)
        {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            self.throttled.fetch_add(1, Ordering::AcqRel);
            let secs = retry_after.max(
                u32::try_from(wait.as_secs())
                    .unwrap_or(u32::MAX)
                    .saturating_add(u32::from(wait.subsec_nanos() > 0)),
            );
            self.remember(key(), secs);
            return Err(Refusal::Throttled(secs));
        }
        flight.admitted = true;
        self.peak_admitted.fetch_max(now, Ordering::AcqRel);
        Ok(())
    }

    /// Takes one token, or says how long until one is there.
    fn take_token(&self, cfg: LimitConfig) -> Result<(), Duration> {
        let rate = f64::from(cfg.rate_per_second);
        let burst = f64::from(effective_burst(cfg.burst, cfg.rate_per_second));
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    fn remember(&self, key: u64, retry_after_secs: u32) {
        let now = Instant::now();
        let mut refused = lock(&self.refused);
        if refused.len() >= REFUSAL_SWEEP_AT {
            refused.retain(|_, t| *t + REFUSAL_MEMORY > now);
        }
        refused.insert(key, now + Duration::from_secs(u64::from(retry_after_secs)));
        self.any_refused.store(1, Ordering::Release);
    }
}

fn effective_burst(burst: u32, rate: u32) -> u32 {
    if burst == 0 { rate.max(1) } else { burst }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent: u32, rate: u32, burst: u32) -> Limits {
        Limits::new(LimitConfig {
            max_concurrent,
            rate_per_second: rate,
            burst,
            retry_after_seconds: 2,
        })
    }

    #[test]
    fn no_limits_admit_everything_and_count_peaks() {
        let l = limits(0, 0, 0);
        let mut flights: Vec<_> = (0..100).map(|i| l.enter(|| i)).collect();
        for f in &mut flights {
            assert_eq!(l.admit(f, || 0), Ok(()));
        }
        let c = l.counters();
        assert_eq!((c.in_flight, c.peak_in_flight, c.peak_admitted), (100, 100, 100));
        drop(flights);
        let c = l.counters();
        assert_eq!((c.in_flight, c.admitted_in_flight, c.peak_admitted), (0, 0, 100));
        assert_eq!((c.throttled, c.overloaded), (0, 0));
    }

    #[test]
    fn concurrency_beyond_the_limit_is_503_and_frees_on_drop() {
        let l = limits(3, 0, 0);
        let mut held: Vec<_> = (0..3).map(|i| l.enter(|| i)).collect();
        for f in &mut held {
            l.admit(f, || 0).unwrap();
        }
        let mut extra = l.enter(|| 9);
        assert_eq!(l.admit(&mut extra, || 9), Err(Refusal::Overloaded(2)));
        drop(extra);
        let c = l.counters();
        assert_eq!((c.peak_in_flight, c.peak_admitted, c.overloaded), (4, 3, 1));
        held.pop();
        let mut again = l.enter(|| 10);
        assert_eq!(l.admit(&mut again, || 10), Ok(()));
    }

    #[test]
    fn rate_beyond_the_bucket_is_429_with_retry_after() {
        let l = limits(0, 1, 2);
        for i in 0..2 {
            let mut f = l.enter(|| i);
            assert_eq!(l.admit(&mut f, || i), Ok(()), "burst of 2");
        }
        let mut f = l.enter(|| 7);
        assert_eq!(l.admit(&mut f, || 7), Err(Refusal::Throttled(2)));
        assert_eq!(l.counters().throttled, 1);
    }

    #[test]
    fn a_retry_before_retry_after_is_counted_as_early() {
        let l = limits(1, 0, 0);
        let mut holder = l.enter(|| 1);
        l.admit(&mut holder, || 1).unwrap();
        let mut refused = l.enter(|| 42);
        assert!(l.admit(&mut refused, || 42).is_err());
        drop(refused);
        // The same call again at once: early. Another call: not counted.
        drop(l.enter(|| 43));
        assert_eq!(l.counters().early_retries, 0);
        drop(l.enter(|| 42));
        assert_eq!(l.counters().early_retries, 1);
        // Remembered once only.
        drop(l.enter(|| 42));
        assert_eq!(l.counters().early_retries, 1);
        l.reset_counters();
        assert_eq!(l.counters().early_retries, 0);
    }
}
