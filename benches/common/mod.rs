//! Shared helpers of the benchmarks: the stand-in gateway, free ports, the median, and the real
//! daemon started on a directory of profiles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
