//! Running a checked plan: one task per instance (`instance.rs`) that owns its child, with shared
//! services beside them: the spawning thread (`spawn.rs`), the reaper of every child the daemon has
//! or inherits (`reaper.rs`), the probe client (`probe.rs`), per-instance logs (`logs.rs`), the
//! process-tree walk (`tree.rs`); the [`Supervisor`] also reads the CPU/RSS figures. It owns the set of
//! instances; it stops them all, in parallel, when its cancellation token fires.

pub mod backoff;
pub mod desired;
pub mod instance;
pub mod logs;
pub mod probe;
pub mod reaper;
pub mod spawn;
pub mod tree;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use instance::{Command, Event, Handle, Reply, State, Status};
pub use reaper::Exit;

use crate::profile::{Plan, Profile};

/// Status plus the figures of the instance's whole process tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The instance's status.
    pub status: Status,
    /// CPU use of the tree, in percent of one core, between the last two samples.
    pub cpu_percent: f32,
    /// Resident memory of the tree, in bytes, at the last sample.
    pub rss_bytes: u64,
    /// How old the figures are.
    pub sample_age: Duration,
    /// The file of the instance's profile.
    pub file: Arc<str>,
}

/// What a reload does to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new profile.
    Add,
    /// A profile that is gone.
    Remove,
    /// A changed profile: stopped, then started with the new one.
    Change,
    /// The same profile: not touched.
    Keep,
}

/// One instance's part in a reload.
#[derive(Debug, Clone)]
pub struct Change {
    /// The instance name.
    pub name: String,
    /// What happens to it.
    pub action: Action,
    /// For `Change`: the fields that differ.
    pub fields: Vec<&'static str>,
    /// What went wrong applying it.
    pub error: Option<String>,
}

/// The instances, by name; replaced whole by a reload, read by cloning the `Arc`.
type Instances = Arc<BTreeMap<String, Handle>>;

/// The set of running instances.
pub struct Supervisor {
    instances: RwLock<Instances>,
    /// Each instance's task, to wait for when it is removed or the daemon shuts down.
    tasks: Mutex<Vec<(String, JoinHandle<()>)>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    shared: instance::Shared,
    log_cfg: logs::LogConfig,
    /// The thread that writes every instance's log file.
    log_disk: logs::Disk,
    cancel: CancellationToken,
    sampler: Arc<Mutex<Sampler>>,
    /// Counts the samples taken, for callers that wait for the next one.
    samples: tokio::sync::watch::Sender<u64>,
}

/// The latest CPU/RSS figures of every instance's tree. Sampling walks /proc (tens of ms with
/// hundreds of gateways), so it happens at most once per `SAMPLE_EVERY`, off the runtime, and only
/// when a client asks; a client gets the latest figures at once.
struct Sampler {
    /// None when sysinfo cannot read this system: figures are then 0.
    system: Option<sysinfo::System>,
    /// Per instance: the pid the figures are of, CPU percent and RSS bytes.
    figures: BTreeMap<String, (i32, f32, u64)>,
    taken: Option<Instant>,
    running: bool,
}

/// How long a shutdown waits for the logs and the desired state to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The least time between two samples of the process trees.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Starts one task per profile of `plan` (which must have passed its check); an instance starts
    /// at once if an operator last started it, or if it has `autostart` and no operator stopped it
    /// (`desired`).
    pub fn start(
        plan: Plan,
        log_cfg: &logs::LogConfig,
        desired: desired::DesiredState,
        cancel: CancellationToken,
    ) -> std::io::Result<Supervisor> {
        // The reaper outlives the instances: their stops wait for exits it delivers.
        let reaper = reaper::Reaper::start(CancellationToken::new())?;
        let shared = instance::Shared {
            spawner: spawn::Spawner::start(reaper.clone())?,
            reaper,
            probe_grid: tokio::time::Instant::now(),
            events: broadcast::channel(1024).0,
            desired,
        };
        let sup = Supervisor {
            instances: RwLock::new(Arc::new(BTreeMap::new())),
            tasks: Mutex::new(Vec::new()),
            reloading: tokio::sync::Mutex::new(()),
            shared,
            log_cfg: log_cfg.clone(),
            log_disk: logs::Disk::start()?,
            cancel,
            sampler: Arc::new(Mutex::new(Sampler {
                system: sysinfo::System::new().ok(),
                figures: BTreeMap::new(),
                taken: None,
                running: false,
            })),
            samples: tokio::sync::watch::channel(0).0,
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
            instances.insert(profile.name.to_string(), sup.launch(profile, start, log));
        }
        *sup.instances.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(instances);
        Ok(sup)
    }

    fn launch(&self, profile: Profile, start: bool, log: logs::InstanceLog) -> Handle {
        let name = profile.name.to_string();
        let (handle, task) = instance::spawn(
            profile,
            start,
            self.shared.clone(),
            log,
            self.cancel.child_token(),
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
    /// sample in the background when the latest is older than `SAMPLE_EVERY`.
    pub async fn reports(&self, names: &[String]) -> Vec<Report> {
        let instances = self.instances();
        let wanted =
            |h: &&Handle| names.is_empty() || names.iter().any(|n| *n == h.profile.name.as_str());
        // At most two rounds: a sample that began before a child started lacks it; the next has it.
        for _ in 0..2 {
            let (start, missing, seen) = {
                let mut s = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
                let missing = instances.values().filter(wanted).any(|h| {
                    let st = h.status.borrow();
                    st.pid.is_some() && s.figures.get(&st.name).map(|f| f.0) != st.pid
                });
                let due = s.taken.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY);
                let start = !s.running && (due || missing);
                if start {
                    s.running = true;
                }
                (start, missing, *self.samples.borrow())
            };
            if start {
                let all: Vec<(String, Option<i32>)> = instances
                    .values()
                    .map(|h| {
                        let st = h.status.borrow();
                        (st.name.clone(), st.pid)
                    })
                    .collect();
                let sampler = self.sampler.clone();
                let samples = self.samples.clone();
                tokio::task::spawn_blocking(move || {
                    sample(&sampler, &all);
                    samples.send_modify(|n| *n += 1);
                });
            }
            if !missing {
                break;
            }
            let mut rx = self.samples.subscribe();
            let _ = rx.wait_for(|n| *n != seen).await;
        }
        let statuses: Vec<(Status, Arc<str>)> = instances
            .values()
            .filter(wanted)
            .map(|h| (h.status.borrow().clone(), h.file.clone()))
            .collect();
        let s = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        let age = s.taken.map_or(Duration::ZERO, |t| t.elapsed());
        statuses
            .into_iter()
            .map(|(status, file)| {
                let (cpu, rss) = s
                    .figures
                    .get(&status.name)
                    .filter(|f| Some(f.0) == status.pid)
                    .map_or((0.0, 0), |f| (f.1, f.2));
                Report {
                    status,
                    cpu_percent: cpu,
                    rss_bytes: rss,
                    sample_age: age,
                    file,
                }
            })
            .collect()
    }

    /// Re-reads `dir` and, unless `dry_run` or the check fails, applies the difference: removed and
    /// changed instances are stopped (in parallel, each by its stop policy), then new and changed
    /// ones are started. Unchanged instances are not touched. Returns the check and the changes.
    pub async fn reload(&self, dir: &std::path::Path, dry_run: bool) -> (Plan, Vec<Change>, bool) {
        let _one = self.reloading.lock().await;
        let d = dir.to_path_buf();
        let plan = match tokio::task::spawn_blocking(move || crate::profile::load(&d)).await {
            Ok(p) => p,
            Err(e) => {
                let mut plan = Plan {
                    dir: dir.to_path_buf(),
                    profiles: Vec::new(),
                    report: Default::default(),
                };
                plan.report
                    .diagnostics
                    .push(crate::profile::Diagnostic::error(
                        crate::profile::Kind::Io,
                        crate::profile::Location::file(dir),
                        format!("reading the profiles failed: {e}"),
                    ));
                return (plan, Vec::new(), false);
            }
        };
        let old = self.instances();
        let mut changes: Vec<Change> = Vec::new();
        for (name, h) in old.iter() {
            let (action, fields) = match plan.profiles.iter().find(|p| p.name.as_str() == name) {
                None => (Action::Remove, Vec::new()),
                Some(p) => {
                    let fields = changed_fields(&h.profile, p);
                    let action = if fields.is_empty() {
                        Action::Keep
                    } else {
                        Action::Change
                    };
                    (action, fields)
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
                    action: Action::Add,
                    fields: Vec::new(),
                    error: None,
                });
            }
        }
        changes.sort_by(|a, b| a.name.cmp(&b.name));
        if dry_run || !plan.report.ok() {
            return (plan, changes, false);
        }

        // Stop what goes away or changes, all at once; ports and paths they free may be taken by
        // what starts next.
        let leaving: Vec<&Change> = changes
            .iter()
            .filter(|c| matches!(c.action, Action::Remove | Action::Change))
            .collect();
        for c in &leaving {
            if let Some(h) = old.get(&c.name) {
                h.cancel.cancel();
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
                (Action::Keep, _) => {
                    if let Some(h) = old.get(&c.name) {
                        next.insert(c.name.clone(), h.clone());
                    }
                }
                (Action::Remove, _) => {
                    if let Some(h) = old.get(&c.name) {
                        let _ = self.shared.events.send(h.current(true));
                    }
                }
                (Action::Add | Action::Change, Some(p)) => {
                    // A changed instance keeps its log and runs if it was meant to.
                    let (log, start) = match old.get(&c.name) {
                        Some(h) => (Ok(h.log.clone()), h.status.borrow().want_running),
                        None => (
                            logs::InstanceLog::open(&self.log_cfg, &self.log_disk, p.name.as_str()),
                            self.shared.desired.should_run(p.name.as_str(), p.autostart),
                        ),
                    };
                    match log {
                        Ok(log) => {
                            next.insert(c.name.clone(), self.launch(p.clone(), start, log));
                        }
                        Err(e) => {
                            c.error = Some(format!(
                                "cannot open its log in {}: {e}",
                                self.log_cfg.dir.display()
                            ))
                        }
                    }
                }
                (Action::Add | Action::Change, None) => {}
            }
        }
        let names: Vec<&str> = next.keys().map(String::as_str).collect();
        self.shared.desired.retain(&names).await;
        *self.instances.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        (plan, changes, true)
    }

    /// Stops every instance, in parallel, each by its stop policy, and waits for all of them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let _one = self.reloading.lock().await;
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, t) in tasks {
            let _ = t.await;
        }
        // The last lines and wishes reach the disk, unless it hangs.
        tokio::join!(
            self.log_disk.flush(FLUSH_WAIT),
            self.shared.desired.flush(FLUSH_WAIT)
        );
    }
}

/// The fields of a profile whose change means the child must be started again with the new one.
/// Where a value was written (file lines) does not count.
pub fn changed_fields(old: &Profile, new: &Profile) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut diff = |name: &'static str, differ: bool| {
        if differ {
            out.push(name);
        }
    };
    diff("port", old.port.value != new.port.value);
    diff(
        "openclaw_profile",
        old.openclaw_profile != new.openclaw_profile,
    );
    diff(
        "config_path",
        old.config_path.value != new.config_path.value,
    );
    diff("state_dir", old.state_dir.value != new.state_dir.value);
    diff("workspace", old.workspace.value != new.workspace.value);
    diff("command", old.command != new.command);
    diff("env", old.env != new.env);
    diff("working_dir", old.working_dir != new.working_dir);
    diff("autostart", old.autostart != new.autostart);
    diff("restart", old.restart != new.restart);
    diff("stop", old.stop != new.stop);
    diff("health", old.health != new.health);
    let ports =
        |p: &Profile| -> Vec<(u32, u32)> { p.ports.iter().map(|c| (c.start, c.end)).collect() };
    diff("ports", ports(old) != ports(new));
    out
}

/// One sample of every instance's process tree: one /proc walk, one sysinfo refresh of the pids
/// found.
fn sample(sampler: &Mutex<Sampler>, instances: &[(String, Option<i32>)]) {
    let all = if instances.iter().any(|(_, pid)| pid.is_some()) {
        tree::snapshot()
    } else {
        Vec::new()
    };
    let index = tree::Tree::new(&all);
    let trees: Vec<(String, i32, Vec<i32>)> = instances
        .iter()
        .filter_map(|(n, pid)| pid.map(|p| (n.clone(), p, index.descendants(p))))
        .collect();
    // sysinfo's System is taken out while it refreshes, so readers never wait for the walk.
    let mut system = sampler
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .system
        .take();
    let pids: Vec<sysinfo::Pid> = trees
        .iter()
        .flat_map(|(_, _, t)| t.iter())
        .map(|p| sysinfo::Pid::from_u32(*p as u32))
        .collect();
    if let Some(sys) = system.as_mut() {
        let refresh = |sys: &mut sysinfo::System| {
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&pids),
                true,
                sysinfo::ProcessRefreshKind::nothing()
                    .with_cpu()
                    .with_memory(),
            );
        };
        // sysinfo rates a process's CPU use between two refreshes, and only once the earlier of
        // them saw it with some CPU time. A process seen for the first time (a new child, the
        // daemon's first status) gets a second look a moment later, and a third if it had no CPU
        // time yet at the first (it had just exec'd) but has some now, so that no status shows a
        // busy new gateway at 0%.
        let new: Vec<sysinfo::Pid> = pids
            .iter()
            .copied()
            .filter(|p| sys.process(*p).is_none())
            .collect();
        refresh(sys);
        let cpu_time = |sys: &sysinfo::System, p: &sysinfo::Pid| {
            sys.process(*p).map_or(0, |p| p.accumulated_cpu_time())
        };
        let mut unrated = new;
        for _ in 0..2 {
            if unrated.is_empty() {
                break;
            }
            let before: Vec<u64> = unrated.iter().map(|p| cpu_time(sys, p)).collect();
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
            refresh(sys);
            unrated = unrated
                .into_iter()
                .zip(before)
                .filter(|(p, before)| *before == 0 && cpu_time(sys, p) > 0)
                .map(|(p, _)| p)
                .collect();
        }
    }
    let figures = trees
        .into_iter()
        .map(|(name, root, tree)| {
            let (mut cpu, mut rss) = (0.0, 0);
            for pid in tree {
                if let Some(p) = system
                    .as_ref()
                    .and_then(|s| s.process(sysinfo::Pid::from_u32(pid as u32)))
                {
                    cpu += p.cpu_usage();
                    rss += p.memory();
                }
            }
            (name, (root, cpu, rss))
        })
        .collect();
    let mut s = sampler.lock().unwrap_or_else(|e| e.into_inner());
    s.system = system;
    s.figures = figures;
    s.taken = Some(Instant::now());
    s.running = false;
}

/// Before anything starts: every process that already uses an instance's state dir or gateway port
/// is reported, and those an earlier run of a supervisor left (they carry the instance's marker) are
/// ended, the stop signal first and SIGKILL 2 s later, so no instance meets a duplicate gateway on
/// its state dir. One pass over /proc for all instances.
pub async fn clear_leftovers(profiles: &[crate::profile::Profile]) {
    let known: Vec<tree::Known> = profiles
        .iter()
        .map(|p| tree::Known {
            name: p.name.to_string(),
            state_dir: p.state_dir.value.display().to_string(),
            port: p.port.value,
        })
        .collect();
    let found = tokio::task::spawn_blocking(move || tree::host_scan(&known))
        .await
        .unwrap_or_default();
    let ours: Vec<tree::Proc> = found.iter().filter(|h| h.ours).map(|h| h.proc_).collect();
    for h in &found {
        let what = if h.ours {
            "left by an earlier run; ending it"
        } else {
            "not started by this supervisor; its gateway will fail while it runs"
        };
        tracing::warn!(instance = %h.instance, pid = h.proc_.pid, "a process {} ({what}): {}", h.why, h.cmdline);
    }
    // Still the same processes (pid and start time), until they are gone.
    let find = move || {
        ours.iter()
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
