//! The daemon as a systemd `Type=notify` service, against a notify socket the test owns: READY=1
//! once the check passed and the instances are launched, STATUS= lines, WATCHDOG=1 when a watchdog
//! is set, STOPPING=1 at shutdown; and the shipped unit file.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::{bin_path, free_ports, pids_with_env, Daemon, Scene};

/// The service manager's end: a datagram socket the daemon is told about.
struct Manager {
    socket: UnixDatagram,
    /// Every datagram received, in order.
    seen: Vec<String>,
}

impl Manager {
    fn bind(scene: &Scene) -> (Manager, std::path::PathBuf) {
        let path = scene.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        // Only a guard against a hang: the waits below have no time limit of their own.
        socket
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        (
            Manager {
                socket,
                seen: Vec::new(),
            },
            path,
        )
    }

    /// Receives datagrams until one satisfies `pred`, and returns it.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).unwrap_or_else(|e| {
                panic!("no {what} from the daemon ({e}); seen: {:?}", self.seen)
            });
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if pred(&msg) {
                return msg;
            }
        }
    }
}

fn spawn_daemon(scene: &Scene, notify: &std::path::Path, watchdog_usec: Option<&str>) -> Daemon {
    let notify = notify.to_str().unwrap();
    let mut env = vec![("NOTIFY_SOCKET", notify)];
    env.extend(watchdog_usec.map(|usec| ("WATCHDOG_USEC", usec)));
    scene.spawn_daemon_env(&[], &env)
}

#[test]
fn notifies_ready_status_watchdog_and_stopping() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("spare", ports[1], "autostart: false\n");
    let (mut manager, path) = Manager::bind(&scene);
    let mut d = spawn_daemon(&scene, &path, Some("300000"));

    let ready = manager.until("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    assert!(
        ready.contains("STATUS=2 instances: "),
        "READY=1 comes with a status line: {ready:?}"
    );
    assert!(
        manager.seen[0].contains("STATUS=checking the profiles"),
        "{:?}",
        manager.seen
    );
    // When READY=1 arrives, the API answers and main has been launched.
    let main = d.status("main");
    assert!(
        main["want_running"] == true && main["state"] != "stopped",
        "{main}"
    );
    assert_eq!(d.status("spare")["state"], "stopped");

    // The status line follows the states.
    manager.until("a status with main running", |m| {
        m.contains("STATUS=2 instances: 1 running, 1 stopped")
    });
    // Watchdog pings keep coming.
    for _ in 0..3 {
        manager.until("WATCHDOG=1", |m| m.lines().any(|l| l == "WATCHDOG=1"));
    }

    // The gateway does not inherit the daemon's service-manager variables.
    let pid = d.status("main")["pid"].as_u64().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(!env.contains("NOTIFY_SOCKET="), "{env}");
    assert!(!env.contains("WATCHDOG_USEC="), "{env}");
    assert!(env.contains("OPENCLAW_SUPERVISOR_INSTANCE=main"));
    // Its caches go to its own state dir, not a ~/.cache or ~/.npm shared with the other instances.
    let state = scene.home().join("state/main");
    for want in [
        format!("XDG_CACHE_HOME={}", state.join("cache").display()),
        format!("npm_config_cache={}", state.join("cache/npm").display()),
    ] {
        assert!(env.split('\0').any(|v| v == want), "{want} not in {env}");
    }

    // SIGHUP (the unit's ExecReload) reloads and says so.
    let daemon = nix::unistd::Pid::from_raw(d.pid() as i32);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGHUP).unwrap();
    manager.until("the reload status", |m| {
        m.contains("STATUS=reloading the profiles")
    });

    assert_eq!(d.terminate(), Some(0));
    let stopping = manager.until("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(
        stopping.contains("STATUS=stopping 2 instances"),
        "{stopping:?}"
    );
    manager.until("the last status", |m| m.contains("STATUS=stopped"));
    // By its state dir: other tests running beside this one have instances named main too.
    assert!(pids_with_env("OPENCLAW_STATE_DIR", &state.display().to_string()).is_empty());
}

#[test]
fn no_ready_when_the_check_fails() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "");
    // rescue on main's port: the check fails, and nothing may be reported ready.
    scene.fake_profile("rescue", ports[0], "");
    let (mut manager, path) = Manager::bind(&scene);
    let mut d = spawn_daemon(&scene, &path, None);
    assert_eq!(d.wait_exit("the daemon to refuse"), Some(1));
    manager
        .socket
        .set_nonblocking(true)
        .expect("non-blocking notify socket");
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.socket.recv(&mut buf) {
        manager
            .seen
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !manager.seen.iter().any(|m| m.contains("READY=1")),
        "{:?}",
        manager.seen
    );
    assert!(
        manager
            .seen
            .iter()
            .any(|m| m.contains("STATUS=check failed")),
        "the status says why it stopped: {:?}",
        manager.seen
    );
}

/// The shipped units (system and user) are `Type=notify` with a watchdog and SIGHUP for reload,
/// keep the gateways through a crash (KillMode=process, the fd store) and end a hung stop's, and
/// `systemd-analyze verify` accepts them where it exists (their ExecStart pointed at the binary
/// cargo built, which verify requires to exist).
#[test]
fn the_shipped_units_verify() {
    let analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !analyze {
        println!("systemd-analyze not found: the units' syntax is not verified here");
    }
    let exe = bin_path("openclaw-supervisord");
    for (file, exec) in [
        (
            "openclaw-supervisor.service",
            "/usr/local/bin/openclaw-supervisord",
        ),
        (
            "user/openclaw-supervisor.service",
            "%h/.local/bin/openclaw-supervisord",
        ),
    ] {
        let unit =
            std::fs::read_to_string(common::repo().join("examples/systemd").join(file)).unwrap();
        for needed in [
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "WatchdogSec=",
            // A crash leaves the gateways to be adopted; a hung stop's are ended after it.
            "KillMode=process",
            "Delegate=yes",
            "FileDescriptorStoreMax=4096",
            exec,
        ] {
            assert!(unit.contains(needed), "{file} has {needed}");
        }
        assert!(
            unit.contains(&format!("ExecStopPost=-{exec}"))
                && unit
                    .lines()
                    .any(|l| l.starts_with("ExecStopPost=") && l.ends_with(" stop-leftovers")),
            "{file} ends a hung stop's leftovers"
        );
        if !analyze {
            continue;
        }
        let scene = Scene::new();
        let path = scene.write(
            "openclaw-supervisor.service",
            &unit.replace(exec, exe.to_str().unwrap()),
        );
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
        // Without systemd as init (a container) verify may complain about the manager itself;
        // only complaints about this unit count.
        let ours: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("openclaw-supervisor.service"))
            .collect();
        assert!(ours.is_empty(), "systemd-analyze verify {file}: {text}");
    }
}

#[test]
fn a_daemon_that_cannot_start_says_why_in_its_status() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    // The first daemon holds the socket; a second on the same socket must refuse.
    let first = scene.daemon();
    let (mut manager, path) = Manager::bind(&scene);
    let mut second = spawn_daemon(&scene, &path, None);
    assert_eq!(second.wait_exit("the second daemon to refuse"), Some(1));
    let why = manager.until("the reason", |m| m.contains("STATUS=failed: "));
    assert!(why.contains("cannot serve on"), "{why:?}");
    assert!(
        !manager.seen.iter().any(|m| m.contains("READY=1")),
        "{:?}",
        manager.seen
    );
    // The first daemon is untouched.
    assert_eq!(first.status("main")["want_running"], true);
}
