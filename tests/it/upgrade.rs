//! `openclawctl upgrade`: main (on 2026.9.5) is upgraded while rescue (on 2026.9.6) is never
//! touched; a release that stays healthy through the soak is kept, one that crashes or never gets
//! ready is rolled back (with the error and the last log lines), a daemon restart in the middle of
//! a soak resumes it, and `--write` puts the choice into the profile without losing its comments.
//! Runtimes are stand-ins (`common::stand_in_runtime`) in a store given with `--runtimes`.

use std::path::{Path, PathBuf};

use crate::common;

use common::{alive, environ, free_ports, stand_in_runtime, stderr, stdout, Daemon, Scene};

const NODE: &str = "24.21.0";

/// Keeps the gateways through a daemon's crash, so that the next one adopts them.
const KEEP: [(&str, &str); 1] = [("OPENCLAW_SUPERVISOR_ON_CRASH", "keep")];

/// A scene with main on 2026.9.5 and rescue on 2026.9.6, and the stand-in runtimes `extra`
/// (version, faults) in its store.
fn scene(extra: &[(&str, &str)]) -> (Scene, PathBuf) {
    let scene = Scene::new();
    let store = scene.path("runtimes");
    stand_in_runtime(&store, "2026.9.5", NODE, "");
    stand_in_runtime(&store, "2026.9.6", NODE, "");
    for (version, faults) in extra {
        stand_in_runtime(&store, version, NODE, faults);
    }
    let ports = free_ports(2);
    for (name, port, version) in [
        ("main", ports[0], "2026.9.5"),
        ("rescue", ports[1], "2026.9.6"),
    ] {
        scene.profile(
            &format!("{name}.yaml"),
            &format!(
                "# {name}: the gateway\nport: {port}   # its port\nstate_dir: ~/state/{name}\ncommand: [openclaw, gateway, run]\n\n# pinned\nruntime: {{ openclaw: {version} }}\nhealth:\n  start_deadline: 4s\n"
            ),
        );
    }
    (scene, store)
}

fn daemon(scene: &Scene, store: &Path, env: &[(&str, &str)]) -> Daemon {
    let store = store.display().to_string();
    scene.daemon_with_env(&["--runtimes", &store], env)
}

fn running(d: &Daemon, name: &str) -> serde_json::Value {
    d.wait_status(name, "running", |s| s["state"] == "running")
}

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("a pid") as u32
}

/// The runtime directory whose `bin` comes first on the PATH of process `pid`.
fn runs_on(pid: u32) -> String {
    let path = environ(pid)
        .into_iter()
        .find_map(|v| v.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_default();
    let first = path.split(':').next().unwrap_or("").to_string();
    Path::new(&first)
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(first)
}

fn runtime_dir(openclaw: &str) -> String {
    format!("openclaw-{openclaw}+node-{NODE}")
}

/// The desired state's runtime choice for `name` (null without one).
fn choice(scene: &Scene, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(scene.path("daemon-state/desired-state.json"))
        .unwrap_or_else(|_| "{}".into());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["runtimes"][name].clone()
}

/// Both instances running: main on 2026.9.5, rescue on 2026.9.6.
fn both_running(d: &Daemon) -> (serde_json::Value, serde_json::Value) {
    let main = running(d, "main");
    let rescue = running(d, "rescue");
    assert_eq!(runs_on(pid_of(&main)), runtime_dir("2026.9.5"));
    assert_eq!(runs_on(pid_of(&rescue)), runtime_dir("2026.9.6"));
    (main, rescue)
}

#[test]
fn an_upgrade_that_stays_healthy_is_kept_and_rescue_is_untouched() {
    let (scene, store) = scene(&[("2026.9.7", "")]);
    let d = daemon(&scene, &store, &[]);
    let (main, rescue) = both_running(&d);

    // A bad version is refused before anything changes.
    let bad = d.ctl(&["upgrade", "main", "--to", "openclaw@2026.9"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("is not a version"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(d.status("main")["pid"], main["pid"]);

    let out = d.ctl(&[
        "upgrade",
        "main",
        "--to",
        "openclaw@2026.9.7",
        "--soak",
        "2s",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("restarting main on openclaw@2026.9.7+node@24.21.0"),
        "{text}"
    );
    assert!(text.contains("kept: main stayed healthy"), "{text}");

    let now = running(&d, "main");
    assert_ne!(now["pid"], main["pid"]);
    assert_eq!(runs_on(pid_of(&now)), runtime_dir("2026.9.7"));
    assert_eq!(now["soak_until_unix_ms"], serde_json::Value::Null);
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
    assert_eq!(
        choice(&scene, "main"),
        serde_json::json!({"runtime": {"openclaw": "2026.9.7", "node": NODE}})
    );
    let explain = stdout(&d.ctl(&["explain", "main"]));
    assert!(explain.contains("upgrade"), "{explain}");
    assert!(d.log("main").contains("upgrade: kept"), "{}", d.log("main"));
    // Upgrading to what it runs is nothing to do.
    let again = d.ctl(&["upgrade", "main", "--to", "2026.9.7+node@24.21.0"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("runs on openclaw@2026.9.7+node@24.21.0 already"));
    assert_eq!(d.status("main")["pid"], now["pid"]);
}

/// Upgrades main to `version` (whose stand-in fails), and checks the rollback: main runs on
/// 2026.9.5 again, rescue kept its pid, the choice is gone, and the answer says `error`.
fn rolled_back(version: &str, faults: &str, error: &str) {
    let (scene, store) = scene(&[(version, faults)]);
    let d = daemon(&scene, &store, &[]);
    let (main, rescue) = both_running(&d);

    let out = d.ctl(&["upgrade", "main", "--to", version, "--soak", "30s"]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(err.contains("rolled back:"), "{err}");
    assert!(err.contains(error), "{err}");
    assert!(text.contains("main's last log lines:"), "{text}");
    assert!(
        text.contains("rolled back: main runs on openclaw@2026.9.5 (its profile's) again"),
        "{text}"
    );

    let now = running(&d, "main");
    assert_ne!(now["pid"], main["pid"]);
    assert_eq!(runs_on(pid_of(&now)), runtime_dir("2026.9.5"));
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
    assert!(alive(pid_of(&rescue)));
    assert_eq!(choice(&scene, "main"), serde_json::Value::Null);
}

#[test]
fn a_release_that_crashes_is_rolled_back() {
    rolled_back("2026.9.8", "--crash-after-ms 500", "exit code 1");
}

#[test]
fn a_release_that_never_gets_ready_is_rolled_back() {
    rolled_back("2026.9.9", "--ready-after-ms 999999", "not ready within 4s");
}

/// Upgrades main to `version` with a long soak in the background, SIGKILLs the daemon once main
/// runs on it, and starts the next daemon (which adopts main). Returns it and the upgrade's pid.
fn restart_mid_soak(scene: &Scene, store: &Path, version: &str) -> Daemon {
    let mut d = daemon(scene, store, &KEEP);
    both_running(&d);
    let before = d.status("main");
    let upgrade = std::process::Command::new(common::bin_path("openclawctl"))
        .args(["upgrade", "main", "--to", version, "--soak", "8s"])
        .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let soaking = d.wait_status("main", "soaking on the new release", |s| {
        s["state"] == "running" && s["pid"] != before["pid"] && s["soak_until_unix_ms"].is_u64()
    });
    assert_eq!(runs_on(pid_of(&soaking)), runtime_dir(version));
    let table = stdout(&d.ctl(&["status"]));
    assert!(table.contains("main: upgrade soaking"), "{table}");
    let explain = stdout(&d.ctl(&["explain", "main"]));
    assert!(explain.contains("its upgrade soaks"), "{explain}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_exit("the SIGKILLed daemon to be gone");
    let mut upgrade = upgrade;
    let _ = upgrade.wait();
    assert!(
        choice(scene, "main")["soak"].is_object(),
        "the soak is on disk"
    );
    daemon(scene, store, &KEEP)
}

#[test]
fn a_soak_cut_by_a_daemon_restart_resumes_and_rolls_back_a_late_crash() {
    let (scene, store) = scene(&[("2026.9.10", "--crash-after-ms 6000")]);
    let d = restart_mid_soak(&scene, &store, "2026.9.10");
    let back = d.wait_status("main", "rolled back to 2026.9.5", |s| {
        s["state"] == "running"
            && s["pid"]
                .as_u64()
                .is_some_and(|p| runs_on(p as u32) == runtime_dir("2026.9.5"))
    });
    assert_eq!(back["soak_until_unix_ms"], serde_json::Value::Null);
    assert_eq!(choice(&scene, "main"), serde_json::Value::Null);
    let explain = stdout(&d.ctl(&["explain", "main"]));
    assert!(
        explain.contains("resuming the soak of openclaw@2026.9.10"),
        "{explain}"
    );
    assert!(explain.contains("rolling back"), "{explain}");
    assert_eq!(
        runs_on(pid_of(&d.status("rescue"))),
        runtime_dir("2026.9.6")
    );
}

#[test]
fn a_soak_cut_by_a_daemon_restart_resumes_and_keeps_a_healthy_release() {
    let (scene, store) = scene(&[("2026.9.7", "")]);
    let d = restart_mid_soak(&scene, &store, "2026.9.7");
    let adopted = running(&d, "main");
    common::wait_for("the resumed soak to end", || {
        let c = choice(&scene, "main");
        (c["runtime"]["openclaw"] == "2026.9.7" && c["soak"].is_null()).then_some(())
    });
    let s = d.status("main");
    assert_eq!(s["pid"], adopted["pid"], "kept without a restart");
    assert_eq!(runs_on(pid_of(&s)), runtime_dir("2026.9.7"));
    let explain = stdout(&d.ctl(&["explain", "main"]));
    assert!(explain.contains("kept: main stayed healthy"), "{explain}");
}

#[test]
fn write_puts_the_choice_into_the_profile_and_a_reload_restarts_nothing() {
    let (scene, store) = scene(&[("2026.9.7", "")]);
    let d = daemon(&scene, &store, &[]);
    let (_, rescue) = both_running(&d);
    let file = scene.dir().join("main.yaml");
    let before = std::fs::read_to_string(&file).unwrap();

    let out = d.ctl(&[
        "upgrade", "main", "--to", "2026.9.7", "--soak", "1s", "--write",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("wrote runtime openclaw@2026.9.7+node@24.21.0"));
    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        after,
        before.replace(
            "runtime: { openclaw: 2026.9.5 }",
            "runtime: { openclaw: 2026.9.7, node: 24.21.0 }"
        ),
        "only the runtime changed, comments and layout kept"
    );
    assert_eq!(choice(&scene, "main"), serde_json::Value::Null);
    // Written, the choice is the profile's: a restart before any reload stays on it.
    let written = running(&d, "main");
    assert!(d.ctl(&["restart", "main"]).status.success());
    let main = running(&d, "main");
    assert_ne!(main["pid"], written["pid"]);
    assert_eq!(runs_on(pid_of(&main)), runtime_dir("2026.9.7"));

    let reload = d.ctl(&["reload"]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert_eq!(d.status("main")["pid"], main["pid"], "{}", stdout(&reload));
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
    // It starts on the written runtime from now on.
    assert!(d.ctl(&["restart", "main"]).status.success());
    let again = running(&d, "main");
    assert_ne!(again["pid"], main["pid"]);
    assert_eq!(runs_on(pid_of(&again)), runtime_dir("2026.9.7"));

    // `--write` alone with no choice: nothing to do.
    let nothing = d.ctl(&["upgrade", "main", "--write"]);
    assert!(nothing.status.success(), "{}", stderr(&nothing));
    assert!(stdout(&nothing).contains("no upgrade choice to write"));
}

#[test]
fn a_profile_edited_by_hand_to_the_chosen_runtime_is_kept_on_reload() {
    let (scene, store) = scene(&[("2026.9.7", "")]);
    let d = daemon(&scene, &store, &[]);
    both_running(&d);
    let out = d.ctl(&["upgrade", "main", "--to", "2026.9.7", "--soak", "1s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let main = running(&d, "main");
    let file = scene.dir().join("main.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("2026.9.5", "2026.9.7")).unwrap();
    let reload = d.ctl(&["reload"]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert_eq!(d.status("main")["pid"], main["pid"], "{}", stdout(&reload));
    assert_eq!(choice(&scene, "main"), serde_json::Value::Null);
}

#[test]
fn an_operator_stop_ends_the_soak_and_keeps_the_choice_and_a_second_upgrade_waits() {
    let (scene, store) = scene(&[("2026.9.7", "")]);
    let d = daemon(&scene, &store, &[]);
    let (main, rescue) = both_running(&d);
    let upgrade = std::process::Command::new(common::bin_path("openclawctl"))
        .args(["upgrade", "main", "--to", "2026.9.7", "--soak", "60s"])
        .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_status("main", "soaking on the new release", |s| {
        s["state"] == "running" && s["pid"] != main["pid"] && s["soak_until_unix_ms"].is_u64()
    });
    let second = d.ctl(&["upgrade", "main", "--to", "2026.9.6"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("an upgrade of main is under way"),
        "{}",
        stderr(&second)
    );

    assert!(d.ctl(&["stop", "main"]).status.success());
    let out = upgrade.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Not proven: not a success.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("an operator stopped main during its soak"),
        "{text}"
    );
    assert_eq!(
        choice(&scene, "main"),
        serde_json::json!({"runtime": {"openclaw": "2026.9.7", "node": NODE}})
    );
    assert_eq!(d.status("main")["state"], "stopped");
    let explain = stdout(&d.ctl(&["explain", "main"]));
    assert!(explain.contains("the soak ends"), "{explain}");
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
    // Started again, it runs on the choice.
    assert!(d.ctl(&["start", "main"]).status.success());
    assert_eq!(
        runs_on(pid_of(&running(&d, "main"))),
        runtime_dir("2026.9.7")
    );
}

/// Makes the stand-in runtime `version` in `store` behave as OpenClaw does with its state
/// database: it refuses to start (exit 78) on a database a newer schema wrote, and otherwise
/// migrates it to `schema` before serving (with `faults`).
fn with_schema(store: &Path, version: &str, schema: u32, faults: &str) {
    let script = store
        .join(runtime_dir(version))
        .join("node_modules/openclaw/openclaw.mjs");
    let db = "$OPENCLAW_STATE_DIR/state/openclaw.sqlite";
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             mkdir -p \"$OPENCLAW_STATE_DIR/state\"\n\
             have=$(cat \"{db}\" 2>/dev/null || echo 0)\n\
             if [ \"$have\" -gt {schema} ]; then echo \"database schema $have is newer than this build ({schema})\" >&2; exit 78; fi\n\
             echo {schema} > \"{db}\"\n\
             exec {} \"$@\" {faults}\n",
            common::fake_gateway().display()
        ),
    )
    .unwrap();
}

#[test]
fn a_rollback_puts_back_the_databases_the_new_release_migrated() {
    let (scene, store) = scene(&[("2026.9.8", "")]);
    // 2026.9.5 writes schema 17; 2026.9.8 migrates to 18 and crashes during its soak: without
    // the copy from before the upgrade, 2026.9.5 would refuse the migrated database (exit 78).
    with_schema(&store, "2026.9.5", 17, "");
    with_schema(&store, "2026.9.8", 18, "--crash-after-ms 500");
    let d = daemon(&scene, &store, &[]);
    let (main, rescue) = both_running(&d);
    let state = scene.home().join("state/main");
    let db = state.join("state/openclaw.sqlite");
    assert_eq!(std::fs::read_to_string(&db).unwrap().trim(), "17");
    let out = d.ctl(&["upgrade", "main", "--to", "2026.9.8", "--soak", "5s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("rolled back"), "{text}");
    let after = running(&d, "main");
    assert_ne!(after["pid"], main["pid"]);
    assert_eq!(runs_on(pid_of(&after)), runtime_dir("2026.9.5"));
    assert_eq!(std::fs::read_to_string(&db).unwrap().trim(), "17");
    // What the new release wrote is kept beside it, not deleted.
    let kept: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.rolled-back-from-2026.9.8-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(kept[0].join("openclaw.sqlite"))
            .unwrap()
            .trim(),
        "18"
    );
    let log = d.log("main");
    assert!(log.contains("upgrade: kept a copy of"), "{log}");
    assert!(log.contains("upgrade: restored"), "{log}");
    // The copy is gone with the upgrade; rescue was never touched.
    assert!(!scene.path("daemon-state/upgrades/main/state").exists());
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
}
