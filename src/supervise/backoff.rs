//! When to start a child again: the start limit (at most N starts in T, as systemd's
//! `StartLimitBurst`/`StartLimitIntervalSec`) and the backoff between restarts (the first restart of a
//! child that had been up is immediate; repeated crashes wait exponentially longer, with jitter, up to
//! the maximum; a child that stayed up long enough resets the count). Pure logic over tokio's clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::profile::resolve::RestartPolicy;

/// The restart history of one instance.
#[derive(Debug, Default)]
pub struct RestartTracker {
    starts: VecDeque<Instant>,
    failures: u32,
}

impl RestartTracker {
    /// Records a start at `now`.
    pub fn record_start(&mut self, now: Instant) {
        self.starts.push_back(now);
    }

    /// Whether another start at `now` would pass the start limit. Forgets starts older than the window.
    pub fn start_limit_hit(&mut self, policy: &RestartPolicy, now: Instant) -> bool {
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= policy.start_limit_interval)
        {
            self.starts.pop_front();
        }
        self.starts.len() >= policy.start_limit_burst as usize
    }

    /// The history, for a re-exec: how long before `now` each start was, and the failures.
    pub fn snapshot(&self, now: Instant) -> (Vec<Duration>, u32) {
        let ago = self
            .starts
            .iter()
            .map(|t| now.saturating_duration_since(*t))
            .collect();
        (ago, self.failures)
    }

    /// The history a [`RestartTracker::snapshot`] took, as of `now`.
    pub fn restore(starts_ago: &[Duration], failures: u32, now: Instant) -> RestartTracker {
        RestartTracker {
            // Oldest first, as they were recorded; a start older than this clock can say is
            // forgotten (it is older than any start limit window).
            starts: starts_ago
                .iter()
                .filter_map(|ago| now.checked_sub(*ago))
                .collect(),
            failures,
        }
    }

    /// The crashes in a row the backoff counts (after [`RestartTracker::next_delay`]: including
    /// the one it was asked about).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The starts still in the start-limit window (as of the last
    /// [`RestartTracker::start_limit_hit`]).
    pub fn starts(&self) -> usize {
        self.starts.len()
    }

    /// Forgets failures and starts: after an operator's explicit start.
    pub fn reset(&mut self) {
        self.starts.clear();
        self.failures = 0;
    }

    /// The delay before restarting a child that ran for `uptime`. `jitter` in [0, 1) spreads
    /// restarts of instances that fail together.
    pub fn next_delay(
        &mut self,
        policy: &RestartPolicy,
        uptime: Duration,
        jitter: f64,
    ) -> Duration {
        if uptime >= policy.backoff_reset_after {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures == 1 {
            return Duration::ZERO;
        }
        let exp = (self.failures - 2).min(30);
        let base = policy
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(policy.backoff_max);
        // Equal jitter: half fixed, half random, never above the maximum.
        base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::raw::RestartPolicyKind;

    /// The profile's default restart policy, `always`: shared by the tests of `decide`.
    pub(crate) fn policy() -> RestartPolicy {
        RestartPolicy {
            policy: RestartPolicyKind::Always,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            backoff_reset_after: Duration::from_secs(60),
            start_limit_burst: 10,
            start_limit_interval: Duration::from_secs(300),
            no_restart_exit_codes: vec![78],
        }
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_up_to_the_max() {
        let p = policy();
        let mut t = RestartTracker::default();
        let quick = Duration::from_millis(100);
        // jitter 1.0 gives the top of each range: the base itself.
        let delays: Vec<u64> = (0..10)
            .map(|_| t.next_delay(&p, quick, 0.999_999).as_secs())
            .collect();
        assert_eq!(delays, vec![0, 0, 1, 3, 7, 15, 31, 59, 59, 59]);
        let mut t = RestartTracker::default();
        let low: Vec<u64> = (0..8)
            .map(|_| t.next_delay(&p, quick, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(low, vec![0, 500, 1000, 2000, 4000, 8000, 16000, 30000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let p = policy();
        let mut t = RestartTracker::default();
        for _ in 0..5 {
            t.next_delay(&p, Duration::from_secs(1), 0.0);
        }
        assert_eq!(
            t.next_delay(&p, Duration::from_secs(61), 0.0),
            Duration::ZERO
        );
        assert_eq!(
            t.next_delay(&p, Duration::from_secs(1), 0.0),
            Duration::from_millis(500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_start_limit_counts_starts_in_the_window() {
        let p = policy();
        let mut t = RestartTracker::default();
        for _ in 0..10 {
            assert!(!t.start_limit_hit(&p, Instant::now()));
            t.record_start(Instant::now());
            tokio::time::advance(Duration::from_secs(20)).await;
        }
        // 10 starts within 200 s: an 11th is refused ...
        assert!(t.start_limit_hit(&p, Instant::now()));
        // ... until the oldest leaves the 300 s window.
        tokio::time::advance(Duration::from_secs(101)).await;
        assert!(!t.start_limit_hit(&p, Instant::now()));
    }
}
