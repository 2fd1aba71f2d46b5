//! The service manager's fd store: under systemd each gateway's pipes are stored with the service
//! manager, so what a gateway writes while no daemon runs waits in them, and the next daemon reads
//! it on (adopted gateway) or drains it into the log (gateway died meanwhile). The test plays the
//! service manager: a datagram socket given as NOTIFY_SOCKET that keeps the fds it is sent by
//! FDNAME and honours FDSTOREREMOVE, and hands them back to the next daemon at fds 3.. with
//! LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, as systemd does.

use crate::common;
use crate::manager;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;

use common::{alive, bin_path, fake_gateway, free_ports, stdout, wait_for, Daemon, Scene};
use nix::sys::signal::Signal;

/// The service manager's end: its notify socket and its fd store.
pub struct Store {
    socket: UnixDatagram,
    path: PathBuf,
    /// The stored fds, in the order they came, by FDNAME.
    pub fds: Vec<(String, OwnedFd)>,
    /// Every datagram's text.
    pub seen: Vec<String>,
}

impl Store {
    pub fn bind(dir: &std::path::Path) -> Store {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Store {
            socket,
            path,
            fds: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Takes every datagram waiting: stores, removes.
    pub fn pump(&mut self) {
        while let Some((text, fds)) =
            manager::receive(&self.socket, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
        {
            manager::apply(&mut self.fds, &text, fds);
            self.seen.push(text);
        }
    }

    /// Waits until the store satisfies `pred`.
    pub fn until(&mut self, what: &str, pred: impl Fn(&Store) -> bool) {
        wait_for(what, || {
            self.pump();
            pred(self).then_some(())
        });
    }

    pub fn get(&self, name: &str) -> Option<&OwnedFd> {
        self.fds.iter().find(|(n, _)| n == name).map(|(_, fd)| fd)
    }

    pub fn names(&self) -> Vec<String> {
        self.fds.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The bytes waiting in the stored pipe `name` (FIONREAD on the store's copy).
    pub fn unread(&self, name: &str) -> usize {
        let fd = self
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not stored"));
        let mut n: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let r = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
        assert_eq!(r, 0);
        n as usize
    }

    /// Starts the daemon of `scene` as systemd would, handing it the stored fds.
    pub fn start(&mut self, scene: &Scene, extra: &[&str]) -> Daemon {
        self.pump();
        let socket = scene.path("run/supervisor.sock");
        let stderr = scene.path("daemon.stderr");
        let mut cmd = manager::command(&bin_path("openclaw-supervisord"), &self.fds);
        cmd.args(["--config-dir", "supervisor.d", "--socket"])
            .arg(&socket)
            .arg("--log-dir")
            .arg(scene.path("logs"))
            .arg("--state-dir")
            .arg(scene.path("daemon-state"))
            .args(extra)
            .current_dir(scene.root.path())
            .env("HOME", scene.home())
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &self.path)
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("start the daemon");
        let d = Daemon {
            child: Some(child),
            socket,
            logs: scene.path("logs"),
            stderr,
        };
        wait_for("the daemon's API to answer", || {
            d.ctl(&["status", "--json"]).status.success().then_some(())
        });
        d
    }
}

/// SIGKILLs a gateway the test may leave behind (a crashed daemon's, kept), passed or failed.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

fn signal(pid: u32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("a pid") as u32
}

fn daemon_log(d: &Daemon) -> String {
    std::fs::read_to_string(&d.stderr).unwrap_or_default()
}

/// `main`, a stand-in that writes `tick K` every 20 ms, running under a daemon the store serves.
fn ticking(scene: &Scene, store: &mut Store) -> (Daemon, u32) {
    let port = free_ports(1)[0];
    scene.profile(
        "main.yaml",
        &format!(
            "port: {port}\nstate_dir: ~/state/main\ncommand: [{:?}, --tick-ms, \"20\"]\n",
            fake_gateway().display().to_string()
        ),
    );
    let d = store.start(scene, &[]);
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    store.until("main's pipes in the store", |s| {
        s.get("main.out").is_some() && s.get("main.err").is_some()
    });
    (d, pid_of(&s))
}

/// The numbers of the `tick K` lines of `log` (the file's format: `TIME stdout | tick K`).
fn ticks(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once(" stdout | tick ")?.1.trim().parse().ok())
        .collect()
}

/// SIGKILLs the daemon once every line the gateway wrote is in the log file, so that none is lost
/// in the daemon's hands (read, not yet written): the gateway is paused, its pipe read empty (the
/// daemon's runtime is one thread: a status answered after that has the line in its tail), and the
/// last tick of the tail is waited for in the file. Then the daemon is paused, the gateway goes on
/// (a stopped gateway would get SIGHUP when the daemon's death orphans its process group), and the
/// daemon is killed. Returns that tick.
fn crash_with_every_line_written(d: &mut Daemon, store: &mut Store, gateway: u32) -> u64 {
    signal(gateway, Signal::SIGSTOP);
    wait_for("the daemon to read main's pipe empty", || {
        (store.unread("main.out") == 0).then_some(())
    });
    let tail = stdout(&d.ctl(&["logs", "main", "-n", "0"]));
    let last = tail
        .lines()
        .rev()
        .find_map(|l| l.split_once("| tick ")?.1.trim().parse::<u64>().ok())
        .expect("ticks in the tail");
    wait_for("the last tick in the log file", || {
        ticks(&d.log("main")).contains(&last).then_some(())
    });
    signal(d.pid(), Signal::SIGSTOP);
    signal(gateway, Signal::SIGCONT);
    signal(d.pid(), Signal::SIGKILL);
    d.wait_exit("the SIGKILLed daemon to be gone");
    last
}

/// Asserts that `ticks` is 1, 2, ... with no gap and no repeat.
fn assert_every_tick_once(ticks: &[u64]) {
    for (i, k) in ticks.iter().enumerate() {
        assert_eq!(*k, i as u64 + 1, "tick {} out of place in {ticks:?}", i + 1);
    }
}

#[test]
fn lines_written_while_no_daemon_ran_reach_the_log_of_the_adopted_gateway() {
    let scene = Scene::new();
    let mut store = Store::bind(scene.root.path());
    let (mut d, gateway) = ticking(&scene, &mut store);
    let _reap = Reap(gateway);
    // The pipe was raised from the kernel's 64 KiB (to 1 MiB, or pipe-max-size for non-root).
    let capacity = nix::fcntl::fcntl(
        store.get("main.out").unwrap(),
        nix::fcntl::FcntlArg::F_GETPIPE_SZ,
    )
    .unwrap();
    println!("main's stdout pipe holds {capacity} bytes");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(capacity, 1 << 20);
    }
    let before = crash_with_every_line_written(&mut d, &mut store, gateway);
    // The gateway writes on, into the pipe the store keeps: several lines wait there.
    wait_for("ticks waiting in the stored pipe", || {
        (store.unread("main.out") >= 5 * "tick 99\n".len()).then_some(())
    });
    assert!(alive(gateway));
    let d = store.start(&scene, &[]);
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    assert_eq!(pid_of(&s), gateway, "{s}");
    assert_eq!(s["restarts"], 0, "{s}");
    let log = wait_for("ticks past the crash in the log", || {
        let log = d.log("main");
        (ticks(&log).last().copied().unwrap_or(0) > before + 5).then_some(log)
    });
    assert_every_tick_once(&ticks(&log));
    assert!(!log.contains("output not captured since adoption"), "{log}");
    // The store still holds the adopted gateway's pipes, and only them.
    store.pump();
    let mut names = store.names();
    names.sort();
    assert_eq!(names, ["main.err", "main.out"]);
}

#[test]
fn lines_of_a_gateway_that_died_while_no_daemon_ran_are_in_its_log() {
    let scene = Scene::new();
    let mut store = Store::bind(scene.root.path());
    let (mut d, gateway) = ticking(&scene, &mut store);
    let _reap = Reap(gateway);
    let before = crash_with_every_line_written(&mut d, &mut store, gateway);
    wait_for("ticks waiting in the stored pipe", || {
        (store.unread("main.out") >= 5 * "tick 99\n".len()).then_some(())
    });
    signal(gateway, Signal::SIGKILL);
    wait_for("the gateway to be gone", || (!alive(gateway)).then_some(()));
    let d = store.start(&scene, &[]);
    let s = d.wait_status("main", "running again", |s| {
        s["state"] == "running" && s["pid"] != gateway
    });
    assert_eq!(s["restarts"], 0, "{s}");
    let log = d.log("main");
    // Up to the new gateway's start: the old one's ticks, every one, the drained ones included.
    let started = format!("started pid {}", s["pid"]);
    let old = &log[..log.find(&started).expect("the new start in the log")];
    let old_ticks = ticks(old);
    assert!(old_ticks.last().copied().unwrap_or(0) > before + 4, "{old}");
    assert_every_tick_once(&old_ticks);
    assert!(
        old.contains("lines its gateway wrote while no daemon ran"),
        "{old}"
    );
    // The dead gateway's pipes left the store; the new one's came in.
    store.until("the new gateway's pipes, only", |s| {
        s.fds.len() == 2 && s.get("main.out").is_some() && s.get("main.err").is_some()
    });
    let removed = store
        .seen
        .iter()
        .filter(|m| m.contains("FDSTOREREMOVE=1\nFDNAME=main.out"))
        .count();
    assert!(removed >= 1, "{:?}", store.seen);
}

#[test]
fn a_stored_fd_that_is_not_a_pipe_is_refused_and_the_gateway_still_adopted() {
    let scene = Scene::new();
    let mut store = Store::bind(scene.root.path());
    let (mut d, gateway) = ticking(&scene, &mut store);
    let _reap = Reap(gateway);
    signal(d.pid(), Signal::SIGKILL);
    d.wait_exit("the SIGKILLed daemon to be gone");
    // A hostile host hands a regular file under main.out, and an unknown name beside it.
    let file: OwnedFd = std::fs::File::create(scene.path("not-a-pipe"))
        .unwrap()
        .into();
    let planted: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    for (name, fd) in store.fds.iter_mut() {
        if name == "main.out" {
            *fd = file.try_clone().unwrap();
        }
    }
    store.fds.push(("stranger.out".into(), planted));
    let d = store.start(&scene, &[]);
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    assert_eq!(pid_of(&s), gateway, "{s}");
    let text = daemon_log(&d);
    assert!(
        text.contains("refusing the fd the service manager stored as \"main.out\": not a pipe"),
        "{text}"
    );
    assert!(text.contains("\"stranger.out\""), "{text}");
    // Both refused names left the store; main's stderr, a real pipe, stays with its gateway.
    store.until("the refused fds removed", |s| {
        s.get("main.out").is_none() && s.get("stranger.out").is_none()
    });
    assert!(store.get("main.err").is_some());
    // The daemon serves on, and stops the gateway it adopted.
    let mut d = d;
    assert_eq!(d.terminate(), Some(0));
    assert!(!alive(gateway));
}

/// `openclaw-supervisord stop-leftovers` (the units' ExecStopPost) as systemd runs it after the
/// service's stop: with `result` as SERVICE_RESULT.
fn stop_leftovers(scene: &Scene, result: &str) -> std::process::Output {
    Command::new(bin_path("openclaw-supervisord"))
        .args(["--config-dir", "supervisor.d", "--socket"])
        .arg(scene.path("run/supervisor.sock"))
        .arg("--state-dir")
        .arg(scene.path("daemon-state"))
        .arg("stop-leftovers")
        .current_dir(scene.root.path())
        .env("HOME", scene.home())
        .env("SERVICE_RESULT", result)
        .output()
        .unwrap()
}

/// `main`, a stand-in that ignores SIGTERM (its stop waits 5 minutes), under a daemon that keeps
/// it on a crash.
fn stubborn(scene: &Scene) -> (Daemon, u32) {
    let port = free_ports(1)[0];
    scene.profile(
        "main.yaml",
        &format!(
            "port: {port}\nstate_dir: ~/state/main\ncommand: [{:?}, --ignore-sigterm]\nstop:\n  timeout: 5m\n",
            fake_gateway().display().to_string()
        ),
    );
    let d = scene.daemon_with_env(&[], &[("OPENCLAW_SUPERVISOR_ON_CRASH", "keep")]);
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    (d, pid_of(&s))
}

#[test]
fn exec_stop_post_ends_what_a_hung_stop_left_and_nothing_after_a_crash() {
    // A stop that hangs (the gateway ignores SIGTERM), cut short by a SIGKILL of the daemon alone
    // (systemd at TimeoutStopSec under KillMode=process): the gateway is ended.
    let scene = Scene::new();
    let (mut d, gateway) = stubborn(&scene);
    let _reap = Reap(gateway);
    signal(d.pid(), Signal::SIGTERM);
    wait_for("the daemon to be stopping", || {
        scene.path("daemon-state/stopping").exists().then_some(())
    });
    signal(d.pid(), Signal::SIGKILL);
    d.wait_exit("the SIGKILLed daemon to be gone");
    assert!(alive(gateway));
    let out = stop_leftovers(&scene, "timeout");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        stdout(&out).contains("did not finish its stop"),
        "{}",
        stdout(&out)
    );
    wait_for("the gateway to be ended", || {
        (!alive(gateway)).then_some(())
    });
    assert!(!scene.path("daemon-state/stopping").exists());

    // A crash (no stop asked): the gateway is left for the next daemon to adopt.
    let scene = Scene::new();
    let (mut d, gateway) = stubborn(&scene);
    let _reap = Reap(gateway);
    signal(d.pid(), Signal::SIGKILL);
    d.wait_exit("the SIGKILLed daemon to be gone");
    let out = stop_leftovers(&scene, "signal");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(stdout(&out).contains("nothing to end"), "{}", stdout(&out));
    assert!(alive(gateway), "a crashed daemon's gateway was ended");
}
