//! The control API as its users meet it: openclawctl and plain gRPC clients against the real daemon
//! (socket modes, tokens over TCP, reload, log follow, events, health, reflection, many clients).

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::{
    alive, bin_path, environ, fake_gateway, free_ports, pids_with_env, stderr, stdout, Follower,
    Scene,
};
use openclaw_supervisor::api::v1;

fn pid_of(s: &serde_json::Value) -> u64 {
    s["pid"].as_u64().expect("a pid")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_socket_is_owner_only() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let d = scene.daemon();
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
}

#[test]
fn a_socket_group_makes_the_socket_0660_of_that_group() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let gid = nix::unistd::getgid();
    let group = nix::unistd::Group::from_gid(gid).unwrap().unwrap().name;
    let d = scene.daemon_with(&["--socket-group", &group]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid.as_raw());
}

#[test]
fn openclawctl_names_the_socket_when_no_daemon_answers() {
    let scene = Scene::new();
    let sock = scene.path("nowhere.sock");
    let out = Command::new(bin_path("openclawctl"))
        .args(["status"])
        .env("OPENCLAW_SUPERVISOR_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("openclaw-supervisord --config-dir"), "{err}");
}

#[test]
fn tcp_calls_need_the_right_token() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "autostart: false\n");
    let token = scene.write("token", "s3cret-token\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("127.0.0.1:{}", ports[1]);
    let _d = scene.daemon_with(&["--tcp", &addr, "--token-file", token.to_str().unwrap()]);
    runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let call = |token: Option<&'static str>| {
            let mut client =
                v1::supervisor_service_client::SupervisorServiceClient::new(channel.clone());
            async move {
                let mut req = tonic::Request::new(v1::ListInstancesRequest { names: vec![] });
                if let Some(t) = token {
                    req.metadata_mut()
                        .insert("authorization", t.parse().unwrap());
                }
                client.list_instances(req).await
            }
        };
        let none = call(None).await.unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        let wrong = call(Some("Bearer s3cret-tokem")).await.unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let ok = call(Some("Bearer s3cret-token"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.instances[0].name, "main");
        // The health service is behind the token too.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let h = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(h.code(), tonic::Code::Unauthenticated);
    });
}

#[test]
fn tcp_refuses_a_non_loopback_address_without_leave() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let token = scene.write("token", "t\n");
    let out = scene.run(
        "openclaw-supervisord",
        &[
            "--config-dir",
            "supervisor.d",
            "--socket",
            scene.path("s.sock").to_str().unwrap(),
            "--tcp",
            "0.0.0.0:1",
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--tcp-allow-remote"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn health_and_reflection_are_served_on_the_socket() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let d = scene.daemon();
    runtime().block_on(async {
        let channel = openclaw_supervisor::api::client::channel(&d.socket)
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let h = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "openclaw.supervisor.v1.SupervisorService".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            h.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut refl = ServerReflectionClient::new(channel);
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
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"openclaw.supervisor.v1.SupervisorService".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_string()),
            "{names:?}"
        );
    });
}

#[test]
fn reload_applies_only_the_difference() {
    let scene = Scene::new();
    let ports = free_ports(4);
    scene.fake_profile("keep", ports[0], "");
    scene.fake_profile("change", ports[1], "");
    scene.fake_profile("gone", ports[2], "");
    let d = scene.daemon();
    let keep = d.wait_status("keep", "running", |s| s["state"] == "running");
    let change = d.wait_status("change", "running", |s| s["state"] == "running");
    let gone = d.wait_status("gone", "running", |s| s["state"] == "running");

    // A comment alone is no change; an env var is; one file goes, one comes.
    let keep_file = scene.path("supervisor.d/keep.yaml");
    let text = std::fs::read_to_string(&keep_file).unwrap();
    std::fs::write(&keep_file, format!("# touched\n{text}")).unwrap();
    scene.fake_profile("change", ports[1], "env: { GREETING: hello }\n");
    std::fs::remove_file(scene.path("supervisor.d/gone.yaml")).unwrap();
    scene.fake_profile("added", ports[3], "");

    let dry = d.ctl(&["reload", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("dry run: nothing changed"));
    assert_eq!(d.status("change")["pid"], change["pid"]);

    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("keep"), "keep -");
    assert_eq!(row("change"), "change env");
    assert_eq!(row("gone"), "remove -");
    assert_eq!(row("added"), "add -");

    assert_eq!(
        d.status("keep")["pid"],
        keep["pid"],
        "an unchanged instance is not touched"
    );
    let changed = d.wait_status("change", "running again", |s| s["state"] == "running");
    assert_ne!(changed["pid"], change["pid"]);
    assert!(!alive(pid_of(&change) as u32));
    d.wait_status("added", "running", |s| s["state"] == "running");
    let gone_status = d.ctl(&["status", "gone"]);
    assert!(!gone_status.status.success());
    assert!(stderr(&gone_status).contains("no instance named \"gone\""));
    assert!(
        !alive(pid_of(&gone) as u32),
        "a removed instance's child is stopped"
    );
}

#[test]
fn reload_keeps_an_instance_whose_autostart_alone_changed() {
    let scene = Scene::new();
    let port = free_ports(1)[0];
    scene.fake_profile("main", port, "");
    let d = scene.daemon();
    let before = d.wait_status("main", "running", |s| s["state"] == "running");

    scene.fake_profile("main", port, "autostart: false\n");
    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("main"))
        .unwrap_or_else(|| panic!("no row for main in:\n{table}"));
    assert_eq!(
        row.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["keep", "autostart"],
        "{table}"
    );
    let after = d.status("main");
    assert_eq!(
        after["pid"], before["pid"],
        "autostart alone restarts nothing"
    );
    assert_eq!(after["state"], "running");
    assert!(alive(pid_of(&before) as u32));

    // The kept instance now runs the new profile: reloading the same files again changes nothing.
    let again = d.ctl(&["reload"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again)
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["main", "keep", "-"]),
        "{}",
        stdout(&again)
    );
}

#[test]
fn a_reload_that_fails_its_check_changes_nothing() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    let d = scene.daemon();
    let main = d.wait_status("main", "running", |s| s["state"] == "running");
    let rescue = d.wait_status("rescue", "running", |s| s["state"] == "running");
    // rescue moves onto main's port, and a new profile has a bad key: both errors come in one
    // report.
    scene.fake_profile("rescue", ports[0] + 2, "");
    scene.fake_profile("third", ports[1] + 200, "autostrat: true\n");
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("supervisor.d/rescue.yaml:1"), "{err}");
    assert!(err.contains("supervisor.d/third.yaml:4"), "{err}");
    assert!(err.contains("autostart"), "did-you-mean: {err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(d.status("main")["pid"], main["pid"]);
    assert_eq!(d.status("rescue")["pid"], rescue["pid"]);
    assert_eq!(d.status("main")["state"], "running");
}

#[test]
fn sighup_reloads() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    let mut d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    scene.fake_profile("rescue", ports[1], "");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    common::wait_for("rescue to be added", || {
        d.ctl(&["status", "rescue"]).status.success().then_some(())
    });
    d.wait_status("rescue", "running", |s| s["state"] == "running");
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn logs_follow_prints_the_tail_then_new_lines() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let d = scene.daemon();
    let first = d.wait_status("main", "running", |s| s["state"] == "running");
    let f = Follower::start(&d.socket, &["logs", "-f", "-n", "1000", "main"]);
    let (before, _) = f.until("about the first start", |l| {
        l.contains(&format!("pid {}", pid_of(&first))) && l.contains("supervisor |")
    });
    assert!(before.iter().all(|l| !l.contains("stopping")));
    let out = d.ctl(&["restart", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, stop) = f.until("about the stop", |l| l.contains("stopping pid"));
    assert!(stop.contains(&pid_of(&first).to_string()), "{stop}");
    let now = d.status("main");
    f.until("from the new child's start", |l| {
        l.contains(&format!("pid {}", pid_of(&now)))
    });
}

#[test]
fn watch_prints_each_state_change() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    d.wait_status("rescue", "running", |s| s["state"] == "running");
    let f = Follower::start(&d.socket, &["watch", "--json", "main"]);
    let (_, first) = f.until("with main's current state", |l| l.contains("\"main\""));
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["state"], "running");
    assert!(v["previous_state"].is_null());
    assert!(d.ctl(&["stop", "main"]).status.success());
    let (_, stopping) = f.until("running -> stopping", |l| l.contains("\"stopping\""));
    let v: serde_json::Value = serde_json::from_str(&stopping).unwrap();
    assert_eq!(v["previous_state"], "running");
    let (_, stopped) = f.until("stopping -> stopped", |l| l.contains("\"stopped\""));
    let v: serde_json::Value = serde_json::from_str(&stopped).unwrap();
    assert_eq!(v["previous_state"], "stopping");
    // Only main was asked for.
    assert!(d.ctl(&["restart", "rescue"]).status.success());
    assert!(d.ctl(&["start", "main"]).status.success());
    let (between, _) = f.until("main running again", |l| {
        l.contains("\"running\"") && l.contains("\"starting\"")
    });
    assert!(between.iter().all(|l| !l.contains("rescue")), "{between:?}");
}

#[test]
fn start_stop_restart_all() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "autostart: false\n");
    scene.fake_profile("rescue", ports[1], "autostart: false\n");
    let d = scene.daemon();
    let out = d.ctl(&["start", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("main: running (pid"));
    assert!(stdout(&out).contains("rescue: running (pid"));
    let out = d.ctl(&["stop", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.status("main")["state"], "stopped");
    assert_eq!(d.status("rescue")["state"], "stopped");
    let out = d.ctl(&["start"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no names and no --all is a usage error"
    );
}

#[test]
fn version_shows_client_and_daemon() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let d = scene.daemon();
    let out = d.ctl(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = env!("CARGO_PKG_VERSION");
    let text = stdout(&out);
    assert!(text.contains(&format!("openclawctl {v}")), "{text}");
    assert!(
        text.contains(&format!(
            "openclaw-supervisord {v} (api openclaw.supervisor.v1, pid {}",
            d.pid()
        )),
        "{text}"
    );
}

#[test]
fn completions_are_printed_for_bash() {
    let out = Command::new(bin_path("openclawctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("_openclawctl()"), "{text}");
    assert!(text.contains("reload"));
}

#[test]
fn a_hundred_clients_at_once_never_make_two_children() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("crowd1", ports[0], "");
    scene.fake_profile("crowd2", ports[1], "");
    let d = scene.daemon();
    d.wait_status("crowd1", "running", |s| s["state"] == "running");
    d.wait_status("crowd2", "running", |s| s["state"] == "running");

    // A watcher of the process table: never more than one gateway per instance. The marker
    // carries only the name, and another run of this test (another checkout's suite on the same
    // host) uses the same names: a gateway counts when its state dir is this scene's too.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state_dirs = ["crowd1", "crowd2"].map(|n| {
        format!(
            "OPENCLAW_STATE_DIR={}",
            scene.home().join("state").join(n).display()
        )
    });
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (name, state) in ["crowd1", "crowd2"].iter().zip(&state_dirs) {
                    let ours = pids_with_env("OPENCLAW_SUPERVISOR_INSTANCE", name)
                        .into_iter()
                        .filter(|pid| environ(*pid).contains(state))
                        .count();
                    worst = worst.max(ours);
                }
            }
            worst
        })
    };
    let socket = d.socket.clone();
    let errors = runtime().block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let socket = socket.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = openclaw_supervisor::api::client::connect(&socket)
                    .await
                    .unwrap();
                let mut unexpected = Vec::new();
                for round in 0..4u32 {
                    let name = if (i + round) % 2 == 0 {
                        "crowd1"
                    } else {
                        "crowd2"
                    }
                    .to_string();
                    let r = match (i + round) % 4 {
                        0 => c
                            .start_instance(v1::StartInstanceRequest { name })
                            .await
                            .map(|_| ()),
                        1 => c
                            .stop_instance(v1::StopInstanceRequest {
                                name,
                                timeout_ms: 0,
                            })
                            .await
                            .map(|_| ()),
                        2 => c
                            .restart_instance(v1::RestartInstanceRequest { name })
                            .await
                            .map(|_| ()),
                        _ => c
                            .list_instances(v1::ListInstancesRequest { names: vec![] })
                            .await
                            .map(|_| ()),
                    };
                    // A start or restart may be cut short by another client's stop or restart:
                    // that is ABORTED; anything else is a bug.
                    if let Err(s) = r {
                        if s.code() != tonic::Code::Aborted {
                            unexpected.push(format!("{:?}: {}", s.code(), s.message()));
                        }
                    }
                }
                unexpected
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let worst = watcher.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(worst <= 1, "{worst} gateways of one instance at once");

    // Settled: the status agrees with the process table.
    for name in ["crowd1", "crowd2"] {
        let s = d.wait_status(name, "settled", |s| {
            s["state"] == "running" || s["state"] == "stopped"
        });
        let pids = pids_with_env("OPENCLAW_SUPERVISOR_INSTANCE", name);
        if s["state"] == "running" {
            assert_eq!(pids, vec![pid_of(&s) as u32], "{name}: {s}");
        } else {
            assert!(pids.is_empty(), "{name} is stopped but {pids:?} run");
        }
    }
}

#[test]
fn the_example_grpc_client_lists_and_restarts() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let d = scene.daemon();
    let before = d.wait_status("main", "running", |s| s["state"] == "running");
    let example = fake_gateway().with_file_name("grpc-client");
    assert!(example.exists(), "cargo test builds the examples");
    let out = Command::new(&example)
        .arg(&d.socket)
        .arg("main")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = d.status("main");
    assert_ne!(after["pid"], before["pid"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("main: restarted, pid {}", after["pid"])),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("main") && l.contains("running")),
        "{text}"
    );

    let out = Command::new(&example)
        .arg(&d.socket)
        .arg("Nope!")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("InvalidArgument"), "{}", stderr(&out));
}

#[test]
fn sigterm_ends_open_streams_and_silent_clients_do_not_hold_the_daemon() {
    use std::io::Write;
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let mut d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let mut watcher = Follower::start(&d.socket, &["watch"]);
    watcher.until("with main's state", |l| l.contains("main"));
    let mut follower = Follower::start(&d.socket, &["logs", "-f", "main"]);
    // Connected (it printed the tail) before the daemon stops: a follower still starting when the
    // socket goes away would fail to connect, which is not what this test is about.
    follower.until("the tail of main's log", |_| true);
    // A client that opens an HTTP/2 connection and then neither reads nor hangs up.
    let mut silent = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    assert_eq!(d.terminate(), Some(0));
    // The followers saw the stop, then their streams ended and they exited.
    watcher.until("main stopping", |l| l.contains("-> stopping"));
    for f in [&mut watcher, &mut follower] {
        let status = common::wait_for("openclawctl to exit", || f.child.try_wait().ok().flatten());
        assert!(status.success());
    }
    drop(silent);
}

/// A profile `NAME.yaml` whose stand-in gateway runs with `args`, not started with the daemon.
fn idle_profile(scene: &Scene, name: &str, args: &[&str], extra: &str) {
    let mut cmd = vec![format!("{:?}", fake_gateway().display().to_string())];
    cmd.extend(args.iter().map(|a| format!("{a:?}")));
    scene.profile(
        &format!("{name}.yaml"),
        &format!(
            "port: {}\nstate_dir: ~/state/{name}\ncommand: [{}]\nautostart: false\n{extra}",
            free_ports(1)[0],
            cmd.join(", ")
        ),
    );
}

/// StartInstance of `name` on a thread of its own: what the client gets back.
fn start_in_background(
    socket: &std::path::Path,
    name: &str,
) -> std::thread::JoinHandle<Result<v1::Instance, tonic::Status>> {
    let (socket, name) = (socket.to_path_buf(), name.to_string());
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut c = openclaw_supervisor::api::client::connect(&socket)
                .await
                .unwrap();
            c.start_instance(v1::StartInstanceRequest { name })
                .await
                .map(tonic::Response::into_inner)
        })
    })
}

/// A gateway that is never ready (within the test), and the daemon it runs under.
fn slow_start(scene: &Scene) -> common::Daemon {
    idle_profile(
        scene,
        "slow",
        &["--ready-after-ms", "600000"],
        "health:\n  start_deadline: 10m\n",
    );
    scene.daemon()
}

#[test]
fn a_start_cut_short_by_a_stop_is_aborted() {
    let scene = Scene::new();
    let d = slow_start(&scene);
    let start = start_in_background(&d.socket, "slow");
    d.wait_status("slow", "starting", |s| s["state"] == "starting");
    let out = d.ctl(&["stop", "slow"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = start.join().unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert_eq!(
        err.message(),
        "slow: stopped by an operator before it was ready"
    );
}

#[test]
fn a_start_cut_short_by_a_restart_is_aborted() {
    let scene = Scene::new();
    let d = slow_start(&scene);
    let start = start_in_background(&d.socket, "slow");
    d.wait_status("slow", "starting", |s| s["state"] == "starting");
    // The restart itself waits for a readiness that does not come: let it run on.
    let restarter = Follower::start(&d.socket, &["restart", "slow"]);
    let err = start.join().unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert_eq!(
        err.message(),
        "slow: restarted by an operator before it was ready"
    );
    drop(restarter);
}

#[test]
fn a_start_cut_short_by_the_shutdown_is_unavailable() {
    let scene = Scene::new();
    let mut d = slow_start(&scene);
    let start = start_in_background(&d.socket, "slow");
    d.wait_status("slow", "starting", |s| s["state"] == "starting");
    assert_eq!(d.terminate(), Some(0));
    let err = start.join().unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "slow: the supervisor is shutting down");
}

#[test]
fn a_start_cut_short_by_a_reload_that_changes_the_instance_is_unavailable() {
    let scene = Scene::new();
    let d = slow_start(&scene);
    let start = start_in_background(&d.socket, "slow");
    d.wait_status("slow", "starting", |s| s["state"] == "starting");
    idle_profile(
        &scene,
        "slow",
        &["--ready-after-ms", "600000"],
        "health:\n  start_deadline: 9m\n",
    );
    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = start.join().unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        err.message(),
        "slow: a reload replaced or removed it before it was ready; see `openclawctl status`"
    );
    // The daemon goes on: the changed instance is there, starting again.
    d.wait_status("slow", "starting", |s| s["state"] == "starting");
}

#[test]
fn a_start_that_fails_is_failed_precondition_with_the_reason() {
    let scene = Scene::new();
    idle_profile(
        &scene,
        "broken",
        &["--exit-code", "3"],
        "restart:\n  policy: never\n",
    );
    let d = scene.daemon();
    let err = start_in_background(&d.socket, "broken")
        .join()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        err.message(),
        "broken: it ended before it was ready (exit code 3); see its log"
    );
    // openclawctl says the same, and exits 1.
    let out = d.ctl(&["start", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: broken: it ended before it was ready (exit code 3); see its log\n"
    );
}

#[test]
fn an_unknown_instance_is_not_found_and_a_malformed_name_invalid() {
    let scene = Scene::new();
    idle_profile(&scene, "main", &[], "");
    let d = scene.daemon();
    let socket = d.socket.clone();
    let (unknown, malformed) = runtime().block_on(async move {
        let mut c = openclaw_supervisor::api::client::connect(&socket)
            .await
            .unwrap();
        let unknown = c
            .start_instance(v1::StartInstanceRequest {
                name: "ghost".into(),
            })
            .await
            .unwrap_err();
        let malformed = c
            .stop_instance(v1::StopInstanceRequest {
                name: "../etc".into(),
                timeout_ms: 0,
            })
            .await
            .unwrap_err();
        (unknown, malformed)
    });
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert!(
        unknown.message().starts_with("no instance named \"ghost\""),
        "{unknown:?}"
    );
    assert_eq!(
        malformed.code(),
        tonic::Code::InvalidArgument,
        "{malformed:?}"
    );
    // Each failed name is reported on its own line; the others still happen.
    let out = d.ctl(&["restart", "ghost", "main"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: no instance named \"ghost\""),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).starts_with("main: running (pid "),
        "{}",
        stdout(&out)
    );
}
