//! Containment: where the host offers a writable cgroup v2 hierarchy, each instance runs in a cgroup
//! of its own, so that a stop ends everything the gateway ever started, whatever it did to leave its
//! process group, session or environment (`setsid`, `env -i`, a double fork). Where it does not,
//! the daemon falls back to the process tree (`tree.rs`: the tree, the marker, and the descendants
//! seen while the gateway lived, [`super::tree::Known`]).
//!
//! The mode is decided once, at the daemon's start ([`Containment::detect`]):
//! - **delegated**: the daemon's own cgroup (`0::/path` of /proc/self/cgroup, under the cgroup2
//!   mount of /proc/self/mountinfo) was delegated to it (systemd's `Delegate=yes`, which marks it
//!   with the `trusted.delegate` xattr, or, for a user's daemon, a cgroup it owns). cgroup v2 allows
//!   processes only in leaves once controllers are enabled below a node, so the daemon moves itself
//!   into `OWN/supervisor` and the instances live in `OWN/instances/NAME`.
//! - **root**: the daemon runs as root on a host with a cgroup2 mount: instances live in
//!   `MOUNT/openclaw-supervisor/KEY/NAME`, where KEY names this daemon by its control socket (only
//!   one live daemon holds a socket, so two daemons never share a cgroup, and a daemon started again
//!   on the same socket finds what its previous run left).
//! - otherwise (or with `--no-cgroups`) the process tree.
//!
//! An instance's cgroup is made before each start (on a blocking thread), the child joins it
//! between fork and exec (`spawn.rs` writes "0" to an fd of its `cgroup.procs` opened before the
//! fork), and after a stop everything left in it is killed (`cgroup.kill`, else SIGKILL to each
//! member until `cgroup.events` says `populated 0`), then the cgroup is removed. Every file here
//! lives on cgroupfs (kernel memory, no disk): reading one costs a few system calls.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::profile::{Diagnostic, Kind, Origin, Profile};

/// The name of the sub-tree made at the top of the cgroup2 mount when the daemon runs as root
/// without a delegated cgroup.
pub const TOP: &str = "openclaw-supervisor";

/// How the daemon contains its instances.
#[derive(Debug, Clone)]
pub enum Containment {
    /// Each instance in a cgroup of its own.
    Cgroup(Cgroups),
    /// The process tree (and its marker); why no cgroup.
    Tree {
        /// Why there are no cgroups, in words.
        why: String,
    },
}

/// Where the instances' cgroups are, and what the hierarchy offers.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// The cgroup2 mount.
    pub mount: PathBuf,
    /// Instance NAME lives in `base/NAME`.
    pub base: PathBuf,
    /// The cgroups whose `cgroup.subtree_control` must enable a controller for the instances to
    /// have it, top down; the first is the highest the daemon may change.
    chain: Vec<PathBuf>,
    /// The controllers the top of the chain offers (its `cgroup.controllers`).
    available: Vec<String>,
    /// Whether the cgroup is the daemon's own, delegated to it.
    delegated: bool,
}

impl Containment {
    /// Decides the mode, once, at the daemon's start: a blocking call (a few reads of /proc and
    /// cgroupfs, a mkdir), for a blocking thread. `disabled` is `--no-cgroups`; `socket` names this
    /// daemon (see the module doc). Makes the base cgroup, and, when delegated, moves the daemon
    /// into its leaf.
    pub fn detect(disabled: bool, socket: &Path) -> Containment {
        if disabled {
            return Containment::Tree {
                why: "disabled by --no-cgroups".into(),
            };
        }
        match Cgroups::detect(socket) {
            Ok(c) => Containment::Cgroup(c),
            Err(why) => Containment::Tree {
                why: format!("no writable cgroup v2: {why}"),
            },
        }
    }

    /// What `openclawctl version` shows: "cgroup v2 at DIR" or "process tree (WHY)".
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroup(c) => format!(
                "cgroup v2 at {}{}",
                c.base.display(),
                if c.delegated { " (delegated)" } else { "" }
            ),
            Containment::Tree { why } => format!("process tree ({why})"),
        }
    }

    /// The cgroups, if the daemon uses them.
    pub fn cgroups(&self) -> Option<&Cgroups> {
        match self {
            Containment::Cgroup(c) => Some(c),
            Containment::Tree { .. } => None,
        }
    }

    /// The cgroup of instance `name`, in cgroup mode.
    pub fn dir(&self, name: &str) -> Option<PathBuf> {
        self.cgroups().map(|c| c.base.join(name))
    }

    /// An error for each `limits` field that this daemon cannot apply: a limit needs the cgroup
    /// v2 controller it maps to (`memory`, `cpu`). What the daemon's check adds, at its start and
    /// at each reload.
    pub fn limit_errors(&self, profiles: &[Profile]) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for p in profiles {
            let fields = [
                ("memory", p.limits.memory.as_ref().map(|m| &m.origin)),
                ("cpu", p.limits.cpu.as_ref().map(|c| &c.origin)),
            ];
            for (controller, origin) in fields {
                let Some(Origin::Profile(at)) = origin else {
                    continue;
                };
                let has = match self {
                    Containment::Cgroup(c) => c.available.iter().any(|a| a == controller),
                    Containment::Tree { .. } => false,
                };
                if has {
                    continue;
                }
                let host = match self {
                    Containment::Cgroup(c) => format!(
                        "this host has cgroup v2 at {} with controllers: {}",
                        c.chain.first().unwrap_or(&c.base).display(),
                        if c.available.is_empty() {
                            "none".to_string()
                        } else {
                            c.available.join(" ")
                        }
                    ),
                    Containment::Tree { why } => {
                        format!("this daemon runs without cgroups ({why})")
                    }
                };
                out.push(
                    Diagnostic::error(
                        Kind::InvalidValue,
                        at.clone(),
                        format!("limits need a cgroup v2 with the {controller} controller; {host}"),
                    )
                    .instance(p.name.as_str())
                    .field(format!("limits.{controller}"))
                    .hint(
                        "remove `limits`, or run the daemon where it has a cgroup v2 with that \
                         controller (systemd with Delegate=yes, or root on a unified hierarchy)",
                    ),
                );
            }
        }
        out
    }
}

/// An instance's cgroup, ready for a child to join.
#[derive(Debug)]
pub struct Joined {
    /// The cgroup.
    pub dir: PathBuf,
    /// Its `cgroup.procs`, open for writing: the child writes "0" to it between fork and exec.
    pub procs: OwnedFd,
}

impl Cgroups {
    fn detect(socket: &Path) -> Result<Cgroups, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let own = own_cgroup(&own).ok_or("no `0::` line in /proc/self/cgroup")?;
        let mut own_dir = mount.join(own.trim_start_matches('/'));
        // After a re-exec the daemon is in the leaf it moved itself to: its cgroup is the leaf's
        // parent, as at its first start.
        if let Some(parent) = own_dir.parent().filter(|p| {
            own_dir.file_name() == Some(std::ffi::OsStr::new("supervisor"))
                && p.join("instances").is_dir()
                && delegated(p)
        }) {
            own_dir = parent.to_path_buf();
        }
        let available = |dir: &Path| -> Vec<String> {
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .map(|t| t.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        if own != "/" && own_dir != mount && delegated(&own_dir) {
            let leaf = own_dir.join("supervisor");
            let base = own_dir.join("instances");
            for dir in [&leaf, &base] {
                make_dir(dir)?;
            }
            write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            return Ok(Cgroups {
                available: available(&own_dir),
                chain: vec![own_dir, base.clone()],
                mount,
                base,
                delegated: true,
            });
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "not root, and this daemon's cgroup {} is not delegated to it (run it from a systemd unit with Delegate=yes)",
                own_dir.display()
            ));
        }
        let top = mount.join(TOP);
        let base = top.join(daemon_key(socket));
        make_dir(&base)?;
        Ok(Cgroups {
            available: available(&mount),
            chain: vec![mount.clone(), top, base.clone()],
            mount,
            base,
            delegated: false,
        })
    }

    /// Ends what earlier runs of this daemon left in its instances' cgroups (a SIGKILLed daemon's
    /// setsid'd descendants, say) and removes those cgroups. Blocking; at the start, after the
    /// control socket is taken (so no live daemon shares the base). The cgroups in `keep` (those of
    /// adopted gateways) are left as they are.
    pub fn sweep(&self, keep: &[PathBuf]) -> Vec<(PathBuf, Vec<i32>)> {
        let mut ended = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return ended;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let dir = e.path();
            if !dir.join("cgroup.procs").exists() || keep.contains(&dir) {
                continue;
            }
            let members = members(&dir);
            if !members.is_empty() {
                kill_all(&dir);
                wait_empty_blocking(&dir);
                ended.push((dir.clone(), members));
            }
            let _ = std::fs::remove_dir(&dir);
        }
        ended
    }

    /// Makes instance `name`'s cgroup (0755, the owner's), ends whatever an earlier child left in
    /// it, applies `limits`, and opens its `cgroup.procs`. Blocking. The error names the file.
    pub fn prepare(
        &self,
        name: &str,
        limits: &crate::profile::resolve::Limits,
    ) -> Result<Joined, String> {
        let dir = self.base.join(name);
        make_dir(&dir)?;
        if !members(&dir).is_empty() {
            kill_all(&dir);
            wait_empty_blocking(&dir);
        }
        let wanted: Vec<&str> = [
            limits.memory.as_ref().map(|_| "memory"),
            limits.cpu.as_ref().map(|_| "cpu"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !wanted.is_empty() {
            self.enable(&wanted)?;
        }
        let memory = limits
            .memory
            .as_ref()
            .map_or("max".to_string(), |m| m.value.to_string());
        let cpu = limits
            .cpu
            .as_ref()
            .map_or("max 100000".to_string(), |c| cpu_max(c.value));
        for (file, value, set) in [
            ("memory.max", memory, limits.memory.is_some()),
            ("cpu.max", cpu, limits.cpu.is_some()),
        ] {
            let path = dir.join(file);
            // Without the limit, a file left from before is reset; a missing one is fine.
            if set || path.exists() {
                write_file(&path, &value)?;
            }
        }
        let path = dir.join("cgroup.procs");
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Joined {
            dir,
            procs: procs.into(),
        })
    }

    /// Enables `controllers` in every `cgroup.subtree_control` of the chain that lacks them.
    fn enable(&self, controllers: &[&str]) -> Result<(), String> {
        for dir in &self.chain {
            let path = dir.join("cgroup.subtree_control");
            let now = std::fs::read_to_string(&path).unwrap_or_default();
            let missing: Vec<String> = controllers
                .iter()
                .filter(|c| !now.split_whitespace().any(|n| n == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                write_file(&path, &missing.join(" "))?;
            }
        }
        Ok(())
    }

    /// Removes the base cgroup at the daemon's exit, when it is not the daemon's own delegated
    /// one (systemd removes that). Fails quietly if something is still in it.
    pub fn close(&self) {
        if !self.delegated {
            let _ = std::fs::remove_dir(&self.base);
        }
    }
}

/// `cpu.max` for `percent` of one CPU: quota and period in µs, period 100 ms.
pub fn cpu_max(percent: u32) -> String {
    format!("{} 100000", u64::from(percent) * 1000)
}

/// This daemon's name under [`TOP`]: its socket path made safe as one directory name (readable),
/// and a hash of the path (two paths that read the same stay apart).
pub fn daemon_key(socket: &Path) -> String {
    let text = socket.to_string_lossy();
    let readable: String = text
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            '/' => '-',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' => c,
            _ => '_',
        })
        .collect();
    let tail: String = {
        let chars: Vec<char> = readable.chars().collect();
        chars[chars.len().saturating_sub(80)..].iter().collect()
    };
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.as_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{tail}-{hash:08x}")
}

/// The mount point of the cgroup2 hierarchy in a `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT
/// MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = before.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mount(point)))
    })
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\040`, `\011`, `\012`, `\134`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|d| (b'0'..=b'7').contains(d)));
        if let Some(digits) = octal {
            let n = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(n).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of a `/proc/PID/cgroup` (its `0::PATH` line).
fn own_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|p| p.starts_with('/'))
}

/// Whether `dir` was delegated to this process: systemd marks a cgroup it delegates (Delegate=yes)
/// with the xattr `trusted.delegate` (or `user.delegate`) = "1"; a daemon that is not root may
/// also use a cgroup it owns and can write.
fn delegated(dir: &Path) -> bool {
    let marked = ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| xattr(dir, name).is_some_and(|v| v == b"1"));
    if marked {
        return true;
    }
    let me = nix::unistd::geteuid();
    !me.is_root()
        && std::fs::metadata(dir).is_ok_and(|m| m.uid() == me.as_raw())
        && nix::unistd::access(&dir.join("cgroup.procs"), nix::unistd::AccessFlags::W_OK).is_ok()
}

/// The value of the extended attribute `name` of `path`, if it has one (of at most 64 bytes).
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer's length is
    // passed with it.
    let n = unsafe {
        nix::libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.get(..n).map(<[u8]>::to_vec)
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

/// The pids in cgroup `dir` (its `cgroup.procs`); none if it cannot be read.
pub fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether cgroup `dir` still has a live process (`cgroup.events`: `populated 1`). A cgroup that
/// is gone or unreadable is empty.
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
}

/// SIGKILL to everything in cgroup `dir`: `cgroup.kill` where the kernel has it (5.14+: no
/// process can fork its way out), else to each member of `cgroup.procs`.
pub fn kill_all(dir: &Path) {
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() && write_file(&kill_file, "1").is_ok() {
        return;
    }
    for pid in members(dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The waits between looks at a cgroup being emptied: the kernel marks it empty a moment after its
/// last process is reaped, so the first look comes after 1 ms, then ever less often up to every
/// 20 ms, so that an emptying waits about as long as the kernel does, not a fixed step. Each step
/// kills whatever is still there, and every 10 s of waiting says which processes survive SIGKILL.
struct Emptying<'a> {
    dir: &'a Path,
    step: Duration,
    waited: Duration,
    next_warning: Duration,
}

impl<'a> Emptying<'a> {
    fn new(dir: &'a Path) -> Self {
        Emptying {
            dir,
            step: Duration::from_millis(1),
            waited: Duration::ZERO,
            next_warning: Duration::from_secs(10),
        }
    }

    /// `None` once the cgroup is empty; else, after SIGKILL to its members, how long to wait
    /// before the next look.
    fn next(&mut self) -> Option<Duration> {
        if !populated(self.dir) {
            return None;
        }
        kill_all(self.dir);
        let wait = self.step;
        self.waited += wait;
        self.step = (self.step * 2).min(Duration::from_millis(20));
        if self.waited >= self.next_warning {
            self.next_warning += Duration::from_secs(10);
            tracing::error!(cgroup = %self.dir.display(), pids = ?members(self.dir), "processes survive SIGKILL");
        }
        Some(wait)
    }
}

/// Kills until cgroup `dir` is empty, on this (blocking) thread.
fn wait_empty_blocking(dir: &Path) {
    let mut emptying = Emptying::new(dir);
    while let Some(wait) = emptying.next() {
        std::thread::sleep(wait);
    }
}

/// Kills everything left in cgroup `dir` and returns once it is empty (`populated 0`), then
/// removes it. Returns the pids it found there. A process the kernel cannot kill (stuck in the
/// kernel) keeps the stop waiting, with an error in the daemon's log every 10 s.
pub async fn empty_and_remove(dir: &Path) -> Vec<i32> {
    let found = members(dir);
    let mut emptying = Emptying::new(dir);
    while let Some(wait) = emptying.next() {
        tokio::time::sleep(wait).await;
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(cgroup = %dir.display(), "cannot remove the cgroup: {e}");
        }
    }
    found
}

/// The CPU time of cgroup `dir` in µs (`cpu.stat`: `usage_usec`).
pub fn usage_usec(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// The memory charged to cgroup `dir` (`memory.current`), when the memory controller is on for it.
pub fn memory_current(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The resident memory of `pid` in bytes (`/proc/PID/statm`, field 2, in pages).
pub fn rss_bytes(pid: i32) -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = "25 21 0:22 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(
            cgroup2_mount("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
    }

    #[test]
    fn the_own_cgroup_is_the_0_line() {
        assert_eq!(own_cgroup("9:name=systemd:/\n0::/\n"), Some("/"));
        assert_eq!(
            own_cgroup("0::/system.slice/openclaw-supervisor.service\n"),
            Some("/system.slice/openclaw-supervisor.service")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
        assert_eq!(own_cgroup("0::\n"), None);
    }

    #[test]
    fn daemon_keys_are_one_readable_name_and_distinct() {
        let a = daemon_key(Path::new("/run/openclaw-supervisor/supervisor.sock"));
        assert!(
            a.starts_with("run-openclaw-supervisor-supervisor.sock-"),
            "{a}"
        );
        assert!(!a.contains('/'));
        let b = daemon_key(Path::new("/run/openclaw-supervisor-supervisor.sock"));
        assert_ne!(a, b);
        let long = daemon_key(Path::new(&format!("/{}/s.sock", "x".repeat(300))));
        assert!(long.len() < 100, "{long}");
        let odd = daemon_key(Path::new("/tmp/a b/..\n/s"));
        assert!(!odd.contains('/') && !odd.contains('\n') && odd != ".." && odd != ".");
    }

    #[test]
    fn cpu_percent_is_quota_over_a_100ms_period() {
        assert_eq!(cpu_max(150), "150000 100000");
        assert_eq!(cpu_max(1), "1000 100000");
    }
}
