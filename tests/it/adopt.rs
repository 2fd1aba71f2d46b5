//! Crash adoption: a daemon that dies without stopping its gateways (SIGKILL) leaves them running
//! under `--on-crash keep`, and the next daemon on the same dirs adopts them (same pids, `running`,
//! no restart), starts again what died meanwhile, restarts what changed, and never takes a stranger
//! with a recycled pid for a gateway. Stand-in gateways throughout.

use crate::common;

use common::{alive, fake_gateway, free_ports, stdout, wait_for, Daemon, Scene};

/// The variable that keeps the gateways through a crash (an older daemon ignores it).
const KEEP: [(&str, &str); 1] = [("OPENCLAW_SUPERVISOR_ON_CRASH", "keep")];

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("a pid") as u32
}

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// SIGKILLs the daemon and waits for it to be gone.
fn crash(d: &mut Daemon) {
    sigkill(d.pid());
    d.wait_exit("the SIGKILLed daemon to be gone");
}

fn daemon_log(d: &Daemon) -> String {
    std::fs::read_to_string(&d.stderr).unwrap_or_default()
}

fn running(d: &Daemon, name: &str) -> serde_json::Value {
    d.wait_status(name, "running", |s| s["state"] == "running")
}

/// Two stand-in instances, `main` and `rescue`, running under a daemon that keeps them on a crash.
fn two_running(scene: &Scene, ports: &[u16]) -> (Daemon, serde_json::Value, serde_json::Value) {
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    let d = scene.daemon_with_env(&[], &KEEP);
    let main = running(&d, "main");
    let rescue = running(&d, "rescue");
    (d, main, rescue)
}

#[test]
fn a_sigkilled_daemon_s_gateways_are_adopted_by_the_next_one() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let (mut d, main, rescue) = two_running(&scene, &ports);
    crash(&mut d);
    assert!(alive(pid_of(&main)) && alive(pid_of(&rescue)));
    let d = scene.daemon_with_env(&[], &KEEP);
    for (name, before) in [("main", &main), ("rescue", &rescue)] {
        // From the daemon's first answer on, the gateway is the one that ran: never `stopped`.
        let s = d.status(name);
        assert_eq!(s["pid"], before["pid"], "{s}");
        assert_ne!(s["state"], "stopped", "{s}");
        let s = running(&d, name);
        assert_eq!(s["pid"], before["pid"], "{s}");
        assert_eq!(s["restarts"], 0, "{s}");
        let log = stdout(&d.ctl(&["logs", name]));
        let adopted = format!("adopted pid {}, running since ", before["pid"]);
        assert!(log.contains(&adopted), "{log}");
        assert_eq!(
            log.matches("output not captured since adoption").count(),
            1,
            "{log}"
        );
    }
    assert!(daemon_log(&d).contains(&format!("adopted pid {}", main["pid"])));
    // Still the same gateways, answering on their ports.
    std::net::TcpStream::connect(("127.0.0.1", ports[0])).expect("main listens");
}

#[test]
fn sigterm_still_stops_adopted_gateways() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let (mut d, main, rescue) = two_running(&scene, &ports);
    crash(&mut d);
    let mut d = scene.daemon_with_env(&[], &KEEP);
    assert_eq!(running(&d, "main")["pid"], main["pid"]);
    assert_eq!(d.terminate(), Some(0));
    for pid in [pid_of(&main), pid_of(&rescue)] {
        assert!(!alive(pid), "pid {pid} outlived the daemon's stop");
    }
}

#[test]
fn a_gateway_that_died_while_no_daemon_ran_is_started_again() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let (mut d, main, rescue) = two_running(&scene, &ports);
    crash(&mut d);
    sigkill(pid_of(&main));
    wait_for("main's gateway to be gone", || {
        (!alive(pid_of(&main))).then_some(())
    });
    let d = scene.daemon_with_env(&[], &KEEP);
    let s = running(&d, "main");
    assert_ne!(s["pid"], main["pid"]);
    assert_eq!(s["restarts"], 0, "{s}");
    assert!(
        daemon_log(&d).contains(&format!("its gateway (pid {}) is gone", main["pid"])),
        "{}",
        daemon_log(&d)
    );
    // rescue, alive, was adopted.
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
}

#[test]
fn a_profile_changed_while_no_daemon_ran_restarts_that_instance_only() {
    let scene = Scene::new();
    let ports = free_ports(3);
    let (mut d, main, rescue) = two_running(&scene, &ports);
    crash(&mut d);
    scene.fake_profile("main", ports[2], "");
    let d = scene.daemon_with_env(&[], &KEEP);
    let s = d.wait_status("main", "running on its new port", |s| {
        s["state"] == "running" && s["pid"] != main["pid"]
    });
    assert_eq!(s["port"], ports[2]);
    assert_eq!(s["restarts"], 0, "{s}");
    assert!(!alive(pid_of(&main)), "the old gateway still runs");
    let log = stdout(&d.ctl(&["logs", "main"]));
    assert!(
        log.contains("profile changed while no daemon ran: port, "),
        "{log}"
    );
    std::net::TcpStream::connect(("127.0.0.1", ports[2])).expect("main listens on its new port");
    let r = d.status("rescue");
    assert_eq!(r["pid"], rescue["pid"]);
    assert_eq!(r["state"], "running");
}

#[test]
fn an_adopted_gateway_that_ends_is_seen_and_restarted_with_its_exit_unknown() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let (mut d, main, _) = two_running(&scene, &ports);
    crash(&mut d);
    let d = scene.daemon_with_env(&[], &KEEP);
    assert_eq!(running(&d, "main")["pid"], main["pid"]);
    sigkill(pid_of(&main));
    let s = d.wait_status("main", "running again", |s| {
        s["state"] == "running" && s["pid"] != main["pid"]
    });
    assert_eq!(s["last_exit"], "exit code unknown (adopted)", "{s}");
    assert_eq!(s["restarts"], 1, "{s}");
    let log = stdout(&d.ctl(&["logs", "main"]));
    assert!(
        log.contains(&format!(
            "pid {} ended: exit code unknown (adopted)",
            main["pid"]
        )),
        "{log}"
    );
}

#[test]
fn on_crash_kill_leaves_no_gateway_behind() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "");
    let mut d = scene.daemon_with(&["--on-crash", "kill"]);
    let main = running(&d, "main");
    crash(&mut d);
    wait_for("the gateway to die with its daemon", || {
        (!alive(pid_of(&main))).then_some(())
    });
}

/// A record naming `pid` (with `start` as its start time) for instance `name`.
fn plant_record(scene: &Scene, name: &str, pid: u32, start: u64) {
    let record = serde_json::json!({
        "version": 1,
        "name": name,
        "pid": pid,
        "start": start,
        "file": scene.dir().join(format!("{name}.yaml")),
        "digest": {},
        "cgroup": null,
        "started_at": 0,
        "daemon_pid": 1,
    });
    scene.write(
        &format!("daemon-state/children/{name}.json"),
        &record.to_string(),
    );
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Field 22; the fields after the name start at field 3.
    fields[22 - 3].parse().unwrap()
}

#[test]
fn a_recycled_pid_is_neither_adopted_nor_signalled() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    // Two strangers: one with another start time than its record says, one without the marker.
    let strangers = Strangers(
        (0..2)
            .map(|_| {
                std::process::Command::new(fake_gateway())
                    .args(["--port", "0"])
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let (a, b) = (strangers.0[0].id(), strangers.0[1].id());
    plant_record(&scene, "main", a, start_time(a) + 1);
    plant_record(&scene, "rescue", b, start_time(b));
    let d = scene.daemon_with_env(&[], &KEEP);
    for (name, stranger) in [("main", a), ("rescue", b)] {
        let s = running(&d, name);
        assert_ne!(pid_of(&s), stranger, "{name} adopted a stranger");
        assert!(alive(stranger), "{name}'s stranger was signalled");
    }
    let log = daemon_log(&d);
    assert!(
        log.contains(&format!("pid {a} is another process now")),
        "{log}"
    );
    assert!(
        log.contains(&format!("pid {b} does not carry the marker of rescue")),
        "{log}"
    );
}

/// Processes a test started, SIGKILLed when it ends, passed or not.
struct Strangers(Vec<std::process::Child>);

impl Drop for Strangers {
    fn drop(&mut self) {
        for s in &mut self.0 {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

#[test]
fn a_gateway_an_operator_had_stopped_is_adopted_and_stopped() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let (mut d, main, rescue) = two_running(&scene, &ports);
    crash(&mut d);
    // The operator's stop reached the disk, not the gateway: the daemon died in between.
    scene.write(
        "daemon-state/desired-state.json",
        r#"{"version": 1, "instances": {"main": "stopped"}}"#,
    );
    let d = scene.daemon_with_env(&[], &KEEP);
    let s = d.wait_status("main", "stopped", |s| s["state"] == "stopped");
    assert_eq!(s["want_running"], false, "{s}");
    wait_for("the adopted gateway to end", || {
        (!alive(pid_of(&main))).then_some(())
    });
    let log = stdout(&d.ctl(&["logs", "main"]));
    assert!(
        log.contains("an operator had stopped it (desired state): stopping it"),
        "{log}"
    );
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
}
