//! Rate limits: a token bucket per API key, and a cap on failed authentications per client
//! address (so a leaked key id cannot be brute-forced and a scanner cannot flood the store).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthConfig;

/// Entries of the failed-authentication table before expired ones are swept.
const FAILED_TABLE_SWEEP_AT: usize = 10_000;

pub struct Limits {
    per_key: DefaultKeyedRateLimiter<String>,
    failed: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that used up their failures, and until when they are refused.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl Limits {
    pub fn new(config: &AuthConfig) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).expect("at least 1");
        let per_key =
            Quota::per_second(nz(config.key_requests_per_second)).allow_burst(nz(config.key_burst));
        let failed =
            Quota::per_minute(nz(config.failed_per_minute)).allow_burst(nz(config.failed_burst));
        Self {
            per_key: RateLimiter::keyed(per_key),
            failed: RateLimiter::keyed(failed),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token for this key; Err carries the seconds until one is free.
    pub fn check_key(&self, key_id: &str) -> Result<(), u64> {
        self.per_key
            .check_key(&key_id.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs() + 1)
    }

    /// Seconds this address must still wait, if it used up its failed attempts.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<u64> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&ip)?;
        let now = Instant::now();
        (until > now).then(|| (until - now).as_secs() + 1)
    }

    /// Counts a failed attempt; returns the block in seconds when this one used up the budget.
    pub fn record_failure(&self, ip: IpAddr) -> Option<u64> {
        let wait = match self.failed.check_key(&ip) {
            Ok(()) => return None,
            Err(not_until) => not_until.wait_time_from(self.clock.now()),
        };
        let wait = wait.max(Duration::from_secs(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= FAILED_TABLE_SWEEP_AT {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(ip, Instant::now() + wait);
        Some(wait.as_secs() + 1)
    }

    /// Drops limiter state of keys and addresses not seen lately, bounding memory.
    pub fn sweep(&self) {
        self.per_key.retain_recent();
        self.failed.retain_recent();
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bucket_runs_dry_after_its_burst() {
        let limits = Limits::new(&AuthConfig {
            key_requests_per_second: 1,
            key_burst: 3,
            ..AuthConfig::default()
        });
        for _ in 0..3 {
            limits.check_key("k").unwrap();
        }
        assert!(limits.check_key("k").unwrap_err() >= 1);
        limits.check_key("other").unwrap();
    }

    #[test]
    fn failures_block_an_address_after_the_burst() {
        let limits = Limits::new(&AuthConfig {
            failed_per_minute: 1,
            failed_burst: 2,
            ..AuthConfig::default()
        });
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(limits.blocked_for(ip).is_none());
        assert!(limits.record_failure(ip).is_none());
        assert!(limits.record_failure(ip).is_none());
        assert!(limits.record_failure(ip).is_some());
        assert!(limits.blocked_for(ip).is_some());
        assert!(limits.blocked_for("127.0.0.10".parse().unwrap()).is_none());
    }
}
