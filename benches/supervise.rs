//! Benchmark of the supervisor, printing figures (no thresholds): `cargo bench --bench supervise`.
//!
//! 1. Restart latency after SIGKILL: from the kill until the replacement accepts TCP on the gateway
//!    port, median of 20, for openclaw-supervisord and for runit's runsv (Debian `runit`) running the
//!    same stand-in gateway, as a ratio. Between kills each child stays up 1.5 s, so both supervisors
//!    see a child that had been up: runsv restarts at once, and so does our daemon (the profile's
//!    backoff resets after 1 s of uptime and its start limit is raised for the 20 kills).
//! 2. Idle cost with 500 stand-ins running, for openclaw-supervisord (liveness probes every 10 s, the
//!    default) and, one after the other on the same stand-ins, runit (runsvdir and its runsv),
//!    supervisord and PM2 where installed, with our figure's ratio to each: CPU as utime+stime of
//!    `/proc/PID/stat` over a window of 60 s, the median of 3 windows (a process's own count: it
//!    keeps the time of threads that have ended, which per-thread counters lose), the kernel's
//!    CPU clock of the process beside it for finer steps than a clock tick; RSS and PSS from
//!    `/proc/PID/smaps_rollup`. Children are not counted, only the supervisor's own processes.
//!    `IDLE_INSTANCES`, `IDLE_SECS`, `IDLE_RUNS` and `IDLE_INTERVAL` (our probe interval, e.g. 60s)
//!    change the set-up.
//!
//! 3. The probe's identity check: the CPU time of one kernel lookup of the listener of a loopback
//!    port (`ownership::Diag::listener`, what a probe pays on each new connection before its
//!    request), median of 5 rounds of 20,000 lookups, beside a new loopback TCP connection and its
//!    accept (what a probe on a new connection pays anyway) measured the same way.
//!
//! `cargo test --bench supervise` runs a short version (3 kills; 10 stand-ins, one window of 0.5 s).
//! `cargo bench --bench supervise -- idle ours runit` runs the idle part for those two only.

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::peers::{Pm2, Runit, Supervisord};
use common::{
    alive, clk_tck, cpu, fake_gateway, fake_profile, gateways_under, median, memory, ms, ports,
    reap_leftovers, wait_every, Cpu, Daemon,
};

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
    fn stop(self) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    // `cargo bench --bench supervise -- idle` (or `restart`) runs one part; `ours`, `runit`,
    // `supervisord`, `pm2` choose whom the idle part measures.
    let systems: Vec<&str> = ["ours", "runit", "supervisord", "pm2"]
        .into_iter()
        .filter(|s| args.iter().any(|a| a == s))
        .collect();
    let only = |part: &str| {
        let parts = ["restart", "idle", "identity"];
        !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part)
    };
    let kills = if quick { 3 } else { 20 };
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();

    if only("restart") {
        restart_latency(kills, &fake, tmp.path());
    }
    if only("idle") {
        idle(quick, &fake, tmp.path(), &systems);
    }
    if only("identity") {
        identity(quick);
    }
}

/// The process's CPU time (every thread's user and system time), from the kernel's clock.
fn process_cpu() -> Duration {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
    Duration::from(t)
}

/// CPU time per call of `f`: the median of `rounds` rounds of `n` calls.
fn cpu_per_call(rounds: usize, n: u32, mut f: impl FnMut()) -> Duration {
    let mut per: Vec<Duration> = (0..rounds)
        .map(|_| {
            let before = process_cpu();
            for _ in 0..n {
                f();
            }
            (process_cpu() - before) / n
        })
        .collect();
    per.sort();
    per[per.len() / 2]
}

fn identity(quick: bool) {
    use openclaw_supervisor::supervise::ownership::Diag;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let diag = Diag::default();
    let exact = diag.check();
    let (rounds, n) = if quick { (1, 200) } else { (5, 20_000) };
    println!(
        "probe identity check, a loopback listener ({}; CPU time of this process per call, median of {rounds} rounds of {n}):",
        if exact {
            "sock_diag lookups"
        } else {
            "sock_diag unusable here: /proc/net/tcp"
        }
    );
    let want = diag.listener_blocking(addr);
    assert!(want.is_some(), "the lookup finds the listener");
    let lookup = cpu_per_call(rounds, n, || {
        assert_eq!(diag.listener_blocking(addr), want);
    });
    let connect = cpu_per_call(rounds, n.min(5_000), || {
        let c = TcpStream::connect(addr).unwrap();
        let (a, _) = listener.accept().unwrap();
        drop((c, a));
    });
    println!(
        "  listener lookup: {:.2} µs; new connection and its accept: {:.2} µs (ratio {:.2})",
        lookup.as_secs_f64() * 1e6,
        connect.as_secs_f64() * 1e6,
        lookup.as_secs_f64() / connect.as_secs_f64()
    );
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

/// What the idle part measures, from the environment (defaults: `cargo bench`, then in brackets
/// `cargo test --bench`): `IDLE_INSTANCES` stand-ins (500 [10]), `IDLE_SECS` a window (60 [0.5]),
/// `IDLE_RUNS` windows (3 [1]), `IDLE_INTERVAL` our liveness probe interval (the default, 10s).
struct IdleSettings {
    instances: usize,
    window: Duration,
    runs: usize,
    interval: Option<String>,
}

impl IdleSettings {
    fn from_env(quick: bool) -> IdleSettings {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
                Err(_) => default,
            }
        }
        IdleSettings {
            instances: var("IDLE_INSTANCES", if quick { 10 } else { 500 }),
            window: Duration::from_secs_f64(var("IDLE_SECS", if quick { 0.5 } else { 60.0 })),
            runs: var("IDLE_RUNS", if quick { 1 } else { 3 }).max(1),
            interval: std::env::var("IDLE_INTERVAL").ok(),
        }
    }
}

/// The median of figures (at least one).
fn middle(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One supervisor's idle cost: CPU in % of a core per window (from utime+stime, and from the
/// process CPU clock), the utime+stime ticks of each window, and the most memory seen.
struct IdleFigures {
    cpu: Vec<f64>,
    clock: Vec<f64>,
    ticks: Vec<u64>,
    rss: u64,
    pss: u64,
    processes: usize,
}

impl IdleFigures {
    /// Measures `s.runs` windows back to back, over the processes `own` names at each window's start.
    fn take(s: &IdleSettings, own: impl Fn() -> Vec<u32>) -> IdleFigures {
        let hz = clk_tck() as f64;
        let mut f = IdleFigures {
            cpu: Vec::new(),
            clock: Vec::new(),
            ticks: Vec::new(),
            rss: 0,
            pss: 0,
            processes: 0,
        };
        for _ in 0..s.runs {
            let pids = own();
            let total = |pids: &[u32]| -> Cpu {
                pids.iter()
                    .map(|&p| cpu(p).unwrap_or_else(|| panic!("process {p} ended while measured")))
                    .fold(Cpu::default(), |a, b| a + b)
            };
            let c0 = total(&pids);
            let t = Instant::now();
            std::thread::sleep(s.window);
            let c1 = total(&pids);
            let secs = t.elapsed().as_secs_f64();
            f.ticks.push(c1.ticks - c0.ticks);
            f.cpu.push((c1.ticks - c0.ticks) as f64 / hz / secs * 100.0);
            f.clock.push((c1.ns - c0.ns) as f64 / 1e9 / secs * 100.0);
            let (rss, pss) = pids
                .iter()
                .map(|&p| memory(p))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            f.rss = f.rss.max(rss);
            f.pss = f.pss.max(pss);
            f.processes = pids.len();
        }
        f
    }

    /// The median window's CPU (by utime+stime), in % of a core.
    fn median(&self) -> f64 {
        middle(&self.cpu)
    }

    /// The median window's CPU by the process CPU clock, in % of a core.
    fn clock_median(&self) -> f64 {
        middle(&self.clock)
    }

    fn print(&self, who: &str) {
        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let cpu = sorted(&self.cpu);
        let clock = sorted(&self.clock);
        let mut ticks = self.ticks.clone();
        ticks.sort();
        println!(
            "  {who}: CPU median {:.3}% of a core (min {:.3}%, max {:.3}%; {} ticks of utime+stime in the median window; the process CPU clock says {:.3}%), RSS {:.1} MB, PSS {:.1} MB ({} process{})",
            cpu[cpu.len() / 2],
            cpu[0],
            cpu[cpu.len() - 1],
            ticks[ticks.len() / 2],
            clock[clock.len() / 2],
            self.rss as f64 / 1e6,
            self.pss as f64 / 1e6,
            self.processes,
            if self.processes == 1 { "" } else { "es" },
        );
    }
}

/// Our figures beside a peer's: the ratio of the medians, or why there is none. The ratio of the
/// CPU clock figures is printed too: a peer that idles under a tick a minute shows 0 ticks.
fn ratio(ours: &Option<IdleFigures>, peer: &str, theirs: Result<IdleFigures, String>) {
    let t = match theirs {
        Ok(t) => t,
        Err(why) => return println!("  {peer}: {why}; no ratio"),
    };
    t.print(peer);
    let Some(o) = ours else { return };
    let by_ticks = if t.median() > 0.0 {
        format!("{:.2}", o.median() / t.median())
    } else {
        "none (0 ticks)".into()
    };
    let by_clock = if t.clock_median() > 0.0 {
        format!("{:.2}", o.clock_median() / t.clock_median())
    } else {
        "none".into()
    };
    println!(
        "  idle CPU ratio openclaw-supervisord / {peer}: {by_ticks} (by the CPU clocks: {by_clock})"
    );
}

fn idle(quick: bool, fake: &Path, tmp: &Path, systems: &[&str]) {
    let s = IdleSettings::from_env(quick);
    let want = |name: &str| systems.is_empty() || systems.contains(&name);
    let n = s.instances;
    let settle = Duration::from_secs(if quick { 1 } else { 10 });
    println!(
        "idle, {n} stand-in gateways, {} window{} of {:.1} s each (median printed), CPU of the supervisor's own processes (utime+stime of /proc/PID/stat, CLK_TCK {}), memory from /proc/PID/smaps_rollup:",
        s.runs,
        if s.runs == 1 { "" } else { "s" },
        s.window.as_secs_f64(),
        clk_tck(),
    );
    // 500 blocks of 111 ports cannot all lie below the kernel's ephemeral range, and the daemon's own
    // probe connections hold ephemeral ports: a gateway whose port such a connection took at its
    // start cannot bind. Every supervisor leaves such a gateway exited instead of restarting it in
    // a loop, which is not idle; the count of those running is printed.
    let ours = want("ours").then(|| {
        let health = s
            .interval
            .as_ref()
            .map(|i| format!("health: {{ interval: {i} }}\n"))
            .unwrap_or_default();
        let profiles: Vec<(String, String)> = ports(n, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let extra = format!("restart: {{ policy: never }}\n{health}");
                (format!("bot{i:03}"), fake_profile(fake, p, &extra))
            })
            .collect();
        let d = Daemon::start(&tmp.join("idle-ours"), &profiles);
        let running = d.wait_all_running(n);
        std::thread::sleep(settle);
        let pid = d.child.id();
        let f = IdleFigures::take(&s, || vec![pid]);
        let gateways = gateways_under(pid, fake);
        drop(d);
        reap_leftovers(&gateways, fake);
        f.print(&format!(
            "openclaw-supervisord {} ({running} running, liveness probes every {})",
            env!("CARGO_PKG_VERSION"),
            s.interval.as_deref().unwrap_or("10s")
        ));
        f
    });

    if want("runit") {
        if Runit::found() {
            let r = Runit::start(&tmp.join("idle-runit"), fake, &ports(n, 1100));
            let running = r.wait_settled(fake);
            std::thread::sleep(settle);
            let f = IdleFigures::take(&s, || r.own_pids());
            r.stop(fake);
            let who = format!(
                "runit {} ({running} running; runsvdir and every runsv)",
                Runit::version()
            );
            ratio(&ours, &who, Ok(f));
        } else {
            ratio(
                &ours,
                "runit",
                Err("runsvdir not found (apt-get install runit)".into()),
            );
        }
    }
    if want("supervisord") {
        match Supervisord::found() {
            Some((d, c)) => {
                let mut sd = Supervisord::start(
                    &d,
                    &c,
                    &tmp.join("idle-supervisord"),
                    fake,
                    &ports(n, 1100),
                );
                let running = sd.wait_all_running(n);
                std::thread::sleep(settle);
                let pid = sd.pid();
                let f = IdleFigures::take(&s, || vec![pid]);
                sd.stop(fake);
                let who = format!(
                    "supervisord {} ({running} running)",
                    Supervisord::version(&d)
                );
                ratio(&ours, &who, Ok(f));
            }
            None => ratio(
                &ours,
                "supervisord",
                Err("supervisord not found (pip install supervisor)".into()),
            ),
        }
    }
    if want("pm2") {
        match Pm2::found() {
            Some(pm2) => {
                let p = Pm2::start(&pm2, &tmp.join("idle-pm2"), fake, &ports(n, 1100));
                let running = p.wait_settled(n, fake);
                std::thread::sleep(settle);
                let pid = p.pid();
                let f = IdleFigures::take(&s, || vec![pid]);
                let who = format!("PM2 {} ({running} running; its God Daemon)", p.version());
                p.stop(fake);
                ratio(&ours, &who, Ok(f));
            }
            None => ratio(
                &ours,
                "PM2",
                Err("pm2 not found (npm install -g pm2)".into()),
            ),
        }
    }
}
