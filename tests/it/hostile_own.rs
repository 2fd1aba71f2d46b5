//! Who owns an instance's places (issue 11, points 1 and 2): a second daemon on the same profiles,
//! a stranger listening on an instance's port (at start, after a reload, behind a probe URL), a
//! gateway started by hand on an instance's state dir. The daemon never signals what is not its
//! own, never calls an instance `running` unless its own process answers, and waits (`blocked`)
//! until the place is free.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::{alive, bin_path, environ, fake_gateway, free_ports, stderr, stdout, wait_for, Scene};

/// A process the test started; killed and reaped when dropped.
struct Stranger(Child);

impl Stranger {
    /// The stand-in gateway on `port`, started by hand: no marker, and the state dir only if given.
    fn gateway(port: u16, state_dir: Option<&std::path::Path>) -> Stranger {
        let mut cmd = Command::new(fake_gateway());
        cmd.args(["--port", &port.to_string()])
            .env_remove("OPENCLAW_SUPERVISOR_INSTANCE")
            .env_remove("OPENCLAW_STATE_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = state_dir {
            std::fs::create_dir_all(dir).unwrap();
            cmd.env("OPENCLAW_STATE_DIR", dir);
        }
        let s = Stranger(cmd.spawn().expect("start the stranger"));
        wait_for("the stranger to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        });
        s
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Ends it and waits until it is gone.
    fn end(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A profile running the stand-in gateway on `port`, plus `extra` YAML.
fn profile(scene: &Scene, name: &str, port: u16, extra: &str) {
    scene.fake_profile(name, port, extra);
}

/// Asserts that `name` stays blocked by `pid` for `long` (longer than a re-check): it never turns
/// running on a stranger's answers.
fn stays_blocked(d: &common::Daemon, name: &str, pid: u32, long: Duration) {
    let until = Instant::now() + long;
    while Instant::now() < until {
        let s = d.status(name);
        assert_eq!(s["state"], "blocked", "{name} left blocked: {s}");
        assert_eq!(s["holder"]["pid"], pid, "{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `openclawctl start NAME` exits 1, and its message names the holder's pid and the place.
fn start_is_refused(d: &common::Daemon, name: &str, pid: u32, place: &str) {
    let out = d.ctl(&["start", name]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(err.contains(place), "{err}");
}

#[test]
fn a_second_daemon_on_the_same_profiles_leaves_the_firsts_gateways_alone() {
    let scene = Scene::new();
    let ports = free_ports(2);
    profile(&scene, "main", ports[0], "");
    profile(&scene, "rescue", ports[1], "");
    let mut first = scene.daemon();
    let mut pids = Vec::new();
    for name in ["main", "rescue"] {
        let s = first.wait_status(name, "running", |s| s["state"] == "running");
        pids.push(s["pid"].as_u64().unwrap());
    }

    // The daemon holds each state dir's lock; its gateways do not (they would pass for a supervisor).
    let holds_lock = |pid: u32, name: &str| {
        let lock = scene
            .home()
            .join(format!("state/{name}/.openclaw-supervisor.lock"));
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|target| target == lock)
    };
    for (name, pid) in ["main", "rescue"].into_iter().zip(&pids) {
        assert!(holds_lock(first.pid(), name), "{name}'s lock");
        assert!(
            !holds_lock(*pid as u32, name),
            "{name}'s gateway inherited its lock"
        );
    }

    // The same profiles, another socket and state dir: what anyone trying things by hand does.
    let socket = scene.path("run2/supervisor.sock");
    let err_file = scene.path("daemon2.stderr");
    let child = Command::new(bin_path("openclaw-supervisord"))
        .args(["--config-dir", "supervisor.d", "--socket"])
        .arg(&socket)
        .arg("--log-dir")
        .arg(scene.path("logs2"))
        .arg("--state-dir")
        .arg(scene.path("daemon-state2"))
        .current_dir(scene.root.path())
        .env("HOME", scene.home())
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let second = common::Daemon {
        child: Some(child),
        socket,
        logs: scene.path("logs2"),
        stderr: err_file,
    };
    wait_for("the second daemon's API", || {
        second.ctl(&["status"]).status.success().then_some(())
    });
    for name in ["main", "rescue"] {
        let s = second.wait_status(name, "blocked", |s| s["state"] == "blocked");
        assert_eq!(s["holder"]["pid"], first.pid(), "{s}");
        let error = s["last_error"].as_str().unwrap();
        assert!(
            error.contains(&format!("openclaw-supervisord pid {}", first.pid())),
            "{error}"
        );
        assert!(
            error.contains(scene.path("run/supervisor.sock").to_str().unwrap()),
            "{error}"
        );
    }
    start_is_refused(
        &second,
        "main",
        first.pid(),
        "is held by openclaw-supervisord",
    );
    let table = stdout(&second.ctl(&["status"]));
    assert!(
        table.contains(&format!("main: blocked by pid {} (", first.pid())),
        "{table}"
    );
    // Past a re-check of the second daemon, the first's gateways are the same processes, running.
    std::thread::sleep(Duration::from_secs(4));
    for (name, pid) in ["main", "rescue"].into_iter().zip(&pids) {
        let s = first.status(name);
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["pid"].as_u64(), Some(*pid), "{s}");
        assert!(alive(*pid as u32));
        assert_eq!(second.status(name)["state"], "blocked");
    }

    // The first daemon goes (its gateways with it): the second starts them by itself.
    assert_eq!(first.terminate(), Some(0));
    for pid in &pids {
        assert!(
            !alive(*pid as u32),
            "the first daemon's gateway {pid} outlived it"
        );
    }
    for (name, pid) in ["main", "rescue"].into_iter().zip(&pids) {
        let s = second.wait_status(name, "running", |s| s["state"] == "running");
        assert_ne!(s["pid"].as_u64(), Some(*pid));
        assert!(s["holder"].is_null(), "{s}");
    }
}

#[test]
fn a_stranger_on_the_port_blocks_the_instance_until_it_goes() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(&scene, "main", ports[0], "");
    // It answers /readyz and /healthz with 200, as a gateway would.
    let stranger = Stranger::gateway(ports[0], None);
    let d = scene.daemon();
    let s = d.wait_status("main", "blocked", |s| s["state"] == "blocked");
    assert_eq!(s["holder"]["pid"], stranger.pid(), "{s}");
    assert_eq!(s["holder"]["what"], format!("listens on port {}", ports[0]));
    assert!(s["pid"].is_null(), "nothing was spawned: {s}");
    start_is_refused(
        &d,
        "main",
        stranger.pid(),
        &format!("port {} is held by pid {}", ports[0], stranger.pid()),
    );
    let table = stdout(&d.ctl(&["status"]));
    assert!(table.contains("blocked"), "{table}");
    assert!(
        table.contains(&format!(
            "port {} is held by pid {} ({}",
            ports[0],
            stranger.pid(),
            fake_gateway().display()
        )),
        "{table}"
    );
    stays_blocked(&d, "main", stranger.pid(), Duration::from_secs(4));
    assert!(alive(stranger.pid()), "the stranger was signalled");

    stranger.end();
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    let pid = s["pid"].as_u64().unwrap() as u32;
    assert!(environ(pid).contains(&"OPENCLAW_SUPERVISOR_INSTANCE=main".to_string()));
    assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");
}

#[test]
fn a_stranger_on_the_port_of_an_instance_added_by_reload_blocks_it() {
    let scene = Scene::new();
    let ports = free_ports(2);
    profile(&scene, "main", ports[0], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let stranger = Stranger::gateway(ports[1], None);
    profile(&scene, "rescue", ports[1], "");
    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = d.wait_status("rescue", "blocked", |s| s["state"] == "blocked");
    assert_eq!(s["holder"]["pid"], stranger.pid(), "{s}");
    start_is_refused(
        &d,
        "rescue",
        stranger.pid(),
        &format!("port {} is held by pid {}", ports[1], stranger.pid()),
    );
    stays_blocked(&d, "rescue", stranger.pid(), Duration::from_secs(4));
    assert_eq!(d.status("main")["state"], "running");

    stranger.end();
    d.wait_status("rescue", "running", |s| s["state"] == "running");
}

#[test]
fn a_gateway_started_by_hand_on_the_state_dir_is_reported_not_signalled() {
    let scene = Scene::new();
    let ports = free_ports(2);
    profile(&scene, "main", ports[0], "");
    let by_hand = Stranger::gateway(ports[1], Some(&scene.home().join("state/main")));
    let d = scene.daemon();
    let s = d.wait_status("main", "blocked", |s| s["state"] == "blocked");
    assert_eq!(s["holder"]["pid"], by_hand.pid(), "{s}");
    let what = format!(
        "uses state dir {}",
        scene.home().join("state/main").display()
    );
    assert_eq!(s["holder"]["what"], what.as_str(), "{s}");
    assert!(
        s["holder"]["command"]
            .as_str()
            .unwrap()
            .contains("fake-gateway"),
        "{s}"
    );
    start_is_refused(&d, "main", by_hand.pid(), &what);
    stays_blocked(&d, "main", by_hand.pid(), Duration::from_secs(4));
    assert!(
        alive(by_hand.pid()),
        "the gateway started by hand was signalled"
    );
    let log = std::fs::read_to_string(&d.stderr).unwrap();
    // Reported once, by the instance it blocks.
    assert!(log.contains(&format!("holder={}", by_hand.pid())), "{log}");

    by_hand.end();
    d.wait_status("main", "running", |s| s["state"] == "running");
}

#[test]
fn a_probe_answered_by_a_stranger_does_not_count() {
    let scene = Scene::new();
    let ports = free_ports(2);
    // The gateway listens on its port; its readiness URL points at a port a stranger holds.
    profile(
        &scene,
        "main",
        ports[0],
        &format!(
            "health: {{ readiness_url: 'http://127.0.0.1:{}/readyz', start_deadline: 6s }}\n",
            ports[1]
        ),
    );
    let d = scene.daemon();
    // The stranger comes after the start's scan: only the probe can tell.
    let s = d.wait_status("main", "starting", |s| s["state"] == "starting");
    let ours = s["pid"].as_u64().unwrap();
    let stranger = Stranger::gateway(ports[1], None);
    let s = d.wait_status("main", "blocked", |s| {
        assert_ne!(s["state"], "running", "a stranger's answer counted: {s}");
        s["state"] == "blocked"
    });
    assert_eq!(s["holder"]["pid"], stranger.pid(), "{s}");
    let error = s["last_error"].as_str().unwrap();
    assert_eq!(
        error,
        format!(
            "port {} is held by pid {} ({}), not by this instance",
            ports[1],
            stranger.pid(),
            s["holder"]["command"].as_str().unwrap()
        )
    );
    // The probe said so: the start was not refused by the scan before it.
    let log = d.log("main");
    assert!(
        log.contains(&format!(
            "not ready within 6s (GET http://127.0.0.1:{}/readyz: port {} is held by pid {}",
            ports[1],
            ports[1],
            stranger.pid()
        )),
        "{log}"
    );
    assert!(!alive(ours as u32), "our own child was stopped");
    assert!(alive(stranger.pid()));
}
