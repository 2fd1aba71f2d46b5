//! Running a checked plan: one task per instance (`instance.rs`) that owns its child, with shared
//! services beside them: the spawning thread (`spawn.rs`), the reaper of every child the daemon has
//! or inherits (`reaper.rs`), the probe client (`probe.rs`), per-instance logs (`logs.rs`), the
//! process-tree walk (`tree.rs`); the [`Supervisor`] also reads the CPU/RSS figures. It owns the set of
//! instances; it stops them all, in parallel, when its cancellation token fires.

pub mod backoff;
pub mod instance;
pub mod logs;
pub mod probe;
pub mod reaper;
pub mod spawn;
pub mod tree;

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use instance::{Command, Handle, Reply, State, Status};
pub use reaper::Exit;

use crate::profile::Plan;

/// Status plus the figures of the instance's whole process tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The instance's status.
    pub status: Status,
    /// CPU use of the tree, in percent of one core, since the previous report.
    pub cpu_percent: f32,
    /// Resident memory of the tree, in bytes.
    pub rss_bytes: u64,
}

/// The set of running instances.
pub struct Supervisor {
    instances: BTreeMap<String, Handle>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    cancel: CancellationToken,
    /// None when sysinfo cannot read this system: figures are then 0.
    system: Mutex<Option<sysinfo::System>>,
}

impl Supervisor {
    /// Starts one task per profile of `plan` (which must have passed its check); autostart instances
    /// start at once.
    pub fn start(
        plan: Plan,
        log_cfg: &logs::LogConfig,
        cancel: CancellationToken,
    ) -> std::io::Result<Supervisor> {
        // The reaper outlives the instances: their stops wait for exits it delivers.
        let reaper = reaper::Reaper::start(CancellationToken::new())?;
        let shared = instance::Shared {
            spawner: spawn::Spawner::start(reaper.clone())?,
            reaper,
            probe_grid: tokio::time::Instant::now(),
        };
        let mut instances = BTreeMap::new();
        let mut tasks = Vec::new();
        for profile in plan.profiles {
            let name = profile.name.to_string();
            let log = logs::InstanceLog::open(log_cfg, &name)?;
            let (handle, task) =
                instance::spawn(profile, shared.clone(), log, cancel.child_token());
            instances.insert(name, handle);
            tasks.push(task);
        }
        Ok(Supervisor {
            instances,
            tasks: Mutex::new(tasks),
            cancel,
            system: Mutex::new(sysinfo::System::new().ok()),
        })
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> Option<&Handle> {
        self.instances.get(name)
    }

    /// The status of `names` (all if empty), with their process trees' CPU and RSS.
    pub fn reports(&self, names: &[String]) -> Vec<Report> {
        let handles: Vec<&Handle> = self
            .instances
            .values()
            .filter(|h| names.is_empty() || names.iter().any(|n| *n == h.profile.name.as_str()))
            .collect();
        let statuses: Vec<Status> = handles.iter().map(|h| h.status.borrow().clone()).collect();
        let all = if statuses.iter().any(|s| s.pid.is_some()) {
            tree::snapshot()
        } else {
            Vec::new()
        };
        let index = tree::Tree::new(&all);
        let trees: Vec<Vec<i32>> = statuses
            .iter()
            .map(|s| s.pid.map(|pid| index.descendants(pid)).unwrap_or_default())
            .collect();
        let mut guard = self.system.lock().unwrap_or_else(|e| e.into_inner());
        let pids: Vec<sysinfo::Pid> = trees
            .iter()
            .flatten()
            .map(|p| sysinfo::Pid::from_u32(*p as u32))
            .collect();
        if let (false, Some(sys)) = (pids.is_empty(), guard.as_mut()) {
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&pids),
                true,
                sysinfo::ProcessRefreshKind::nothing()
                    .with_cpu()
                    .with_memory(),
            );
        }
        statuses
            .into_iter()
            .zip(trees)
            .map(|(status, tree)| {
                let (mut cpu, mut rss) = (0.0, 0);
                for pid in tree {
                    let proc_ = guard
                        .as_ref()
                        .and_then(|s| s.process(sysinfo::Pid::from_u32(pid as u32)));
                    if let Some(p) = proc_ {
                        cpu += p.cpu_usage();
                        rss += p.memory();
                    }
                }
                Report {
                    status,
                    cpu_percent: cpu,
                    rss_bytes: rss,
                }
            })
            .collect()
    }

    /// Stops every instance, in parallel, each by its stop policy, and waits for all of them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
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
