//! The rough edges a newcomer meets (issue 12, point 8), as they meet them: what RESTARTS counts,
//! why each state change happened, the CPU figure in JSON, the errors of a missing or unknown name,
//! absolute profile paths in the daemon's answers, and the hint when `openclaw` is not on PATH.

use crate::common;

use common::{free_ports, stderr, stdout, wait_for, Daemon, Follower, Scene};

/// `openclawctl watch ARGS` running against `d`.
fn watch(d: &Daemon, args: &[&str]) -> Follower {
    let all: Vec<&str> = std::iter::once("watch")
        .chain(args.iter().copied())
        .collect();
    Follower::start(&d.socket, &all)
}

/// Every line up to and including the first that satisfies `pred`.
fn through(f: &Follower, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let (mut seen, last) = f.until(what, pred);
    seen.push(last);
    seen
}

fn sigkill(pid: u64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn ok(out: std::process::Output) {
    assert!(out.status.success(), "{}", stderr(&out));
}

/// (policy restarts, operator restarts); a daemon that counts no operator restarts says 0.
fn counts(s: &serde_json::Value) -> (u64, u64) {
    (
        s["restarts"].as_u64().unwrap(),
        s["operator_restarts"].as_u64().unwrap_or(0),
    )
}

#[test]
fn restarts_count_the_policys_restarts_and_the_operators_apart() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");

    ok(d.ctl(&["restart", "main"]));
    assert_eq!(counts(&d.status("main")), (0, 1));
    ok(d.ctl(&["stop", "main"]));
    ok(d.ctl(&["start", "main"]));
    let s = d.status("main");
    assert_eq!(counts(&s), (0, 2));

    // A crash: the policy starts it again, and that is what RESTARTS counts.
    sigkill(s["pid"].as_u64().unwrap());
    let s = d.wait_status("main", "running again after the crash", |v| {
        v["state"] == "running" && v["pid"] != s["pid"]
    });
    assert_eq!(counts(&s), (1, 2));
    let table = stdout(&d.ctl(&["status", "main"]));
    assert!(table.contains(" 1 (+2 by operator) "), "{table}");
}

#[test]
fn watch_gives_every_transition_after_a_crash_its_reason() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let d = scene.daemon();
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    let json = watch(&d, &["--json", "main"]);
    let text = watch(&d, &["main"]);
    through(&json, "with main's state", |l| l.contains("\"running\""));
    through(&text, "with main's state", |l| l.contains("running"));

    sigkill(s["pid"].as_u64().unwrap());
    let lines = through(&json, "main running again", |l| {
        l.contains("\"state\":\"running\"") && l.contains("\"previous_state\":\"starting\"")
    });
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for e in &events {
        assert!(
            e["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "no reason: {e}"
        );
    }
    let transitions: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["previous_state"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        transitions.first(),
        Some(&("running", "stopping", "ended by signal SIGKILL")),
        "{lines:#?}"
    );
    assert_eq!(
        transitions.last(),
        Some(&("starting", "running", "ready")),
        "{lines:#?}"
    );
    assert!(
        transitions.iter().any(|(_, to, why)| *to == "starting"
            && *why == "restart by policy after: ended by signal SIGKILL"),
        "{lines:#?}"
    );

    // The plain form says it after the arrow.
    let plain = through(&text, "main stopping", |l| l.contains("-> stopping"));
    let last = plain.last().unwrap();
    assert!(
        last.ends_with("main running -> stopping: ended by signal SIGKILL"),
        "{last}"
    );

    // An operator's stop says so.
    ok(d.ctl(&["stop", "main"]));
    let lines = through(&json, "main stopped", |l| {
        l.contains("\"state\":\"stopped\"")
    });
    let stopping: serde_json::Value = serde_json::from_str(&lines[lines.len() - 2]).unwrap();
    assert_eq!(stopping["reason"], "operator stop (socket)", "{lines:#?}");
}

/// The number after `"cpu_percent":` in a JSON text.
fn cpu_figure(json: &str) -> &str {
    let at = json.find("\"cpu_percent\":").expect("a cpu_percent") + "\"cpu_percent\":".len();
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap();
    &rest[..end]
}

#[test]
fn status_json_gives_cpu_percent_with_one_decimal_at_most() {
    let scene = Scene::new();
    let port = free_ports(1)[0];
    // A gateway whose tree keeps a core busy: its CPU figure is never a round number.
    let fake = common::fake_gateway();
    scene.profile(
        "busy.yaml",
        &format!(
            "port: {port}\nstate_dir: ~/state/busy\ncommand: [/bin/sh, -c, '{} & while :; do :; done']\n",
            fake.display()
        ),
    );
    let d = scene.daemon();
    d.wait_status("busy", "running", |s| s["state"] == "running");
    let figure = wait_for("a CPU figure above zero", || {
        let out = d.ctl(&["status", "--json", "busy"]);
        let json = stdout(&out);
        let figure = cpu_figure(&json).to_string();
        (figure.parse::<f64>().unwrap() > 0.0).then_some(figure)
    });
    ok(d.ctl(&["stop", "busy"]));
    let decimals = figure.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 1, "cpu_percent {figure}");
}

#[test]
fn start_stop_restart_without_names_say_all() {
    let scene = Scene::new();
    for verb in ["start", "stop", "restart"] {
        let out = scene.run("openclawctl", &[verb]);
        assert_eq!(out.status.code(), Some(2), "{verb}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "error: name the instances to {verb}, or --all for every instance\n"
            )),
            "{err}"
        );
    }
}

#[test]
fn an_unknown_or_malformed_name_is_one_sentence() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let d = scene.daemon();
    let dir = scene.dir().canonicalize().unwrap();

    let out = d.ctl(&["start", "mian"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: no instance named \"mian\" in {}; did you mean \"main\"?\n",
            dir.display()
        )
    );
    let out = d.ctl(&["status", "ghost"]);
    assert_eq!(
        stderr(&out),
        format!(
            "error: no instance named \"ghost\" in {}; the instances are main\n",
            dir.display()
        )
    );
    let out = d.ctl(&["stop", "a/b"]);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("\"a/b\"").count(), 1, "{err}");
    assert!(
        err.starts_with("error: \"a/b\" is not a valid name: use "),
        "{err}"
    );
}

#[test]
fn a_daemon_started_on_a_relative_config_dir_names_absolute_paths() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "autostart: false\n");
    // The scene's daemon runs with `--config-dir supervisor.d`, from the scene root.
    let d = scene.daemon();
    let dir = scene.dir().canonicalize().unwrap();
    assert_eq!(
        d.status("main")["profile_file"],
        dir.join("main.yaml").display().to_string()
    );

    scene.fake_profile("clash", ports[0], "autostart: false\n");
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let clash = format!("{}:1", dir.join("clash.yaml").display());
    let main = format!("{}:1", dir.join("main.yaml").display());
    assert!(err.contains(&clash), "{err}");
    assert!(err.contains(&main), "{err}");
    assert!(!err.contains("(supervisor.d/"), "{err}");
}

#[test]
fn openclaw_not_on_path_says_to_source_the_installed_env_sh() {
    let scene = Scene::new();
    let env = scene.write(".gateway/env.sh", "export PATH=/nowhere:\"$PATH\"\n");
    scene.profile(
        "main.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/main\ncommand: [openclaw, gateway, run]\nenv:\n  PATH: /nonexistent/bin\n",
            free_ports(1)[0]
        ),
    );
    let d = scene.daemon();
    let s = d.wait_status("main", "fatal", |s| s["state"] == "fatal");
    let env = env.canonicalize().unwrap();
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.starts_with("`openclaw` not found on PATH: /nonexistent/bin; "),
        "{err}"
    );
    assert!(
        err.contains(&format!("`source {}`", env.display())),
        "{err}"
    );
}

#[test]
fn a_reload_that_changes_an_instance_says_what_changed() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let json = watch(&d, &["--json", "main"]);
    through(&json, "with main's state", |l| l.contains("\"running\""));

    scene.fake_profile("main", ports[1], "");
    ok(d.ctl(&["reload"]));
    let lines = through(&json, "main stopping", |l| {
        l.contains("\"state\":\"stopping\"")
    });
    let stopping: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    // The fields `reload` lists for it (a new port moves its probes' URLs and derived ports too).
    let why = stopping["reason"].as_str().unwrap();
    assert!(why.starts_with("reload: changed port, "), "{lines:#?}");
    // The changed instance runs again on its new port, by the supervisor, not by an operator.
    let s = d.wait_status("main", "running on its new port", |s| {
        s["state"] == "running" && s["port"] == ports[1]
    });
    assert_eq!(counts(&s), (0, 0));
}

#[test]
fn an_operators_stop_over_tcp_says_so_and_from_where() {
    use openclaw_supervisor::api::v1;
    use std::os::unix::fs::PermissionsExt;
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    let token = scene.write("token", "s3cret-token\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("127.0.0.1:{}", ports[1]);
    let d = scene.daemon_with(&["--tcp", &addr, "--token-file", token.to_str().unwrap()]);
    d.wait_status("main", "running", |s| s["state"] == "running");
    let json = watch(&d, &["--json", "main"]);
    through(&json, "with main's state", |l| l.contains("\"running\""));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = v1::supervisor_service_client::SupervisorServiceClient::new(channel);
        let mut req = tonic::Request::new(v1::StopInstanceRequest {
            name: "main".into(),
            timeout_ms: 0,
        });
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret-token".parse().unwrap());
        client.stop_instance(req).await.unwrap();
    });
    let lines = through(&json, "main stopping", |l| {
        l.contains("\"state\":\"stopping\"")
    });
    let stopping: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let why = stopping["reason"].as_str().unwrap();
    assert!(why.starts_with("operator stop (TCP 127.0.0.1:"), "{why}");
}
