//! What happens after a gateway exits on its own: give up (a no-restart exit code), leave it
//! exited (the policy says no restart), or start it again after a delay. A pure function of the
//! restart policy, the exit, the uptime and the restart history, so the table of outcomes is
//! unit-tested here; the instance task (`instance.rs`) only carries the decision out.

use std::time::Duration;

use super::backoff::RestartTracker;
use super::reaper::Exit;
use crate::profile::raw::RestartPolicyKind;
use crate::profile::resolve::RestartPolicy;

/// The decision after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// The exit code is listed in `restart.no_restart_exit_codes`: fatal until an operator
    /// starts it (see [`give_up_reason`]).
    GiveUp {
        /// The exit code.
        code: i32,
    },
    /// The policy says not to restart: the instance is exited and no longer meant to run.
    Exited,
    /// Start it again after `delay`.
    Restart {
        /// How long to wait (zero: at once).
        delay: Duration,
        /// The last error to show, for an exit that was not clean.
        error: Option<String>,
    },
}

/// Decides what follows `exit` of a child that ran for `uptime`. `jitter` in [0, 1) spreads the
/// restarts of instances that fail together. Records a failure in `tracker` only when it restarts.
pub fn after_exit(
    policy: &RestartPolicy,
    exit: Exit,
    uptime: Duration,
    tracker: &mut RestartTracker,
    jitter: f64,
) -> AfterExit {
    if let Exit::Code(code) = exit {
        if policy.no_restart_exit_codes.contains(&code) {
            return AfterExit::GiveUp { code };
        }
    }
    let clean = exit.is_clean();
    let restart = match policy.policy {
        RestartPolicyKind::Always => true,
        RestartPolicyKind::OnFailure => !clean,
        RestartPolicyKind::Never => false,
    };
    if !restart {
        return AfterExit::Exited;
    }
    AfterExit::Restart {
        delay: tracker.next_delay(policy, uptime, jitter),
        error: (!clean).then(|| format!("ended by {exit}")),
    }
}

/// The last error of an instance given up on for exit `code`, naming the command that starts it.
pub fn give_up_reason(code: i32, instance: &str) -> String {
    let hint = if code == 78 {
        " (EX_CONFIG: a config error)"
    } else {
        ""
    };
    format!(
        "exited with code {code}{hint}, listed in restart.no_restart_exit_codes: restarting will not help; fix it, then `openclawctl start {instance}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: RestartPolicyKind) -> RestartPolicy {
        RestartPolicy {
            policy: kind,
            ..crate::supervise::backoff::tests::policy()
        }
    }

    /// What a first exit after a short run decides: (policy, exit) -> outcome, as Horust tests its
    /// restart strategies.
    #[test]
    fn each_policy_and_exit_decides_as_documented() {
        use RestartPolicyKind::{Always, Never, OnFailure};
        let restart = |error: Option<&str>| AfterExit::Restart {
            delay: Duration::ZERO,
            error: error.map(str::to_string),
        };
        let table = [
            (Always, Exit::Code(0), restart(None)),
            (Always, Exit::Signal(15), restart(None)),
            (Always, Exit::Code(1), restart(Some("ended by exit code 1"))),
            (
                Always,
                Exit::Signal(9),
                restart(Some("ended by signal SIGKILL")),
            ),
            (
                Always,
                Exit::Unknown,
                restart(Some("ended by unknown exit")),
            ),
            (Always, Exit::Code(78), AfterExit::GiveUp { code: 78 }),
            (OnFailure, Exit::Code(0), AfterExit::Exited),
            (OnFailure, Exit::Signal(15), AfterExit::Exited),
            (
                OnFailure,
                Exit::Code(1),
                restart(Some("ended by exit code 1")),
            ),
            (
                OnFailure,
                Exit::Signal(9),
                restart(Some("ended by signal SIGKILL")),
            ),
            (
                OnFailure,
                Exit::Unknown,
                restart(Some("ended by unknown exit")),
            ),
            (OnFailure, Exit::Code(78), AfterExit::GiveUp { code: 78 }),
            (Never, Exit::Code(0), AfterExit::Exited),
            (Never, Exit::Code(1), AfterExit::Exited),
            (Never, Exit::Signal(9), AfterExit::Exited),
            (Never, Exit::Unknown, AfterExit::Exited),
            // A no-restart code is fatal whatever the policy: an operator must look.
            (Never, Exit::Code(78), AfterExit::GiveUp { code: 78 }),
        ];
        for (kind, exit, want) in table {
            let mut tracker = RestartTracker::default();
            let got = after_exit(
                &policy(kind),
                exit,
                Duration::from_secs(1),
                &mut tracker,
                0.0,
            );
            assert_eq!(got, want, "{kind:?} after {exit}");
        }
    }

    #[test]
    fn a_signal_is_never_a_no_restart_code() {
        let mut p = policy(RestartPolicyKind::Always);
        p.no_restart_exit_codes = vec![9, 15];
        let mut tracker = RestartTracker::default();
        assert!(matches!(
            after_exit(&p, Exit::Signal(9), Duration::ZERO, &mut tracker, 0.0),
            AfterExit::Restart { .. }
        ));
        assert_eq!(
            after_exit(&p, Exit::Code(9), Duration::ZERO, &mut tracker, 0.0),
            AfterExit::GiveUp { code: 9 }
        );
    }

    #[test]
    fn repeated_crashes_back_off_and_a_long_run_resets_it() {
        let p = policy(RestartPolicyKind::Always);
        let mut tracker = RestartTracker::default();
        let delay = |tracker: &mut RestartTracker, uptime| match after_exit(
            &p,
            Exit::Code(1),
            uptime,
            tracker,
            0.0,
        ) {
            AfterExit::Restart { delay, .. } => delay.as_millis(),
            other => panic!("expected a restart, got {other:?}"),
        };
        let quick = Duration::from_millis(100);
        let delays: Vec<_> = (0..4).map(|_| delay(&mut tracker, quick)).collect();
        assert_eq!(delays, vec![0, 500, 1000, 2000]);
        // Up at least backoff_reset_after: the next restart is immediate again.
        assert_eq!(delay(&mut tracker, Duration::from_secs(60)), 0);
        assert_eq!(delay(&mut tracker, quick), 500);
    }

    #[test]
    fn giving_up_and_exiting_leave_the_backoff_alone() {
        let p = policy(RestartPolicyKind::OnFailure);
        let mut tracker = RestartTracker::default();
        let quick = Duration::from_millis(100);
        for exit in [Exit::Code(0), Exit::Code(78), Exit::Signal(15)] {
            after_exit(&p, exit, quick, &mut tracker, 0.0);
        }
        // Nothing counted as a failure: the first real crash restarts at once.
        assert_eq!(
            after_exit(&p, Exit::Code(1), quick, &mut tracker, 0.0),
            AfterExit::Restart {
                delay: Duration::ZERO,
                error: Some("ended by exit code 1".into()),
            }
        );
    }

    #[test]
    fn the_give_up_reason_names_ex_config_and_the_way_out() {
        assert_eq!(
            give_up_reason(78, "main"),
            "exited with code 78 (EX_CONFIG: a config error), listed in restart.no_restart_exit_codes: restarting will not help; fix it, then `openclawctl start main`"
        );
        assert_eq!(
            give_up_reason(3, "rescue"),
            "exited with code 3, listed in restart.no_restart_exit_codes: restarting will not help; fix it, then `openclawctl start rescue`"
        );
    }
}
