//! One instance: a task that owns its child, its state machine and its timers. Commands (start,
//! stop, restart) arrive over a channel with a reply; the state is published on a `watch` channel so
//! that reading it never waits for the task. Invariant: at most one child per instance, because only
//! this task spawns, and it spawns only when it has none.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::adopt::{self, Adopted};
use super::backoff::RestartTracker;
use super::cgroup::Containment;
use super::decide::{self, AfterExit};
use super::desired::{DesiredState, Want};
use super::history::{self, History};
use super::logs::{Capture, InstanceLog, LogLine, Stream};
use super::ownership::{self, Diag, Holder, Lock, Owner, Preflight, Verified};
use super::probe::{Prober, Verify};
use super::reaper::{Exit, Reaper};
use super::spawn::Spawner;
use super::tree;
use crate::profile::Profile;
use crate::runtime::{node_version_of, Spec, Versions};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running, and not meant to.
    Stopped,
    /// Started, not ready yet.
    Starting,
    /// Ready, and answering its liveness probe.
    Running,
    /// Failed its liveness probe too often; being restarted.
    Unhealthy,
    /// Waiting before the next start.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Exited, and the policy says not to restart.
    Exited,
    /// Will not be restarted without an operator: start limit hit, a no-restart exit code, or a
    /// start that cannot work (missing executable).
    Fatal,
    /// Meant to run, but a process that is not the instance's holds its place (its state dir's
    /// lock, its state dir, its port): `Status::holder` says who. Looked at again every few
    /// seconds, without spawning; starts by itself once the holder is gone. Or (no holder) its
    /// runtime is not installed: it starts when one is (`Supervisor::runtime_installed`), or at
    /// an operator's start; no start is counted against its restart policy meanwhile.
    Blocked,
}

impl State {
    /// Every state, in the order they are declared.
    pub const ALL: [State; 9] = [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Unhealthy,
        State::Backoff,
        State::Stopping,
        State::Exited,
        State::Fatal,
        State::Blocked,
    ];

    /// The state named `s` (as [`State::as_str`] spells it).
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The lower-case name used in logs and by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Unhealthy => "unhealthy",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Fatal => "fatal",
            State::Blocked => "blocked",
        }
    }
}

/// What an instance shows of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Instance name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The gateway's pid while there is one.
    pub pid: Option<i32>,
    /// When the current child started.
    pub started_at: Option<SystemTime>,
    /// How many times the restart policy started it again (after a crash, an exit the policy
    /// restarts, or failed probes). An operator's starts and restarts are not counted here.
    pub restarts: u32,
    /// How many times an operator's start or restart started it again after its first start.
    pub operator_restarts: u32,
    /// Why it entered its current state ("ready", "ended by signal SIGKILL", "operator stop", ...).
    pub reason: String,
    /// How the last child ended.
    pub last_exit: Option<Exit>,
    /// Whether that child was adopted (not the daemon's child: its exit code is not known).
    pub last_exit_adopted: bool,
    /// The last thing that went wrong, in words.
    pub last_error: Option<String>,
    /// The gateway port.
    pub port: u16,
    /// Whether the operator wants it running.
    pub want_running: bool,
    /// When the next start is due, while in backoff (or the next look, while blocked).
    pub next_start_in: Option<Duration>,
    /// Who holds the instance's place, while blocked.
    pub holder: Option<Holder>,
    /// What its child runs (or last ran): runtime, OpenClaw and Node versions, read at the spawn.
    pub versions: Versions,
}

/// A change of an instance's state, for watchers.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened.
    pub time: SystemTime,
    /// The status after the change.
    pub status: Status,
    /// The state before; `None` for an instance that is new (or, for the removal event, unknown).
    pub previous: Option<State>,
    /// A reload removed the instance: its last event.
    pub removed: bool,
    /// The file of the instance's profile, as text (the handle's `file`).
    pub file: Arc<str>,
}

impl Event {
    /// Why the instance entered the state it is in.
    pub fn reason(&self) -> &str {
        &self.status.reason
    }
}

/// The result of a command: the status after it, or why it failed.
pub type Reply = Result<Status, CommandError>;

/// Why a start or restart did not end with the instance ready. The API maps each to its own gRPC
/// code, so a client can tell a failed start from one that was cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The daemon is shutting down.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A reload removed the instance, or replaced it with its changed profile.
    #[error("a reload replaced or removed it before it was ready; see `openclawctl status`")]
    Replaced,
    /// An operator's stop came before the start finished.
    #[error("stopped by an operator before it was ready")]
    StoppedBeforeReady,
    /// An operator's restart came before the start finished.
    #[error("restarted by an operator before it was ready")]
    RestartedBeforeReady,
    /// The start failed: the reason (not ready in time, ended before ready, fatal, ...).
    #[error("{0}")]
    Failed(String),
    /// The daemon is replacing its program (re-exec); the instance runs on under the next one.
    #[error("the supervisor is re-executing; try again in a moment")]
    Reexec,
}

/// A command for an instance task.
#[derive(Debug)]
pub enum Command {
    /// Start (no-op when running); replies once ready or failed. Each command names where the
    /// operator's call came from ("socket", "TCP 127.0.0.1:40112"), for the reasons it gives.
    Start(String, oneshot::Sender<Reply>),
    /// Stop, optionally with another timeout than the profile's; replies once stopped.
    Stop(Option<Duration>, String, oneshot::Sender<Reply>),
    /// Stop if running, then start; replies once ready or failed. The work, if any, runs on a
    /// blocking thread once the tree is stopped and before the start (an upgrade's copy of the
    /// gateway's databases, a rollback's restore); the line it returns goes into the history and
    /// the log.
    Restart(String, Option<Between>, oneshot::Sender<Reply>),
    /// Stop at this idle point for a re-exec: the task replies with where to send what follows
    /// ([`Go`]) and does nothing else until it comes. A reply nobody waits for any more (the re-exec
    /// gave up) is ignored and the task goes on.
    Hold(oneshot::Sender<oneshot::Sender<Go>>),
    /// A runtime was installed: an instance waiting for its runtime tries to start again.
    RuntimeInstalled,
    /// Take this profile from now on, without a restart: a reload (or an upgrade's `--write`) whose
    /// only change to the fields the child runs with is a `runtime` equal to the one it runs on.
    /// Replies once taken.
    Profile(Arc<Profile>, oneshot::Sender<()>),
}

/// Work done between the stop and the start of a restart (see [`Command::Restart`]).
pub struct Between(pub Box<dyn FnOnce() -> String + Send>);

impl std::fmt::Debug for Between {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Between(..)")
    }
}

/// What a held task does next.
#[derive(Debug)]
pub enum Go {
    /// Hand the instance over: the task ends, leaving its child running, and replies with what
    /// the next task of the instance needs.
    Detach(oneshot::Sender<Detached>),
    /// Carry on (the re-exec gave up).
    Release,
}

/// An instance's task as it ended for a re-exec: its child, left running, and its history.
#[derive(Debug)]
pub struct Detached {
    /// The status and the restart history.
    pub resume: Resume,
    /// The gateway, if one runs.
    pub child: Option<DetachedChild>,
    /// The state dir's lock, if held.
    pub lock: Option<Lock>,
}

/// A gateway left running by a task that detached.
#[derive(Debug)]
pub struct DetachedChild {
    /// Its pid.
    pub pid: i32,
    /// Its start time (`/proc/PID/stat` field 22); 0 if it was never read.
    pub start: u64,
    /// The daemon's own child (exit code from the reaper), not a gateway adopted after a crash.
    pub ours: bool,
    /// Whether it had passed its readiness probe.
    pub ready: bool,
    /// When it started.
    pub started_at: SystemTime,
    /// Its stdout and stderr read ends, with the bytes read that are not a line yet; `None` for a
    /// pipe that had closed or was never captured.
    pub stdout: Option<(std::os::fd::OwnedFd, Vec<u8>)>,
    /// See `stdout`.
    pub stderr: Option<(std::os::fd::OwnedFd, Vec<u8>)>,
    /// The digest of the profile it started with ([`super::digest`]).
    pub digest: std::collections::BTreeMap<String, String>,
    /// The restart fields in which the profile on disk differs from the one it runs, as this
    /// program compares them (set by a re-exec before the handover); `None`: compare `digest`.
    pub changed: Option<Vec<String>>,
}

/// What an instance's next task takes over from the one before (a re-exec): its status, its restart
/// history and its log's tail.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The state (before the child, if any, is taken over), and why.
    pub state: Option<State>,
    /// Why it is in that state.
    pub reason: String,
    /// `Status::restarts`.
    pub restarts: u32,
    /// `Status::operator_restarts`.
    pub operator_restarts: u32,
    /// `Status::last_exit`.
    pub last_exit: Option<Exit>,
    /// `Status::last_exit_adopted`.
    pub last_exit_adopted: bool,
    /// `Status::last_error`.
    pub last_error: Option<String>,
    /// `Status::want_running`.
    pub want_running: bool,
    /// When the next start is due, from the handover.
    pub next_start_in: Option<Duration>,
    /// How long ago each recent start was.
    pub starts_ago: Vec<Duration>,
    /// The failures the backoff counts.
    pub failures: u32,
    /// Whether it had started once.
    pub started_once: bool,
    /// The log's tail, oldest first.
    pub tail: Vec<LogLine>,
    /// The history `explain` shows, oldest first.
    pub history: Vec<history::Entry>,
    /// `Status::versions`.
    pub versions: Versions,
}

/// What every instance task shares.
#[derive(Clone)]
pub struct Shared {
    /// The spawning thread.
    pub spawner: Spawner,
    /// Exit notifications.
    pub reaper: Reaper,
    /// Where the grid of liveness probe times starts (see `Task::next_liveness`).
    pub probe_grid: Instant,
    /// Every state change of every instance, for `WatchEvents` (sending costs nothing without
    /// a watcher).
    pub events: broadcast::Sender<Event>,
    /// The operators' starts and stops, kept across daemon restarts.
    pub desired: DesiredState,
    /// The supervisor's own token: when it has fired too, an instance's cancellation is the
    /// daemon's shutdown, not a reload.
    pub shutdown: CancellationToken,
    /// This daemon, as the state dir locks it takes name it.
    pub owner: Owner,
    /// Listener lookups for the probes' identity check.
    pub diag: Arc<Diag>,
    /// Cgroups, or the process tree: decided once at the daemon's start.
    pub containment: Arc<Containment>,
    /// The runtime store (`crate::runtime`): where a profile's or an upgrade's `runtime` is.
    pub runtimes: crate::runtime::Store,
    /// Where an upgrade keeps each instance's databases for a rollback (`super::statesnap`).
    pub upgrades: std::path::PathBuf,
    /// Without cgroups: the processes seen in each instance's tree while its gateway lived.
    pub known: tree::Seen,
    /// The records of running children, for the next daemon's adoption.
    pub records: adopt::Records,
    /// The service manager's fd store: each child's pipes, while its tree lives.
    pub fdstore: super::fdstore::FdStore,
    /// The Prometheus families, set once by `--metrics` (`Supervisor::set_metrics`; one cell for
    /// every clone of this); empty, the hooks cost one load.
    pub metrics: Arc<std::sync::OnceLock<Arc<crate::metrics::Metrics>>>,
    /// What `node --version` said, by the node binary's canonical path, with its mtime then:
    /// the Node of an instance that runs from PATH, asked once per binary.
    pub node_versions: NodeVersions,
}

/// See `Shared::node_versions`.
pub type NodeVersions =
    Arc<std::sync::Mutex<std::collections::HashMap<PathBuf, (SystemTime, Option<String>)>>>;

/// How long `node --version` may take.
const NODE_VERSION_BOUND: Duration = Duration::from_secs(5);

impl Shared {
    /// The runtime instance `name` runs on: the one an upgrade chose (the desired state), else its
    /// profile's `runtime`; None runs the `openclaw` its PATH finds.
    pub fn runtime_for(&self, name: &str, profile: &Profile) -> Option<crate::runtime::Spec> {
        self.desired
            .runtime(name)
            .map(|w| w.runtime)
            .or_else(|| profile.runtime.as_ref().map(|r| r.value.clone()))
    }

    /// The Node version of `node` (canonical path, mtime), asked once per binary: run with
    /// `--version` from the spawning thread, for at most [`NODE_VERSION_BOUND`]. None if it does
    /// not answer with a version (a stand-in, a broken install).
    async fn node_version(&self, node: PathBuf, mtime: SystemTime) -> Option<String> {
        let cached = |m: &std::collections::HashMap<PathBuf, (SystemTime, Option<String>)>| {
            m.get(&node)
                .filter(|(t, _)| *t == mtime)
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = cached(&self.node_versions.lock().unwrap_or_else(|e| e.into_inner())) {
            return v;
        }
        let v = match super::run_tool(
            &self.spawner,
            &self.reaper,
            &node,
            vec!["--version".into()],
            NODE_VERSION_BOUND,
        )
        .await
        {
            Ok((Exit::Code(0), out)) => node_version_of(&String::from_utf8_lossy(&out)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("{e}");
                None
            }
        };
        self.node_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, (mtime, v.clone()));
        v
    }
}

/// The handle the supervisor keeps for an instance task.
#[derive(Clone)]
pub struct Handle {
    /// Commands.
    pub tx: mpsc::Sender<Command>,
    /// The current status.
    pub status: watch::Receiver<Status>,
    /// Its log.
    pub log: InstanceLog,
    /// Its recent history, for `explain` (written by the task, read without waiting for it).
    pub history: History,
    /// The profile it runs.
    pub profile: Arc<Profile>,
    /// The profile's file, as text (made once: statuses of hundreds of instances repeat it).
    pub file: Arc<str>,
    /// Ends the task (after it stops its child): for a reload that removes or replaces it.
    pub cancel: CancellationToken,
    /// Why `cancel` fired, set before it fires: the reason of the stop it causes.
    pub cancelled_because: Arc<std::sync::OnceLock<String>>,
}

impl Handle {
    /// Ends the task, stopping its child for `why` (what watchers are told).
    pub fn cancel_because(&self, why: String) {
        let _ = self.cancelled_because.set(why);
        self.cancel.cancel();
    }

    /// The instance as it is now, as an event with no previous state: what a new watcher is sent
    /// first, and (`removed`) the last event of an instance a reload removes.
    pub fn current(&self, removed: bool) -> Event {
        Event {
            time: SystemTime::now(),
            status: self.status.borrow().clone(),
            previous: None,
            removed,
            file: self.file.clone(),
        }
    }
}

/// How often readiness is polled while starting.
const READY_POLL: Duration = Duration::from_millis(200);
/// The longest a restart of an unhealthy (hung) child waits for it to stop before SIGKILL.
const UNHEALTHY_STOP_CAP: Duration = Duration::from_secs(30);
/// How long processes left behind by an exited gateway get after the stop signal, before SIGKILL.
const STRAGGLER_GRACE: Duration = Duration::from_secs(2);
/// How often a blocked instance looks again whether its holder is gone.
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(3);

/// What the next start answers: an operator, or the supervisor (its first start, a policy's
/// restart). Only a policy's restart counts in `Status::restarts`.
#[derive(Debug, Clone, PartialEq)]
enum Cause {
    /// The daemon's start, or a reload's, started it.
    First,
    /// `openclawctl start` or `restart`: "start (socket)", "restart (TCP 127.0.0.1:40112)".
    Operator(String),
    /// The restart policy, after what is said.
    Policy(String),
    /// An adopted gateway was stopped for the reason said (its profile changed while no daemon
    /// ran): a first start of the new profile, as a reload's.
    Adoption(String),
}

impl Cause {
    fn reason(&self) -> String {
        match self {
            Cause::First => "started by the supervisor".into(),
            Cause::Operator(what) => format!("operator {what}"),
            Cause::Policy(after) => format!("restart by policy after: {after}"),
            Cause::Adoption(why) => why.clone(),
        }
    }
}

struct Child {
    pid: i32,
    /// Its start time (`/proc/PID/stat` field 22), if read.
    start: Option<u64>,
    /// The reading of its stdout and stderr.
    captures: Vec<Capture>,
    exit: oneshot::Receiver<Exit>,
    since: Instant,
    ready: bool,
    liveness_failures: u32,
    /// Adopted, not spawned: its exit comes from a pidfd, without its code.
    adopted: bool,
}

/// What an instance's task begins with, besides its profile.
#[derive(Debug, Default)]
pub struct Begin {
    /// What the daemon's start-up scan of the host found on the instance's places (processes that
    /// are not its own), which its first start uses instead of a scan of its own.
    pub scanned: Option<Vec<tree::Holder>>,
    /// A gateway already running for the instance (left by a daemon that crashed, or handed over
    /// by a re-exec), which the task takes as its child instead of starting one.
    pub adopted: Option<Adopted>,
    /// What the task before it (a re-exec's) knew: status, restart history, log tail.
    pub resume: Option<Resume>,
}

/// What a start's preflight read of what the child will run: the versions, and for a child on
/// PATH the `node` its PATH finds (canonical path, mtime), whose version is asked next.
#[derive(Default)]
struct RunsOn {
    versions: Versions,
    node: Option<(PathBuf, SystemTime)>,
}

impl RunsOn {
    /// For a child on PATH: OpenClaw from the package of the program, and the `node` on the
    /// child's PATH. Blocking: stats and reads.
    fn path(req: &super::spawn::SpawnRequest) -> RunsOn {
        let path = req
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| std::ffi::OsString::from(v))
            .or_else(|| std::env::var_os("PATH"));
        let here = req
            .cwd
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let node = super::spawn::resolve_program("node", path, &here)
            .ok()
            .and_then(|n| std::fs::canonicalize(n).ok())
            .and_then(|n| {
                let mtime = std::fs::metadata(&n).and_then(|m| m.modified()).ok()?;
                Some((n, mtime))
            });
        RunsOn {
            versions: Versions {
                runtime: None,
                openclaw: crate::runtime::openclaw_of_program(&req.program),
                node: None,
            },
            node,
        }
    }
}

/// Whether `program` (resolved) is of runtime `r`: under its directory, or its Node's in `store`.
fn from_runtime(
    program: &std::path::Path,
    r: &crate::runtime::Runtime,
    store: &crate::runtime::Store,
) -> bool {
    let Ok(p) = std::fs::canonicalize(program) else {
        return false;
    };
    [r.dir.clone(), store.node_dir(&r.node)]
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .any(|d| p.starts_with(d))
}

/// Starts the task of one instance, which starts its child at once if `start` (and `begin` has no
/// child for it). The task ends when `cancel` fires, after stopping its child.
pub fn spawn(
    profile: Profile,
    start: bool,
    shared: Shared,
    log: InstanceLog,
    cancel: CancellationToken,
    begin: Begin,
) -> (Handle, tokio::task::JoinHandle<()>) {
    let Begin {
        scanned,
        adopted,
        resume,
    } = begin;
    let (tx, rx) = mpsc::channel(64);
    // A gateway being adopted shows as such from the first status on, not as `stopped`.
    let adopting = adopted.as_ref().map(|a| (a.pid, a.started_at));
    let mut status = Status {
        name: profile.name.to_string(),
        state: if adopting.is_some() {
            State::Starting
        } else {
            State::Stopped
        },
        pid: adopting.map(|(pid, _)| pid),
        started_at: adopting.map(|(_, at)| at),
        restarts: 0,
        operator_restarts: 0,
        reason: if let Some((pid, _)) = adopting {
            format!("adopting pid {pid}")
        } else if start {
            "new instance".into()
        } else {
            "new instance, not meant to run".into()
        },
        last_exit: None,
        last_exit_adopted: false,
        last_error: None,
        port: profile.port.value,
        want_running: start,
        next_start_in: None,
        holder: None,
        versions: adopted
            .as_ref()
            .map(|a| a.versions.clone())
            .unwrap_or_default(),
    };
    let mut tracker = RestartTracker::default();
    let mut next_start = start.then(Instant::now);
    let mut started_once = false;
    let history = History::default();
    if let Some(r) = resume {
        // A re-exec: the instance goes on as it was (a child handed over is taken in `adopt`).
        log.restore_tail(r.tail);
        history.restore(r.history);
        status.restarts = r.restarts;
        status.operator_restarts = r.operator_restarts;
        status.last_exit = r.last_exit;
        status.last_exit_adopted = r.last_exit_adopted;
        status.last_error = r.last_error;
        status.want_running = r.want_running;
        status.versions = r.versions;
        if let Some(state) = r.state {
            status.state = state;
            status.reason = r.reason;
        }
        tracker = RestartTracker::restore(&r.starts_ago, r.failures, Instant::now());
        started_once = r.started_once;
        next_start = if adopting.is_some() {
            None
        } else {
            r.next_start_in.map(|d| Instant::now() + d)
        };
        status.next_start_in = r.next_start_in.filter(|_| adopting.is_none());
    }
    let file: Arc<str> = profile.file.display().to_string().into();
    let _ = shared.events.send(Event {
        time: SystemTime::now(),
        status: status.clone(),
        previous: None,
        removed: false,
        file: file.clone(),
    });
    let (status_tx, status_rx) = watch::channel(status.clone());
    let profile = Arc::new(profile);
    let task = Task {
        file: file.clone(),
        prober: Prober::new(&profile.health.readiness_url, &profile.health.liveness_url),
        profile: profile.clone(),
        shared,
        log: log.clone(),
        history: history.clone(),
        status,
        status_tx,
        child: None,
        tracker,
        next_start,
        next_probe: None,
        waiting_ready: Vec::new(),
        started_once,
        cause: Cause::First,
        lock: None,
        verified: Verified::default(),
        refused: None,
        scanned,
        adopted,
        waiting_runtime: false,
    };
    let cancelled_because = Arc::new(std::sync::OnceLock::new());
    let join = tokio::spawn(task.run(rx, cancel.clone(), cancelled_because.clone()));
    (
        Handle {
            tx,
            status: status_rx,
            log,
            history,
            file,
            profile,
            cancel,
            cancelled_because,
        },
        join,
    )
}

struct Task {
    profile: Arc<Profile>,
    /// The handle's `file`, for events.
    file: Arc<str>,
    shared: Shared,
    log: InstanceLog,
    /// What `explain` shows.
    history: History,
    status: Status,
    status_tx: watch::Sender<Status>,
    child: Option<Child>,
    /// Probes the child; its connection goes with the child.
    prober: Prober,
    tracker: RestartTracker,
    /// When to start next, if a start is due.
    next_start: Option<Instant>,
    next_probe: Option<Instant>,
    /// Replies owed once the child is ready (or fails).
    waiting_ready: Vec<oneshot::Sender<Reply>>,
    started_once: bool,
    /// Who asked for the next start.
    cause: Cause,
    /// The state dir's lock, from before a spawn until the instance's tree is gone (kept across
    /// restarts; released when it stops, exits, turns fatal or blocked).
    lock: Option<Lock>,
    /// The listeners found in the current child's tree.
    verified: Verified,
    /// The last probe found a process that is not the instance's on the probed port.
    refused: Option<(Holder, String)>,
    /// The daemon's start-up scan, for the first start.
    scanned: Option<Vec<tree::Holder>>,
    /// A gateway to adopt before anything else.
    adopted: Option<Adopted>,
    /// Blocked because its runtime is not installed: a `RuntimeInstalled` starts it.
    waiting_runtime: bool,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        cancel: CancellationToken,
        because: Arc<std::sync::OnceLock<String>>,
    ) {
        // The cancellation and the two timers live across turns of the loop, and a timer is only
        // re-armed when its deadline changes: an idle instance wakes once per probe and does no
        // more than the probe.
        let cancelled = cancel.cancelled();
        let start_timer = tokio::time::sleep_until(Instant::now());
        let probe_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(cancelled, start_timer, probe_timer);
        // The next probe as the history last heard of it.
        let mut probe_timer_noted = None;
        let mut start_timer_noted = None;
        if let Some(a) = self.adopted.take() {
            self.adopt(a).await;
        }
        loop {
            if self.child.is_none() {
                if let Some(at) = self.next_start {
                    if at <= Instant::now() {
                        self.next_start = None;
                        self.start().await;
                        continue;
                    }
                }
            }
            let next_start = self.next_start.filter(|_| self.child.is_none());
            let next_probe = self.next_probe.filter(|_| self.child.is_some());
            if (next_probe, next_start) != (probe_timer_noted, start_timer_noted) {
                (probe_timer_noted, start_timer_noted) = (next_probe, next_start);
                self.history.set_timers(next_probe, next_start);
            }
            for (timer, at) in [
                (&mut start_timer, next_start),
                (&mut probe_timer, next_probe),
            ] {
                if let Some(at) = at.filter(|&at| at != timer.deadline()) {
                    timer.as_mut().reset(at);
                }
            }
            tokio::select! {
                _ = &mut cancelled => {
                    let why = if self.shared.shutdown.is_cancelled() {
                        "the supervisor is shutting down".to_string()
                    } else {
                        because.get().cloned().unwrap_or_else(|| "reload".into())
                    };
                    self.stop(None, why).await;
                    self.fail_waiters(if self.shared.shutdown.is_cancelled() {
                        CommandError::ShuttingDown
                    } else {
                        CommandError::Replaced
                    });
                    return;
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Hold(reply)) => {
                        let (go, what) = oneshot::channel();
                        if reply.send(go).is_ok() {
                            // Held: nothing else until the re-exec says (a dropped sender is a
                            // release).
                            if let Ok(Go::Detach(reply)) = what.await {
                                let _ = reply.send(self.detach().await);
                                return;
                            }
                        }
                    }
                    Some(cmd) => self.command(cmd).await,
                    None => {
                        self.stop(None, "the supervisor is shutting down".into()).await;
                        return;
                    }
                },
                exit = async {
                    match self.child.as_mut() {
                        Some(c) => (&mut c.exit).await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    // No exit from the reaper: how the child ended is not known.
                    let exit = exit.unwrap_or(Exit::Unknown);
                    self.on_exit(exit).await;
                }
                // The loop's top starts the child when `next_start` has come.
                _ = &mut start_timer, if next_start.is_some() => {}
                _ = &mut probe_timer, if next_probe.is_some() => {
                    self.probe().await;
                    // A probe always sets the next one; should it not, never fire the same one twice.
                    if self.next_probe == next_probe {
                        self.next_probe = None;
                    }
                }
            }
        }
    }

    /// Takes over a gateway that runs already: watched through its pidfd, probed at once (running
    /// if its readiness probe answers at the first try, else starting), not counted as a restart.
    /// An operator's stop (the desired state) or a profile changed since it started stops it.
    /// Handed over by a re-exec, it is taken as it was: ready, it stays running without a probe;
    /// the process's own child, its exit comes from the reaper, with its code.
    async fn adopt(&mut self, a: Adopted) {
        let now = Instant::now();
        let pid = a.pid;
        self.lock = a.lock;
        let since = humantime::format_rfc3339_seconds(a.started_at);
        let crash = matches!(a.how, adopt::How::Crash { .. });
        let (note, ours, ready) = match a.how {
            adopt::How::Crash { ready } => (
                format!("adopted pid {pid}, running since {since}"),
                false,
                ready,
            ),
            adopt::How::Handover { ours, ready } => (
                format!("kept pid {pid} across a re-exec of the supervisor"),
                ours,
                ready,
            ),
        };
        if crash {
            self.log.note(note.clone());
            tracing::info!(instance = %self.profile.name, pid, "{note}");
        } else {
            tracing::debug!(instance = %self.profile.name, pid, "{note}");
        }
        let captures = match a.pipes {
            Some((stdout, stderr)) => vec![
                self.log.capture(stdout, Stream::Stdout, a.pending.0),
                self.log.capture(stderr, Stream::Stderr, a.pending.1),
            ],
            None => {
                self.log.note(
                    "output not captured since adoption (its stdout and stderr went to the daemon that started it)",
                );
                Vec::new()
            }
        };
        let exit = match (ours, a.pidfd) {
            (false, Some(pidfd)) => adopt::watch_exit(pid, pidfd),
            // Our child: the reaper has its exit, or will.
            _ => self.shared.reaper.watch(pid),
        };
        // How long it has run, as far as the clocks tell: what the backoff weighs if it ends.
        let up = SystemTime::now()
            .duration_since(a.started_at)
            .unwrap_or_default();
        self.child = Some(Child {
            pid,
            start: Some(a.start),
            captures,
            exit,
            since: now.checked_sub(up).unwrap_or(now),
            ready,
            liveness_failures: 0,
            adopted: !ours,
        });
        self.started_once = true;
        self.next_start = None;
        self.verified.clear();
        self.refused = None;
        self.status.started_at = Some(a.started_at);
        if !self.status.want_running {
            let why = format!("{note}; an operator had stopped it (desired state): stopping it");
            self.log.note(why.clone());
            self.stop(None, why).await;
            return;
        }
        if !a.changed.is_empty() {
            let why = format!(
                "profile changed while no daemon ran: {}",
                a.changed.join(", ")
            );
            self.log.note(format!("{why}; restarting it"));
            self.set_state(State::Stopping, format!("{note}; {why}: restarting it"));
            if let Some(exit) = self.stop_child(self.profile.stop.timeout).await {
                self.status.last_exit = Some(exit);
            }
            // A start of the new profile, as a reload's: no restart is counted.
            self.started_once = false;
            self.cause = Cause::Adoption(why);
            self.next_start = Some(Instant::now());
            return;
        }
        if crash {
            // This daemon's record of it: the same child, its new keeper (only now: a gateway
            // about to be stopped keeps the record that says why, should this daemon crash first).
            self.record(pid, a.start, a.started_at, ready);
        }
        if ready {
            // Ready when it was handed over (or, after a crash, when its record was last written)
            // and proven the instance's own (pid, start time, marker, cgroup, lock): running as
            // it was. Its liveness is probed as usual; after a crash, the first probe of each is
            // spread over one interval, so that hundreds adopted at once are not probed at once.
            self.next_probe = Some(if crash {
                now + self.profile.health.interval.mul_f64(fastrand::f64())
            } else {
                self.next_liveness()
            });
            if crash {
                self.set_state(State::Running, note);
            } else {
                self.publish();
            }
            return;
        }
        // Running at once if it answers now; else starting, polled as a start is.
        self.next_probe = Some(now);
        if self.ready_now().await {
            self.next_probe = Some(self.next_liveness());
            if crash {
                self.record(pid, a.start, a.started_at, true);
            }
            self.set_state(State::Running, note);
        } else {
            self.next_probe = Some(now + READY_POLL);
            self.set_state(State::Starting, note);
        }
    }

    /// Ends the task's part for a re-exec: the child keeps running, its pipes are taken back from
    /// the log (every line read so far handed to the disk side first), and what the next task
    /// needs is returned. Waiting starts are told to try again.
    async fn detach(&mut self) -> Detached {
        self.fail_waiters(CommandError::Reexec);
        let child = match self.child.take() {
            None => None,
            Some(c) => {
                let mut pipes = Vec::new();
                for capture in c.captures {
                    pipes.push(capture.take_back().await);
                }
                let mut pipes = pipes.into_iter();
                let start = c
                    .start
                    .or_else(|| tree::read_stat(c.pid).map(|p| p.start))
                    .unwrap_or(0);
                Some(DetachedChild {
                    pid: c.pid,
                    start,
                    ours: !c.adopted,
                    ready: c.ready,
                    started_at: self.status.started_at.unwrap_or_else(SystemTime::now),
                    stdout: pipes.next().flatten(),
                    stderr: pipes.next().flatten(),
                    digest: super::digest(&self.profile),
                    changed: None,
                })
            }
        };
        let now = Instant::now();
        let (starts_ago, failures) = self.tracker.snapshot(now);
        Detached {
            resume: Resume {
                state: Some(self.status.state),
                reason: self.status.reason.clone(),
                restarts: self.status.restarts,
                operator_restarts: self.status.operator_restarts,
                last_exit: self.status.last_exit,
                last_exit_adopted: self.status.last_exit_adopted,
                last_error: self.status.last_error.clone(),
                want_running: self.status.want_running,
                next_start_in: self
                    .next_start
                    .filter(|_| child.is_none())
                    .map(|t| t.saturating_duration_since(now)),
                starts_ago,
                failures,
                started_once: self.started_once,
                tail: self.log.tail(),
                history: self.history.entries(),
                versions: self.status.versions.clone(),
            },
            child,
            lock: self.lock.take(),
        }
    }

    /// Writes the record of the instance's child (`ready`: it passed its readiness probe).
    fn record(&self, pid: i32, start: u64, started_at: SystemTime, ready: bool) {
        let mut r = adopt::Record::new(
            &self.profile,
            pid,
            start,
            self.shared.containment.dir(self.profile.name.as_str()),
            started_at,
        );
        r.ready = ready;
        r.versions = Some(self.status.versions.clone());
        self.shared.records.write(r);
    }

    /// One readiness probe of the child, with its identity check: whether it passed. Marks the
    /// child ready if so.
    async fn ready_now(&mut self) -> bool {
        let Some(child) = self.child.as_ref() else {
            return false;
        };
        let mut identity = Identity::of(
            &self.shared,
            &self.profile,
            &mut self.verified,
            &mut self.refused,
            child.pid,
        );
        let h = &self.profile.health;
        let ok = self
            .prober
            .ready(h.timeout.min(READY_POLL * 5), &mut identity)
            .await
            .is_ok();
        if ok {
            if let Some(c) = self.child.as_mut() {
                c.ready = true;
            }
        }
        ok
    }

    fn publish(&mut self) {
        self.status.pid = self.child.as_ref().map(|c| c.pid);
        self.status.next_start_in = self
            .next_start
            .filter(|_| self.child.is_none())
            .map(|t| t.saturating_duration_since(Instant::now()));
        self.status_tx.send_replace(self.status.clone());
    }

    /// Enters `state` for `reason` (said to watchers with the change).
    fn set_state(&mut self, state: State, reason: impl Into<String>) {
        let previous = self.status.state;
        let reason = reason.into();
        if previous != state || self.status.reason != reason {
            self.history.push(
                "state",
                format!("{} -> {}: {reason}", previous.as_str(), state.as_str()),
            );
        }
        self.status.state = state;
        self.status.reason = reason;
        if state != State::Blocked {
            self.status.holder = None;
            self.waiting_runtime = false;
        }
        if matches!(
            state,
            State::Stopped | State::Exited | State::Fatal | State::Blocked
        ) {
            // Nothing of the instance runs, and none will start soon: another may take its place.
            self.lock = None;
        }
        self.publish();
        if previous != state {
            // The pid as a number, left out when no child runs; a holder in the way is a warning
            // naming its pid (the one line that reports it).
            let holder = self.status.holder.as_ref().map(|h| h.pid);
            match (self.child.as_ref().map(|c| c.pid), holder) {
                (_, Some(holder)) if state == State::Blocked => {
                    tracing::warn!(instance = %self.profile.name, holder, "{} -> {}: {}", previous.as_str(), state.as_str(), self.status.reason)
                }
                (Some(pid), _) => {
                    tracing::info!(instance = %self.profile.name, pid, "{} -> {}: {}", previous.as_str(), state.as_str(), self.status.reason)
                }
                (None, _) => {
                    tracing::info!(instance = %self.profile.name, "{} -> {}: {}", previous.as_str(), state.as_str(), self.status.reason)
                }
            }
            let _ = self.shared.events.send(Event {
                time: SystemTime::now(),
                status: self.status.clone(),
                previous: Some(previous),
                removed: false,
                file: self.file.clone(),
            });
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start(by, reply) => {
                self.history.push(
                    "operator",
                    format!("start ({by}), while {}", self.status.state.as_str()),
                );
                self.status.want_running = true;
                self.remember(Want::Running).await;
                match self.status.state {
                    State::Running => {
                        let _ = reply.send(Ok(self.status.clone()));
                    }
                    State::Starting | State::Unhealthy => self.waiting_ready.push(reply),
                    _ => {
                        // An operator's start clears the history that made it fatal or slow.
                        self.cause = Cause::Operator(format!("start ({by})"));
                        self.tracker.reset();
                        self.status.last_error = None;
                        self.next_start = Some(Instant::now());
                        self.waiting_ready.push(reply);
                    }
                }
            }
            Command::Stop(timeout, by, reply) => {
                self.history.push(
                    "operator",
                    format!("stop ({by}), while {}", self.status.state.as_str()),
                );
                self.status.want_running = false;
                self.remember(Want::Stopped).await;
                self.next_start = None;
                self.stop(timeout, format!("operator stop ({by})")).await;
                self.fail_waiters(CommandError::StoppedBeforeReady);
                let _ = reply.send(Ok(self.status.clone()));
            }
            Command::Restart(by, between, reply) => {
                self.history.push(
                    "operator",
                    format!("restart ({by}), while {}", self.status.state.as_str()),
                );
                self.status.want_running = true;
                self.remember(Want::Running).await;
                let what = format!("restart ({by})");
                self.stop(None, format!("operator {what}")).await;
                if let Some(work) = between {
                    let line = tokio::task::spawn_blocking(work.0)
                        .await
                        .unwrap_or_else(|e| format!("the work between stop and start failed: {e}"));
                    self.history.push("upgrade", line.clone());
                    self.log.note(format!("upgrade: {line}"));
                }
                self.fail_waiters(CommandError::RestartedBeforeReady);
                self.cause = Cause::Operator(what);
                self.tracker.reset();
                self.status.last_error = None;
                self.next_start = Some(Instant::now());
                self.waiting_ready.push(reply);
            }
            Command::Profile(p, reply) => {
                self.profile = p;
                let _ = reply.send(());
            }
            // Taken by the loop in `run`.
            Command::Hold(_) => {}
            Command::RuntimeInstalled => {
                if self.waiting_runtime && self.status.want_running && self.child.is_none() {
                    self.next_start = Some(Instant::now());
                }
            }
        }
        self.publish();
    }

    /// Keeps an operator's wish for the next daemon.
    async fn remember(&self, want: Want) {
        self.shared
            .desired
            .record(self.profile.name.as_str(), want)
            .await;
    }

    fn fail_waiters(&mut self, why: CommandError) {
        for w in self.waiting_ready.drain(..) {
            let _ = w.send(Err(why.clone()));
        }
    }

    fn answer_waiters(&mut self) {
        let status = self.status.clone();
        let why = status
            .last_error
            .clone()
            .unwrap_or_else(|| format!("it is {}", status.state.as_str()));
        for w in self.waiting_ready.drain(..) {
            let _ = w.send(match status.state {
                State::Running => Ok(status.clone()),
                _ => Err(CommandError::Failed(why.clone())),
            });
        }
    }

    async fn start(&mut self) {
        let now = Instant::now();
        if self.tracker.start_limit_hit(&self.profile.restart, now) {
            self.start_limit_fatal();
            return;
        }
        // A rollback an earlier daemon decided but did not finish: its databases first.
        let pending = {
            let upgrades = self.shared.upgrades.clone();
            let name = self.profile.name.to_string();
            let state_dir = self.profile.state_dir.value.clone();
            tokio::task::spawn_blocking(move || {
                super::statesnap::restore_pending(&upgrades, &name, &state_dir)
            })
            .await
            .ok()
            .flatten()
        };
        if let Some(line) = pending {
            self.history.push("upgrade", line.clone());
            self.log.note(format!("upgrade: {line}"));
        }
        // The runtime: an upgrade's choice, else the profile's (a reload that keeps this task with
        // another `runtime` hands it the new profile: `Command::Profile`).
        let spec = self
            .shared
            .runtime_for(self.profile.name.as_str(), &self.profile);
        // Off the runtime: finding the runtime in the store, making the dirs, taking the lock,
        // looking for holders of the instance's places, finding the program and making the
        // instance's cgroup (limits applied, and whatever an earlier child left in it ended, once
        // the lock is ours) touch disks that may hang, and /proc.
        let profile = self.profile.clone();
        let containment = self.shared.containment.clone();
        let store = self.shared.runtimes.clone();
        let (lock, owner, scanned, diag) = (
            self.lock.take(),
            self.shared.owner.clone(),
            self.scanned.take(),
            self.shared.diag.clone(),
        );
        let prepared = tokio::task::spawn_blocking(move || {
            let runtime = match &spec {
                Some(s) => match store.find(s) {
                    Some(r) => Some(r),
                    None => return Err(s.clone()),
                },
                None => None,
            };
            let mut pre =
                ownership::preflight(&profile, lock, &owner, scanned, &diag, runtime.as_ref());
            if let (Preflight::Ready { request, .. }, Some(c)) = (&mut pre, containment.cgroups()) {
                match c.prepare(profile.name.as_str(), &profile.limits) {
                    Ok(joined) => request.cgroup = Some(Arc::new(joined.procs)),
                    Err(e) => return Ok((Preflight::Failed(e), RunsOn::default())),
                }
            }
            let runs = match (&pre, &runtime) {
                // What runs is the runtime's only if the program is (a command with an absolute
                // path elsewhere runs something else, whatever the PATH says): else it is read as
                // a program off the PATH is.
                (Preflight::Ready { request, .. }, Some(r))
                    if from_runtime(&request.program, r, &store) =>
                {
                    RunsOn {
                        versions: Versions::of_runtime(r),
                        node: None,
                    }
                }
                (Preflight::Ready { request, .. }, Some(_)) => RunsOn::path(request),
                (Preflight::Ready { request, .. }, None) => RunsOn::path(request),
                _ => RunsOn::default(),
            };
            Ok((pre, runs))
        })
        .await
        .unwrap_or_else(|e| {
            Ok((
                Preflight::Failed(format!("preparing the start failed: {e}")),
                RunsOn::default(),
            ))
        });
        let (pre, runs) = match prepared {
            Ok(p) => p,
            Err(spec) => {
                self.wait_for_runtime(&spec);
                return;
            }
        };
        let (req, leftovers) = match pre {
            Preflight::Ready {
                request,
                lock,
                leftovers,
            } => {
                self.lock = Some(lock);
                (request, leftovers)
            }
            Preflight::Blocked(holder, why) => {
                self.blocked(holder, why);
                return;
            }
            Preflight::Failed(e) => {
                self.fatal(e);
                return;
            }
        };
        if !leftovers.is_empty() {
            // The lock is ours: these were left by a supervisor that is gone.
            self.log.note(format!(
                "ending processes an earlier supervisor left on this instance: {:?}",
                leftovers.iter().map(|p| p.pid).collect::<Vec<_>>()
            ));
            super::end_leftovers(leftovers).await;
        }
        let mut versions = runs.versions;
        if let Some((node, mtime)) = runs.node {
            versions.node = self.shared.node_version(node, mtime).await;
        }
        let on = versions
            .runtime
            .as_ref()
            .map_or_else(String::new, |r| format!(" on {r}"));
        match self.shared.spawner.spawn(req).await {
            Ok(child) => {
                self.verified.clear();
                self.refused = None;
                self.tracker.record_start(now);
                self.history.push(
                    "start",
                    format!(
                        "pid {} started ({}); {}",
                        child.pid,
                        self.cause.reason(),
                        history::start_limit_text(&self.profile.restart, self.tracker.starts())
                    ),
                );
                if self.started_once {
                    match self.cause {
                        Cause::Operator(_) => self.status.operator_restarts += 1,
                        Cause::First | Cause::Policy(_) | Cause::Adoption(_) => {
                            self.status.restarts += 1
                        }
                    }
                }
                self.started_once = true;
                self.status.versions = versions;
                let exit = self.shared.reaper.watch(child.pid);
                if let Some(start) = child.start {
                    self.record(child.pid, start, SystemTime::now(), false);
                }
                {
                    use std::os::fd::AsFd;
                    let name = self.profile.name.as_str();
                    let (out, err) = (child.stdout.as_fd(), child.stderr.as_fd());
                    self.shared.fdstore.store(name, out, err);
                }
                let captures = vec![
                    self.log.capture(child.stdout, Stream::Stdout, Vec::new()),
                    self.log.capture(child.stderr, Stream::Stderr, Vec::new()),
                ];
                self.log.note(format!(
                    "started pid {} ({}){on}",
                    child.pid,
                    self.profile.command.join(" ")
                ));
                self.child = Some(Child {
                    pid: child.pid,
                    start: child.start,
                    captures,
                    exit,
                    since: now,
                    ready: false,
                    liveness_failures: 0,
                    adopted: false,
                });
                self.status.started_at = Some(SystemTime::now());
                self.next_probe = Some(now);
                let why = self.cause.reason();
                self.set_state(State::Starting, why);
            }
            Err(e) => {
                let why = format!("cannot start {}: {e}", self.profile.command.join(" "));
                self.status.last_error = Some(why.clone());
                self.log.note(why.clone());
                self.schedule_restart(Duration::ZERO, why);
            }
        }
    }

    /// The runtime `spec` is not installed: wait (blocked, without a holder), without spawning
    /// and without counting a start, until `Command::RuntimeInstalled` or an operator's start.
    fn wait_for_runtime(&mut self, spec: &Spec) {
        let why =
            format!("runtime {spec} is not installed: run `openclawctl runtime install {spec}`");
        if !self.status.want_running {
            self.set_state(State::Stopped, format!("not meant to run; {why}"));
            self.answer_waiters();
            return;
        }
        if self.status.state != State::Blocked || self.status.reason != why {
            self.log.note(why.clone());
            self.history.push("blocked", why.clone());
            tracing::warn!(instance = %self.profile.name, "{why}");
        }
        self.status.last_error = Some(why.clone());
        self.next_start = None;
        self.set_state(State::Blocked, why);
        self.waiting_runtime = true;
        self.answer_waiters();
    }

    /// A process that is not the instance's holds its place: wait, without spawning, and look
    /// again in `BLOCKED_RECHECK`.
    fn blocked(&mut self, holder: Holder, why: String) {
        if !self.status.want_running {
            self.set_state(State::Stopped, format!("not meant to run; {why}"));
            self.answer_waiters();
            return;
        }
        if self.status.holder.as_ref() != Some(&holder) || self.status.state != State::Blocked {
            if self.status.state == State::Blocked {
                // Still blocked, by another holder: no transition line will say it.
                tracing::warn!(instance = %self.profile.name, holder = holder.pid, "blocked: {why}");
            }
            self.log.note(format!(
                "blocked: {why}; looking again every {}",
                humantime::format_duration(BLOCKED_RECHECK)
            ));
            // `why` names the holder: its pid, command line, what it holds, its unit.
            self.history.push("blocked", why.clone());
        }
        self.status.last_error = Some(why.clone());
        self.status.holder = Some(holder);
        self.next_start = Some(Instant::now() + BLOCKED_RECHECK);
        self.set_state(State::Blocked, why);
        self.answer_waiters();
    }

    fn start_limit_fatal(&mut self) {
        let r = &self.profile.restart;
        self.history.push(
            "start-limit",
            format!(
                "{}: the limit is reached, no more starts",
                history::start_limit_text(r, self.tracker.starts())
            ),
        );
        let why = format!(
            "started {} times within {}: giving up (start limit); see the last exit and the log, then `openclawctl start {}`",
            r.start_limit_burst,
            humantime::format_duration(r.start_limit_interval),
            self.profile.name
        );
        self.fatal(why);
    }

    fn fatal(&mut self, why: String) {
        tracing::error!(instance = %self.profile.name, "{why}");
        self.log.note(format!("fatal: {why}"));
        self.status.last_error = Some(why.clone());
        self.next_start = None;
        self.set_state(State::Fatal, why);
        self.answer_waiters();
    }

    async fn probe(&mut self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let h = &self.profile.health;
        let now = Instant::now();
        // What this probe finds on the port, not what an earlier one did.
        self.refused = None;
        let mut identity = Identity::of(
            &self.shared,
            &self.profile,
            &mut self.verified,
            &mut self.refused,
            child.pid,
        );
        if !child.ready {
            match self
                .prober
                .ready(h.timeout.min(READY_POLL * 5), &mut identity)
                .await
            {
                Ok(()) => {
                    if let Some(c) = self.child.as_mut() {
                        c.ready = true;
                    }
                    self.status.last_error = None;
                    self.next_probe = Some(self.next_liveness());
                    // The record says so too, for a next daemon's adoption.
                    if let (Some(start), Some(at)) = (
                        self.child.as_ref().and_then(|c| c.start),
                        self.status.started_at,
                    ) {
                        let pid = self.child.as_ref().map_or(0, |c| c.pid);
                        self.record(pid, start, at, true);
                    }
                    self.set_state(State::Running, "ready");
                    self.answer_waiters();
                }
                Err(e) if now.duration_since(child.since) >= h.start_deadline => {
                    let why = format!(
                        "not ready within {} ({e})",
                        humantime::format_duration(h.start_deadline)
                    );
                    self.unhealthy(why).await;
                }
                Err(_) => self.next_probe = Some(now + READY_POLL),
            }
            return;
        }
        let probed = self.prober.live(h.timeout, &mut identity).await;
        if let Some(m) = self.shared.metrics.get() {
            m.probe(self.profile.name.as_str(), now.elapsed(), probed.is_ok());
        }
        match probed {
            Ok(()) => {
                if let Some(c) = self.child.as_mut() {
                    c.liveness_failures = 0;
                }
                self.next_probe = Some(self.next_liveness());
            }
            Err(e) => {
                let failures = self.child.as_mut().map_or(0, |c| {
                    c.liveness_failures += 1;
                    c.liveness_failures
                });
                tracing::warn!(instance = %self.profile.name, failures, "liveness probe failed: {e}");
                self.history.push(
                    "probe",
                    format!(
                        "liveness probe failed ({failures} of {} in a row): {e}",
                        h.failure_threshold
                    ),
                );
                if failures >= h.failure_threshold {
                    self.unhealthy(format!("{failures} liveness probes failed in a row ({e})"))
                        .await;
                } else {
                    self.next_probe = Some(self.next_liveness());
                }
            }
        }
    }

    /// When the next liveness probe is due: one interval from now, rounded up to a grid shared by
    /// all instances, so probes due about the same time run in one wake-up of the daemon rather than
    /// one each (the same idea as the kernel's timer slack). The grid step is a tenth of the
    /// interval, at most 1 s: a probe runs at most that much late.
    fn next_liveness(&self) -> Instant {
        let interval = self.profile.health.interval;
        let step = (interval / 10)
            .min(Duration::from_secs(1))
            .as_nanos()
            .max(1);
        let origin = self.shared.probe_grid;
        let since = (Instant::now() + interval)
            .saturating_duration_since(origin)
            .as_nanos();
        let at = u64::try_from(since.div_ceil(step) * step).unwrap_or(u64::MAX);
        origin
            .checked_add(Duration::from_nanos(at))
            .unwrap_or_else(|| Instant::now() + interval)
    }

    /// A child that does not answer: stop it (the stop signal, then SIGKILL) and restart it by policy.
    async fn unhealthy(&mut self, why: String) {
        let then = if self.refused.is_some() {
            "stopping it; the instance waits until its port is free"
        } else {
            "restarting it"
        };
        self.log.note(format!("unhealthy: {why}; {then}"));
        self.fail_waiters(CommandError::Failed(why.clone()));
        self.status.last_error = Some(why.clone());
        self.cause = Cause::Policy(why.clone());
        self.set_state(State::Unhealthy, why.clone());
        let timeout = self.profile.stop.timeout.min(UNHEALTHY_STOP_CAP);
        let uptime = self
            .child
            .as_ref()
            .map_or(Duration::ZERO, |c| c.since.elapsed());
        if let Some(exit) = self.stop_child(timeout).await {
            self.status.last_exit = Some(exit);
        }
        if let Some((holder, why)) = self.refused.take() {
            self.blocked(holder, why);
            return;
        }
        let delay = self
            .tracker
            .next_delay(&self.profile.restart, uptime, fastrand::f64());
        self.note_backoff(uptime, delay);
        self.schedule_restart(delay, why);
    }

    async fn on_exit(&mut self, exit: Exit) {
        let Some(child) = self.child.take() else {
            return;
        };
        let uptime = child.since.elapsed();
        self.status.last_exit = Some(exit);
        self.status.last_exit_adopted = child.adopted;
        self.next_probe = None;
        self.prober.reset();
        let how = exit_text(exit, child.adopted);
        self.log.note(format!(
            "pid {} ended: {how} after {}",
            child.pid,
            humantime::format_duration(round(uptime))
        ));
        tracing::warn!(instance = %self.profile.name, pid = child.pid, "child ended: {how}");
        self.history.push(
            "exit",
            format!(
                "pid {} ended: {how} after {}",
                child.pid,
                history::secs(uptime)
            ),
        );
        // Whatever the gateway left behind (its setsid'd broker, say) would hold its state lock.
        let ended = if child.adopted {
            format!("ended: {how}")
        } else {
            format!("ended by {exit}")
        };
        self.cause = Cause::Policy(ended.clone());
        self.set_state(State::Stopping, ended.clone());
        self.kill_leftovers(Some(child.pid)).await;
        let mut refused = self.refused.take();
        if !child.ready && refused.is_none() {
            // A gateway that cannot bind its port ends at once, often before a probe saw who
            // holds it.
            refused = self.port_holder().await;
        }
        if !child.ready {
            // Whoever waits for this start learns now, not after the restarts the policy allows.
            let why = match &refused {
                Some((_, why)) => why.clone(),
                None => format!("it ended before it was ready ({exit}); see its log"),
            };
            self.fail_waiters(CommandError::Failed(why));
        }
        if let Some((holder, why)) = refused {
            self.blocked(holder, why);
            return;
        }
        let decision = decide::after_exit(
            &self.profile.restart,
            exit,
            uptime,
            &mut self.tracker,
            fastrand::f64(),
        );
        match decision {
            AfterExit::GiveUp { code } => {
                let why = decide::give_up_reason(code, self.profile.name.as_str());
                self.fatal(why);
            }
            AfterExit::Exited => {
                self.status.want_running = false;
                self.set_state(
                    State::Exited,
                    format!(
                        "{ended}; the restart policy ({}) does not restart it",
                        self.profile.restart.policy.as_str()
                    ),
                );
                self.answer_waiters();
            }
            AfterExit::Restart { delay, error } => {
                self.note_backoff(uptime, delay);
                if error.is_some() {
                    self.status.last_error = error;
                }
                self.schedule_restart(delay, ended);
            }
        }
    }

    /// The restart decision's delay and why, for `explain` (unless the start limit forbids the
    /// restart: `schedule_restart` says that instead).
    fn note_backoff(&mut self, uptime: Duration, delay: Duration) {
        if self
            .tracker
            .start_limit_hit(&self.profile.restart, Instant::now())
        {
            return;
        }
        self.history.push(
            "restart",
            history::backoff_text(
                &self.profile.restart,
                self.tracker.failures(),
                uptime,
                delay,
            ),
        );
    }

    /// A restart by policy, `delay` from now, after `why` (how the last child ended).
    fn schedule_restart(&mut self, delay: Duration, why: String) {
        if !self.status.want_running {
            self.set_state(State::Stopped, format!("{why}; not meant to run"));
            return;
        }
        self.cause = Cause::Policy(why.clone());
        if self
            .tracker
            .start_limit_hit(&self.profile.restart, Instant::now())
        {
            self.start_limit_fatal();
            return;
        }
        self.next_start = Some(Instant::now() + delay);
        if delay.is_zero() {
            self.publish();
        } else {
            let delay = humantime::format_duration(round(delay));
            self.log.note(format!("restarting in {delay}"));
            self.set_state(State::Backoff, format!("{why}; restarting in {delay}"));
        }
    }

    /// Stops the child, if any, by the stop policy (or `timeout`), and every process of the
    /// instance with it, for `why` (what watchers are told).
    async fn stop(&mut self, timeout: Option<Duration>, why: String) {
        if self.child.is_none() {
            if !matches!(self.status.state, State::Fatal | State::Exited) {
                self.set_state(State::Stopped, why);
            }
            return;
        }
        self.set_state(State::Stopping, why.clone());
        let timeout = timeout.unwrap_or(self.profile.stop.timeout);
        let mut done = why;
        if let Some(exit) = self.stop_child(timeout).await {
            self.status.last_exit = Some(exit);
            done = if self.status.last_exit_adopted {
                format!("{done}: gateway ended ({})", exit_text(exit, true))
            } else {
                format!("{done}: gateway ended by {exit}")
            };
        }
        self.set_state(State::Stopped, done);
    }

    /// The stop signal to the child's process group; after `timeout`, SIGKILL; then whatever is left
    /// of the instance's processes. Returns how the child ended (`Unknown` if its exit never came),
    /// or `None` when there was no child.
    async fn stop_child(&mut self, timeout: Duration) -> Option<Exit> {
        let mut child = self.child.take()?;
        self.status.last_exit_adopted = child.adopted;
        self.next_probe = None;
        self.prober.reset();
        let sig = self.profile.stop.signal.signal();
        if self.shared.containment.cgroups().is_none() {
            // Without cgroups, what is in the tree now is known before the signal scatters it:
            // a descendant in a session of its own, without the marker, that the gateway's
            // death orphans is ended with the rest.
            let known = self.shared.known.clone();
            let roots = vec![(self.profile.name.to_string(), child.pid)];
            let _ = tokio::task::spawn_blocking(move || known.walk(&roots)).await;
        }
        self.log
            .note(format!("stopping pid {} with {}", child.pid, sig.as_str()));
        let _ = killpg(Pid::from_raw(child.pid), sig);
        let exit = match tokio::time::timeout(timeout, &mut child.exit).await {
            Ok(r) => r.ok(),
            Err(_) => {
                self.log.note(format!(
                    "pid {} still running after {}: SIGKILL",
                    child.pid,
                    humantime::format_duration(timeout)
                ));
                let _ = killpg(Pid::from_raw(child.pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(child.pid), Signal::SIGKILL);
                tokio::time::timeout(Duration::from_secs(10), &mut child.exit)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        if let Some(e) = exit {
            self.log.note(format!(
                "pid {} ended: {}",
                child.pid,
                exit_text(e, child.adopted)
            ));
        }
        self.kill_leftovers(Some(child.pid)).await;
        // Whatever the last exit was, it is not this child's: say it is not known rather than
        // leave the one before on show.
        Some(exit.unwrap_or(Exit::Unknown))
    }

    /// A process (not the instance's: its tree is gone) listening on the instance's port, if any.
    async fn port_holder(&self) -> Option<(Holder, String)> {
        let port = self.profile.port.value;
        let mut inode = None;
        for a in ownership::loopback(port) {
            inode = listener_of(&self.shared.diag, a).await;
            if inode.is_some() {
                break;
            }
        }
        let inode = inode?;
        let holder = tokio::task::spawn_blocking(move || ownership::holder_of(inode, port))
            .await
            .ok()?;
        let why = ownership::message(&holder);
        Some((holder, why))
    }

    /// Ends every process of the instance: in the tree of `root`, carrying its marker, known from
    /// the walks while the gateway lived, or in its cgroup: the stop signal first, SIGKILL after
    /// a short grace. Then, with cgroups, whatever is still in the cgroup is killed (it returns
    /// once the cgroup is empty) and the cgroup removed.
    async fn kill_leftovers(&mut self, root: Option<i32>) {
        let name = self.profile.name.to_string();
        let state = self.profile.state_dir.value.display().to_string();
        let reaper = self.shared.reaper.clone();
        let known = self.shared.known.clone();
        let cgroup = self.shared.containment.dir(&name);
        let dir = cgroup.clone();
        let find = move || {
            let mut procs =
                tree::instance_processes(root, &name, &state, &|pid| reaper.is_watched(pid));
            let more = known.of(&name).into_iter().chain(
                dir.iter()
                    .flat_map(|d| super::cgroup::members(d))
                    .filter_map(tree::read_stat),
            );
            for p in more {
                if !procs.iter().any(|q| q.pid == p.pid) {
                    procs.push(p);
                }
            }
            procs
        };
        let sig = self.profile.stop.signal.signal();
        let log = self.log.clone();
        let survivors = tree::end_all(find, sig, STRAGGLER_GRACE, |pids| async move {
            log.note(format!("ending processes left behind: {pids:?}"));
        })
        .await;
        if !survivors.is_empty() {
            tracing::error!(instance = %self.profile.name, "processes survived SIGKILL: {survivors:?}");
        }
        if let Some(dir) = cgroup {
            let left = super::cgroup::empty_and_remove(&dir).await;
            if !left.is_empty() {
                self.log.note(format!(
                    "killed processes left in cgroup {}: {left:?}",
                    dir.display()
                ));
            }
        }
        self.shared.known.forget(self.profile.name.as_str());
        // The instance's tree is gone: no child of it for a next daemon to adopt.
        self.shared.records.clear(self.profile.name.as_str());
        // Nor pipes of it for the service manager to keep.
        self.shared.fdstore.remove(self.profile.name.as_str());
    }
}

/// How a child ended, in words: an adopted child's exit code is not known (it is not the
/// daemon's child), and says so.
fn exit_text(exit: Exit, adopted: bool) -> String {
    match exit {
        Exit::Unknown if adopted => "exit code unknown (adopted)".to_string(),
        e => e.to_string(),
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The probes' identity check of one instance: the socket a new probe connection reached must be
/// held by the instance's tree (see `ownership`).
struct Identity<'a> {
    diag: &'a Arc<Diag>,
    verified: &'a mut Verified,
    refused: &'a mut Option<(Holder, String)>,
    root: i32,
    name: &'a str,
    state_dir: &'a std::path::Path,
    reaper: &'a Reaper,
}

impl<'a> Identity<'a> {
    /// The check of the tree rooted at `root` (the instance's child), with what the instance task
    /// keeps between probes.
    fn of(
        shared: &'a Shared,
        profile: &'a Profile,
        verified: &'a mut Verified,
        refused: &'a mut Option<(Holder, String)>,
        root: i32,
    ) -> Self {
        Identity {
            diag: &shared.diag,
            verified,
            refused,
            root,
            name: profile.name.as_str(),
            state_dir: &profile.state_dir.value,
            reaper: &shared.reaper,
        }
    }
}

impl Verify for Identity<'_> {
    async fn verify(&mut self, peer: std::net::SocketAddr) -> Result<(), String> {
        let Some(inode) = listener_of(self.diag, peer).await else {
            return Err(format!("nothing listens on {peer} any more"));
        };
        if self.verified.contains(inode) {
            return Ok(());
        }
        if let Some(holder) = self.verified.foreign(inode) {
            let why = ownership::message(holder);
            *self.refused = Some((holder.clone(), why.clone()));
            return Err(why);
        }
        let (root, name, state) = (
            self.root,
            self.name.to_string(),
            self.state_dir.display().to_string(),
        );
        let reaper = self.reaper.clone();
        let port = peer.port();
        let found = tokio::task::spawn_blocking(move || {
            let tree =
                tree::instance_processes(Some(root), &name, &state, &|pid| reaper.is_watched(pid));
            match ownership::owner_among(tree.iter().map(|p| p.pid), inode) {
                Some(_) => Ok(()),
                None => Err(ownership::holder_of(inode, port)),
            }
        })
        .await
        .map_err(|e| format!("cannot check who listens on {peer}: {e}"))?;
        match found {
            Ok(()) => {
                self.verified.insert(inode);
                Ok(())
            }
            Err(holder) => {
                let why = ownership::message(&holder);
                self.verified.set_foreign(inode, holder.clone());
                *self.refused = Some((holder, why.clone()));
                Err(why)
            }
        }
    }
}

/// The inode of the TCP listener on `addr`: the kernel's exact lookup on the runtime when it can
/// answer at once, else the same off the runtime (its first check, or /proc/net/tcp).
async fn listener_of(diag: &Arc<Diag>, addr: std::net::SocketAddr) -> Option<u64> {
    match diag.listener(addr) {
        Ok(found) => found,
        Err(_) => {
            let diag = diag.clone();
            tokio::task::spawn_blocking(move || diag.listener_blocking(addr))
                .await
                .ok()
                .flatten()
        }
    }
}
