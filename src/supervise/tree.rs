//! The processes of an instance, found through /proc: the gateway, everything descended from it, its
//! process group, and whatever left the group or session and was reparented to the daemon (which is a
//! subreaper) but still carries the instance's marker in its environment.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Set in every child's environment (and so inherited by its whole tree) to the instance name.
pub const MARKER_VAR: &str = "OPENCLAW_SUPERVISOR_INSTANCE";

/// One process, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proc {
    /// Process id.
    pub pid: i32,
    /// Parent.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Start time in clock ticks since boot: with the pid, names one process even if the pid is reused.
    pub start: u64,
}

/// Every process on the host that /proc shows.
pub fn snapshot() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// `/proc/PID/stat` of one process, if it still exists (and is not a zombie).
pub fn read_stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); ppid is field 4, pgrp 5, starttime 22.
    if f.first() == Some(&"Z") {
        return None;
    }
    Some(Proc {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Who is whose child, over one snapshot, so a tree is walked without rescanning the host.
pub struct Tree<'a> {
    children: HashMap<i32, Vec<&'a Proc>>,
}

impl<'a> Tree<'a> {
    /// Indexes `all` by parent.
    pub fn new(all: &'a [Proc]) -> Self {
        let mut children: HashMap<i32, Vec<&Proc>> = HashMap::new();
        for p in all {
            children.entry(p.ppid).or_default().push(p);
        }
        Tree { children }
    }

    /// The children of `pid`.
    pub fn children(&self, pid: i32) -> &[&'a Proc] {
        self.children.get(&pid).map_or(&[], Vec::as_slice)
    }

    /// `root` and every pid descended from it.
    pub fn descendants(&self, root: i32) -> Vec<i32> {
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(self.children(parent).iter().map(|p| p.pid));
            i += 1;
        }
        out
    }
}

/// Whether `pid`'s environment holds `MARKER_VAR=<instance>` and `OPENCLAW_STATE_DIR=<state_dir>`.
pub fn has_marker(pid: i32, instance: &str, state_dir: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let marker = format!("{MARKER_VAR}={instance}");
    let state = format!("OPENCLAW_STATE_DIR={state_dir}");
    let mut found = (false, false);
    for var in env.split(|b| *b == 0) {
        if var == marker.as_bytes() {
            found.0 = true;
        } else if var == state.as_bytes() {
            found.1 = true;
        }
    }
    found == (true, true)
}

/// The processes that belong to an instance right now: `root` and its descendants, the members of
/// its process group, and the daemon's children that carry the instance's marker (the orphans of its
/// gateways come back to the daemon, a subreaper), with their descendants. `is_gateway` names the
/// daemon's live gateways, whose environments need not be read. Leftovers elsewhere on the
/// host are dealt with once, before the first start ([`host_scan`]).
pub fn instance_processes(
    root: Option<i32>,
    instance: &str,
    state_dir: &str,
    is_gateway: &dyn Fn(i32) -> bool,
) -> Vec<Proc> {
    let all = snapshot();
    let me = std::process::id() as i32;
    let tree = Tree::new(&all);
    let mut seeds: Vec<&Proc> = Vec::new();
    for p in &all {
        if p.pid == me {
            continue;
        }
        let in_tree = root.is_some_and(|r| p.pid == r || p.pgid == r);
        let orphan = p.ppid == me && !is_gateway(p.pid);
        if in_tree || (orphan && has_marker(p.pid, instance, state_dir)) {
            seeds.push(p);
        }
    }
    let mut seen: HashSet<i32> = HashSet::new();
    let mut out = Vec::new();
    while let Some(p) = seeds.pop() {
        if p.pid == me || !seen.insert(p.pid) {
            continue;
        }
        out.push(*p);
        seeds.extend(tree.children(p.pid).iter().copied());
    }
    out
}

/// Ends the processes `find` returns: `sig` first, SIGKILL to what is left after `grace`, then waits
/// (up to 2 s) for them to go. `find` is asked again each time, so a process that appears meanwhile
/// (a child forked during the stop) is ended too. `found` hears of the first set, if any. Returns the
/// pids that survived SIGKILL (none, unless the kernel is stuck on them).
pub async fn end_all<F, N, Fut>(find: F, sig: Signal, grace: Duration, found: N) -> Vec<i32>
where
    F: Fn() -> Vec<Proc> + Clone + Send + 'static,
    N: FnOnce(Vec<i32>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let scan = || {
        let find = find.clone();
        async move { tokio::task::spawn_blocking(find).await.unwrap_or_default() }
    };
    let left = scan().await;
    if left.is_empty() {
        return Vec::new();
    }
    found(left.iter().map(|p| p.pid).collect()).await;
    for p in &left {
        signal_proc(p, sig);
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut left = left;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = scan().await;
        if left.is_empty() {
            return Vec::new();
        }
    }
    for p in &left {
        signal_proc(p, Signal::SIGKILL);
    }
    // SIGKILL cannot be ignored; wait (bounded) until they are gone and reaped.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = scan().await;
        if left.is_empty() {
            return Vec::new();
        }
    }
    left.iter().map(|p| p.pid).collect()
}

/// Sends `sig` to `p` if it is still the same process (same pid and start time).
pub fn signal_proc(p: &Proc, sig: Signal) {
    if read_stat(p.pid).is_some_and(|now| now.start == p.start) {
        let _ = kill(Pid::from_raw(p.pid), sig);
    }
}

/// The command line of `pid`, for reports: arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// What an instance is known by on the host, for [`host_scan`].
#[derive(Debug, Clone)]
pub struct Known {
    /// Instance name.
    pub name: String,
    /// Its `OPENCLAW_STATE_DIR`.
    pub state_dir: String,
    /// Its gateway port.
    pub port: u16,
}

/// A process found holding an instance's place before the daemon started anything.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The instance.
    pub instance: String,
    /// The process.
    pub proc_: Proc,
    /// Its command line.
    pub cmdline: String,
    /// What it holds.
    pub why: String,
    /// Whether it carries the instance's marker: left by an earlier run of a supervisor.
    pub ours: bool,
}

/// One pass over the host, reading each process's environment once: every process that uses an
/// instance's state dir or listens on its gateway port.
pub fn host_scan(known: &[Known]) -> Vec<Holder> {
    let by_state: HashMap<String, &Known> = known
        .iter()
        .map(|k| (format!("OPENCLAW_STATE_DIR={}", k.state_dir), k))
        .collect();
    let by_port: HashMap<u16, &Known> = known.iter().map(|k| (k.port, k)).collect();
    let listening = listening_inodes(&by_port);
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for p in snapshot().into_iter().filter(|p| p.pid != me) {
        if let Ok(env) = std::fs::read(format!("/proc/{}/environ", p.pid)) {
            let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
            for v in &vars {
                let Some(k) = std::str::from_utf8(v).ok().and_then(|v| by_state.get(v)) else {
                    continue;
                };
                let marker = format!("{MARKER_VAR}={}", k.name);
                out.push(Holder {
                    instance: k.name.clone(),
                    proc_: p,
                    cmdline: cmdline(p.pid),
                    why: format!("uses state dir {}", k.state_dir),
                    ours: vars.contains(&marker.as_bytes()),
                });
            }
        }
        if listening.is_empty() {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", p.pid)) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(port) = listening.get(link.to_string_lossy().as_ref()) {
                if let Some(k) = by_port.get(port) {
                    out.push(Holder {
                        instance: k.name.clone(),
                        proc_: p,
                        cmdline: cmdline(p.pid),
                        why: format!("listens on port {port}"),
                        ours: false,
                    });
                }
            }
        }
    }
    out
}

/// `socket:[inode]` -> port, for the TCP sockets listening on one of `ports`.
fn listening_inodes<T>(ports: &HashMap<u16, T>) -> HashMap<String, u16> {
    let mut out = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if let (true, Some(port)) = (*state == "0A", port) {
                if ports.contains_key(&port) {
                    out.insert(format!("socket:[{inode}]"), port);
                }
            }
        }
    }
    out
}
