//! The CPU and RSS figures of every instance's process tree, for statuses. Sampling walks /proc
//! (tens of ms with hundreds of gateways), so it happens at most once per `SAMPLE_EVERY`, on a
//! blocking thread, and only when a client asks; a client gets the latest figures at once unless
//! they lack a child that runs now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{cgroup, tree};

/// The least time between two samples of the process trees.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The figures of one instance's process tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// The instance's child (the root of the tree) they are of: a child started since is not
    /// covered by them.
    pub pid: i32,
    /// CPU use of the tree, in percent of one core, between the last two refreshes.
    pub cpu_percent: f32,
    /// CPU time the tree has used, in seconds: that of its processes (threads that ended
    /// included) and of the children they waited for; in cgroup mode, the cgroup's `usage_usec`.
    pub cpu_seconds: f64,
    /// Resident memory of the tree, in bytes.
    pub rss_bytes: u64,
}

/// One instance's child, as a sample needs it.
#[derive(Debug, Clone)]
pub struct Root {
    /// The instance name.
    pub name: String,
    /// Its child's pid, if it runs.
    pub pid: Option<i32>,
    /// Its cgroup, in cgroup mode: the figures are then the cgroup's.
    pub cgroup: Option<PathBuf>,
}

/// The latest sample, and what is needed to take the next.
pub struct Latest {
    /// sysinfo rates CPU use between two refreshes of the same `System`, so one is kept. None
    /// when sysinfo cannot read this system (figures are then 0), or while a sample runs.
    system: Option<sysinfo::System>,
    figures: BTreeMap<String, Figures>,
    /// The CPU time of each instance's cgroup at the last sample (its child's pid, µs, when), to
    /// rate the next against.
    usage: BTreeMap<String, (i32, u64, Instant)>,
    taken: Option<Instant>,
    running: bool,
}

impl Latest {
    /// The figures of `name`'s tree, if they are of its child `pid`.
    pub fn of(&self, name: &str, pid: Option<i32>) -> Option<Figures> {
        self.figures
            .get(name)
            .copied()
            .filter(|f| Some(f.pid) == pid)
    }

    /// Whether `name`'s child `pid`, if any, is covered: false for a child the sample has not met.
    pub fn covers(&self, name: &str, pid: Option<i32>) -> bool {
        pid.is_none() || self.of(name, pid).is_some()
    }

    /// How old the figures are (zero before the first sample).
    pub fn age(&self) -> Duration {
        self.taken.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// The latest figures, shared by every status request; a counter on a `watch` channel tells
/// waiters that a sample ended.
pub struct Sampler {
    latest: Arc<Mutex<Latest>>,
    samples: watch::Sender<u64>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new()
    }
}

impl Sampler {
    /// No figures yet.
    pub fn new() -> Sampler {
        Sampler {
            latest: Arc::new(Mutex::new(Latest {
                system: sysinfo::System::new().ok(),
                figures: BTreeMap::new(),
                usage: BTreeMap::new(),
                taken: None,
                running: false,
            })),
            samples: watch::channel(0).0,
        }
    }

    /// Makes the latest figures good enough for a status: waits for a sample only while `lacks`
    /// says they miss a child that runs now (the daemon's first status, a child started since),
    /// and starts one in the background when they are older than `SAMPLE_EVERY`. `roots` reads
    /// every instance's child when a sample starts.
    pub async fn refresh(&self, lacks: impl Fn(&Latest) -> bool, roots: impl Fn() -> Vec<Root>) {
        // At most two rounds: a sample that began before a child started lacks it; the next has it.
        for _ in 0..2 {
            let (start, missing, seen) = {
                let mut l = self.latest.lock().unwrap_or_else(|e| e.into_inner());
                let missing = lacks(&l);
                let due = l.taken.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY);
                let start = !l.running && (due || missing);
                if start {
                    l.running = true;
                }
                (start, missing, *self.samples.borrow())
            };
            if start {
                let roots = roots();
                let latest = self.latest.clone();
                let samples = self.samples.clone();
                tokio::task::spawn_blocking(move || {
                    sample(&latest, &roots);
                    samples.send_modify(|n| *n += 1);
                });
            }
            if !missing {
                break;
            }
            let mut rx = self.samples.subscribe();
            let _ = rx.wait_for(|n| *n != seen).await;
        }
    }

    /// Reads the latest figures (under a short lock: no sample holds it while it walks /proc).
    pub fn read<R>(&self, f: impl FnOnce(&Latest) -> R) -> R {
        f(&self.latest.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One sample of every instance's process tree: one /proc walk, one sysinfo refresh of the pids
/// found.
fn sample(latest: &Mutex<Latest>, roots: &[Root]) {
    let (in_cgroups, roots): (Vec<&Root>, Vec<&Root>) =
        roots.iter().partition(|r| r.cgroup.is_some());
    let mut from_cgroups = sample_cgroups(latest, &in_cgroups);
    let all = if roots.iter().any(|r| r.pid.is_some()) {
        tree::snapshot()
    } else {
        Vec::new()
    };
    let index = tree::Tree::new(&all);
    let trees: Vec<(&str, i32, Vec<i32>)> = roots
        .iter()
        .filter_map(|r| r.pid.map(|p| (r.name.as_str(), p, index.descendants(p))))
        .collect();
    let ticks: std::collections::HashMap<i32, u64> =
        all.iter().map(|p| (p.pid, p.cpu_ticks)).collect();
    let per_second = tree::ticks_per_second() as f64;
    // sysinfo's System is taken out while it refreshes, so readers never wait for the walk.
    let mut system = latest
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
        refresh(sys, &pids);
    }
    let figures = trees
        .into_iter()
        .map(|(name, root, tree)| {
            let (mut cpu, mut rss) = (0.0, 0);
            let cpu_ticks: u64 = tree.iter().filter_map(|p| ticks.get(p)).sum();
            for pid in tree {
                if let Some(p) = system
                    .as_ref()
                    .and_then(|s| s.process(sysinfo::Pid::from_u32(pid as u32)))
                {
                    cpu += p.cpu_usage();
                    rss += p.memory();
                }
            }
            let figures = Figures {
                pid: root,
                cpu_percent: cpu,
                cpu_seconds: cpu_ticks as f64 / per_second,
                rss_bytes: rss,
            };
            (name.to_string(), figures)
        })
        .collect::<BTreeMap<String, Figures>>();
    from_cgroups.extend(figures);
    let mut l = latest.lock().unwrap_or_else(|e| e.into_inner());
    l.system = system;
    l.figures = from_cgroups;
    l.taken = Some(Instant::now());
    l.running = false;
}

/// The figures of the instances in cgroups: CPU from `cpu.stat`'s `usage_usec` between this sample
/// and the last (a child not met before gets a second look `MINIMUM_CPU_UPDATE_INTERVAL` later, as
/// in [`refresh`]), memory from `memory.current` when the memory controller is on, else the sum of
/// the RSS of the cgroup's processes.
fn sample_cgroups(latest: &Mutex<Latest>, roots: &[&Root]) -> BTreeMap<String, Figures> {
    let running: Vec<(&str, i32, &Path)> = roots
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.pid?, r.cgroup.as_deref()?)))
        .collect();
    let before = latest
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .usage
        .clone();
    let read = |dir: &Path| (cgroup::usage_usec(dir).unwrap_or(0), Instant::now());
    let mut earlier: BTreeMap<String, (u64, Instant)> = BTreeMap::new();
    let mut new = false;
    for (name, pid, dir) in &running {
        match before.get(*name).filter(|(p, _, _)| p == pid) {
            Some((_, usec, at)) => {
                earlier.insert(name.to_string(), (*usec, *at));
            }
            None => {
                earlier.insert(name.to_string(), read(dir));
                new = true;
            }
        }
    }
    if new {
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    }
    let mut usage = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, pid, dir) in running {
        let (usec, at) = read(dir);
        let cpu_percent = earlier.get(name).map_or(0.0, |(u0, t0)| {
            let wall = at.duration_since(*t0).as_micros() as f64;
            if wall > 0.0 {
                (usec.saturating_sub(*u0) as f64 / wall * 100.0) as f32
            } else {
                0.0
            }
        });
        let rss_bytes = cgroup::memory_current(dir).unwrap_or_else(|| {
            cgroup::members(dir)
                .into_iter()
                .map(cgroup::rss_bytes)
                .sum()
        });
        usage.insert(name.to_string(), (pid, usec, at));
        out.insert(
            name.to_string(),
            Figures {
                pid,
                cpu_percent,
                cpu_seconds: usec as f64 / 1e6,
                rss_bytes,
            },
        );
    }
    latest.lock().unwrap_or_else(|e| e.into_inner()).usage = usage;
    out
}

/// Refreshes the CPU and memory of `pids`. sysinfo rates a process's CPU use between two
/// refreshes, and only once the earlier of them saw it with some CPU time. A process seen for the
/// first time (a new child, the daemon's first status) gets a second look a moment later, and a
/// third if it had no CPU time yet at the first (it had just exec'd) but has some now, so that no
/// status shows a busy new gateway at 0%.
fn refresh(sys: &mut sysinfo::System, pids: &[sysinfo::Pid]) {
    let refresh = |sys: &mut sysinfo::System| {
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(pids),
            true,
            sysinfo::ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory(),
        );
    };
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
