//! Talking to systemd (`Type=notify`): `READY=1` once the check passed and the instances are
//! launched, `STATUS=` lines as the instances' states change, `STOPPING=1` at shutdown, and
//! `WATCHDOG=1` at half the `WatchdogSec` interval while the runtime turns. Without
//! `NOTIFY_SOCKET` (not run by systemd) every call does nothing.
//!
//! Also the unit's `ExecStopPost=` (`openclaw-supervisord stop-leftovers`): under
//! `KillMode=process` a daemon that hangs while it stops its gateways is killed alone at
//! `TimeoutStopSec`, and would leave them running; the daemon marks its state dir while it stops
//! ([`STOPPING`]), and `stop-leftovers` ends the gateways only where that mark is left (a stop
//! that did not finish), never after a crash (no mark: the next daemon adopts them).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::supervise::{State, Supervisor};

/// The daemon's link to its service manager.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd gives a `Type=notify` service.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
        }
    }

    /// The daemon is up: its check passed and its instances are launched.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A free-form status line (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The daemon cannot start: the reason on stderr (the journal) and as the status line.
    pub fn fail(&self, why: &str) {
        eprintln!("openclaw-supervisord: {why}");
        self.status(&format!("failed: {why}"));
    }

    /// The daemon is replacing its program (a re-exec); `ready` follows from the new one.
    pub fn reloading(&self, status: &str) {
        // With the time, as systemd asks of a reload's notice.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status(status)]),
        }
    }

    /// The daemon is stopping its instances.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Sends `WATCHDOG=1` at half the watchdog interval until `stop`; nothing if no watchdog is set.
    /// The pings come from the runtime's own thread, so a wedged runtime misses them and systemd
    /// restarts the daemon.
    pub fn keep_watchdog(&self, stop: CancellationToken) {
        let Some(every) = self.watchdog else {
            return;
        };
        let me = self.clone();
        tracing::info!("systemd watchdog: {every:?}; pinging every {:?}", every / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => me.send(&[NotifyState::Watchdog]),
                }
            }
        });
    }

    /// Keeps `STATUS=` in step with the instances' states until `stop`.
    pub fn follow_states(&self, supervisor: Arc<Supervisor>, stop: CancellationToken) {
        if !self.enabled {
            return;
        }
        let me = self.clone();
        let mut events = supervisor.events();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let line = summary(&supervisor);
                if line != last {
                    me.status(&line);
                    last = line;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    e = events.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = e {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// The file in the daemon's state dir that says it was told to stop and has not finished.
pub const STOPPING: &str = "stopping";

/// Marks the state dir: the daemon stops its gateways from now on.
pub fn mark_stopping(state_dir: &Path) {
    let path = state_dir.join(STOPPING);
    let _ = std::fs::remove_file(&path);
    if let Err(e) = crate::fsx::create_new(&path, 0o600).and_then(|mut f| {
        std::io::Write::write_all(&mut f, format!("{}\n", std::process::id()).as_bytes())
    }) {
        tracing::warn!(
            "cannot write {} (an ExecStopPost after a hung stop would not end the gateways): {e}",
            path.display()
        );
    }
}

/// The stop finished: nothing is left for `stop-leftovers`.
pub fn unmark_stopping(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(STOPPING));
}

/// `openclaw-supervisord stop-leftovers` (the unit's `ExecStopPost=`): after a stop that did not
/// finish (the state dir still marked [`STOPPING`]: the daemon hung and was killed alone), ends
/// the gateways of the profiles in `config_dir` as the daemon's start would end leftovers (those
/// carrying an instance's marker, whose state dir lock is free). After a crash, or a stop that
/// finished, it does nothing. `SERVICE_RESULT` (set by systemd) `success` means the latter.
pub async fn stop_leftovers(config_dir: &Path, state_dir: &Path, socket: &Path) -> ExitCode {
    let marked = state_dir.join(STOPPING).exists();
    let result = std::env::var("SERVICE_RESULT").unwrap_or_default();
    if !marked || result == "success" {
        println!(
            "nothing to end: the daemon {}",
            if marked {
                "stopped its gateways"
            } else {
                "was not stopping (a crash leaves its gateways to the next daemon to adopt)"
            }
        );
        unmark_stopping(state_dir);
        return ExitCode::SUCCESS;
    }
    let plan = crate::profile::load(config_dir);
    let me = crate::supervise::ownership::Owner::me(socket);
    let scan = crate::supervise::clear_leftovers(&plan.profiles, &me, &[]).await;
    unmark_stopping(state_dir);
    println!(
        "the daemon did not finish its stop (SERVICE_RESULT={result}): ended what its {} instances left{}",
        plan.profiles.len(),
        if scan.done { "" } else { " (the scan of the host failed)" }
    );
    ExitCode::SUCCESS
}

/// "2 instances: 1 running, 1 starting".
pub fn summary(supervisor: &Supervisor) -> String {
    let instances = supervisor.instances();
    let mut counts: BTreeMap<u8, (State, usize)> = BTreeMap::new();
    for h in instances.values() {
        let s = h.status.borrow().state;
        counts.entry(order(s)).or_insert((s, 0)).1 += 1;
    }
    let parts: Vec<String> = counts
        .values()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    let n = instances.len();
    let noun = if n == 1 { "instance" } else { "instances" };
    if parts.is_empty() {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}: {}", parts.join(", "))
    }
}

/// The order states are listed in: what an operator looks for first.
fn order(s: State) -> u8 {
    match s {
        State::Running => 0,
        State::Starting => 1,
        State::Unhealthy => 2,
        State::Backoff => 3,
        State::Fatal => 4,
        State::Blocked => 5,
        State::Exited => 6,
        State::Stopping => 7,
        State::Stopped => 8,
    }
}
