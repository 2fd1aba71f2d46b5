//! What `openclawctl top` costs the daemon, printing figures (no thresholds): `cargo bench --bench top`.
//!
//! With N instances of the stand-in gateway running (2 and 50), the daemon's CPU time (utime +
//! stime from /proc/PID/stat, and its CPU clock in ns) over the same window in three conditions,
//! one after the other:
//!
//! 1. idle: nobody asks anything;
//! 2. `openclawctl top` attached, in a tmux pane of a private tmux server (one `ListInstances` a
//!    second, the `WatchEvents` stream and the selected instance's `TailLogs` stream);
//! 3. a loop of one `openclawctl status` a second (a new connection and a `ListInstances` each).
//!
//! Printed: the CPU of each window in ms, and per second above idle, and the ratio top / status.
//! The promise it checks by eye: `top` costs the daemon no more than a status call a second.
//! Without tmux the part with `top` is skipped with a note.
//!
//! `cargo test --bench top` runs a short version (2 instances, 3 s windows).

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{cpu, fake_gateway, fake_profile, ports, Cpu, Daemon};

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let fake = fake_gateway();
    let tmux = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tmux {
        println!("note: tmux not found: the window with `openclawctl top` is skipped (apt-get install tmux)");
    }
    let (sizes, window): (&[usize], _) = if quick {
        (&[2], Duration::from_secs(3))
    } else {
        (&[2, 50], Duration::from_secs(20))
    };
    for &n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        run(n, window, tmux, &fake, tmp.path());
    }
}

/// The daemon's CPU over `window` while `during` runs (started before, ended after).
fn over(pid: u32, window: Duration, mut tick: impl FnMut()) -> Cpu {
    let before = cpu(pid).unwrap();
    let until = Instant::now() + window;
    let mut next = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next {
            tick();
            next += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = cpu(pid).unwrap();
    Cpu {
        ticks: after.ticks - before.ticks,
        ns: after.ns - before.ns,
    }
}

fn run(n: usize, window: Duration, tmux: bool, fake: &Path, tmp: &Path) {
    let profiles: Vec<(String, String)> = ports(n, 21000)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            (
                format!("gw{i:03}"),
                fake_profile(fake, p, "restart: { policy: never }\n"),
            )
        })
        .collect();
    let d = Daemon::start(tmp, &profiles);
    let running = d.wait_all_running(n);
    let pid = d.child.id();
    // Let the start settle (samplers, first probes).
    std::thread::sleep(Duration::from_secs(2));
    let secs = window.as_secs_f64();
    println!(
        "\n{n} instances ({running} running), windows of {secs:.0} s, daemon pid {pid} (CPU: ms of utime+stime ticks, and of its CPU clock)"
    );
    let idle = over(pid, window, || {});
    print_row("idle", idle, idle, secs);

    let top = tmux.then(|| {
        let sock = tmp.join("tmux.sock");
        let tmux = |args: &[&str]| {
            Command::new("tmux")
                .arg("-S")
                .arg(&sock)
                .args(["-f", "/dev/null"])
                .args(args)
                .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        };
        let command = format!("exec '{}' top", env!("CARGO_BIN_EXE_openclawctl"));
        tmux(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "40",
            &command,
        ]);
        // Attached once its first screen is up (its first list answered).
        std::thread::sleep(Duration::from_secs(2));
        let c = over(pid, window, || {});
        tmux(&["kill-server"]);
        print_row("openclawctl top attached", c, idle, secs);
        c
    });

    let status = over(pid, window, || {
        let _ = d
            .ctl()
            .args(["status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    });
    print_row("openclawctl status once a second", status, idle, secs);
    if let Some(top) = top {
        let above = |c: Cpu| c.ns.saturating_sub(idle.ns) as f64;
        if above(status) > 0.0 {
            println!(
                "  top / status, above idle (CPU clock): {:.2}",
                above(top) / above(status)
            );
        }
    }
}

fn print_row(what: &str, c: Cpu, idle: Cpu, secs: f64) {
    let tick_ms = 1000.0 / common::clk_tck() as f64;
    println!(
        "  {what:<34} {:>8.1} ms ticks  {:>8.2} ms clock  {:>7.3} ms/s above idle",
        c.ticks as f64 * tick_ms,
        c.ns as f64 / 1e6,
        c.ns.saturating_sub(idle.ns) as f64 / 1e6 / secs
    );
}
