//! Benchmark of adoption under systemd, printing figures (no thresholds): `cargo bench --bench adopt`.
//!
//! `ADOPT_INSTANCES` stand-ins (500) run under a daemon whose NOTIFY_SOCKET is this program, which
//! plays the service manager: it keeps the fds the daemon stores (each gateway's stdout and
//! stderr) and honours FDSTOREREMOVE. The daemon is SIGKILLed, and a new one started as systemd
//! would, handed the stored pipes (fds 3.., LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID). Measured:
//! from the new daemon's exec until `openclawctl status --json` shows every instance `running`
//! with its old pid (polled every 10 ms, so the figure is up to one poll and one status late),
//! the median of `ADOPT_RUNS` (5) crashes and restarts. The target is under 1 s for 500.
//!
//! `cargo test --bench adopt` runs a short version (10 stand-ins, 2 runs).

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
#[path = "../tests/support/service_manager.rs"]
mod service_manager;

use common::{fake_gateway, fake_profile, kill, median, ms, ports, wait_every};

/// The stored fds, by FDNAME, filled by the receiving thread.
type Fds = Arc<Mutex<Vec<(String, OwnedFd)>>>;

/// The service manager's notify socket and fd store; a thread takes every datagram at once, as
/// systemd does, so the daemon never waits on a full socket.
fn store(path: &Path) -> Fds {
    let socket = UnixDatagram::bind(path).unwrap();
    let fds: Fds = Arc::default();
    let kept = fds.clone();
    std::thread::spawn(move || {
        while let Some((text, got)) =
            service_manager::receive(&socket, nix::sys::socket::MsgFlags::empty())
        {
            service_manager::apply(&mut kept.lock().unwrap(), &text, got);
        }
    });
    fds
}

/// The daemon on `dir`, started as systemd would, handed the stored fds.
fn start(dir: &Path, notify: &Path, fds: &Fds) -> Child {
    let held = fds.lock().unwrap();
    let mut cmd =
        service_manager::command(Path::new(env!("CARGO_BIN_EXE_openclaw-supervisord")), &held);
    cmd.arg("--config-dir")
        .arg(dir.join("supervisor.d"))
        .arg("--socket")
        .arg(dir.join("supervisor.sock"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .arg("--state-dir")
        .arg(dir.join("daemon-state"))
        .env("HOME", dir)
        .env(
            "RUST_LOG",
            std::env::var("ADOPT_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("NOTIFY_SOCKET", notify)
        .stderr(match std::env::var_os("ADOPT_DAEMON_LOG") {
            // Where to look when a run does not end: the daemons' warnings, appended.
            Some(f) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .map_or_else(|_| Stdio::null(), Stdio::from),
            None => Stdio::null(),
        });
    cmd.spawn().unwrap()
}

/// Every instance's state and pid, once the API answers.
fn statuses(dir: &Path) -> Option<BTreeMap<String, (String, u64)>> {
    let out = Command::new(env!("CARGO_BIN_EXE_openclawctl"))
        .args(["status", "--json"])
        .env("OPENCLAW_SUPERVISOR_SOCKET", dir.join("supervisor.sock"))
        .output()
        .ok()?;
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v.iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_string(),
                    (
                        s["state"].as_str().unwrap_or("").to_string(),
                        s["pid"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect(),
    )
}

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = var("ADOPT_INSTANCES", if quick { 10 } else { 500 });
    let runs = var("ADOPT_RUNS", if quick { 2 } else { 5 }).max(1);
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let conf = dir.join("supervisor.d");
    std::fs::create_dir_all(&conf).unwrap();
    for (i, port) in ports(n, 10_000).into_iter().enumerate() {
        std::fs::write(
            conf.join(format!("gw{i:03}.yaml")),
            // A stand-in whose port was taken exits at once and stays so: the set-up settles fast.
            fake_profile(&fake, port, "restart:\n  policy: never\n"),
        )
        .unwrap();
    }
    let notify: PathBuf = dir.join("notify.sock");
    let fds = store(&notify);
    let mut daemon = start(dir, &notify, &fds);
    // Every instance settled: running, or fatal (a port in the ephemeral range taken by an outgoing
    // connection before its stand-in bound it); the running ones are adopted after each crash.
    let mut pids = BTreeMap::new();
    wait_every(
        "every instance to settle",
        Duration::from_millis(500),
        || match statuses(dir) {
            Some(s)
                if s.len() == n
                    && s.values()
                        .all(|(st, _)| ["running", "fatal", "exited"].contains(&st.as_str())) =>
            {
                pids = s
                    .into_iter()
                    .filter(|(_, (st, _))| st == "running")
                    .map(|(k, (_, pid))| (k, pid))
                    .collect();
                true
            }
            _ => false,
        },
    );
    let running = pids.len();
    let mut waited = 0;
    wait_every(
        "every running instance's pipes in the store",
        Duration::from_millis(50),
        || {
            let held: std::collections::HashSet<String> =
                fds.lock().unwrap().iter().map(|(n, _)| n.clone()).collect();
            let missing: Vec<&String> = pids
                .keys()
                .filter(|k| {
                    !held.contains(&format!("{k}.out")) || !held.contains(&format!("{k}.err"))
                })
                .collect();
            waited += 1;
            if waited % 100 == 0 {
                eprintln!("{} stored; pipes missing of {missing:?}", held.len());
            }
            missing.is_empty()
        },
    );
    let _ = running;
    let mut times = Vec::new();
    for _ in 0..runs {
        kill(daemon.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = daemon.wait();
        let t0 = Instant::now();
        daemon = start(dir, &notify, &fds);
        wait_every(
            "every instance adopted and running",
            Duration::from_millis(10),
            || {
                statuses(dir).is_some_and(|s| {
                    pids.iter()
                        .all(|(k, pid)| s.get(k).is_some_and(|(st, p)| st == "running" && p == pid))
                })
            },
        );
        times.push(t0.elapsed());
    }
    let handed = fds.lock().unwrap().len();
    println!(
        "adoption of {running} running instances (of {n}) under the fd store ({handed} pipes handed back): from exec to all running, median of {runs}: {:.0} ms (runs: {})",
        ms(median(times.clone())),
        times
            .iter()
            .map(|t| format!("{:.0}", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // SIGTERM: the daemon stops every gateway.
    kill(daemon.id(), nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.wait();
}
