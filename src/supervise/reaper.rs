//! The one place the daemon waits for children. The daemon is a child subreaper, so besides the
//! gateways it spawns it inherits every orphaned descendant (OpenClaw's setsid'd spawn broker, say):
//! all of them are reaped here, on SIGCHLD, with `waitpid(-1)`, and the exit of a gateway is handed to
//! the instance task that watches its pid. Nothing else may call `wait`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// The daemon did not learn how it ended: its exit never arrived (the exit sender was dropped,
    /// or it outlived SIGKILL's wait).
    Unknown,
}

impl Exit {
    /// Whether it ended as asked: exit code 0, or SIGTERM (how a service is told to stop, so
    /// `on-failure` does not restart a gateway that someone stopped that way). An unknown end is
    /// not clean.
    pub fn is_clean(self) -> bool {
        matches!(self, Exit::Code(0))
            || self == Exit::Signal(nix::sys::signal::Signal::SIGTERM as i32)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
            Exit::Unknown => f.write_str("unknown exit"),
        }
    }
}

/// How many exits of processes nobody watched (yet) are remembered, for a watch that comes late.
const EARLY_KEPT: usize = 4096;

#[derive(Default)]
struct State {
    /// Set before a re-exec: exits stay with the kernel (zombies) for the next program to reap.
    paused: bool,
    watching: HashMap<i32, oneshot::Sender<Exit>>,
    early: HashMap<i32, Exit>,
    early_order: VecDeque<i32>,
}

/// Hands out the exits of the daemon's children. Cheap to clone.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<State>>,
    /// Held while a child is being spawned: std's spawn waits for a child whose exec failed, and that
    /// wait must not lose the race to `waitpid(-1)`.
    spawn_lock: Arc<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reaper {
    /// Starts reaping on SIGCHLD until `cancel` fires. Call before the first spawn.
    pub fn start(cancel: CancellationToken) -> std::io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            r.reap_all();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    got = sigchld.recv() => {
                        if got.is_none() { break; }
                        r.reap_all();
                    }
                }
            }
        });
        Ok(reaper)
    }

    /// The lock to hold around a spawn (see the field).
    pub fn spawn_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.spawn_lock)
    }

    /// A receiver of `pid`'s exit. Call once per pid, right after spawning it.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.state);
        match st.early.remove(&pid) {
            Some(exit) => {
                let _ = tx.send(exit);
            }
            None => {
                st.watching.insert(pid, tx);
            }
        }
        rx
    }

    /// Whether `pid` is a child the daemon spawned and is waiting for (a live gateway).
    pub fn is_watched(&self, pid: i32) -> bool {
        lock(&self.state).watching.contains_key(&pid)
    }

    /// Stops reaping (a re-exec is about to replace the program: the next one reaps what ends from
    /// now on, with its code) or, should the exec fail, reaps again.
    pub fn pause(&self, paused: bool) {
        lock(&self.state).paused = paused;
        if !paused {
            self.reap_all();
        }
    }

    /// The exit of `pid` if it was reaped and nobody took it (its task had detached): for the
    /// handover.
    pub fn take_exit(&self, pid: i32) -> Option<Exit> {
        let mut st = lock(&self.state);
        let exit = st.early.remove(&pid);
        if exit.is_some() {
            st.early_order.retain(|p| *p != pid);
        }
        exit
    }

    /// Remembers the exit of `pid` that the program before a re-exec reaped: the task that takes
    /// the child over gets it at once.
    pub fn remember(&self, pid: i32, exit: Exit) {
        let mut st = lock(&self.state);
        st.early.insert(pid, exit);
        st.early_order.push_back(pid);
    }

    /// Reaps every child that has exited.
    pub fn reap_all(&self) {
        let _spawning = lock(&self.spawn_lock);
        loop {
            if lock(&self.state).paused {
                return;
            }
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("waitpid failed: {e}");
                    return;
                }
            };
            let mut st = lock(&self.state);
            // A watcher gone (its task detached for a re-exec) leaves the exit for the handover.
            let unwatched = match st.watching.remove(&pid) {
                Some(tx) => tx.send(exit).err(),
                None => Some(exit),
            };
            match unwatched {
                None => {}
                Some(exit) => {
                    tracing::debug!(pid, %exit, "reaped a process the daemon inherited");
                    st.early.insert(pid, exit);
                    st.early_order.push_back(pid);
                    while st.early_order.len() > EARLY_KEPT {
                        if let Some(old) = st.early_order.pop_front() {
                            st.early.remove(&old);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_as_a_person_says_them() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "signal SIGKILL");
        assert_eq!(Exit::Signal(200).to_string(), "signal 200");
        assert_eq!(Exit::Unknown.to_string(), "unknown exit");
    }

    #[test]
    fn only_code_0_and_sigterm_are_clean() {
        assert!(Exit::Code(0).is_clean());
        assert!(Exit::Signal(15).is_clean());
        assert!(!Exit::Code(1).is_clean());
        assert!(!Exit::Signal(9).is_clean());
        assert!(!Exit::Unknown.is_clean());
    }
}
