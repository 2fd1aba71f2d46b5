//! The processes of an instance, found through /proc: the gateway, everything descended from it, its
//! process group, and whatever left the group or session and was reparented to the daemon (which is a
//! subreaper) but still carries the instance's marker in its environment.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
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
    /// CPU time in clock ticks: its own (user and system, threads that ended included) and that of
    /// its children it waited for.
    pub cpu_ticks: u64,
}

/// Clock ticks a second (`sysconf(_SC_CLK_TCK)`), to read `Proc::cpu_ticks` and `start`.
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
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
    // Bytes, not a String: a command name need not be UTF-8, and such a process must still be
    // found (and stopped).
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// One `/proc/PID/stat` line: `pid (comm) state ppid pgrp ... starttime ...`. None for a zombie or
/// a line that does not parse.
fn parse_stat(pid: i32, text: &[u8]) -> Option<Proc> {
    // The command name is any 16 bytes, spaces, parentheses and ") " included, and nothing after
    // it can hold a ')': it ends at the LAST ')'.
    let open = text.iter().position(|b| *b == b'(')?;
    let close = text.iter().rposition(|b| *b == b')')?;
    if close < open {
        return None;
    }
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); ppid is field 4, pgrp 5, utime..cstime 14..17, starttime 22.
    if *f.first()? == "Z" {
        return None;
    }
    let mut cpu_ticks = 0u64;
    for i in 11..=14 {
        cpu_ticks = cpu_ticks.saturating_add(f.get(i)?.parse().ok()?);
    }
    Some(Proc {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
        cpu_ticks,
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
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| is_marked(&env, instance, state_dir))
}

/// The variables of a `/proc/PID/environ` (`NAME=value`, each ended by a NUL).
fn env_vars(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == 0).filter(|v| !v.is_empty())
}

/// Whether the environment `env` holds both the instance's marker and its state dir, each as a
/// whole variable.
fn is_marked(env: &[u8], instance: &str, state_dir: &str) -> bool {
    let marker = format!("{MARKER_VAR}={instance}");
    let state = format!("OPENCLAW_STATE_DIR={state_dir}");
    let mut found = (false, false);
    for var in env_vars(env) {
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

/// Without cgroups: every process seen in an instance's tree while its gateway lived, by pid and
/// start time (so a reused pid is never taken for it), kept until the instance's stop. A descendant
/// that leaves the tree (its parent died: it is reparented to the daemon, a subreaper) and clears
/// its environment (no marker) is still known, if a walk saw it before: the walks come once a
/// second ([`Seen::walk`]) and right before each stop signal. What a walk never saw is not known:
/// a process that double-forks and clears its environment between two walks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Seen {
    seen: Arc<Mutex<SeenMap>>,
}

/// Instance name -> (pid, start time) of each process seen in its tree.
type SeenMap = HashMap<String, HashSet<(i32, u64)>>;

impl Seen {
    /// One walk (blocking): for each instance of `roots` (name, its gateway's pid), the gateway,
    /// the processes already known and still alive, and everything descended from them; what is
    /// known and gone is forgotten. It reads only those processes (their stat and each thread's
    /// `children`), not the whole host, so a walk costs a few dozen system calls per gateway; on
    /// a kernel without `/proc/PID/task/TID/children` it reads every process's stat.
    pub fn walk(&self, roots: &[(String, i32)]) {
        if !has_children_files() {
            return self.walk_host(roots);
        }
        let me = std::process::id() as i32;
        let known: Vec<Vec<(i32, u64)>> = {
            let seen = self.lock();
            roots
                .iter()
                .map(|(name, _)| {
                    seen.get(name)
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut found: Vec<(String, HashSet<(i32, u64)>)> = Vec::new();
        for ((name, root), known) in roots.iter().zip(known) {
            let mut set = HashSet::new();
            let mut queue: Vec<(i32, Option<u64>)> = vec![(*root, None)];
            queue.extend(known.into_iter().map(|(pid, start)| (pid, Some(start))));
            while let Some((pid, start)) = queue.pop() {
                let Some(p) = read_stat(pid) else { continue };
                if pid == me || start.is_some_and(|s| s != p.start) || !set.insert((pid, p.start)) {
                    continue;
                }
                queue.extend(children(pid).into_iter().map(|c| (c, None)));
            }
            found.push((name.clone(), set));
        }
        let mut seen = self.lock();
        for (name, set) in found {
            if set.is_empty() {
                seen.remove(&name);
            } else {
                seen.insert(name, set);
            }
        }
    }

    /// [`Seen::walk`] over a snapshot of the whole host, which also finds the members of the
    /// gateway's process group.
    fn walk_host(&self, roots: &[(String, i32)]) {
        let all = snapshot();
        let alive: HashSet<(i32, u64)> = all.iter().map(|p| (p.pid, p.start)).collect();
        let tree = Tree::new(&all);
        let me = std::process::id() as i32;
        let mut found: Vec<(String, HashSet<(i32, u64)>)> = Vec::new();
        {
            let seen = self.lock();
            for (name, root) in roots {
                let known = seen.get(name);
                let mut seeds: Vec<&Proc> = all
                    .iter()
                    .filter(|p| {
                        p.pid == *root
                            || p.pgid == *root
                            || known.is_some_and(|k| k.contains(&(p.pid, p.start)))
                    })
                    .collect();
                let mut set = HashSet::new();
                while let Some(p) = seeds.pop() {
                    if p.pid == me || !set.insert((p.pid, p.start)) {
                        continue;
                    }
                    seeds.extend(tree.children(p.pid).iter().copied());
                }
                found.push((name.clone(), set));
            }
        }
        let mut seen = self.lock();
        for set in seen.values_mut() {
            set.retain(|k| alive.contains(k));
        }
        for (name, set) in found {
            seen.entry(name).or_default().extend(set);
        }
        seen.retain(|_, set| !set.is_empty());
    }

    /// The known processes of `name` that still run (same pid, same start time). Blocking.
    pub fn of(&self, name: &str) -> Vec<Proc> {
        let known: Vec<(i32, u64)> = self
            .lock()
            .get(name)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        known
            .into_iter()
            .filter_map(|(pid, start)| read_stat(pid).filter(|p| p.start == start))
            .collect()
    }

    /// How many processes of `name` are known.
    pub fn count(&self, name: &str) -> usize {
        self.lock().get(name).map_or(0, HashSet::len)
    }

    /// Forgets `name`'s processes: after a stop that ended them all.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeenMap> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether this kernel lists a thread's children in `/proc/PID/task/TID/children`
/// (`CONFIG_PROC_CHILDREN`).
fn has_children_files() -> bool {
    let me = std::process::id();
    std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
}

/// The children of `pid`: those of each of its threads (a child belongs to the thread that forked
/// it).
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.filter_map(|t| t.ok()) {
        let Ok(text) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        out.extend(
            text.split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok()),
        );
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

/// A process found holding an instance's place (its state dir, a port), by the scan at the daemon's
/// start or before an instance's start (`ownership::preflight`).
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
    // Nothing to look for (every instance adopted, after a crash): no walk of every process.
    if known.is_empty() {
        return Vec::new();
    }
    let by_state: HashMap<String, &Known> = known
        .iter()
        .map(|k| (format!("OPENCLAW_STATE_DIR={}", k.state_dir), k))
        .collect();
    let by_port: HashMap<u16, &Known> = known.iter().map(|k| (k.port, k)).collect();
    let listening = listening_inodes(&by_port);
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for p in snapshot().into_iter().filter(|p| p.pid != me) {
        // Read once, for the first finding: the findings of one process merge into one holder.
        let mut command: Option<String> = None;
        if let Ok(env) = std::fs::read(format!("/proc/{}/environ", p.pid)) {
            let vars: Vec<&[u8]> = env_vars(&env).collect();
            for v in &vars {
                let Some(k) = std::str::from_utf8(v).ok().and_then(|v| by_state.get(v)) else {
                    continue;
                };
                let marker = format!("{MARKER_VAR}={}", k.name);
                add_holder(
                    &mut out,
                    Holder {
                        instance: k.name.clone(),
                        proc_: p,
                        cmdline: command.get_or_insert_with(|| cmdline(p.pid)).clone(),
                        why: format!("uses state dir {}", k.state_dir),
                        ours: vars.contains(&marker.as_bytes()),
                    },
                );
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
                    add_holder(
                        &mut out,
                        Holder {
                            instance: k.name.clone(),
                            proc_: p,
                            cmdline: command.get_or_insert_with(|| cmdline(p.pid)).clone(),
                            why: format!("listens on port {port}"),
                            // The marker alone does not make it ours: only its state dir says
                            // which supervisor's lock covers it.
                            ours: false,
                        },
                    );
                }
            }
        }
    }
    out
}

/// Adds `h` to `out`, one holder per process and instance: a process found again (its state dir
/// and its port, or a port on IPv4 and IPv6) adds what else it holds to the first finding, and is
/// ours if any finding says so. So each process is reported once, under one name.
fn add_holder(out: &mut Vec<Holder>, h: Holder) {
    match out
        .iter_mut()
        .find(|o| o.instance == h.instance && o.proc_.pid == h.proc_.pid)
    {
        Some(o) => {
            if !o.why.split(" and ").any(|w| w == h.why) {
                o.why = format!("{} and {}", o.why, h.why);
            }
            o.ours |= h.ours;
        }
        None => out.push(h),
    }
}

/// `socket:[inode]` -> port, for the TCP sockets listening on one of `ports`.
pub fn listening_inodes<T>(ports: &HashMap<u16, T>) -> HashMap<String, u16> {
    let mut out = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            out.extend(listening_in(&text, ports));
        }
    }
    out
}

/// Every TCP socket of the host that listens, as (port, `socket:[inode]`), from /proc/net/tcp and
/// /proc/net/tcp6. Blocking (reads every TCP socket of the host).
pub fn all_listeners() -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            out.extend(
                text.lines()
                    .skip(1)
                    .filter_map(listener)
                    .map(|(port, inode)| (port, format!("socket:[{inode}]"))),
            );
        }
    }
    out
}

/// `socket:[inode]` -> port, for the listeners on one of `ports` in a `/proc/net/tcp` or
/// `/proc/net/tcp6` table (its first line is a header).
fn listening_in<'t, T>(
    table: &'t str,
    ports: &'t HashMap<u16, T>,
) -> impl Iterator<Item = (String, u16)> + 't {
    table
        .lines()
        .skip(1)
        .filter_map(listener)
        .filter(|(port, _)| ports.contains_key(port))
        .map(|(port, inode)| (format!("socket:[{inode}]"), port))
}

/// The local port and socket inode of one line of a TCP table, if the socket listens (state
/// `0A`): `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`, the
/// address `HEX_IP:HEX_PORT` (32 hex digits of IP for tcp6).
fn listener(line: &str) -> Option<(u16, &str)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
    if *state != "0A" {
        return None;
    }
    let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
    Some((port, inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line of pid 4242 named `comm`: parent 1, group 4242, started at tick 98765.
    fn stat(comm: &[u8]) -> Vec<u8> {
        let mut line = b"4242 (".to_vec();
        line.extend_from_slice(comm);
        line.extend_from_slice(
            b") S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 98765 1000 2000\n",
        );
        line
    }

    const PARSED: Proc = Proc {
        pid: 4242,
        ppid: 1,
        pgid: 4242,
        start: 98765,
        cpu_ticks: 8,
    };

    #[test]
    fn a_process_found_twice_is_one_holder_under_one_name() {
        let holder = |why: &str, ours: bool| Holder {
            instance: "main".into(),
            proc_: PARSED,
            cmdline: "node gateway".into(),
            why: why.into(),
            ours,
        };
        let mut out = Vec::new();
        add_holder(&mut out, holder("uses state dir /s", true));
        add_holder(&mut out, holder("listens on port 18789", false));
        // The same port again, on IPv6.
        add_holder(&mut out, holder("listens on port 18789", false));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].why, "uses state dir /s and listens on port 18789");
        assert!(out[0].ours);
        // Another instance's finding of the same process stays its own.
        add_holder(
            &mut out,
            Holder {
                instance: "rescue".into(),
                ..holder("listens on port 19001", false)
            },
        );
        assert_eq!(out.len(), 2);
        assert!(!out[1].ours);
    }

    #[test]
    fn stat_of_a_plain_name() {
        assert_eq!(parse_stat(4242, &stat(b"node")), Some(PARSED));
    }

    #[test]
    fn stat_names_with_spaces_and_parentheses() {
        for comm in [
            &b"openclaw gateway"[..],
            b"(sd-pam)",
            b"a) b",
            b") S 9 9 9",
            b"x) Z 1 1",
            b"((",
            b"))",
            b"",
            b" ",
        ] {
            assert_eq!(
                parse_stat(4242, &stat(comm)),
                Some(PARSED),
                "{:?}",
                String::from_utf8_lossy(comm)
            );
        }
    }

    #[test]
    fn stat_of_a_name_that_is_not_utf8() {
        assert_eq!(parse_stat(4242, &stat(b"\xff\xfe)\x80")), Some(PARSED));
    }

    #[test]
    fn stat_of_a_zombie_is_none() {
        let line = b"4242 (node) Z 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 98765\n";
        assert_eq!(parse_stat(4242, line), None);
    }

    #[test]
    fn truncated_or_odd_stat_lines_are_none() {
        for line in [
            &b""[..],
            b"4242",
            b"4242 (node",
            b"4242 (node)",
            b"4242 (node) ",
            b"4242 (node)S",
            b"4242 (node) S",
            b"4242 (node) S 1 4242",
            b"4242 (node) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0",
            b"4242 (node) S one 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 98765",
            b"4242 (node) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 -5",
            b"4242 node) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 98765",
            b"4242 )node( S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 98765",
            b"4242 (node) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 98765\xff",
            b"4242 (node)\xc3",
        ] {
            assert_eq!(
                parse_stat(4242, line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn read_stat_of_this_process_names_its_parent() {
        let me = read_stat(std::process::id() as i32).expect("our own stat");
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(me.pgid, nix::unistd::getpgrp().as_raw());
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4979 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0000000000000000 100 0 0 10 0
   1: 00000000:4A38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:4979 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1 0000000000000000 100 0 0 10 0
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:4979 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:4A38 0000000000000000FFFF00000100007F:C350 06 00000000:00000000 03:00000F3C 00000000     0        0 0 3 0000000000000000
";

    fn ports(list: &[u16]) -> HashMap<u16, ()> {
        list.iter().map(|p| (*p, ())).collect()
    }

    fn found(table: &str, list: &[u16]) -> Vec<(String, u16)> {
        let ports = ports(list);
        let mut out: Vec<_> = listening_in(table, &ports).collect();
        out.sort();
        out
    }

    #[test]
    fn tcp_listeners_of_the_ports_asked() {
        // 0x4979 = 18809, 0x4A38 = 19000, 0x1F90 = 8080.
        assert_eq!(
            found(TCP, &[18809, 19000]),
            [
                ("socket:[111]".to_string(), 18809),
                ("socket:[222]".to_string(), 19000)
            ]
        );
        assert_eq!(found(TCP, &[8080]), [("socket:[444]".to_string(), 8080)]);
        assert_eq!(found(TCP, &[1]), []);
    }

    #[test]
    fn tcp_connections_are_not_listeners() {
        // Line 2 is a connection from port 18809 (state 01), whose inode 333 is not a listener.
        assert!(found(TCP, &[18809])
            .iter()
            .all(|(inode, _)| inode != "socket:[333]"));
    }

    #[test]
    fn tcp6_listeners_and_time_wait() {
        assert_eq!(found(TCP6, &[18809]), [("socket:[555]".to_string(), 18809)]);
        // 19000 is there only in TIME_WAIT (06).
        assert_eq!(found(TCP6, &[19000]), []);
    }

    #[test]
    fn the_header_is_not_a_listener() {
        let header = TCP.lines().next().unwrap_or_default();
        assert_eq!(listener(header), None);
        assert_eq!(
            found(
                "   0: 0100007F:4979 00000000:0000 0A 0 0 0 0 0 111",
                &[18809]
            ),
            []
        );
    }

    #[test]
    fn odd_or_short_tcp_lines_are_skipped() {
        for line in [
            "",
            "   0:",
            "   0: 0100007F:4979 00000000:0000 0A",
            "   0: 0100007F:4979 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0",
            "   0: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111",
            "   0: 0100007F: 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111",
            "   0: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111",
            "   0: 0100007F:14979 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111",
            "   0: 0100007F:4979 00000000:0000 0a 00000000:00000000 00:00000000 00000000  1000        0 111",
        ] {
            assert_eq!(listener(line), None, "{line:?}");
        }
        assert_eq!(
            listener("0: 0100007F:4979 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 111"),
            Some((18809, "111"))
        );
    }

    #[test]
    fn a_marked_environment_needs_both_variables_whole() {
        let env = b"HOME=/home/u\0OPENCLAW_SUPERVISOR_INSTANCE=main\0OPENCLAW_STATE_DIR=/s/main\0";
        assert!(is_marked(env, "main", "/s/main"));
        // No trailing NUL (a truncated read) still holds both.
        assert!(is_marked(&env[..env.len() - 1], "main", "/s/main"));
        assert!(!is_marked(env, "mai", "/s/main"));
        assert!(!is_marked(env, "main2", "/s/main"));
        assert!(!is_marked(env, "main", "/s/mai"));
        assert!(!is_marked(env, "main", "/s/main/"));
        assert!(!is_marked(
            b"OPENCLAW_SUPERVISOR_INSTANCE=main\0",
            "main",
            "/s/main"
        ));
        assert!(!is_marked(
            b"OPENCLAW_STATE_DIR=/s/main\0",
            "main",
            "/s/main"
        ));
        assert!(!is_marked(b"", "main", "/s/main"));
        assert!(!is_marked(b"\0\0\0", "main", "/s/main"));
        assert!(!is_marked(
            b"X=OPENCLAW_SUPERVISOR_INSTANCE=main\0X=OPENCLAW_STATE_DIR=/s/main",
            "main",
            "/s/main"
        ));
    }

    #[test]
    fn environ_variables_skip_empty_entries() {
        let vars: Vec<&[u8]> = env_vars(b"A=1\0\0B=\xff\0C").collect();
        assert_eq!(vars, [&b"A=1"[..], b"B=\xff", b"C"]);
    }

    #[test]
    fn has_marker_reads_a_child_environment() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, "tree-test")
            .env("OPENCLAW_STATE_DIR", "/nonexistent/tree-test")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // spawn() returns once exec has begun, before the kernel has written the new
        // environment: wait for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut marked = false;
        while !marked && std::time::Instant::now() < deadline {
            marked = has_marker(pid, "tree-test", "/nonexistent/tree-test");
            std::thread::sleep(Duration::from_millis(5));
        }
        let other = has_marker(pid, "other", "/nonexistent/tree-test");
        let _ = child.kill();
        let _ = child.wait();
        assert!(marked);
        assert!(!other);
    }

    #[test]
    fn seen_keeps_a_descendant_that_left_the_tree_until_it_ends() {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        // sh starts a sleep in the background, says its pid, and waits for a line.
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 1000 & echo $!; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        std::io::BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let sleep: i32 = line.trim().parse().unwrap();
        let root = sh.id() as i32;
        let seen = Seen::default();
        seen.walk(&[("t".into(), root)]);
        assert!(seen.of("t").iter().any(|p| p.pid == sleep));
        // sh ends: the sleep is orphaned and leaves the tree of the (dead) root.
        let _ = sh.stdin.take().unwrap().write_all(b"go\n");
        sh.wait().unwrap();
        let orphaned = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            read_stat(sleep).is_some_and(|p| p.ppid != root)
        });
        assert!(orphaned);
        seen.walk(&[("t".into(), root)]);
        assert_eq!(
            seen.of("t").iter().map(|p| p.pid).collect::<Vec<_>>(),
            [sleep]
        );
        assert_eq!(seen.count("t"), 1);
        let _ = kill(Pid::from_raw(sleep), Signal::SIGKILL);
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            seen.of("t").is_empty()
        });
        assert!(gone, "an ended process is no longer of the instance");
        seen.walk(&[("t".into(), root)]);
        assert_eq!(seen.count("t"), 0, "a walk forgets what is gone");
        seen.forget("t");
    }
}
