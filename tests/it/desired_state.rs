//! The operators' starts and stops survive a daemon restart: `openclawctl stop` keeps an instance
//! stopped, `openclawctl start` keeps one started, and a corrupt state file is reported and ignored.

use crate::common;

use common::{free_ports, stderr, Scene};

fn states(d: &common::Daemon) -> Vec<(String, String)> {
    let out = d.ctl(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until every instance meant to run is running, then returns every instance's state.
fn settled(d: &common::Daemon, running: &[&str]) -> Vec<(String, String)> {
    for name in running {
        d.wait_status(name, "running", |s| s["state"] == "running");
    }
    states(d)
}

fn pair(name: &str, state: &str) -> (String, String) {
    (name.to_string(), state.to_string())
}

#[test]
fn stops_and_starts_survive_a_daemon_restart() {
    let scene = Scene::new();
    let ports = free_ports(3);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    scene.fake_profile("spare", ports[2], "autostart: false\n");
    let state_file = scene.path("daemon-state/desired-state.json");

    let mut d = scene.daemon();
    assert_eq!(
        settled(&d, &["main", "rescue"]),
        vec![
            pair("main", "running"),
            pair("rescue", "running"),
            pair("spare", "stopped")
        ]
    );
    assert!(d.ctl(&["stop", "rescue"]).status.success());
    assert!(d.ctl(&["start", "spare"]).status.success());
    assert_eq!(d.terminate(), Some(0));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(
        saved,
        serde_json::json!({"version": 1, "instances": {"rescue": "stopped", "spare": "running"}})
    );

    // The next daemon leaves rescue stopped and starts spare, although their profiles say otherwise.
    let mut d = scene.daemon();
    assert_eq!(
        settled(&d, &["main", "spare"]),
        vec![
            pair("main", "running"),
            pair("rescue", "stopped"),
            pair("spare", "running")
        ]
    );
    assert!(
        std::fs::read_to_string(&d.stderr)
            .unwrap()
            .contains("leaving stopped as an operator last asked"),
        "the daemon says why rescue stays stopped"
    );
    assert!(d.ctl(&["start", "rescue"]).status.success());
    assert_eq!(d.terminate(), Some(0));

    let d = scene.daemon();
    assert_eq!(
        settled(&d, &["main", "rescue", "spare"]),
        vec![
            pair("main", "running"),
            pair("rescue", "running"),
            pair("spare", "running")
        ]
    );

    // A reload that removes spare forgets what was asked of it.
    std::fs::remove_file(scene.path("supervisor.d/spare.yaml")).unwrap();
    assert!(d.ctl(&["reload"]).status.success());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(
        saved,
        serde_json::json!({"version": 1, "instances": {"rescue": "running"}})
    );
}

#[test]
fn a_corrupt_state_file_is_reported_and_ignored() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("spare", ports[1], "autostart: false\n");
    let state_file = scene.write(
        "daemon-state/desired-state.json",
        "{\"version\": 1,\n \"instances\": {\"main\": \"stopped\",\0garbage",
    );

    let d = scene.daemon();
    // Not fatal: the instances start as their profiles say.
    assert_eq!(
        settled(&d, &["main"]),
        vec![pair("main", "running"), pair("spare", "stopped")]
    );
    let log = std::fs::read_to_string(&d.stderr).unwrap();
    assert!(
        log.contains(&format!("{}:2: cannot parse it", state_file.display())),
        "the daemon names the file and line: {log}"
    );
    // The next operator stop replaces it with a good file.
    assert!(d.ctl(&["stop", "main"]).status.success());
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert_eq!(saved["instances"], serde_json::json!({"main": "stopped"}));
}
