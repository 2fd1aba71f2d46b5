//! OpenClaw's profile name is a claimed resource: OpenClaw names its rolling log
//! (`/tmp/openclaw/openclaw-<profile>-<date>.log`) and its own service unit after it, so two instances
//! under one profile are a conflict unless each config file sets its own `logging.file`; and
//! `logging.file` paths are swept like the other paths. Through the real `openclawctl` and daemon.

use crate::common;

use common::{free_ports, stderr, stdout, Scene};

/// Two stand-in gateways on their own ports and state dirs (so nothing else is shared), both under
/// the OpenClaw profile `bot`: line 4 of each profile.
fn two_on_one_profile(scene: &Scene) -> Vec<u16> {
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "openclaw_profile: bot\n");
    scene.fake_profile("rescue", ports[1], "openclaw_profile: bot\n");
    ports
}

/// The OpenClaw config file of `name` (the default one, in its state dir).
fn config_file(scene: &Scene, name: &str, text: &str) -> std::path::PathBuf {
    scene.write(&format!("home/state/{name}/openclaw.json"), text)
}

const SHARED: &str = "error: rescue (supervisor.d/rescue.yaml:4): OpenClaw profile \"bot\" is also main's (supervisor.d/main.yaml:4): neither config file sets `logging.file`, so both gateways write the profile's rolling log /tmp/openclaw/openclaw-bot-YYYY-MM-DD.log";

#[test]
fn the_same_openclaw_profile_twice_fails_the_check_naming_both_files_and_lines() {
    let scene = Scene::new();
    two_on_one_profile(&scene);
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(SHARED), "{text}");
    // What to do, and what else the name keys.
    assert!(
        lines[0].contains("give rescue its own `openclaw_profile`, or set `logging.file` in"),
        "{text}"
    );
    assert!(lines[0].contains("openclaw-gateway-bot.service"), "{text}");
    assert_eq!(
        lines[1],
        "check failed: 1 error in 2 profiles in supervisor.d"
    );
}

#[test]
fn the_daemon_refuses_to_start_on_the_same_openclaw_profile_twice() {
    let scene = Scene::new();
    two_on_one_profile(&scene);
    let mut d = scene.spawn_daemon();
    // Polled in place, so that a daemon that does start is still ended by the drop of `d`.
    let status = common::wait_for("the daemon to refuse to start", || {
        d.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    });
    assert_eq!(status.code(), Some(1));
    let err = std::fs::read_to_string(&d.stderr).unwrap();
    // The daemon names its config dir absolute.
    let dir = scene.dir().canonicalize().unwrap();
    let shared = SHARED.replace("supervisor.d/", &format!("{}/", dir.display()));
    assert!(err.contains(&shared), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}

#[test]
fn a_log_file_of_its_own_in_each_config_file_lets_both_run_under_one_profile() {
    let scene = Scene::new();
    two_on_one_profile(&scene);
    let main_log = scene.path("gw/main.log");
    let rescue_log = scene.path("gw/rescue.log");
    config_file(
        &scene,
        "main",
        &format!("{{ logging: {{ file: {:?} }} }}\n", main_log.display()),
    );
    config_file(
        &scene,
        "rescue",
        &format!(
            "{{\n  // its own log\n  logging: {{ file: {:?} }},\n}}\n",
            rescue_log.display()
        ),
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    // Left: the unit OpenClaw would install for the profile, a warning.
    assert!(
        text.starts_with("warning: rescue (supervisor.d/rescue.yaml:4): OpenClaw profile \"bot\" is also main's (supervisor.d/main.yaml:4): their logs are apart"),
        "{text}"
    );
    assert!(text.contains("check passed: 2 profiles in supervisor.d, no conflicts, 1 warning"));

    // `ports` shows each instance's claims: its OpenClaw profile and its log file.
    let out = scene.run("openclawctl", &["ports", "--config-dir", "supervisor.d"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with("  openclaw profile") || l.starts_with("  log file"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "openclaw",
                "profile",
                "bot",
                "profile",
                "supervisor.d/main.yaml:4"
            ],
            vec![
                "log",
                "file",
                main_log.to_str().unwrap(),
                "config",
                "file",
                &format!(
                    "{}:1",
                    scene.home().join("state/main/openclaw.json").display()
                ),
            ],
            vec![
                "openclaw",
                "profile",
                "bot",
                "profile",
                "supervisor.d/rescue.yaml:4"
            ],
            vec![
                "log",
                "file",
                rescue_log.to_str().unwrap(),
                "config",
                "file",
                &format!(
                    "{}:3",
                    scene.home().join("state/rescue/openclaw.json").display()
                ),
            ],
        ],
        "{table}"
    );

    // And the daemon runs both.
    let d = scene.daemon();
    for name in ["main", "rescue"] {
        d.wait_status(name, "running", |s| s["state"] == "running");
    }
}

#[test]
fn the_same_log_file_in_both_config_files_is_a_conflict_naming_both() {
    let scene = Scene::new();
    two_on_one_profile(&scene);
    let log = scene.path("gw/gateway.log");
    let main_cfg = config_file(
        &scene,
        "main",
        &format!("{{\n  logging: {{ file: {:?} }},\n}}\n", log.display()),
    );
    // The same file, written another way.
    let rescue_cfg = config_file(
        &scene,
        "rescue",
        &format!(
            "{{\n  logging: {{\n    file: {:?},\n  }},\n}}\n",
            scene.path("gw/./gateway.log").display()
        ),
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let expected = format!(
        "error: rescue ({}:3): log file {} is also main's log file {} ({}:2); set `logging.file` in rescue's config file {} to a file of its own",
        rescue_cfg.display(),
        log.display(),
        log.display(),
        main_cfg.display(),
        rescue_cfg.display()
    );
    assert!(
        text.lines().any(|l| l == expected),
        "{expected}\nnot in\n{text}"
    );
    assert!(
        text.contains("check failed: 1 error in 2 profiles"),
        "{text}"
    );
}

#[test]
fn ports_shows_the_rolling_log_each_profile_names() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "openclaw_profile: Res_cue\n");
    let out = scene.run(
        "openclawctl",
        &["ports", "--config-dir", "supervisor.d", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let claims: Vec<(&str, &str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["openclaw_profile"].as_str().unwrap(),
                i["log_file"]["value"].as_str().unwrap(),
                i["log_file"]["source"].as_str().unwrap(),
            )
        })
        .collect();
    // OpenClaw's encoding of the profile in the file name: `_` as `-0`, a capital as `-1` + lower.
    assert_eq!(
        claims,
        [
            (
                "main",
                "/tmp/openclaw/openclaw-main-YYYY-MM-DD.log",
                "default"
            ),
            (
                "Res_cue",
                "/tmp/openclaw/openclaw--1res-0cue-YYYY-MM-DD.log",
                "default"
            ),
        ]
    );
}
