//! The daemon supervising real child processes (the stand-in gateway built by cargo), observed as an
//! operator would: `openclawctl status`, the instance log, and the process table.

use crate::common;

use common::{
    alive, environ, fake_gateway, free_ports, pids_with_env, stderr, stdout, wait_for, Scene,
};

/// A profile running the stand-in gateway with `args`, plus extra YAML.
fn profile(scene: &Scene, name: &str, port: u16, args: &[&str], extra: &str) {
    let mut cmd = vec![format!("{:?}", fake_gateway().display().to_string())];
    cmd.extend(args.iter().map(|a| format!("{a:?}")));
    scene.profile(
        &format!("{name}.yaml"),
        &format!(
            "port: {port}\nstate_dir: ~/state/{name}\ncommand: [{}]\n{extra}",
            cmd.join(", ")
        ),
    );
}

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("a pid") as u32
}

fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn sigkill_of_a_child_is_followed_by_a_restart() {
    let scene = Scene::new();
    let ports = free_ports(2);
    profile(&scene, "main", ports[0], &[], "");
    profile(&scene, "rescue", ports[1], &[], "");
    let d = scene.daemon();
    let first = d.wait_status("main", "running", |s| s["state"] == "running");
    let rescue = d.wait_status("rescue", "running", |s| s["state"] == "running");
    kill(pid_of(&first), nix::sys::signal::Signal::SIGKILL);
    let again = d.wait_status("main", "running again with a new pid", |s| {
        s["state"] == "running" && s["pid"] != first["pid"]
    });
    assert_eq!(again["restarts"], 1);
    assert_eq!(again["last_exit"], "signal SIGKILL");
    assert!(alive(pid_of(&again)));
    // The other instance was not touched.
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
    // The replacement answers on the gateway port.
    std::net::TcpStream::connect(("127.0.0.1", ports[0])).expect("the new child listens");
}

#[test]
fn a_crash_loop_backs_off_and_turns_fatal() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(
        &scene,
        "crashy",
        ports[0],
        &["--exit-code", "3"],
        "restart:\n  backoff: { initial: 100ms, max: 400ms }\n  start_limit: { burst: 5, interval: 5m }\n",
    );
    let d = scene.daemon();
    let s = d.wait_status("crashy", "fatal", |s| s["state"] == "fatal");
    assert_eq!(s["last_exit"], "exit code 3");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("started 5 times within 5m: giving up (start limit)"),
        "{s}"
    );
    assert_eq!(s["restarts"], 4);
    // The first restart is immediate, the next ones wait longer each time (jitter stays within
    // [base/2, base], so the waits never shrink).
    let log = d.log("crashy");
    let waits: Vec<u128> = log
        .lines()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .map(|w| humantime::parse_duration(w).unwrap().as_millis())
        .collect();
    assert_eq!(waits.len(), 3, "{log}");
    assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    assert!(waits.iter().all(|w| *w <= 400), "{waits:?}");
}

#[test]
fn exit_78_is_fatal_at_once() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(&scene, "broken", ports[0], &["--exit-code", "78"], "");
    let d = scene.daemon();
    let s = d.wait_status("broken", "fatal", |s| s["state"] == "fatal");
    assert_eq!(s["restarts"], 0);
    assert_eq!(s["last_exit"], "exit code 78");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("exited with code 78 (EX_CONFIG: a config error)"),
        "{s}"
    );
}

#[test]
fn a_hung_child_is_restarted_by_its_liveness_probe() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(
        &scene,
        "hangs",
        ports[0],
        &["--hang-after-ms", "300"],
        "health: { interval: 200ms, timeout: 200ms, failure_threshold: 2 }\n",
    );
    let d = scene.daemon();
    let first = d.wait_status("hangs", "running", |s| s["state"] == "running");
    let s = d.wait_status("hangs", "restarted", |s| {
        s["restarts"].as_u64() >= Some(1) && s["pid"] != first["pid"]
    });
    assert!(!alive(pid_of(&first)), "the hung child is gone");
    let log = d.log("hangs");
    assert!(
        log.contains("unhealthy: 2 liveness probes failed in a row"),
        "{log}"
    );
    let _ = s;
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_timeout() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(
        &scene,
        "stubborn",
        ports[0],
        &["--ignore-sigterm"],
        "stop: { timeout: 500ms }\n",
    );
    let d = scene.daemon();
    let s = d.wait_status("stubborn", "running", |s| s["state"] == "running");
    let out = d.ctl(&["stop", "stubborn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "stubborn: stopped\n");
    let after = d.status("stubborn");
    assert_eq!(after["state"], "stopped");
    assert_eq!(after["last_exit"], "signal SIGKILL");
    assert!(!alive(pid_of(&s)));
    assert!(d
        .log("stubborn")
        .contains("still running after 500ms: SIGKILL"));
}

#[test]
fn a_setsid_grandchild_is_gone_after_stop() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(
        &scene,
        "broker",
        ports[0],
        &["--spawn-setsid-grandchild"],
        "",
    );
    let d = scene.daemon();
    d.wait_status("broker", "running", |s| s["state"] == "running");
    let grandchild: u32 = wait_for("the grandchild's pid in the log", || {
        d.log("broker")
            .lines()
            .find_map(|l| l.split("spawned setsid grandchild pid=").nth(1))
            .and_then(|p| p.trim().parse().ok())
    });
    assert!(alive(grandchild));
    let out = d.ctl(&["stop", "broker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !alive(grandchild),
        "the setsid grandchild outlived the stop"
    );
    let state = scene.home().join("state/broker").display().to_string();
    assert_eq!(
        pids_with_env("OPENCLAW_STATE_DIR", &state),
        Vec::<u32>::new()
    );
}

#[test]
fn the_daemon_leaves_no_zombies() {
    let scene = Scene::new();
    let ports = free_ports(2);
    profile(
        &scene,
        "crashy",
        ports[0],
        &["--spawn-setsid-grandchild", "--crash-after-ms", "200"],
        "restart:\n  backoff: { initial: 50ms, max: 100ms }\n  start_limit: { burst: 6, interval: 5m }\n",
    );
    profile(&scene, "calm", ports[1], &["--spawn-setsid-grandchild"], "");
    let d = scene.daemon();
    d.wait_status("crashy", "fatal after its crashes", |s| {
        s["state"] == "fatal"
    });
    let daemon = d.pid();
    let zombies = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    let f: Vec<&str> = s
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect();
                    f.first() == Some(&"Z") && f.get(1) == Some(&daemon.to_string().as_str())
                })
            })
            .collect()
    };
    // Reaping follows SIGCHLD; give it the deadline, never a bare sleep.
    wait_for("no zombie children of the daemon", || {
        zombies().is_empty().then_some(())
    });
}

#[test]
fn daemon_sigterm_stops_everything_and_exits_0() {
    let scene = Scene::new();
    let ports = free_ports(2);
    profile(&scene, "main", ports[0], &["--spawn-setsid-grandchild"], "");
    profile(
        &scene,
        "rescue",
        ports[1],
        &["--ignore-sigterm"],
        "stop: { timeout: 300ms }\n",
    );
    let mut d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    d.wait_status("rescue", "running", |s| s["state"] == "running");
    let socket = d.socket.clone();
    assert_eq!(d.terminate(), Some(0));
    for name in ["main", "rescue"] {
        let state = scene.home().join("state").join(name).display().to_string();
        assert_eq!(
            pids_with_env("OPENCLAW_STATE_DIR", &state),
            Vec::<u32>::new(),
            "{name} left processes"
        );
    }
    assert!(!socket.exists(), "the socket file is removed");
}

#[test]
fn a_sigkilled_daemon_takes_its_children_with_it() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(&scene, "main", ports[0], &[], "");
    let mut d = scene.daemon();
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    let mut child = d.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the gateway to die with the daemon", || {
        (!alive(pid_of(&s))).then_some(())
    });
}

#[test]
fn the_log_file_holds_the_childs_lines_in_order() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(
        &scene,
        "chatty",
        ports[0],
        &["--flood", "5000", "--stderr-line", "to stderr"],
        "",
    );
    let d = scene.daemon();
    d.wait_status("chatty", "running", |s| s["state"] == "running");
    wait_for("the flood in the log", || {
        d.log("chatty")
            .contains("flood done: 5000 lines")
            .then_some(())
    });
    let log = d.log("chatty");
    let mut seen = Vec::new();
    let mut dropped = 0u64;
    for line in log.lines() {
        // 2026-11-25T06:10:00.123Z stdout | flood line 7
        let (head, text) = line.split_once(" | ").expect("timestamp, stream, text");
        let mut head = head.split(' ');
        let time = head.next().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{line}");
        let stream = head.next().unwrap();
        if let Some(n) = text.strip_prefix("flood line ") {
            assert_eq!(stream, "stdout");
            seen.push(n.parse::<u64>().unwrap());
        }
        if let Some(rest) = text.strip_prefix("dropped ") {
            dropped += rest.split(' ').next().unwrap().parse::<u64>().unwrap();
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "lines out of order");
    assert_eq!(
        seen.len() as u64 + dropped,
        5000,
        "every line is in the log or counted as dropped"
    );
    assert!(log.contains("stderr | to stderr"), "{log}");
}

#[test]
fn a_missing_executable_is_that_instances_error_only() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.profile(
        "ghost.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/ghost\ncommand: [no-such-gateway-binary, run]\n",
            ports[0]
        ),
    );
    profile(&scene, "main", ports[1], &[], "");
    let d = scene.daemon();
    let s = d.wait_status("ghost", "fatal", |s| s["state"] == "fatal");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .starts_with("`no-such-gateway-binary` not found on PATH: "),
        "{s}"
    );
    d.wait_status("main", "running", |s| s["state"] == "running");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(&scene, "main", ports[0], &[], "");
    let d = scene.daemon();
    let first = d.wait_status("main", "running", |s| s["state"] == "running");
    let mut second = scene.spawn_daemon();
    let code = wait_for("the second daemon to exit", || {
        second.child.as_mut().unwrap().try_wait().ok().flatten()
    });
    second.child = None;
    assert_eq!(code.code(), Some(1));
    let err = std::fs::read_to_string(&second.stderr).unwrap();
    assert!(
        err.contains("another openclaw-supervisord is serving on"),
        "{err}"
    );
    // The first daemon and its gateway are untouched.
    assert_eq!(d.status("main")["pid"], first["pid"]);
}

#[test]
fn status_shows_the_process_trees_memory() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(&scene, "main", ports[0], &["--spawn-setsid-grandchild"], "");
    let d = scene.daemon();
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    assert!(s["rss_bytes"].as_u64().unwrap() > 0, "{s}");
    let table = stdout(&d.ctl(&["status"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "PORT", "OPENCLAW", "CPU", "RSS", "LAST",
            "EXIT"
        ]
    );
    assert!(table.lines().nth(1).unwrap().starts_with("main"), "{table}");
}

#[test]
fn logs_rotate_by_size_and_keep_the_newest_lines() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(&scene, "chatty", ports[0], &["--flood", "3000"], "");
    let d = scene.daemon_with(&["--log-max-bytes", "20000", "--log-keep", "2"]);
    d.wait_status("chatty", "running", |s| s["state"] == "running");
    wait_for("the flood in the log", || {
        d.log("chatty")
            .contains("flood done: 3000 lines")
            .then_some(())
    });
    let rotated = |i: u32| d.logs.join(format!("chatty.log.{i}"));
    assert!(rotated(1).exists() && rotated(2).exists());
    assert!(
        !rotated(3).exists(),
        "only --log-keep 2 rotated files are kept"
    );
    for i in 1..=2 {
        let len = std::fs::metadata(rotated(i)).unwrap().len();
        assert!(len >= 20_000, "a rotated file is full: {len}");
    }
    // The newest lines are in the current file, continuing the rotated one.
    let last_rotated = std::fs::read_to_string(rotated(1)).unwrap();
    let n = |l: &str| {
        l.split("flood line ")
            .nth(1)
            .and_then(|n| n.parse::<u32>().ok())
    };
    let prev = last_rotated.lines().rev().find_map(n).unwrap();
    let next = d.log("chatty").lines().filter_map(n).next().unwrap();
    assert_eq!(next, prev + 1);
}

#[test]
fn the_first_status_shows_a_busy_new_child_using_cpu() {
    let scene = Scene::new();
    let ports = free_ports(1);
    // A child that spins and never becomes ready: it stays `starting`, with a pid.
    scene.profile(
        "busy.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/busy\ncommand: [sh, -c, 'while :; do :; done']\n\
             health: {{ start_deadline: 1h }}\n",
            ports[0]
        ),
    );
    let d = scene.daemon();
    let s = d.wait_status("busy", "started", |s| s["pid"].is_u64());
    // The daemon's first status is the first look at this process: its CPU use must still show.
    assert!(s["cpu_percent"].as_f64().unwrap() > 0.0, "{s}");
}

#[test]
fn a_profile_may_name_its_own_cache_dir() {
    let scene = Scene::new();
    let cache = scene.path("caches/main");
    let npm = scene.path("caches/npm");
    // npm reads its variables in either case: the profile's upper-case one must be the only one.
    scene.fake_profile(
        "main",
        free_ports(1)[0],
        &format!(
            "env: {{ XDG_CACHE_HOME: {:?}, NPM_CONFIG_CACHE: {:?} }}\n",
            cache.display().to_string(),
            npm.display().to_string()
        ),
    );
    let d = scene.daemon();
    let s = d.wait_status("main", "started", |s| s["pid"].is_u64());
    let vars = environ(s["pid"].as_u64().unwrap() as u32);
    for (var, dir) in [("XDG_CACHE_HOME", &cache), ("NPM_CONFIG_CACHE", &npm)] {
        let set: Vec<&String> = vars
            .iter()
            .filter(|v| {
                v.split_once('=')
                    .is_some_and(|(k, _)| k.eq_ignore_ascii_case(var))
            })
            .collect();
        assert_eq!(set, [&format!("{var}={}", dir.display())], "{vars:?}");
    }
}

/// A filesystem whose writes hang, as a stuck disk or a dead NFS server makes them: an ext4 image
/// on a loop device, which `fsfreeze -f` makes block every write (and every rename) until it is
/// thawed; reads still answer. Needs root, `mkfs.ext4`, `mount` and `fsfreeze`.
struct HangingFs {
    mount: std::path::PathBuf,
}

impl HangingFs {
    /// Mounts it at `scene/slow`; `None` (saying why) where this machine cannot, except under
    /// `CI=true`, where that is a failure.
    fn mount(scene: &Scene) -> Option<HangingFs> {
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{cmd} {args:?}: {}", stderr(&out)))
            }
        };
        let image = scene.path("disk.img");
        let mount = scene.path("slow");
        let made = (|| {
            if !nix::unistd::geteuid().is_root() {
                return Err("not root".to_string());
            }
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(64 << 20))
                .map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
            run(
                "mkfs.ext4",
                &["-q".as_ref(), "-F".as_ref(), image.as_os_str()],
            )?;
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    image.as_os_str(),
                    mount.as_os_str(),
                ],
            )
        })();
        match made {
            Ok(()) => Some(HangingFs { mount }),
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("cannot mount a filesystem to freeze ({why}); CI runs this test as root")
            }
            Err(why) => {
                eprintln!("SKIPPED: cannot mount a filesystem to freeze ({why})");
                None
            }
        }
    }

    /// Makes every write to it hang until the guard is dropped.
    fn freeze(&self) -> Frozen<'_> {
        let out = std::process::Command::new("fsfreeze")
            .arg("-f")
            .arg(&self.mount)
            .output()
            .expect("run fsfreeze");
        assert!(out.status.success(), "fsfreeze -f: {}", stderr(&out));
        Frozen(self)
    }
}

impl Drop for HangingFs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mount)
                .status();
        }
    }
}

/// Thaws the filesystem when dropped (also when a test fails while it is frozen): a process
/// blocked on a frozen filesystem cannot even be killed.
struct Frozen<'a>(&'a HangingFs);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0.mount)
            .status();
    }
}

/// `openclawctl ARGS` against `d`, which must answer within a deadline: a daemon whose only
/// runtime thread is stuck never answers, and the test must fail rather than hang.
fn ctl_answers(d: &common::Daemon, args: &[&str]) -> std::process::Output {
    let child = std::process::Command::new(common::bin_path("openclawctl"))
        .args(args)
        .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openclawctl");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(out) => out.expect("openclawctl's output"),
        Err(_) => {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!(
                "openclawctl {args:?} got no answer in 60 s: the daemon is stuck\ndaemon log:\n{}",
                std::fs::read_to_string(&d.stderr).unwrap_or_default()
            );
        }
    }
}

/// `status --json NAME`, answered within the deadline.
fn status_answers(d: &common::Daemon, name: &str) -> serde_json::Value {
    let out = ctl_answers(d, &["status", "--json", name]);
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v[0].clone()
}

#[test]
fn a_hung_log_and_state_disk_stalls_neither_status_nor_restarts_nor_stop() {
    let scene = Scene::new();
    let Some(fs) = HangingFs::mount(&scene) else {
        return;
    };
    let ports = free_ports(2);
    profile(&scene, "main", ports[0], &[], "");
    profile(&scene, "rescue", ports[1], &[], "");
    let (logs, state) = (fs.mount.join("logs"), fs.mount.join("state"));
    let d = scene.daemon_at(&logs, &state);
    let first = d.wait_status("main", "running", |s| s["state"] == "running");
    d.wait_status("rescue", "running", |s| s["state"] == "running");
    let state_file = state.join("desired-state.json");

    let frozen = fs.freeze();
    // A crash while the disk hangs: the daemon notices, restarts main, probes it ready.
    kill(pid_of(&first), nix::sys::signal::Signal::SIGKILL);
    let again = wait_for("main to run again after the SIGKILL", || {
        let s = status_answers(&d, "main");
        (s["state"] == "running" && s["pid"] != first["pid"]).then_some(s)
    });
    assert_eq!(again["last_exit"], "signal SIGKILL");
    // An operator's stop answers; the wish holds, though it is not on disk yet.
    let out = ctl_answers(&d, &["stop", "rescue"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_answers(&d, "rescue")["state"], "stopped");
    let daemon_log = std::fs::read_to_string(&d.stderr).unwrap();
    assert!(
        daemon_log.contains("rescue is stopped as asked, but that is not on disk"),
        "{daemon_log}"
    );
    // The log's tail answers from memory what the file does not have yet: the disk did hang.
    let started = format!("started pid {}", again["pid"]);
    let out = ctl_answers(&d, &["logs", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&started), "{}", stdout(&out));
    assert!(!d.log("main").contains(&started), "{}", d.log("main"));
    assert!(!std::fs::read_to_string(&state_file)
        .unwrap_or_default()
        .contains("rescue"));

    // Once the disk answers again, what waited is written.
    drop(frozen);
    wait_for("the log file to catch up", || {
        d.log("main").contains(&started).then_some(())
    });
    wait_for("the stop to be saved", || {
        std::fs::read_to_string(&state_file)
            .ok()
            .filter(|s| s.contains("\"rescue\": \"stopped\""))
    });
    let mut d = d;
    assert_eq!(d.terminate(), Some(0));
}
