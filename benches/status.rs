//! Benchmark of the status query, printing figures (no thresholds): `cargo bench --bench status`.
//!
//! With 2 and with 500 instances of the stand-in gateway running, each system in turn (ours, then
//! PyPI's `supervisor` on the same number of the same programs, so they never compete for the CPU):
//!
//! 1. `openclawctl status`, the whole process from spawn to exit with its stdout on a pipe: median
//!    of 30 after 2 warm-up calls, with the least and the most.
//! 2. The gRPC round trip alone: one tonic client on the Unix socket calling `ListInstances` for all
//!    instances, median of 30 after 2 warm-up calls.
//! 3. `supervisorctl status` of supervisord managing the same programs, timed as in 1, and the
//!    ratio openclawctl / supervisorctl. Skipped, with a note, if supervisorctl is not on PATH.
//!
//! The target, reported against and not asserted: `openclawctl status` at most 5 ms median with 500
//! instances. The daemon samples CPU and RSS at most once a second in the background, so the first
//! call after a quiet spell can be slower; that is what the warm-up calls absorb.
//!
//! `cargo test --bench status` runs a short version (2 and 10 instances, 5 timed calls each).

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openclaw_supervisor::api::v1::ListInstancesRequest;
use openclaw_supervisor::supervise::tree;

mod common;

use common::{alive, fake_gateway, fake_profile, kill, ms, ports, wait_every, Daemon};

/// A gateway whose port was taken between the choice of ports and its start stays exited instead
/// of crash-looping (see benches/supervise.rs on the ephemeral range).
const NEVER_RESTART: &str = "restart: { policy: never }\n";

const WARM_UP: usize = 2;
const TARGET_MS: f64 = 5.0;

/// Whether `pid` is alive and runs `exe` (a stand-in gateway).
fn is_gateway(pid: u32, exe: &Path) -> bool {
    alive(pid) && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
}

/// The live processes descended from `root` whose executable is `exe` (the stand-in gateways a
/// supervisor started), found by the daemon's own /proc walk.
fn descendants_running(root: u32, exe: &Path) -> Vec<u32> {
    let all = tree::snapshot();
    tree::Tree::new(&all)
        .descendants(root as i32)
        .into_iter()
        .map(|p| p as u32)
        .filter(|&p| p != root && is_gateway(p, exe))
        .collect()
}

/// After a supervisor has been stopped: SIGKILL any of its gateways (listed before the stop) that
/// outlived it, and wait until none is left. Returns how many had to be killed.
fn reap_leftovers(pids: &[u32], exe: &Path) -> usize {
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

/// An executable on PATH. A pyenv shim is resolved to the script it runs (`pyenv which`), so the
/// timing is of supervisorctl itself and not of pyenv's bash wrapper around it.
fn on_path(name: &str) -> Option<PathBuf> {
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

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    n: usize,
}

/// Runs `f` WARM_UP times untimed, then `reps` times timed.
fn measure(reps: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..WARM_UP {
        f();
    }
    let v: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    Stats::of(v)
}

impl Stats {
    /// The median, least and most of `v` (at least one time).
    fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.2} ms of {} (min {:.2} ms, max {:.2} ms)",
            ms(self.median),
            self.n,
            ms(self.min),
            ms(self.max)
        )
    }
}

/// Whole process, spawn to exit, with stdout and stderr on pipes (read to the end).
fn run_once(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

impl Daemon {
    /// SIGTERM, wait for the daemon, then make sure none of its gateways is left. Returns how many
    /// gateways had to be killed after it exited.
    fn stop(mut self, fake: &Path) -> usize {
        let gateways = descendants_running(self.child.id(), fake);
        kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                println!("  note: openclaw-supervisord still running 60 s after SIGTERM; killed");
                kill(self.child.id(), nix::sys::signal::Signal::SIGKILL);
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reap_leftovers(&gateways, fake)
    }
}

/// supervisord run in the foreground by the bench, on a Unix socket in its own directory.
struct Supervisord {
    child: Child,
    conf: PathBuf,
    ctl: PathBuf,
}

impl Supervisord {
    fn start(supervisord: &Path, ctl: &Path, dir: &Path, fake: &Path, ports: &[u16]) -> Self {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let d = dir.display();
        let mut text = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}/logs\nnodaemon=true\nminfds=4096\nloglevel=warn\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
        );
        // As for ours: no restart of a gateway that exits (its port taken), so the set settles.
        for (i, p) in ports.iter().enumerate() {
            text += &format!(
                "\n[program:bot{i:03}]\ncommand={} --port {p}\nautostart=true\nautorestart=false\nstartsecs=1\nstartretries=0\nstopsignal=TERM\n",
                fake.display()
            );
        }
        let conf = dir.join("supervisord.conf");
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(supervisord)
            .arg("-c")
            .arg(&conf)
            .arg("-n")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Supervisord {
            child,
            conf,
            ctl: ctl.to_path_buf(),
        }
    }

    fn ctl(&self) -> Command {
        let mut c = Command::new(&self.ctl);
        c.arg("-c").arg(&self.conf);
        c
    }

    /// Waits until `supervisorctl status` lists all `n` programs, each RUNNING or settled (FATAL,
    /// EXITED). Returns how many run.
    fn wait_all_running(&mut self, n: usize) -> usize {
        let mut running = 0;
        wait_every(
            "every supervisord program to settle",
            Duration::from_millis(500),
            || {
                if let Ok(Some(st)) = self.child.try_wait() {
                    panic!("supervisord exited early: {st}");
                }
                let out = run_once(self.ctl().arg("status"));
                let text = String::from_utf8_lossy(&out.stdout);
                let states: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .collect();
                running = states.iter().filter(|s| **s == "RUNNING").count();
                states.len() == n
                    && states
                        .iter()
                        .all(|s| ["RUNNING", "FATAL", "EXITED"].contains(s))
            },
        );
        running
    }

    /// `supervisorctl shutdown`, wait for supervisord, then make sure none of its gateways is left.
    fn stop(mut self, fake: &Path) -> usize {
        let gateways = descendants_running(self.child.id(), fake);
        let _ = run_once(self.ctl().arg("shutdown"));
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                kill(self.child.id(), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reap_leftovers(&gateways, fake)
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let reps = if quick { 5 } else { 30 };
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();
    let supervisor = match (on_path("supervisord"), on_path("supervisorctl")) {
        (Some(d), Some(c)) => Some((d, c)),
        _ => None,
    };
    for n in [2usize, if quick { 10 } else { 500 }] {
        // Ours.
        let dir = tmp.path().join(format!("ours-{n}"));
        let profiles: Vec<(String, String)> = ports(n, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("bot{i:03}"), fake_profile(&fake, p, NEVER_RESTART)))
            .collect();
        let d = Daemon::start(&dir, &profiles);
        let running = d.wait_all_running(n);
        // Let start-up work (readiness probes, log files) settle before timing.
        std::thread::sleep(Duration::from_secs(if quick { 1 } else { 5 }));

        let whole = measure(reps, || {
            let out = run_once(d.ctl().arg("status"));
            assert!(out.status.success(), "openclawctl status failed: {out:?}");
        });
        // Outside the timing: it listed every instance (a header line, then one per instance).
        let out = run_once(d.ctl().arg("status"));
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(
            lines > n,
            "openclawctl status printed {lines} lines for {n} instances"
        );

        // A runtime of its own, dropped before the daemon is stopped: a client connection left
        // open on a runtime nobody drives never answers the server's shutdown (GOAWAY and PING),
        // and the daemon would wait for it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let grpc = rt.block_on(async {
            let mut client = openclaw_supervisor::api::client::connect(&d.socket)
                .await
                .unwrap();
            let mut times = Vec::new();
            for i in 0..WARM_UP + reps {
                let t = Instant::now();
                let r = client
                    .list_instances(ListInstancesRequest { names: vec![] })
                    .await
                    .unwrap()
                    .into_inner();
                let e = t.elapsed();
                assert_eq!(r.instances.len(), n);
                if i >= WARM_UP {
                    times.push(e);
                }
            }
            Stats::of(times)
        });
        drop(rt);
        let killed = d.stop(&fake);

        println!("status with {n} instances ({running} running):");
        println!("  openclawctl status (whole process): {whole}");
        println!("  gRPC ListInstances round trip (one connected client): {grpc}");
        if !quick && n >= 500 {
            let verdict = if ms(whole.median) <= TARGET_MS {
                "met"
            } else {
                "NOT met"
            };
            println!(
                "  target openclawctl status <= {TARGET_MS:.0} ms median with 500 instances: {verdict}"
            );
        }
        if killed > 0 {
            println!("  note: {killed} gateway(s) outlived openclaw-supervisord and were killed");
        }

        // PyPI's supervisor on the same programs, after ours has stopped.
        let Some((supervisord, supervisorctl)) = &supervisor else {
            println!("  supervisorctl not found (pip install supervisor); no ratio");
            continue;
        };
        let dir = tmp.path().join(format!("supervisord-{n}"));
        let mut s = Supervisord::start(supervisord, supervisorctl, &dir, &fake, &ports(n, 1100));
        let theirs_running = s.wait_all_running(n);
        std::thread::sleep(Duration::from_secs(if quick { 1 } else { 5 }));
        // supervisorctl status exits 3 when a program is not running; only its output is checked.
        let theirs = measure(reps, || {
            let out = run_once(s.ctl().arg("status"));
            assert!(
                !out.stdout.is_empty(),
                "supervisorctl status printed nothing"
            );
        });
        let killed = s.stop(&fake);
        println!(
            "  supervisorctl status (whole process, supervisor {}, {theirs_running} running): {theirs}",
            supervisor_version(supervisord)
        );
        println!(
            "  ratio openclawctl / supervisorctl (whole process, medians): {:.3}",
            whole.median.as_secs_f64() / theirs.median.as_secs_f64()
        );
        if killed > 0 {
            println!("  note: {killed} gateway(s) outlived supervisord and were killed");
        }
    }
}

fn supervisor_version(supervisord: &Path) -> String {
    Command::new(supervisord)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
