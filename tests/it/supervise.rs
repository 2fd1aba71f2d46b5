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
        ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "PORT", "CPU", "RSS", "LAST", "EXIT"]
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
