//! Benchmark of the supervisor, printing figures (no thresholds): `cargo bench --bench supervise`.
//!
//! 1. Restart latency after SIGKILL: from the kill until the replacement accepts TCP on the gateway
//!    port, median of 20, for openclaw-supervisord and for runit's runsv (Debian `runit`) running the
//!    same stand-in gateway, as a ratio. Between kills each child stays up 1.5 s, so both supervisors
//!    see a child that had been up: runsv restarts at once, and so does our daemon (the profile's
//!    backoff resets after 1 s of uptime and its start limit is raised for the 20 kills).
//! 2. The daemon's own CPU and RSS idle, with 2 and with 500 instances running: CPU over five windows
//!    of 12 s (the median printed, with the least and the most), RSS the highest seen.
//!
//! `cargo test --bench supervise` runs a short version (3 kills, 10 instances, 5 windows of 0.4 s).

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{alive, fake_gateway, fake_profile, median, ms, ports, wait_every, Daemon};

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(100)).is_ok()
}

fn wait(what: &str, cond: impl FnMut() -> bool) {
    wait_every(what, Duration::from_millis(2), cond)
}

/// The processes holding a socket that listens on `port`.
fn listener_pids(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let p = f
                .get(1)
                .and_then(|l| u16::from_str_radix(l.rsplit(':').next()?, 16).ok());
            if f.get(3) == Some(&"0A") && p == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        if fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.contains(&l.to_string_lossy().into_owned()))
        }) {
            out.push(pid);
        }
    }
    out
}

/// Kills the child `pid_of()` names `n` times, timing each restart until the port accepts again.
fn restarts(n: usize, port: u16, pid_of: impl Fn() -> Option<u32>) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..n {
        wait("the child to accept", || accepts(port));
        std::thread::sleep(Duration::from_millis(1500));
        let pid = pid_of().expect("a child pid");
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Gone means reaped: a killed multi-threaded process shows as a zombie while its other threads
        // still hold its sockets, and a connection could reach the dying listener.
        wait("the old child to be reaped", || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        wait("the replacement to accept", || accepts(port));
        out.push(t.elapsed());
        // Outside the timing: the answer came from a new child, not from some other listener.
        let owner = listener_pids(port);
        assert!(
            !owner.is_empty() && !owner.contains(&pid),
            "port {port} is served by {owner:?}, not by a replacement of {pid}"
        );
    }
    out
}

impl Daemon {
    /// CPU time used by all its threads (from the scheduler's own count, in nanoseconds; the
    /// clock ticks of /proc/PID/stat are too coarse for an idle daemon) and RSS.
    fn usage(&self) -> (Duration, u64) {
        let pid = self.child.id();
        let mut ns: u64 = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let stat =
                std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        (Duration::from_nanos(ns), rss_kb * 1024)
    }

    fn stop(self) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    // `cargo bench --bench supervise -- idle` (or `restart`) runs one part.
    let only = |part: &str| {
        let parts = ["restart", "idle"];
        !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part)
    };
    let kills = if quick { 3 } else { 20 };
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();

    if only("restart") {
        restart_latency(kills, &fake, tmp.path());
    }
    if only("idle") {
        idle(quick, &fake, tmp.path());
    }
}

fn restart_latency(kills: usize, fake: &Path, tmp: &Path) {
    let port = ports(1, 31_000)[0];
    let d = Daemon::start(
        &tmp.join("ours"),
        &[(
            "main".into(),
            fake_profile(
                fake,
                port,
                "restart:\n  backoff: { reset_after: 1s }\n  start_limit: { burst: 1000, interval: 5m }\n",
            ),
        )],
    );
    d.wait_all_running(1);
    let ours = restarts(kills, port, || {
        d.statuses()
            .first()
            .and_then(|s| s["pid"].as_u64())
            .map(|p| p as u32)
    });
    d.stop();
    let ours = median(ours);
    println!(
        "restart latency after SIGKILL, openclaw-supervisord: median {:.2} ms of {kills}",
        ms(ours)
    );

    // ... and runit's runsv on the same child.
    let runsv = Command::new("runsv")
        .arg("--help")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status();
    if runsv.is_err() {
        println!("restart latency, runit: runsv not found (apt-get install runit); no ratio");
    } else {
        let sv = tmp.join("runit/fake");
        std::fs::create_dir_all(&sv).unwrap();
        let run = sv.join("run");
        std::fs::write(
            &run,
            format!("#!/bin/sh\nexec {} --port {port}\n", fake.display()),
        )
        .unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&run).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut runsv = Command::new("runsv")
            .arg(&sv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pidfile = sv.join("supervise/pid");
        let theirs = restarts(kills, port, || {
            std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        // Take the service down and wait for its child before ending runsv, or the child outlives it.
        let last = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let _ = Command::new("sv")
            .arg("down")
            .arg(&sv)
            .stdout(Stdio::null())
            .status();
        if let Some(pid) = last {
            wait("runit's child to stop", || !alive(pid));
        }
        let _ = runsv.kill();
        let _ = runsv.wait();
        let theirs = median(theirs);
        println!(
            "restart latency after SIGKILL, runit runsv: median {:.2} ms of {kills}",
            ms(theirs)
        );
        println!(
            "restart latency ratio openclaw-supervisord / runit: {:.2}",
            ours.as_secs_f64() / theirs.as_secs_f64()
        );
    }
}

fn idle(quick: bool, fake: &Path, tmp: &Path) {
    // Five windows of 12 s (quick: 0.4 s) in one minute; the median is printed.
    let window = Duration::from_millis(if quick { 400 } else { 12_000 });
    for n in [2usize, if quick { 10 } else { 500 }] {
        let dir = tmp.join(format!("idle-{n}"));
        // 500 blocks of 111 ports cannot all lie below the kernel's ephemeral range, and the
        // daemon's own probe connections hold ephemeral ports: a gateway whose port such a
        // connection took at its start cannot bind. It is left exited (`policy: never`) instead of
        // crash-looping, which is not idle; the count of those running is printed.
        let profiles: Vec<(String, String)> = ports(n, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    format!("bot{i:03}"),
                    fake_profile(fake, p, "restart: { policy: never }\n"),
                )
            })
            .collect();
        let d = Daemon::start(&dir, &profiles);
        d.wait_all_running(n);
        // Let start-up work settle (readiness probes, log files) before measuring.
        std::thread::sleep(Duration::from_secs(if quick { 1 } else { 10 }));
        let running = d
            .statuses()
            .iter()
            .filter(|i| i["state"] == "running")
            .count();
        let mut cpu = Vec::new();
        let mut rss = 0;
        for _ in 0..5 {
            let (cpu0, _) = d.usage();
            let t = Instant::now();
            std::thread::sleep(window);
            let (cpu1, r) = d.usage();
            cpu.push((cpu1 - cpu0).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0);
            rss = rss.max(r);
        }
        cpu.sort_by(f64::total_cmp);
        println!(
            "idle daemon with {n} instances ({running} running), 5 windows of {:.1} s: CPU median {:.3}% of a core (min {:.3}%, max {:.3}%), RSS {:.1} MB",
            window.as_secs_f64(),
            cpu[2],
            cpu[0],
            cpu[4],
            rss as f64 / 1e6
        );
        d.stop();
    }
}
