//! Running a checked plan: one task per instance (`instance.rs`) that owns its child, with shared
//! services beside them: the spawning thread (`spawn.rs`), the reaper of every child the daemon has
//! or inherits (`reaper.rs`), the probe client (`probe.rs`), per-instance logs (`logs.rs`), the
//! process-tree walk (`tree.rs`), the CPU/RSS figures of the trees (`sample.rs`), who owns an
//! instance's state dir and port (`ownership.rs`: the lock, the host scan, the probes' identity
//! check), the records of running children and the adoption of those a crashed daemon left
//! (`adopt.rs`), the children's pipes kept by the service manager across a crash (`fdstore.rs`).
//! The [`Supervisor`]
//! owns the set of instances: it applies reloads, and stops them all, in parallel, when its
//! cancellation token fires.

pub mod adopt;
pub mod backoff;
pub mod cgroup;
pub mod decide;
pub mod desired;
pub mod fdstore;
pub mod history;
pub mod instance;
pub mod logs;
pub mod ownership;
pub mod probe;
pub mod reaper;
pub mod runtimes;
pub mod sample;
pub mod spawn;
pub mod statesnap;
pub mod token;
pub mod tree;
pub mod upgrade;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use instance::{
    Command, CommandError, Detached, DetachedChild, Event, Go, Handle, Reply, Resume, State, Status,
};
pub use reaper::Exit;

use crate::profile::{Plan, Profile};

/// What a status shows of one instance: its status and the figures of its process tree.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    /// The instance's status.
    pub status: Status,
    /// CPU use of the tree, in percent of one core, between the last two samples.
    pub cpu_percent: f32,
    /// CPU time the tree has used, in seconds, at the last sample (`sample::Figures::cpu_seconds`).
    pub cpu_seconds: f64,
    /// Resident memory of the tree, in bytes, at the last sample.
    pub rss_bytes: u64,
    /// How old the figures are.
    pub sample_age: Duration,
    /// The file of the instance's profile.
    pub file: Arc<str>,
    /// The runtime its profile names, as written.
    pub profile_runtime: Option<String>,
    /// The runtime an upgrade chose for it (the desired state), if one did.
    pub chosen_runtime: Option<String>,
}

/// What a reload does to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadAction {
    /// A new profile.
    Add,
    /// A profile that is gone.
    Remove,
    /// A profile changed in a field the child runs with: stopped, then started with the new one.
    Change,
    /// The same profile, or one changed only in fields that need no restart (`autostart`): the
    /// child is not touched.
    Keep,
}

/// One instance's part in a reload.
#[derive(Debug, Clone)]
pub struct Change {
    /// The instance name.
    pub name: String,
    /// What happens to it.
    pub action: ReloadAction,
    /// For `Change` and `Keep`: the fields that differ.
    pub fields: Vec<&'static str>,
    /// What went wrong applying it.
    pub error: Option<String>,
}

/// What a reload found and did.
#[derive(Debug)]
pub struct ReloadOutcome {
    /// The profiles as read now, with the check's report.
    pub plan: Plan,
    /// Every instance's part, by name.
    pub changes: Vec<Change>,
    /// Whether the changes were applied: false for a dry run or a failed check.
    pub applied: bool,
}

/// The instances, by name; replaced whole by a reload, read by cloning the `Arc`.
type Instances = Arc<BTreeMap<String, Handle>>;

/// The set of running instances.
pub struct Supervisor {
    instances: RwLock<Instances>,
    /// Each instance's task, to wait for when it is removed or the daemon shuts down.
    tasks: Mutex<Vec<(String, JoinHandle<()>)>>,
    /// One reload at a time.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// Held from a re-exec's `detach_all` until the exec (or `reattach`, if it fails).
    reexec_hold: Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
    shared: instance::Shared,
    log_cfg: logs::LogConfig,
    /// The thread that writes every instance's log file.
    log_disk: logs::Disk,
    cancel: CancellationToken,
    sampler: sample::Sampler,
    /// The instances with an upgrade under way (`upgrade.rs`): one at a time each.
    upgrading: Mutex<std::collections::BTreeSet<String>>,
}

/// Without cgroups, how often every instance's tree is walked for [`tree::Seen`], at most.
const TRACK_EVERY: Duration = Duration::from_secs(1);

/// Without cgroups, the walks for [`tree::Seen`] may take at most 1/`TRACK_COST_SHARE` of a core:
/// the next walk waits `TRACK_COST_SHARE` times the CPU time of the last one if that is longer
/// than [`TRACK_EVERY`]. A few gateways are walked every second; 500 stand-ins (a walk of ~28 ms
/// here) about every 11 s.
const TRACK_COST_SHARE: u32 = 400;

/// How long a shutdown waits for the logs and the desired state to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Starts one task per profile of `plan` (which must have passed its check); an instance starts
    /// at once if an operator last started it, or if it has `autostart` and no operator stopped it
    /// (`desired`). `run.adopted`: the gateways found running for their instances ([`adopt`]),
    /// which those instances take over instead of starting one.
    pub fn start(
        plan: Plan,
        log_cfg: &logs::LogConfig,
        desired: desired::DesiredState,
        containment: cgroup::Containment,
        cancel: CancellationToken,
        owner: ownership::Owner,
        mut run: Running,
    ) -> std::io::Result<Supervisor> {
        // The reaper outlives the instances: their stops wait for exits it delivers. Exits the
        // program before a re-exec reaped are its first.
        let reaper = reaper::Reaper::start(CancellationToken::new())?;
        for (pid, exit) in std::mem::take(&mut run.exits) {
            reaper.remember(pid, exit);
        }
        let shared = instance::Shared {
            spawner: match run.jobs.take() {
                Some(jobs) => spawn::Spawner::on(jobs, reaper.clone(), run.on_crash),
                None => spawn::Spawner::start(reaper.clone(), run.on_crash)?,
            },
            records: run.records,
            fdstore: run.fdstore,
            reaper,
            probe_grid: tokio::time::Instant::now(),
            events: broadcast::channel(1024).0,
            desired,
            shutdown: cancel.clone(),
            owner,
            diag: Arc::new(ownership::Diag::default()),
            containment: Arc::new(containment),
            runtimes: run.runtimes.clone(),
            upgrades: run.upgrades.clone(),
            known: tree::Seen::default(),
            metrics: Arc::default(),
            node_versions: Arc::default(),
        };
        // Whether the kernel's listener lookups can be used, found once off the runtime (the
        // first may load a kernel module) before the first probe needs them.
        let diag = shared.diag.clone();
        tokio::task::spawn_blocking(move || diag.check());
        let sup = Supervisor {
            instances: RwLock::new(Arc::new(BTreeMap::new())),
            tasks: Mutex::new(Vec::new()),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            reexec_hold: Mutex::new(None),
            shared,
            log_cfg: log_cfg.clone(),
            log_disk: logs::Disk::start()?,
            cancel,
            sampler: sample::Sampler::new(),
            upgrading: Mutex::default(),
        };
        let mut instances = BTreeMap::new();
        for profile in plan.profiles {
            let log = logs::InstanceLog::open(log_cfg, &sup.log_disk, profile.name.as_str())?;
            let name = profile.name.as_str();
            let start = sup.shared.desired.should_run(name, profile.autostart);
            if start != profile.autostart {
                tracing::info!(
                    instance = name,
                    "{} as an operator last asked (autostart is {})",
                    if start { "starting" } else { "leaving stopped" },
                    profile.autostart
                );
            }
            // The scan is fresh only for a start that follows at once; a later one scans again.
            let scanned = run.scan.found.remove(name).unwrap_or_default();
            let scanned = (run.scan.done && start).then_some(scanned);
            let adopted = run.adopted.remove(name);
            if let Some((out, err)) = run.drain.remove(name) {
                drain_into(&log, name, out, err);
            }
            let resume = run.resume.remove(name);
            instances.insert(
                profile.name.to_string(),
                sup.launch(
                    profile,
                    start,
                    log,
                    instance::Begin {
                        scanned,
                        adopted,
                        resume,
                    },
                ),
            );
        }
        *sup.instances.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(instances);
        Ok(sup)
    }

    /// How the instances are contained: cgroups or the process tree.
    pub fn containment(&self) -> &cgroup::Containment {
        &self.shared.containment
    }

    /// Without cgroups, walks every running instance's tree (off the runtime) until the shutdown,
    /// so that a descendant that leaves the tree later is still known at the stop ([`tree::Seen`]):
    /// once a second, or less often where the walks would take more than 1/`TRACK_COST_SHARE` of a
    /// core. Does nothing with cgroups, which need no walk.
    pub fn track(self: &Arc<Self>) {
        if self.shared.containment.cgroups().is_some() {
            return;
        }
        let sup = Arc::downgrade(self);
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let mut wait = TRACK_EVERY;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let Some(sup) = sup.upgrade() else { return };
                let roots: Vec<(String, i32)> = sup
                    .instances()
                    .values()
                    .filter_map(|h| {
                        let st = h.status.borrow();
                        st.pid.map(|pid| (st.name.clone(), pid))
                    })
                    .collect();
                let known = sup.shared.known.clone();
                drop(sup);
                if roots.is_empty() {
                    wait = TRACK_EVERY;
                    continue;
                }
                let cpu = tokio::task::spawn_blocking(move || {
                    let clock = nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID;
                    let before = nix::time::clock_gettime(clock).ok();
                    known.walk(&roots);
                    let after = nix::time::clock_gettime(clock).ok();
                    before
                        .zip(after)
                        .map(|(b, a)| Duration::from(a - b))
                        .unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                wait = TRACK_EVERY.max(cpu * TRACK_COST_SHARE);
            }
        });
    }

    fn launch(
        &self,
        profile: Profile,
        start: bool,
        log: logs::InstanceLog,
        begin: instance::Begin,
    ) -> Handle {
        let name = profile.name.to_string();
        let (handle, task) = instance::spawn(
            profile,
            start,
            self.shared.clone(),
            log,
            self.cancel.child_token(),
            begin,
        );
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, task));
        handle
    }

    /// The instances now.
    pub fn instances(&self) -> Instances {
        self.instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> Option<Handle> {
        self.instances().get(name).cloned()
    }

    /// The history of the instance named `name` and what comes next (`openclawctl explain`).
    pub fn explain(&self, name: &str) -> Option<history::Explanation> {
        self.get(name).map(|h| h.explain())
    }

    /// Waits until every instance meant to run has left `stopped`: its first start was attempted
    /// (it is starting, or already failed to). What systemd's READY=1 waits for.
    pub async fn launched(&self) {
        for h in self.instances().values() {
            let mut rx = h.status.clone();
            let _ = rx
                .wait_for(|s| !(s.want_running && s.state == State::Stopped))
                .await;
        }
    }

    /// Every state change from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The status of `names` (all if empty), with their process trees' latest CPU and RSS figures.
    /// Waits for a sample only when the latest has no figures for a child that runs now (the
    /// daemon's first status, a child started since); otherwise answers at once, and starts a new
    /// sample in the background when the latest is old (`sample::Sampler::refresh`).
    pub async fn reports(&self, names: &[String]) -> Vec<InstanceReport> {
        let instances = self.instances();
        let wanted =
            |h: &&Handle| names.is_empty() || names.iter().any(|n| *n == h.profile.name.as_str());
        let lacks = |latest: &sample::Latest| {
            instances.values().filter(wanted).any(|h| {
                let st = h.status.borrow();
                !latest.covers(&st.name, st.pid)
            })
        };
        let roots = || {
            instances
                .values()
                .map(|h| {
                    let st = h.status.borrow();
                    sample::Root {
                        name: st.name.clone(),
                        pid: st.pid,
                        cgroup: self.shared.containment.dir(&st.name),
                    }
                })
                .collect()
        };
        self.sampler.refresh(lacks, roots).await;
        let statuses: Vec<_> = instances
            .values()
            .filter(wanted)
            .map(|h| {
                let name = h.profile.name.as_str();
                let runtimes = (
                    h.profile.runtime.as_ref().map(|r| r.value.to_string()),
                    self.shared
                        .desired
                        .runtime(name)
                        .map(|w| w.runtime.to_string()),
                );
                (h.status.borrow().clone(), h.file.clone(), runtimes)
            })
            .collect();
        self.sampler.read(|latest| {
            let sample_age = latest.age();
            statuses
                .into_iter()
                .map(|(status, file, (profile_runtime, chosen_runtime))| {
                    let figures = latest.of(&status.name, status.pid);
                    InstanceReport {
                        cpu_percent: figures.map_or(0.0, |f| f.cpu_percent),
                        cpu_seconds: figures.map_or(0.0, |f| f.cpu_seconds),
                        rss_bytes: figures.map_or(0, |f| f.rss_bytes),
                        status,
                        sample_age,
                        file,
                        profile_runtime,
                        chosen_runtime,
                    }
                })
                .collect()
        })
    }

    /// Re-reads `dir` and, unless `dry_run` or the check fails, applies the difference: removed and
    /// changed instances are stopped (in parallel, each by its stop policy), then new and changed
    /// ones are started. Unchanged instances are not touched. Returns the check and the changes.
    pub async fn reload(&self, dir: &std::path::Path, dry_run: bool) -> ReloadOutcome {
        let outcome = self.reload_now(dir, dry_run).await;
        if let (false, Some(m)) = (dry_run, self.shared.metrics.get()) {
            m.reload(outcome.applied);
        }
        outcome
    }

    /// Feeds `m` from now on (the probe and reload hooks); the first call wins.
    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.shared.metrics.set(m);
    }

    async fn reload_now(&self, dir: &std::path::Path, dry_run: bool) -> ReloadOutcome {
        let _one = self.reloading.lock().await;
        let d = dir.to_path_buf();
        // The check's advice in a clash goes to the instance that is new or changed.
        let running: BTreeMap<String, Arc<Profile>> = self
            .instances()
            .iter()
            .map(|(n, h)| (n.clone(), h.profile.clone()))
            .collect();
        let fresh = move |p: &Profile| {
            running
                .get(p.name.as_str())
                .is_none_or(|old| changed_fields(old, p).iter().any(|f| f.restart))
        };
        let store = self.shared.runtimes.clone();
        let plan =
            match tokio::task::spawn_blocking(move || runtimes::load_checked(&d, &fresh, &store))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    let mut plan = Plan {
                        dir: dir.to_path_buf(),
                        profiles: Vec::new(),
                        report: Default::default(),
                        ephemeral: None,
                    };
                    plan.report
                        .diagnostics
                        .push(crate::profile::Diagnostic::error(
                            crate::profile::Kind::Io,
                            crate::profile::Location::file(dir),
                            format!("reading the profiles failed: {e}"),
                        ));
                    return ReloadOutcome {
                        plan,
                        changes: Vec::new(),
                        applied: false,
                    };
                }
            };
        let mut plan = plan;
        let limits = self.shared.containment.limit_errors(&plan.profiles);
        if !limits.is_empty() {
            plan.report.diagnostics.extend(limits);
            plan.report.sort();
        }
        let old = self.instances();
        let mut changes: Vec<Change> = Vec::new();
        for (name, h) in old.iter() {
            let (action, fields) = match plan.profiles.iter().find(|p| p.name.as_str() == name) {
                None => (ReloadAction::Remove, Vec::new()),
                Some(p) => {
                    let fields = changed_fields(&h.profile, p);
                    let restart: Vec<&str> = fields
                        .iter()
                        .filter(|f| f.restart)
                        .map(|f| f.name)
                        .collect();
                    let action = if restart.is_empty()
                        || (restart == ["runtime"] && self.runs_on(name, &h.profile, p).await)
                    {
                        ReloadAction::Keep
                    } else {
                        ReloadAction::Change
                    };
                    (action, fields.iter().map(|f| f.name).collect())
                }
            };
            changes.push(Change {
                name: name.clone(),
                action,
                fields,
                error: None,
            });
        }
        for p in &plan.profiles {
            if !old.contains_key(p.name.as_str()) {
                changes.push(Change {
                    name: p.name.to_string(),
                    action: ReloadAction::Add,
                    fields: Vec::new(),
                    error: None,
                });
            }
        }
        changes.sort_by(|a, b| a.name.cmp(&b.name));
        if dry_run || !plan.report.ok() {
            return ReloadOutcome {
                plan,
                changes,
                applied: false,
            };
        }

        // Stop what goes away or changes, all at once; ports and paths they free may be taken by
        // what starts next.
        let leaving: Vec<&Change> = changes
            .iter()
            .filter(|c| matches!(c.action, ReloadAction::Remove | ReloadAction::Change))
            .collect();
        for c in &leaving {
            if let Some(h) = old.get(&c.name) {
                h.cancel_because(match c.action {
                    ReloadAction::Change => format!("reload: changed {}", c.fields.join(", ")),
                    _ => "reload: its profile is gone".into(),
                });
            }
        }
        let waits: Vec<JoinHandle<()>> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *tasks)
                .into_iter()
                .partition(|(n, _)| leaving.iter().any(|c| c.name == *n));
            *tasks = kept;
            gone.into_iter().map(|(_, t)| t).collect()
        };
        for t in waits {
            let _ = t.await;
        }
        let mut next: BTreeMap<String, Handle> = BTreeMap::new();
        for c in &mut changes {
            let profile = plan.profiles.iter().find(|p| p.name.as_str() == c.name);
            match (c.action, profile) {
                (ReloadAction::Keep, profile) => {
                    if let Some(h) = old.get(&c.name) {
                        // The kept task runs on; its handle takes the new profile, so the next
                        // reload compares with what the files say now (a new `autostart`).
                        let profile =
                            profile.map_or_else(|| h.profile.clone(), |p| Arc::new(p.clone()));
                        if c.fields.contains(&"runtime") {
                            // The profile now says the runtime it runs on (an upgrade's choice
                            // written by hand): the task starts on it from now on, and the choice
                            // is the profile's.
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            if h.tx
                                .send(Command::Profile(profile.clone(), tx))
                                .await
                                .is_ok()
                            {
                                let _ = rx.await;
                            }
                            if self
                                .shared
                                .desired
                                .runtime(&c.name)
                                .is_some_and(|w| w.soak.is_none())
                            {
                                self.shared.desired.set_runtime(&c.name, None).await;
                            }
                        }
                        next.insert(
                            c.name.clone(),
                            Handle {
                                profile,
                                ..h.clone()
                            },
                        );
                    }
                }
                (ReloadAction::Remove, _) => {
                    if let Some(h) = old.get(&c.name) {
                        let _ = self.shared.events.send(h.current(true));
                    }
                }
                (ReloadAction::Add | ReloadAction::Change, Some(p)) => {
                    if c.fields.contains(&"runtime")
                        && self
                            .shared
                            .desired
                            .runtime(&c.name)
                            .is_some_and(|w| w.soak.is_none())
                    {
                        // The profile's runtime, edited by hand, replaces an upgrade's choice.
                        self.shared.desired.set_runtime(&c.name, None).await;
                    }
                    // A changed instance keeps its log and runs if it was meant to.
                    let (log, start) = match old.get(&c.name) {
                        Some(h) => (Ok(h.log.clone()), h.status.borrow().want_running),
                        None => (
                            open_log(&self.log_cfg, &self.log_disk, p.name.as_str()).await,
                            self.shared.desired.should_run(p.name.as_str(), p.autostart),
                        ),
                    };
                    match log {
                        Ok(log) => {
                            next.insert(
                                c.name.clone(),
                                self.launch(p.clone(), start, log, Default::default()),
                            );
                        }
                        Err(e) => {
                            c.error = Some(format!(
                                "cannot open its log in {}: {e}",
                                self.log_cfg.dir.display()
                            ))
                        }
                    }
                }
                (ReloadAction::Add | ReloadAction::Change, None) => {}
            }
        }
        let names: Vec<&str> = next.keys().map(String::as_str).collect();
        self.shared.desired.retain(&names).await;
        *self.instances.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        // A runtime installed by hand (`scripts/install-openclaw --store`) is found at a reload.
        self.runtime_installed().await;
        ReloadOutcome {
            plan,
            changes,
            applied: true,
        }
    }

    /// Whether `new`'s runtime is the one instance `name` runs on now (its upgrade's choice, else
    /// `old`'s): the same spec, or the same installed runtime. Reads the store off the runtime.
    async fn runs_on(&self, name: &str, old: &Profile, new: &Profile) -> bool {
        let now = self.shared.runtime_for(name, old);
        let next = new.runtime.as_ref().map(|r| r.value.clone());
        if now == next {
            return true;
        }
        let (Some(now), Some(next)) = (now, next) else {
            return false;
        };
        let store = self.shared.runtimes.clone();
        tokio::task::spawn_blocking(move || {
            let dir = |s| store.find(s).map(|r| r.dir);
            dir(&now).is_some_and(|d| Some(d) == dir(&next))
        })
        .await
        .unwrap_or(false)
    }

    /// Gives instance `name` (its handle, and its task) `profile` without a restart: one that
    /// differs only in what needs none, or in a `runtime` equal to the one it runs on.
    pub(crate) async fn take_profile(&self, name: &str, profile: Arc<Profile>) {
        let _one = self.reloading.lock().await;
        let handle = {
            let mut map = self.instances.write().unwrap_or_else(|e| e.into_inner());
            let mut next = (**map).clone();
            let handle = next.get_mut(name).map(|h| {
                h.profile = profile.clone();
                h.clone()
            });
            *map = Arc::new(next);
            handle
        };
        if let Some(h) = handle {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if h.tx.send(Command::Profile(profile, tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// Ends every instance's task for a re-exec, leaving the children running: each hands back its
    /// child's pipes and its history ([`Detached`], with the profile it ran). First every task is
    /// held at an idle point (none is in the middle of a start or a stop); if they are not all held
    /// within `bound` (a gateway draining for its stop timeout, a reload under way), they are
    /// released and the error says which were busy: nothing has changed. Then the logs, the
    /// desired state and the records are flushed, and reaping pauses: what ends from now on is
    /// reaped, with its code, by the next program (or by this one again if the exec fails:
    /// [`Supervisor::reattach`]). Reloads wait until then.
    pub async fn detach_all(
        &self,
        bound: Duration,
    ) -> Result<Vec<(Arc<Profile>, Detached)>, String> {
        let Ok(guard) = tokio::time::timeout(bound, self.reloading.clone().lock_owned()).await
        else {
            return Err(format!(
                "a reload is under way (still after {}); try again once it is done",
                humantime::format_duration(bound)
            ));
        };
        let instances = self.instances();
        let mut asks = tokio::task::JoinSet::new();
        for h in instances.values() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let h = h.clone();
            asks.spawn(async move {
                let held = match h.tx.send(Command::Hold(tx)).await {
                    Ok(()) => rx.await.ok(),
                    Err(_) => None,
                };
                (h, held)
            });
        }
        let mut held = Vec::new();
        let all = tokio::time::timeout(bound, async {
            while let Some(r) = asks.join_next().await {
                if let Ok((h, Some(go))) = r {
                    held.push((h, go));
                }
            }
        })
        .await;
        if all.is_err() || held.len() < instances.len() {
            // Released: each held task goes on (a dropped `Go` sender is a release), and a task
            // that answers later finds nobody waiting.
            asks.abort_all();
            let busy: Vec<String> = instances
                .keys()
                .filter(|n| {
                    !held
                        .iter()
                        .any(|(h, _)| h.profile.name.as_str() == n.as_str())
                })
                .cloned()
                .collect();
            drop(held);
            return Err(format!(
                "{} still busy after {} (a start or a stop under way); try again once {} settled",
                busy.join(", "),
                humantime::format_duration(bound),
                if busy.len() == 1 {
                    "it has"
                } else {
                    "they have"
                }
            ));
        }
        // All at once: each task takes its pipes back on its own.
        let answers: Vec<_> = held
            .into_iter()
            .filter_map(|(h, go)| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                go.send(instance::Go::Detach(tx)).ok()?;
                Some((h.profile.clone(), rx))
            })
            .collect();
        let mut detached = Vec::new();
        for (profile, rx) in answers {
            if let Ok(d) = rx.await {
                detached.push((profile, d));
            }
        }
        self.end_tasks().await;
        self.shared.reaper.pause(true);
        *self.reexec_hold.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
        Ok(detached)
    }

    /// Runs `program` with `args` from the spawning thread (as a gateway is started, so the reaper
    /// and the spawn agree on who waits for it) and waits, at most `bound`, for it to end: how it
    /// ended and what it wrote (stdout, then stderr). What a re-exec's check of the new binary uses.
    pub async fn run_tool(
        &self,
        program: &std::path::Path,
        args: Vec<String>,
        bound: Duration,
    ) -> Result<(Exit, Vec<u8>), String> {
        run_tool(
            &self.shared.spawner,
            &self.shared.reaper,
            program,
            args,
            bound,
        )
        .await
    }

    /// A runtime was installed (helper of `openclawctl runtime install`, and every reload): each
    /// instance that waits for its runtime (blocked, its runtime not installed) and is meant to
    /// run tries to start again; one whose runtime is still missing goes on waiting, no start
    /// counted. Never waits for a task: a full command queue skips it until the next call.
    pub async fn runtime_installed(&self) {
        for h in self.instances().values() {
            let _ = h.tx.try_send(Command::RuntimeInstalled);
        }
    }

    /// The runtime instance `name` runs on next (the upgrade's choice, else its profile's), found
    /// in the store: `Ok(None)` for an instance on PATH; the error says how to install a runtime
    /// that is not installed. Blocking: reads the store.
    pub fn runtime_of(&self, name: &str) -> Result<Option<crate::runtime::Runtime>, String> {
        let Some(h) = self.get(name) else {
            return Ok(None);
        };
        match self.shared.runtime_for(name, &h.profile) {
            None => Ok(None),
            Some(spec) => self.shared.runtimes.find(&spec).map(Some).ok_or_else(|| {
                format!("runtime {spec} is not installed: run `openclawctl runtime install {spec}`")
            }),
        }
    }

    /// The spawning thread (a re-exec runs on it).
    pub fn spawner(&self) -> &spawn::Spawner {
        &self.shared.spawner
    }

    /// Gives the reaper back an exit taken for a handover that did not happen (a failed exec).
    pub fn remember_exit(&self, pid: i32, exit: Exit) {
        self.shared.reaper.remember(pid, exit);
    }

    /// The exit of a detached child that was reaped before reaping paused, if it was.
    pub fn take_exit(&self, pid: i32) -> Option<Exit> {
        self.shared.reaper.take_exit(pid)
    }

    /// The exec failed: the instances [`Supervisor::detach_all`] ended are taken up again by new
    /// tasks, as the next program would have taken them, and reaping goes on.
    pub fn reattach(&self, taken: BTreeMap<String, (Option<adopt::Adopted>, Resume)>) {
        self.shared.reaper.pause(false);
        let old = self.instances();
        let mut next = BTreeMap::new();
        let mut taken = taken;
        for (name, h) in old.iter() {
            let (adopted, resume) = taken.remove(name).unwrap_or_default();
            let handle = self.launch(
                (*h.profile).clone(),
                false,
                h.log.clone(),
                instance::Begin {
                    scanned: None,
                    adopted,
                    resume: Some(resume),
                },
            );
            next.insert(name.clone(), handle);
        }
        *self.instances.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.reexec_hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Waits for every instance's task to end (stopped, or detached), then for the last lines,
    /// wishes and records to reach the disk, unless it hangs.
    async fn end_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, t) in tasks {
            let _ = t.await;
        }
        tokio::join!(
            self.log_disk.flush(FLUSH_WAIT),
            self.shared.desired.flush(FLUSH_WAIT),
            self.shared.records.flush(FLUSH_WAIT)
        );
    }

    /// Stops every instance, in parallel, each by its stop policy, and waits for all of them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let _one = self.reloading.lock().await;
        self.end_tasks().await;
        if let Some(c) = self.shared.containment.cgroups() {
            c.close();
        }
    }
}

/// Runs `program` with `args` from `spawner`'s thread, its exit from `reaper`, for at most
/// `bound` (see `Supervisor::run_tool`).
pub(crate) async fn run_tool(
    spawner: &spawn::Spawner,
    reaper: &reaper::Reaper,
    program: &std::path::Path,
    args: Vec<String>,
    bound: Duration,
) -> Result<(Exit, Vec<u8>), String> {
    let req = spawn::SpawnRequest {
        program: program.to_path_buf(),
        args,
        env: Vec::new(),
        cwd: None,
        cgroup: None,
    };
    let child = spawner
        .spawn(req)
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let exit = reaper.watch(child.pid);
    let read = |fd: std::os::fd::OwnedFd| {
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut out);
            out
        })
    };
    let (out, err) = (read(child.stdout), read(child.stderr));
    let all = async {
        let (out, err, exit) = tokio::join!(out, err, exit);
        let mut out = out.unwrap_or_default();
        out.extend(err.unwrap_or_default());
        (exit.unwrap_or(Exit::Unknown), out)
    };
    match tokio::time::timeout(bound, all).await {
        Ok(done) => Ok(done),
        Err(_) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(format!(
                "{} did not finish within {}",
                program.display(),
                humantime::format_duration(bound)
            ))
        }
    }
}

/// Opens an instance's log off the runtime, for a reload: the log dir may sit on a disk that hangs.
async fn open_log(
    cfg: &logs::LogConfig,
    disk: &logs::Disk,
    name: &str,
) -> std::io::Result<logs::InstanceLog> {
    let (cfg, disk, name) = (cfg.clone(), disk.clone(), name.to_string());
    tokio::task::spawn_blocking(move || logs::InstanceLog::open(&cfg, &disk, &name))
        .await
        .map_err(std::io::Error::other)?
}

/// A field of a profile that a reload found changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldChange {
    /// The field's name, as the profile spells it.
    pub name: &'static str,
    /// Whether the running child depends on it, so that it must be started again with the new
    /// value (`autostart` only decides whether the daemon starts the instance when it starts).
    pub restart: bool,
}

/// The fields that differ between two profiles of one instance, as a reload sees them: the values
/// the child runs with and the supervisor's policies, not where they were written (file, lines).
pub fn changed_fields(old: &Profile, new: &Profile) -> Vec<FieldChange> {
    field_keys(old)
        .into_iter()
        .zip(field_keys(new))
        .filter(|((_, _, a), (_, _, b))| a != b)
        .map(|((name, restart, _), _)| FieldChange { name, restart })
        .collect()
}

/// Every compared field of `p`: its name, whether the running child depends on it, and its value
/// as text (what is compared). One list for a reload ([`changed_fields`]) and for the records of
/// running children ([`digest`]), so that both mean the same by "changed".
fn field_keys(p: &Profile) -> Vec<(&'static str, bool, String)> {
    // Exhaustive on purpose: a field added to `Profile` does not compile here until it is either
    // compared or given a reason to be ignored, so reload cannot forget it.
    let Profile {
        // The diff is by name.
        name: _,
        // Where the profile is written; the child does not see it.
        file: _,
        name_at: _,
        openclaw_profile_at: _,
        openclaw_profile,
        port,
        config_path,
        state_dir,
        workspace,
        // Read by the gateway from its own config file, not handed to it by the supervisor; only
        // the check uses them.
        agent_workspaces: _,
        // The config file's `logging.file` (read by the gateway itself), else named after
        // `openclaw_profile`, which is compared.
        log_file: _,
        command,
        env,
        working_dir,
        autostart,
        restart,
        stop,
        health,
        ports,
        limits,
        gateway_token,
        runtime,
    } = p;
    let spans: Vec<(u32, u32)> = ports.iter().map(|c| (c.start, c.end)).collect();
    // Applied when the child's cgroup is made, before it starts: a change restarts it.
    let limits = (
        limits.memory.as_ref().map(|m| m.value),
        limits.cpu.as_ref().map(|c| c.value),
    );
    // The second value: whether the running child depends on the field.
    vec![
        ("port", true, format!("{:?}", port.value)),
        ("openclaw_profile", true, format!("{openclaw_profile:?}")),
        ("config_path", true, format!("{:?}", config_path.value)),
        ("state_dir", true, format!("{:?}", state_dir.value)),
        ("workspace", true, format!("{:?}", workspace.value)),
        ("command", true, format!("{command:?}")),
        ("env", true, format!("{env:?}")),
        ("gateway_token", true, format!("{gateway_token:?}")),
        ("working_dir", true, format!("{working_dir:?}")),
        ("autostart", false, format!("{autostart:?}")),
        ("restart", true, format!("{restart:?}")),
        ("stop", true, format!("{stop:?}")),
        ("health", true, format!("{health:?}")),
        ("ports", true, format!("{spans:?}")),
        ("limits", true, format!("{limits:?}")),
        (
            "runtime",
            true,
            format!("{:?}", runtime.as_ref().map(|r| &r.value)),
        ),
    ]
}

/// A digest of each field of `p` that forces a restart when it changes (as a reload decides it):
/// field name to a 64-bit FNV-1a of its value, in hex. What a record of a running child keeps, so
/// that the next daemon can tell which fields changed while none ran without keeping the values
/// themselves (`env` may hold secrets).
pub fn digest(p: &Profile) -> BTreeMap<String, String> {
    field_keys(p)
        .into_iter()
        .filter(|(_, restart, _)| *restart)
        .map(|(name, _, value)| {
            (
                name.to_string(),
                format!("{:016x}", fnv1a64(value.as_bytes())),
            )
        })
        .collect()
}

/// The field of `p` named `name`, as [`changed_fields`] names it; "profile" for a name this
/// version does not know (a handover from another version).
pub fn field_named(p: &Profile, name: &str) -> &'static str {
    field_keys(p)
        .into_iter()
        .map(|(n, _, _)| n)
        .find(|n| *n == name)
        .unwrap_or("profile")
}

/// The fields of `p` that force a restart and differ from `recorded` (a [`digest`]), in the order
/// a reload names them.
pub fn changed_since(recorded: &BTreeMap<String, String>, p: &Profile) -> Vec<&'static str> {
    let now = digest(p);
    // A record without a field added since records began was written by a daemon that ran the
    // child as if the field were unset: an upgraded daemon must not restart it for that.
    let unset = |name: &str| {
        ADDED_FIELDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| format!("{:016x}", fnv1a64(value.as_bytes())))
    };
    field_keys(p)
        .into_iter()
        .filter(|(name, restart, _)| {
            let before = recorded.get(*name).cloned().or_else(|| {
                // Only for a record that has digests at all (one written by a daemon).
                (!recorded.is_empty()).then(|| unset(name)).flatten()
            });
            *restart && before.as_ref() != now.get(*name)
        })
        .map(|(name, _, _)| name)
        .collect()
}

/// The fields added to [`field_keys`] since records began, with their value as text when unset.
const ADDED_FIELDS: [(&str, &str); 1] = [("runtime", "None")];

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How the children run and what runs already, for [`Supervisor::start`].
pub struct Running {
    /// What becomes of the children if the daemon dies without stopping them.
    pub on_crash: spawn::OnCrash,
    /// The queue of the thread that forks (the daemon's main thread); `None` starts a thread of
    /// the supervisor's own.
    pub jobs: Option<spawn::Jobs>,
    /// The writer of the children's records.
    pub records: adopt::Records,
    /// The gateways to adopt, by instance name ([`adopt_all`], or a re-exec's handover).
    pub adopted: BTreeMap<String, adopt::Adopted>,
    /// What a re-exec's handover says of each instance (its history and tail), by name.
    pub resume: BTreeMap<String, Resume>,
    /// Children the program before a re-exec reaped: their exits, by pid.
    pub exits: Vec<(i32, Exit)>,
    /// What the start-up scan found on the instances' places ([`clear_leftovers`]).
    pub scan: Scan,
    /// The service manager's fd store, where each child's pipes go ([`fdstore`]).
    pub fdstore: fdstore::FdStore,
    /// Pipes the fd store handed back of instances not adopted: drained into their logs before
    /// they start (their gateways wrote it while no daemon ran).
    pub drain: BTreeMap<String, (std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    /// The runtime store that profiles' `runtime` name.
    pub runtimes: crate::runtime::Store,
    /// Where an upgrade keeps each instance's databases for a rollback (`STATE_DIR/upgrades`).
    pub upgrades: std::path::PathBuf,
}

/// At start, before leftovers are ended: the gateways of `profiles` that the records in
/// `state_dir` (the daemon's) name and that are exactly the ones recorded, with their locks taken
/// ([`adopt::examine`], on a blocking thread). A record that does not match is dropped, and said
/// so once; nothing is signalled here. `pipes`: each instance's stdout and stderr as the service
/// manager's fd store handed them back; an adopted gateway takes its pair (`Adopted::pipes`),
/// the pairs of the others stay in the map.
pub async fn adopt_all(
    profiles: &[Profile],
    state_dir: &std::path::Path,
    containment: &cgroup::Containment,
    me: &ownership::Owner,
    pipes: &mut BTreeMap<String, (std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
) -> BTreeMap<String, adopt::Adopted> {
    let work: Vec<(Profile, Option<std::path::PathBuf>)> = profiles
        .iter()
        .map(|p| (p.clone(), containment.dir(p.name.as_str())))
        .collect();
    let (dir, me) = (state_dir.to_path_buf(), me.clone());
    let found = tokio::task::spawn_blocking(move || {
        work.into_iter()
            .map(|(p, cgroup)| {
                let found = adopt::examine(&dir, &p, cgroup.as_deref(), &me);
                (p.name.to_string(), found)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut adopted = BTreeMap::new();
    for (name, found) in found {
        match found {
            adopt::Found::Nothing => {}
            adopt::Found::Dropped(why) => {
                tracing::warn!(instance = %name, "not adopting its recorded gateway: {why}; starting it as usual")
            }
            adopt::Found::Adopt(mut a) => {
                a.pipes = pipes.remove(&name);
                adopted.insert(name, a);
            }
        }
    }
    adopted
}

/// The most read from each pipe the fd store hands back for an instance not adopted: a pipe
/// holds at most its capacity (`spawn::PIPE_BYTES`), unless a writer is still alive.
const DRAIN_LIMIT: usize = 4 << 20;

/// Writes into `log` what an instance's gateway wrote while no daemon ran and died before one
/// came back (or was not adopted): the lines its pipes hold, kept by the service manager's fd
/// store. Read without waiting; the pipes are closed after.
fn drain_into(
    log: &logs::InstanceLog,
    name: &str,
    out: std::os::fd::OwnedFd,
    err: std::os::fd::OwnedFd,
) {
    let out = fdstore::drain(out, DRAIN_LIMIT);
    let err = fdstore::drain(err, DRAIN_LIMIT);
    let n = out.len() + err.len();
    if n == 0 {
        return;
    }
    tracing::info!(
        instance = name,
        "{n} lines its gateway wrote while no daemon ran, kept by the fd store: written to its log"
    );
    log.note(format!(
        "{n} lines its gateway wrote while no daemon ran (kept by the service manager's fd store) follow"
    ));
    log.lines(logs::Stream::Stdout, out);
    log.lines(logs::Stream::Stderr, err);
}

/// What the daemon's start-up scan found on each instance's places: processes that are not the
/// instance's (each instance's first start uses them instead of scanning the host again).
#[derive(Debug, Default)]
pub struct Scan {
    /// Whether a scan ran; without one, each instance scans at its first start.
    pub done: bool,
    /// By instance name.
    pub found: BTreeMap<String, Vec<tree::Holder>>,
}

/// Before anything starts, one pass over /proc for all instances: every process that already uses
/// an instance's state dir or port is reported. Those that carry the instance's marker were left by
/// a supervisor; they are ended (the stop signal, SIGKILL 2 s later) only when the instance's state
/// dir lock can be taken, that is when no live supervisor owns them. Anything else is left alone
/// and returned: the instance waits, `blocked`, until it is gone.
///
/// `adopted`: the instances whose gateways are being adopted; their processes are left alone.
pub async fn clear_leftovers(
    profiles: &[crate::profile::Profile],
    me: &ownership::Owner,
    adopted: &[String],
) -> Scan {
    let known: Vec<tree::Known> = profiles
        .iter()
        .filter(|p| !adopted.iter().any(|a| a == p.name.as_str()))
        .flat_map(ownership::known)
        .collect();
    if known.is_empty() {
        // Every instance's gateway is being adopted (a re-exec): nothing to look for.
        return Scan {
            done: true,
            found: BTreeMap::new(),
        };
    }
    let dirs: BTreeMap<String, std::path::PathBuf> = profiles
        .iter()
        .map(|p| (p.name.to_string(), p.state_dir.value.clone()))
        .collect();
    let me = me.clone();
    // Off the runtime: /proc, and the lock files on the state dirs' disks.
    let scanned = tokio::task::spawn_blocking(move || {
        let found = tree::host_scan(&known);
        let mut locks = BTreeMap::new();
        for h in found.iter().filter(|h| h.ours) {
            if locks.contains_key(&h.instance) {
                continue;
            }
            let Some(dir) = dirs.get(&h.instance) else {
                continue;
            };
            // A missing state dir has no lock file, and so no live holder.
            let taken = if dir.is_dir() {
                ownership::Lock::take(dir, &h.instance, &me).map(Some)
            } else {
                Ok(None)
            };
            locks.insert(h.instance.clone(), taken);
        }
        (found, locks)
    })
    .await;
    let Ok((found, locks)) = scanned else {
        return Scan::default();
    };
    let mut ours = Vec::new();
    let mut scan = Scan {
        done: true,
        found: BTreeMap::new(),
    };
    for h in found {
        let held = match locks.get(&h.instance) {
            Some(Err(ownership::LockError::Held(_, why))) => Some(why.clone()),
            Some(Err(ownership::LockError::Io(why))) => Some(why.clone()),
            _ => None,
        };
        if !h.ours {
            // Not started by a supervisor: the instance reports it once, as what blocks it.
            scan.found.entry(h.instance.clone()).or_default().push(h);
            continue;
        }
        let what = match &held {
            None => "left by an earlier run; ending it".to_string(),
            Some(why) => format!("its supervisor is alive: {why}; leaving it alone"),
        };
        tracing::warn!(instance = %h.instance, pid = h.proc_.pid, "a process {} ({what}): {}", h.why, h.cmdline);
        if held.is_none() {
            ours.push(h.proc_);
        }
    }
    end_leftovers(ours).await;
    // The locks taken to end leftovers go now: each instance takes its own at its start.
    drop(locks);
    scan
}

/// Ends `procs` (still the same processes: pid and start time), the stop signal first and SIGKILL
/// 2 s later.
pub async fn end_leftovers(procs: Vec<tree::Proc>) {
    if procs.is_empty() {
        return;
    }
    let find = move || {
        procs
            .iter()
            .filter(|p| tree::read_stat(p.pid).is_some_and(|now| now.start == p.start))
            .copied()
            .collect()
    };
    let grace = std::time::Duration::from_secs(2);
    let survivors =
        tree::end_all(find, nix::sys::signal::Signal::SIGTERM, grace, |_| async {}).await;
    if !survivors.is_empty() {
        tracing::error!("leftovers survived SIGKILL: {survivors:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_names_the_restart_fields_that_changed_and_only_those() {
        let base = "port: 18789\nstate_dir: /srv/main\ncommand: [/bin/true]\n";
        let before = digest(&profile(base));
        assert!(!before.contains_key("autostart"));
        assert_eq!(changed_since(&before, &profile(base)), Vec::<&str>::new());
        // Autostart alone does not restart a child; the port (and what follows from it) does.
        let later = profile(&format!("{base}autostart: false\n"));
        assert_eq!(changed_since(&before, &later), Vec::<&str>::new());
        let moved = profile("port: 18999\nstate_dir: /srv/main\ncommand: [/bin/true]\n");
        assert_eq!(
            changed_since(&before, &moved),
            changed_fields(&profile(base), &moved)
                .iter()
                .filter(|f| f.restart)
                .map(|f| f.name)
                .collect::<Vec<_>>()
        );
        assert_eq!(changed_since(&before, &moved).first(), Some(&"port"));
        // A record without digests (written by hand, say): every field changed, never kept as is.
        assert!(changed_since(&BTreeMap::new(), &moved).contains(&"command"));
        // A record of a daemon that knew no `runtime`: unchanged while the profile has none.
        let mut older = before.clone();
        older.remove("runtime");
        assert_eq!(changed_since(&older, &profile(base)), Vec::<&str>::new());
        let pinned = profile(&format!("{base}runtime: {{ openclaw: 2026.9.6 }}\n"));
        assert_eq!(changed_since(&older, &pinned), ["runtime"]);
    }

    /// The profile `main` as `yaml` reads, from a temp dir; HOME is the same for every call.
    fn profile(yaml: &str) -> Profile {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("main.yaml"), yaml).expect("write the profile");
        let env = |k: &str| (k == "HOME").then(|| "/nonexistent/home".to_string());
        let plan = crate::profile::load_with_env(dir.path(), &env);
        assert!(plan.report.ok(), "{}", plan.report);
        plan.profiles.into_iter().next().expect("one profile")
    }

    const BASE: &str = "port: 18789\ncommand: [/bin/true]\n";

    fn names(fields: &[FieldChange]) -> Vec<&'static str> {
        fields.iter().map(|f| f.name).collect()
    }

    #[test]
    fn where_a_value_is_written_is_no_change() {
        let moved = format!("# a comment\n\n{BASE}");
        assert_eq!(changed_fields(&profile(BASE), &profile(&moved)), []);
    }

    #[test]
    fn autostart_alone_is_a_change_without_restart() {
        let fields = changed_fields(
            &profile(BASE),
            &profile(&format!("{BASE}autostart: false\n")),
        );
        assert_eq!(names(&fields), ["autostart"]);
        assert!(!fields.iter().any(|f| f.restart));
    }

    #[test]
    fn what_the_child_runs_with_needs_a_restart() {
        let fields = changed_fields(
            &profile(BASE),
            &profile("port: 18889\ncommand: [/bin/false]\nenv: { A: b }\n"),
        );
        // The liveness probe's default URL follows the port.
        assert_eq!(
            names(&fields),
            ["port", "command", "env", "health", "ports"]
        );
        assert!(fields.iter().all(|f| f.restart));
    }
}
