//! An instance's recent history, for `openclawctl explain`: a bounded ring of what happened and why
//! (transitions, restart decisions with their delay and the start-limit count, probe failures, who
//! blocked a start, operator actions and where they came from), and the one sentence of what will
//! happen next. The instance task writes it; the API reads it through the handle without waiting
//! for the task, as it reads the log's tail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::instance::{State, Status};
use crate::profile::resolve::RestartPolicy;

/// How many entries an instance keeps: the oldest go first.
pub const CAPACITY: usize = 200;

/// One thing that happened to an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When.
    pub time: SystemTime,
    /// What kind: "state", "restart", "start-limit", "probe", "blocked", "operator", "fatal", "upgrade".
    pub kind: String,
    /// What happened, and why, in words.
    pub text: String,
}

/// The ring of one instance, shared by its task (writer) and the API (reader).
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<Entry>,
    /// When the next liveness probe is due, while one is.
    next_probe: Option<tokio::time::Instant>,
    /// When the next start (or, blocked, the next look) is due, while one is.
    next_start: Option<tokio::time::Instant>,
}

impl History {
    /// Adds an entry now, dropping the oldest beyond [`CAPACITY`].
    pub fn push(&self, kind: &str, text: impl Into<String>) {
        self.push_entry(Entry {
            time: SystemTime::now(),
            kind: kind.to_string(),
            text: text.into(),
        });
    }

    fn push_entry(&self, e: Entry) {
        // A poisoned lock only means a reader panicked: the ring itself is still whole.
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while inner.ring.len() >= CAPACITY {
            inner.ring.pop_front();
        }
        inner.ring.push_back(e);
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.ring.iter().cloned().collect()
    }

    /// Notes when the next liveness probe and the next start are due (`None`: not at all).
    pub fn set_timers(
        &self,
        probe: Option<tokio::time::Instant>,
        start: Option<tokio::time::Instant>,
    ) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (inner.next_probe, inner.next_start) = (probe, start);
    }

    /// How long until the next liveness probe and the next start, as far as each is due.
    pub fn timers(&self) -> Timers {
        let inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        Timers {
            probe_in: inner.next_probe.map(|t| t.saturating_duration_since(now)),
            start_in: inner.next_start.map(|t| t.saturating_duration_since(now)),
        }
    }

    /// Puts back the entries a task before this one kept (a re-exec), oldest first.
    pub fn restore(&self, entries: Vec<Entry>) {
        for e in entries {
            self.push_entry(e);
        }
    }
}

/// How long until an instance task's timers fire, as of the call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timers {
    /// The next liveness probe.
    pub probe_in: Option<Duration>,
    /// The next start (or, blocked, the next look).
    pub start_in: Option<Duration>,
}

/// What `explain` shows of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The instance.
    pub name: String,
    /// Its history, oldest first.
    pub entries: Vec<Entry>,
    /// What will happen next, in one sentence.
    pub next: String,
}

impl super::instance::Handle {
    /// The instance's history and what comes next, read without waiting for its task.
    pub fn explain(&self) -> Explanation {
        let status = self.status.borrow().clone();
        Explanation {
            next: next_step(&status, self.history.timers()),
            name: status.name,
            entries: self.history.entries(),
        }
    }
}

/// "1st", "2nd", "3rd", "4th", ... "11th", "21st".
pub fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A duration as `explain` says it: "67 ms" below a second, "60 s" for whole seconds, else with
/// one decimal ("2.1 s").
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Why a restart waits `delay`: the `failures`-th crash in a row (as `RestartTracker::next_delay`
/// counted it, after an uptime of `uptime`), from the policy's backoff.
pub fn backoff_text(
    policy: &RestartPolicy,
    failures: u32,
    uptime: Duration,
    delay: Duration,
) -> String {
    let reset = secs(policy.backoff_reset_after);
    if failures <= 1 {
        return if uptime >= policy.backoff_reset_after {
            format!("up {} (at least {reset}): restart at once", secs(uptime))
        } else {
            format!("1st crash in a row within {reset}: restart at once")
        };
    }
    let exp = (failures - 2).min(30);
    let raw = policy.backoff_initial.saturating_mul(1u32 << exp);
    let how = if raw >= policy.backoff_max {
        format!("the maximum {}", secs(policy.backoff_max))
    } else if exp == 0 {
        secs(policy.backoff_initial)
    } else {
        format!("{} × {}", secs(policy.backoff_initial), 1u64 << exp)
    };
    format!(
        "{} crash in a row within {reset}: backoff {} ({how}, half of it jitter)",
        ordinal(failures),
        secs(delay)
    )
}

/// The start-limit count: "7 of 10 starts in 300 s".
pub fn start_limit_text(policy: &RestartPolicy, starts: usize) -> String {
    format!(
        "{starts} of {} starts in {}",
        policy.start_limit_burst,
        secs(policy.start_limit_interval)
    )
}

/// What will happen next to an instance in `status`, in one sentence, with its task's `timers`
/// (fresher than the status's `next_start_in`, which is as of its last change).
pub fn next_step(status: &Status, timers: Timers) -> String {
    let name = &status.name;
    let start_in = timers.start_in.or(status.next_start_in);
    match status.state {
        State::Running => match timers.probe_in {
            Some(d) => format!("running; next liveness probe in {}", secs(d)),
            None => "running".into(),
        },
        State::Starting => "starting: waiting for its readiness probe".into(),
        State::Unhealthy => "unhealthy: being stopped, then restarted by its policy".into(),
        State::Stopping => "stopping".into(),
        State::Backoff => match start_in {
            Some(d) => format!("will start again in {}", secs(d)),
            None => "will start again shortly".into(),
        },
        // No holder: its runtime is not installed (the reason says which, and how to install it).
        State::Blocked if status.holder.is_none() && start_in.is_none() => {
            format!(
                "waiting: {}; it starts once that is installed",
                status.reason
            )
        }
        State::Blocked => {
            let who = status
                .holder
                .as_ref()
                .map(|h| format!("pid {}", h.pid))
                .unwrap_or_else(|| "another process".into());
            match start_in {
                Some(d) => format!(
                    "blocked by {who}: will look again in {} and start once it is gone",
                    secs(d)
                ),
                None => format!("blocked by {who}: will start once it is gone"),
            }
        }
        State::Fatal => format!("fatal: waiting for `openclawctl start {name}`"),
        State::Exited => format!("exited: waiting for `openclawctl start {name}`"),
        State::Stopped if status.want_running => match start_in {
            Some(d) => format!("will start in {}", secs(d)),
            None => "will start shortly".into(),
        },
        State::Stopped => format!("stopped: waiting for `openclawctl start {name}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest() {
        let h = History::default();
        for i in 0..CAPACITY + 5 {
            h.push("state", format!("{i}"));
        }
        let e = h.entries();
        assert_eq!(e.len(), CAPACITY);
        assert_eq!(e[0].text, "5");
        assert_eq!(e[CAPACITY - 1].text, format!("{}", CAPACITY + 4));
    }

    fn status(state: State, want_running: bool) -> Status {
        Status {
            name: "main".into(),
            state,
            pid: None,
            started_at: None,
            restarts: 0,
            operator_restarts: 0,
            reason: String::new(),
            last_exit: None,
            last_exit_adopted: false,
            last_error: None,
            port: 18789,
            want_running,
            next_start_in: Some(Duration::from_secs(9)),
            holder: None,
            versions: Default::default(),
        }
    }

    #[test]
    fn the_next_step_is_one_sentence_with_the_task_timers() {
        let timers = Timers {
            probe_in: Some(Duration::from_secs(3)),
            start_in: Some(Duration::from_millis(4230)),
        };
        let said = |state, want| next_step(&status(state, want), timers);
        assert_eq!(
            said(State::Running, true),
            "running; next liveness probe in 3 s"
        );
        // The task's timer, not the status's older `next_start_in`.
        assert_eq!(said(State::Backoff, true), "will start again in 4.2 s");
        assert_eq!(
            next_step(&status(State::Backoff, true), Timers::default()),
            "will start again in 9 s"
        );
        assert_eq!(
            said(State::Fatal, true),
            "fatal: waiting for `openclawctl start main`"
        );
        assert_eq!(
            said(State::Stopped, false),
            "stopped: waiting for `openclawctl start main`"
        );
        assert_eq!(
            said(State::Blocked, true),
            "blocked by another process: will look again in 4.2 s and start once it is gone"
        );
        // No holder and no next look: waiting for its runtime.
        let mut waiting = status(State::Blocked, true);
        waiting.next_start_in = None;
        waiting.reason = "runtime openclaw@2026.9.8 is not installed: run `openclawctl runtime install openclaw@2026.9.8`".into();
        assert_eq!(
            next_step(&waiting, Timers::default()),
            "waiting: runtime openclaw@2026.9.8 is not installed: run `openclawctl runtime install openclaw@2026.9.8`; it starts once that is installed"
        );
    }

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101].map(ordinal).into();
        assert_eq!(
            got,
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]
        );
    }

    #[test]
    fn backoff_says_the_count_the_delay_and_the_factor() {
        let p = crate::supervise::backoff::tests::policy();
        let quick = Duration::from_millis(100);
        assert_eq!(
            backoff_text(&p, 1, quick, Duration::ZERO),
            "1st crash in a row within 60 s: restart at once"
        );
        assert_eq!(
            backoff_text(&p, 3, quick, Duration::from_millis(2100)),
            "3rd crash in a row within 60 s: backoff 2.1 s (1 s × 2, half of it jitter)"
        );
        assert_eq!(
            backoff_text(&p, 12, quick, Duration::from_secs(45)),
            "12th crash in a row within 60 s: backoff 45 s (the maximum 60 s, half of it jitter)"
        );
        assert_eq!(start_limit_text(&p, 7), "7 of 10 starts in 300 s");
        assert_eq!(secs(Duration::from_millis(67)), "67 ms");
        assert_eq!(secs(Duration::from_millis(4230)), "4.2 s");
    }
}
