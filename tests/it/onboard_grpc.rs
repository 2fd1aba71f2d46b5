//! A newcomer's first contact: a Python script with grpcio's default channel against the socket
//! (health, reflection v1alpha and v1, ListInstances, RestartInstance), and the daemon's log as an
//! operator reads it (pids as numbers, each process that holds an instance's place named once,
//! what a SIGHUP reload did).

use crate::common;

use std::process::{Command, Stdio};

use common::{alive, fake_gateway, free_ports, stderr, stdout, wait_for, Scene};

/// Whether this is a CI run (`CI=true`, as `.ci/run` is run): there a missing grpcio fails.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether python3 with grpcio, grpcio-tools, grpcio-reflection and grpcio-health-checking is
/// here; without, the test is skipped with a banner, or fails under CI (`.ci/run` installs them).
pub(crate) fn python_grpc() -> bool {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_reflection.v1alpha, grpc_health.v1",
        ])
        .output();
    let why = match probe {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("python3 lacks grpcio: {}", stderr(&o).trim()),
        Err(e) => format!("no python3: {e}"),
    };
    assert!(
        !in_ci(),
        "{why}; with CI=true this test fails rather than skips (.ci/run installs them: \
         python3 -m pip install grpcio grpcio-tools grpcio-reflection grpcio-health-checking)"
    );
    eprintln!(
        "\n==== SKIPPED the test with a Python grpcio client: {why}\n\
         ==== install: python3 -m pip install grpcio grpcio-tools grpcio-reflection grpcio-health-checking\n"
    );
    false
}

/// Whether `line` has `prefix` followed by `pid` and then no further digit.
fn names(line: &str, prefix: &str, pid: u32) -> bool {
    let want = format!("{prefix}{pid}");
    line.match_indices(&want).any(|(at, _)| {
        !line[at + want.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// The daemon's log as written so far.
fn daemon_log(d: &common::Daemon) -> String {
    std::fs::read_to_string(&d.stderr).unwrap_or_default()
}

#[test]
fn python_grpcio_with_default_options_drives_the_daemon() {
    if !python_grpc() {
        return;
    }
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    let d = scene.daemon();
    let before = d.wait_status("rescue", "running", |s| s["state"] == "running");
    d.wait_status("main", "running", |s| s["state"] == "running");

    let script = common::repo().join("examples/python-client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&d.socket)
        .arg("rescue")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "{} failed: {err}\n{text}\ndaemon log:\n{}",
        script.display(),
        daemon_log(&d)
    );
    let line = |prefix: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
            .to_string()
    };
    assert_eq!(line("health:"), "health: SERVING");
    for version in ["v1alpha", "v1"] {
        let services = line(&format!("reflection {version}:"));
        for service in [
            "openclaw.supervisor.v1.SupervisorService",
            "grpc.health.v1.Health",
            &format!("grpc.reflection.{version}.ServerReflection"),
        ] {
            assert!(
                services.split_whitespace().any(|s| s == service),
                "{service} not listed by reflection {version}: {services}"
            );
        }
    }
    let old = before["pid"].as_u64().unwrap();
    assert_eq!(
        line("instance: rescue"),
        format!("instance: rescue INSTANCE_STATE_RUNNING pid {old}")
    );
    assert!(line("instance: main").contains("INSTANCE_STATE_RUNNING"));
    // RestartInstance answered with the new child, the one the daemon now runs.
    let now = d.status("rescue");
    let new = now["pid"].as_u64().unwrap();
    assert_ne!(new, old);
    assert_eq!(
        line("restarted:"),
        format!("restarted: rescue pid {old} -> {new}")
    );
    assert!(!alive(old as u32));
}

#[test]
fn the_daemon_log_names_pids_as_numbers() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let mut d = scene.daemon();
    let first = d.wait_status("main", "running", |s| s["state"] == "running");
    let out = d.ctl(&["stop", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.terminate(), Some(0));
    let log = daemon_log(&d);
    let pid = first["pid"].as_u64().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("starting -> running") && l.contains(&format!("pid={pid}"))),
        "no transition names pid={pid}:\n{log}"
    );
    // With no child (`stopping -> stopped`) the pid is left out, not written as `None`.
    assert!(
        log.lines().any(|l| l.contains("stopping -> stopped")),
        "{log}"
    );
    for wrong in ["Some(", "None"] {
        assert!(
            !log.contains(wrong),
            "{wrong:?} in the daemon's log:\n{log}"
        );
    }
}

#[test]
fn each_process_on_an_instance_place_is_reported_once_under_one_name() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    // A gateway started by hand on main's port.
    let mut stranger = Command::new(fake_gateway())
        .args(["--port", &ports[0].to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // What an earlier supervisor left of rescue: its marker, its state dir, its port.
    let state = scene.home().join("state/rescue");
    let mut leftover = Command::new(fake_gateway())
        .args(["--port", &ports[1].to_string()])
        .env("OPENCLAW_SUPERVISOR_INSTANCE", "rescue")
        .env("OPENCLAW_STATE_DIR", &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for (port, who) in [(ports[0], "the stranger"), (ports[1], "the leftover")] {
        wait_for(&format!("{who} to listen"), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        });
    }
    let d = scene.daemon();
    d.wait_status("main", "blocked", |s| s["state"] == "blocked");
    d.wait_status("rescue", "running", |s| s["state"] == "running");
    wait_for("the leftover to be ended", || {
        leftover.try_wait().unwrap().map(|_| ())
    });
    let log = daemon_log(&d);
    let about = |pid: u32| -> Vec<&str> {
        log.lines()
            .filter(|l| ["pid=", "pid ", "holder="].iter().any(|p| names(l, p, pid)))
            .collect()
    };
    let stranger_lines = about(stranger.id());
    assert_eq!(
        stranger_lines.len(),
        1,
        "the stranger should be reported once:\n{log}"
    );
    assert!(
        stranger_lines[0].contains(&format!("port {} is held by pid", ports[0])),
        "{}",
        stranger_lines[0]
    );
    let leftover_lines = about(leftover.id());
    assert_eq!(
        leftover_lines.len(),
        1,
        "the leftover should be reported once:\n{log}"
    );
    let line = leftover_lines[0];
    assert!(line.contains("left by an earlier run"), "{line}");
    assert!(
        line.contains(&format!("listens on port {}", ports[1])),
        "{line}"
    );
    assert!(!line.contains("not started by this supervisor"), "{line}");
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn sighup_logs_what_the_reload_did() {
    let scene = Scene::new();
    let ports = free_ports(3);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    let reload_lines = |n: usize| -> Vec<String> {
        wait_for(&format!("{n} reload outcomes in the daemon's log"), || {
            let lines: Vec<String> = daemon_log(&d)
                .lines()
                .filter(|l| l.contains("reload applied") || l.contains("reload refused"))
                .map(str::to_string)
                .collect();
            (lines.len() >= n).then_some(lines)
        })
    };

    hup();
    assert!(
        reload_lines(1)[0].ends_with("reload applied: nothing changed (2 instances)"),
        "{}",
        daemon_log(&d)
    );

    scene.fake_profile("ops", ports[2], "");
    std::fs::remove_file(scene.dir().join("rescue.yaml")).unwrap();
    scene.fake_profile("main", ports[0], "env: { A: b }\n");
    hup();
    assert!(
        reload_lines(2)[1].ends_with(
            "reload applied: added ops; removed rescue; changed and restarted main (env)"
        ),
        "{}",
        daemon_log(&d)
    );

    scene.profile("bad.yaml", "port: [\n");
    hup();
    let refused = reload_lines(3)[2].clone();
    assert!(
        refused.contains("reload refused, nothing changed"),
        "{refused}"
    );
    // The check's errors follow in the same entry, naming the file.
    let log = daemon_log(&d);
    let after = &log[log.find("reload refused").unwrap()..];
    assert!(after.contains("bad.yaml"), "{after}");
}

#[test]
fn reflection_v1alpha_is_served_on_tcp_too() {
    use std::os::unix::fs::PermissionsExt;
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "autostart: false\n");
    let token = scene.write("token", "s3cret-token\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("127.0.0.1:{}", ports[1]);
    let _d = scene.daemon_with(&["--tcp", &addr, "--token-file", token.to_str().unwrap()]);
    let names = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let token: tonic::metadata::MetadataValue<_> = "Bearer s3cret-token".parse().unwrap();
            let mut refl = ServerReflectionClient::with_interceptor(
                channel,
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut().insert("authorization", token.clone());
                    Ok(r)
                },
            );
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut resp = refl
                .server_reflection_info(tokio_stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner();
            let msg = resp.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
                panic!("not a service list: {msg:?}");
            };
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        });
    for service in [
        "openclaw.supervisor.v1.SupervisorService",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }
}
