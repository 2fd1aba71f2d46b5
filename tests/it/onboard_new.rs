//! `openclawctl new` on real temp dirs, real listeners and a real daemon; the ephemeral-range
//! warning of `check` and `ports` against this host's own range; a reload's clash advice naming the
//! new instance.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{self, stderr, stdout, Scene};

/// The kernel's ephemeral range of this host, and its reserved ports.
fn host_range() -> (u32, u32, Vec<(u32, u32)>) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (start, end) = (it.next().unwrap(), it.next().unwrap());
    let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .unwrap_or_default()
        .trim()
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (a, b) = e.trim().split_once('-').unwrap_or((e.trim(), e.trim()));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    (start, end, reserved)
}

/// Whether the kernel may hand out a port of `lo..=hi` as an ephemeral one.
fn in_range(lo: u32, hi: u32) -> bool {
    let (start, end, reserved) = host_range();
    (lo.max(start)..=hi.min(end)).any(|p| !reserved.iter().any(|&(a, b)| (a..=b).contains(&p)))
}

/// `openclawctl ARGS` from the scene root, HOME the scene's, nothing of OpenClaw's or the
/// supervisor's environment inherited, plus `env`.
fn ctl(scene: &Scene, args: &[&str], env: &[(&str, &Path)]) -> Output {
    Command::new(common::bin_path("openclawctl"))
        .args(args)
        .current_dir(scene.root.path())
        .env("HOME", scene.home())
        .env_remove("OPENCLAW_SUPERVISOR_CONFIG_DIR")
        .env_remove("OPENCLAW_HOME")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .envs(env.iter().copied())
        .output()
        .expect("run openclawctl")
}

/// `new NAME` into `dir` (relative to the scene), with `more` arguments.
fn new(scene: &Scene, dir: &str, name: &str, more: &[&str]) -> Output {
    let mut args = vec!["new", name, "--config-dir", dir];
    args.extend_from_slice(more);
    ctl(scene, &args, &[])
}

/// The `port:` a written profile sets.
fn port_of(file: &Path) -> u32 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("port: "))
        .unwrap_or_else(|| panic!("no port in {}:\n{text}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn new_takes_a_free_block_outside_the_ephemeral_range_and_a_second_one_the_next() {
    let scene = Scene::new();
    let out = new(&scene, "supervisor.d", "main", &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let first = port_of(&scene.path("supervisor.d/main.yaml"));
    // OpenClaw's default, unless something of this host excludes its block: then a later block.
    assert!(first >= 18789 && (first - 18789) % 111 == 0, "{first}");
    assert!(!in_range(first, first + 110), "{first}");
    if first != 18789 {
        eprintln!("18789-18899 is not free on this host (a listener or the ephemeral range): took {first}");
    }
    let text = stdout(&out);
    assert!(text.contains(&format!(
        "wrote {}",
        scene.path("supervisor.d/main.yaml").display()
    )));
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("browser CDP range")
                && l.contains(&format!(" {}-{} ", first + 11, first + 110))),
        "{text}"
    );
    assert!(text.contains("state dir"), "{text}");
    assert!(text.contains("check passed: 1 profile"), "{text}");

    let out = new(&scene, "supervisor.d", "rescue", &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let second = port_of(&scene.path("supervisor.d/rescue.yaml"));
    assert!(
        second > first + 110 && (second - 18789) % 111 == 0,
        "{first} then {second}"
    );
    assert!(!in_range(second, second + 110), "{second}");
    assert!(
        stdout(&out).contains("check passed: 2 profiles"),
        "{}",
        stdout(&out)
    );
    assert!(scene.check().status.success());
}

#[test]
fn new_never_overwrites_and_refuses_a_name_taken_in_another_case() {
    let scene = Scene::new();
    scene.profile("main.yaml", "# mine\nport: 18789\n");
    let out = new(&scene, "supervisor.d", "main", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("main.yaml exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(scene.path("supervisor.d/main.yaml")).unwrap(),
        "# mine\nport: 18789\n"
    );
    let out = new(&scene, "supervisor.d", "MAIN", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(!scene.path("supervisor.d/MAIN.yaml").exists());
    // An instance named inside another file clashes too.
    scene.profile("other.yaml", "name: Ops\nport: 19500\n");
    let out = new(&scene, "supervisor.d", "ops", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the instance Ops already exists"),
        "{}",
        stderr(&out)
    );
    assert!(!scene.path("supervisor.d/ops.yaml").exists());
    for bad in ["../x", "_x", "a.b"] {
        let out = new(&scene, "supervisor.d", bad, &[]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            stderr(&out).contains("is not a valid name"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_chosen_port_in_another_cdp_range_is_refused_naming_its_file() {
    let scene = Scene::new();
    let p = common::free_ports(1)[0];
    scene.fake_profile("rescue", p, "");
    let chosen = (p + 20).to_string();
    let out = new(&scene, "supervisor.d", "ops", &["--port", &chosen]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "meets rescue's browser CDP range {}-{} (claimed at {}:",
            p + 11,
            p + 110,
            scene.path("supervisor.d/rescue.yaml").display()
        )),
        "{err}"
    );
    assert!(err.contains("nothing written"), "{err}");
    assert!(!scene.path("supervisor.d/ops.yaml").exists());
}

#[test]
fn a_listener_on_the_candidate_port_pushes_the_choice_to_a_later_block() {
    let scene = Scene::new();
    // What `new` would take now, held by a listener of ours (retried if another test takes it
    // between the two steps).
    let (held, _listener) = common::wait_for("a candidate port to hold", || {
        let out = new(&scene, "probe.d", "probe", &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let file = scene.path("probe.d/probe.yaml");
        let port = port_of(&file);
        std::fs::remove_file(&file).unwrap();
        let l = std::net::TcpListener::bind(("127.0.0.1", port as u16)).ok()?;
        Some((port, l))
    });
    let out = new(&scene, "supervisor.d", "ops", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let took = port_of(&scene.path("supervisor.d/ops.yaml"));
    assert!(
        took >= held + 111 && (took - held) % 111 == 0,
        "held {held}, took {took}"
    );

    // Asked for, the held port is refused naming the process that listens.
    let out = new(
        &scene,
        "supervisor.d",
        "other",
        &["--port", &held.to_string()],
    );
    assert_eq!(out.status.code(), Some(1));
    let me = std::process::id();
    assert!(
        stderr(&out).contains(&format!("process {me} (")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(&format!("listens on port {held}")));
}

#[test]
fn from_profile_takes_openclaws_state_dir_config_file_and_gateway_port() {
    let scene = Scene::new();
    let p = common::free_ports(1)[0];
    let oc_home = scene.path("oc-home");
    scene.write(
        "oc-home/.openclaw-work/openclaw.json",
        &format!("{{\n  // set up by openclaw --profile work setup\n  gateway: {{\n    port: {p},\n  }},\n}}\n"),
    );
    let out = ctl(
        &scene,
        &[
            "new",
            "bot",
            "--from-profile",
            "work",
            "--config-dir",
            "supervisor.d",
        ],
        &[("OPENCLAW_HOME", &oc_home)],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = std::fs::read_to_string(scene.path("supervisor.d/bot.yaml")).unwrap();
    let state = oc_home.join(".openclaw-work");
    assert!(text.contains("openclaw_profile: work\n"), "{text}");
    assert!(
        text.contains(&format!("state_dir: \"{}\"\n", state.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "config_path: \"{}\"\n",
            state.join("openclaw.json").display()
        )),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("port:")), "{text}");
    let shown = stdout(&out);
    assert!(
        shown.contains(&format!(
            "port {p}: from gateway.port of {}:4",
            state.join("openclaw.json").display()
        )),
        "{shown}"
    );

    // `ports` reads the gateway port from the config file.
    let ports = scene.run(
        "openclawctl",
        &["ports", "--json", "--config-dir", "supervisor.d"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&ports)).unwrap();
    assert_eq!(v[0]["port"]["value"], p);
    assert_eq!(v[0]["port"]["source"], "config file");

    // A profile OpenClaw never set up is refused.
    let out = ctl(
        &scene,
        &[
            "new",
            "bot2",
            "--from-profile",
            "nope",
            "--config-dir",
            "supervisor.d",
        ],
        &[("OPENCLAW_HOME", &oc_home)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{} does not exist",
            oc_home.join(".openclaw-nope").display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn new_with_start_has_the_running_daemon_start_it() {
    let scene = Scene::new();
    // `openclaw` on the daemon's PATH is the stand-in gateway, as the written command runs it.
    let bin = scene.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(common::fake_gateway(), bin.join("openclaw")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = scene.daemon_with_env(&[], &[("PATH", &path)]);
    let p = common::free_ports(1)[0].to_string();
    let out = ctl(
        &scene,
        &[
            "new",
            "ops",
            "--port",
            &p,
            "--config-dir",
            "supervisor.d",
            "--start",
        ],
        &[("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("ops ") && l.contains(" add")),
        "{}",
        stdout(&out)
    );
    // `new --start` returns once the instance is ready, as `start` does.
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("ops: running")),
        "{}",
        stdout(&out)
    );
    let st = d.wait_status("ops", "running", |s| s["state"] == "running");
    assert_eq!(st["port"], p.parse::<u32>().unwrap());
    // It has a token of its own, made by the supervisor.
    let y = std::fs::read_to_string(scene.dir().join("ops.yaml")).unwrap();
    assert!(y.contains("\ngateway_token: generate\n"), "{y}");
}

#[test]
fn check_and_ports_warn_of_a_port_in_the_hosts_ephemeral_range() {
    let (start, end, _) = host_range();
    // A block that starts inside the range (and that no reserved port covers whole).
    let Some(g) = (start..=end.min(65425))
        .step_by(111)
        .find(|&g| in_range(g, g + 110))
    else {
        // Only a host whose whole range is reserved (or above 65425) has none.
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI has the default range 32768-60999"
        );
        eprintln!("SKIPPED: no gateway port in this host's ephemeral range {start}-{end} that is not reserved");
        return;
    };
    let scene = Scene::new();
    scene.profile("hi.yaml", &format!("port: {g}\n"));
    let out = scene.check();
    assert!(
        out.status.success(),
        "a warning is no error: {}",
        stdout(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "warning: hi (supervisor.d/hi.yaml:1): port: ports {g}-"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("of the block of gateway port {g} lie in the kernel's ephemeral port range {start}-{end}")), "{text}");
    assert!(
        text.contains("the gateway then fails to bind at random"),
        "{text}"
    );
    assert!(text.contains("move hi to "), "{text}");
    assert!(text.contains("1 warning"), "{text}");

    let out = scene.run("openclawctl", &["ports", "--config-dir", "supervisor.d"]);
    let table = stdout(&out);
    assert!(
        table.contains(&format!("kernel ephemeral ports: {start}-{end}")),
        "{table}"
    );
    assert!(table.contains("! ephemeral"), "{table}");
    let out = scene.run(
        "openclawctl",
        &["ports", "--json", "--config-dir", "supervisor.d"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["ephemeral_range"]["start"], start);
    assert_eq!(v[0]["ephemeral_range"]["end"], end);
    assert!(v[0]["ports"][0]["ephemeral"].is_string(), "{v}");
}

#[test]
fn a_reload_with_a_clashing_new_profile_tells_the_new_one_to_move() {
    let scene = Scene::new();
    let p = common::free_ports(1)[0];
    scene.fake_profile("rescue", p, "autostart: false\n");
    let d = scene.daemon();
    // ops starts below rescue, and its CDP range covers rescue's ports.
    scene.fake_profile("ops", p - 51, "autostart: false\n");
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("error: ops ("), "{err}");
    assert!(
        err.contains(&format!("move ops to {} or above", p + 111)),
        "{err}"
    );
    assert!(!err.contains("move rescue"), "{err}");
    // A plain check knows no running set: the old rule, the later claim moves.
    let out = scene.check();
    assert!(stdout(&out).contains("move rescue to"), "{}", stdout(&out));
}

#[test]
fn a_new_profile_that_fails_the_check_is_removed_again() {
    let scene = Scene::new();
    // a already uses the state dir OpenClaw gives the profile `b`.
    scene.profile("a.yaml", "port: 18789\nstate_dir: ~/.openclaw-b\n");
    let out = new(&scene, "supervisor.d", "b", &["--port", "19500"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("is also a's state dir"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "removed {} again",
            scene.path("supervisor.d/b.yaml").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!scene.path("supervisor.d/b.yaml").exists());
}
