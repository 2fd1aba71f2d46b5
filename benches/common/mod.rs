//! Shared helpers of the benchmarks: the stand-in gateway, free ports, the median, and the real
//! daemon started on a directory of profiles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openclaw_supervisor::supervise::tree;

/// Whether `pid` lives (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The median of `v` (at least one time).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Polls `cond` every `every` until it holds; fails after 10 minutes.
pub fn wait_every(what: &str, every: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Sends `sig` to `pid`, if it still exists.
pub fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The stand-in gateway, built in the same profile as the benchmark; its canonical path, so it can
/// be compared with `/proc/PID/exe`.
pub fn fake_gateway() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_openclawctl"));
    let fake = exe.parent().unwrap().join("examples/fake-gateway");
    let release = exe.parent().unwrap().ends_with("release");
    let mut args = vec!["build", "--example", "fake-gateway"];
    if release {
        args.push("--release");
    }
    let ok = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap()
        .success();
    assert!(ok && fake.exists());
    fake.canonicalize().unwrap()
}

/// Free ports, 111 apart, from `from` up.
pub fn ports(n: usize, from: u16) -> Vec<u16> {
    let mut out = Vec::new();
    let mut p = from;
    while out.len() < n {
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            out.push(p);
            p += 111;
        } else {
            p += 1;
        }
    }
    out
}

/// A profile running the stand-in gateway on `port`, plus `extra` YAML.
pub fn fake_profile(fake: &Path, port: u16, extra: &str) -> String {
    format!(
        "port: {port}\nstate_dir: state/{port}\ncommand: [{:?}]\n{extra}",
        fake.display().to_string()
    )
}

/// The real daemon on a directory of profiles; SIGTERMed and waited for when dropped.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, profiles: &[(String, String)]) -> Daemon {
        Daemon::start_with(dir, profiles, &[])
    }

    /// [`Daemon::start`] with more flags for the daemon.
    pub fn start_with(dir: &Path, profiles: &[(String, String)], extra: &[&str]) -> Daemon {
        let conf = dir.join("supervisor.d");
        std::fs::create_dir_all(&conf).unwrap();
        for (name, text) in profiles {
            std::fs::write(conf.join(format!("{name}.yaml")), text).unwrap();
        }
        let socket = dir.join("supervisor.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_openclaw-supervisord"))
            .arg("--config-dir")
            .arg(&conf)
            .arg("--socket")
            .arg(&socket)
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .arg("--state-dir")
            .arg(dir.join("daemon-state"))
            .args(extra)
            .env("HOME", dir)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, socket }
    }

    /// openclawctl aimed at this daemon.
    pub fn ctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_openclawctl"));
        c.env("OPENCLAW_SUPERVISOR_SOCKET", &self.socket);
        c
    }

    /// `status --json`, parsed.
    pub fn statuses(&self) -> Vec<serde_json::Value> {
        let out = self.ctl().args(["status", "--json"]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Waits until every instance is running, or settled (fatal or exited: a port taken by another
    /// program between the choice of ports and the start). Returns how many run.
    pub fn wait_all_running(&self, n: usize) -> usize {
        let mut running = 0;
        // Polled gently: a status may wait for a sample of 500 process trees.
        wait_every(
            "every instance to settle",
            Duration::from_millis(500),
            || {
                // A daemon that refused to start (or died) is not waited for.
                assert!(
                    alive(self.child.id()),
                    "the daemon exited (its profiles failed the check?)"
                );
                let s = self.statuses();
                running = s.iter().filter(|i| i["state"] == "running").count();
                s.len() == n
                    && s.iter().all(|i| {
                        ["running", "fatal", "exited"].contains(&i["state"].as_str().unwrap_or(""))
                    })
            },
        );
        running
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

pub mod peers;

/// The live processes descended from `root` (not `root` itself), by the daemon's own /proc walk.
pub fn descendants(root: u32) -> Vec<u32> {
    let all = tree::snapshot();
    tree::Tree::new(&all)
        .descendants(root as i32)
        .into_iter()
        .filter(|&p| p != root as i32)
        .map(|p| p as u32)
        .collect()
}

/// The live children of `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let all = tree::snapshot();
    tree::Tree::new(&all)
        .children(parent as i32)
        .iter()
        .map(|p| p.pid as u32)
        .collect()
}

/// Whether `pid` is alive and runs `exe` (a stand-in gateway).
pub fn is_gateway(pid: u32, exe: &Path) -> bool {
    alive(pid) && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
}

/// The stand-in gateways running below `root`.
pub fn gateways_under(root: u32, exe: &Path) -> Vec<u32> {
    descendants(root)
        .into_iter()
        .filter(|&p| is_gateway(p, exe))
        .collect()
}

/// After a supervisor has been stopped: SIGKILL any of `pids` (gateways listed before the stop)
/// that outlived it, and wait until none is left. Returns how many had to be killed.
pub fn reap_leftovers(pids: &[u32], exe: &Path) -> usize {
    // Give a supervisor that stops its children asynchronously a moment to finish.
    let settle = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| is_gateway(p, exe)) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| is_gateway(p, exe))
        .collect();
    for &pid in &left {
        kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    wait_every(
        "left-over gateways to die",
        Duration::from_millis(10),
        || !left.iter().any(|&p| is_gateway(p, exe)),
    );
    left.len()
}

/// Runs `cmd` as a whole process, spawn to exit, with stdout and stderr on pipes (read to the end).
pub fn run_once(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// An executable on PATH. A pyenv shim is resolved to the script it runs (`pyenv which`), so what
/// runs (and is measured) is the program itself and not pyenv's bash wrapper around it.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })?;
    if found.parent().is_some_and(|d| d.ends_with("shims")) {
        if let Ok(out) = Command::new("pyenv")
            .args(["which", name])
            .stderr(Stdio::null())
            .output()
        {
            let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && real.is_file() {
                return Some(real);
            }
        }
    }
    Some(found)
}

/// CPU time a process has used, all its threads together, those that ended included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    /// utime + stime, fields 14 and 15 of `/proc/PID/stat`, in clock ticks (`getconf CLK_TCK`).
    pub ticks: u64,
    /// The kernel's CPU clock of the process (`clock_getcpuclockid`), in nanoseconds: the same
    /// count the ticks are cut from, without their 10 ms steps.
    pub ns: u64,
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks + o.ticks,
            ns: self.ns + o.ns,
        }
    }
}

/// Clock ticks per second, the unit of utime and stime.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The CPU time `pid` has used so far, if it lives.
pub fn cpu(pid: u32) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: field 3 (state) is f[0], utime (14) f[11], stime (15) f[12].
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // The process-wide CPU clock of a pid, as glibc's clock_getcpuclockid makes it:
    // MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
    let clock = (!(pid as nix::libc::clockid_t) << 3) | 2;
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; a clock of a gone pid is an error return.
    let ns = if unsafe { nix::libc::clock_gettime(clock, &mut ts) } == 0 {
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    } else {
        0
    };
    Some(Cpu { ticks, ns })
}

/// Resident memory of a process: (RSS, PSS) in bytes, from `/proc/PID/smaps_rollup`. PSS shares
/// each page among the processes that map it, so a sum over processes counts shared code once.
pub fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kb = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (kb("Rss:") * 1024, kb("Pss:") * 1024)
}
