//! Re-exec: `openclawctl reexec` (and SIGUSR2) replaces the daemon's program in place. Every
//! gateway keeps its pid and its pipes (no line lost, none twice), the API comes back on the same
//! socket with its history, a binary that cannot take over changes nothing, and clients calling
//! through it see UNAVAILABLE at most. Stand-in gateways printing numbered lines.

use crate::common;

use common::{alive, bin_path, free_ports, stderr, stdout, wait_for, Daemon, Scene};

fn pid_of(s: &serde_json::Value) -> u32 {
    s["pid"].as_u64().expect("a pid") as u32
}

fn running(d: &Daemon, name: &str) -> serde_json::Value {
    d.wait_status(name, "running", |s| s["state"] == "running")
}

/// The numbers of the `tick K` lines in an instance's log file, in file order.
fn ticks(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_once("stdout | tick ")?.1.trim().parse().ok())
        .collect()
}

/// Every tick from 1 to the last is there exactly once, in order.
fn assert_whole(name: &str, log: &str) -> u64 {
    let t = ticks(log);
    let expected: Vec<u64> = (1..=t.len() as u64).collect();
    assert_eq!(
        t, expected,
        "{name}: ticks lost, doubled or out of order:\n{log}"
    );
    t.len() as u64
}

fn version(d: &Daemon) -> String {
    let out = d.ctl(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// The binary the daemon process runs now.
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Installs the daemon binary at `to` the way `install` does: a new file renamed over the old one.
fn install(to: &std::path::Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(bin_path("openclaw-supervisord"), &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A scene with `main` and `rescue` ticking every 20 ms, under a daemon whose `--binary` is a copy
/// of the daemon in the scene (so the test can install another there).
fn ticking(scene: &Scene) -> (Daemon, std::path::PathBuf) {
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "");
    scene.fake_profile("rescue", ports[1], "");
    for name in ["main", "rescue"] {
        let path = scene.path(&format!("supervisor.d/{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("\"]\n", "\", \"--tick-ms\", \"20\"]\n");
        std::fs::write(&path, text).unwrap();
    }
    let binary = scene.path("bin/openclaw-supervisord");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    install(&binary);
    let d = scene.daemon_with(&["--binary", binary.to_str().unwrap()]);
    (d, binary)
}

#[test]
fn a_reexec_keeps_every_gateway_and_every_line() {
    let scene = Scene::new();
    let (d, binary) = ticking(&scene);
    let before: Vec<serde_json::Value> =
        ["main", "rescue"].iter().map(|n| running(&d, n)).collect();
    // Lines are flowing before the exec.
    wait_for("ticks in main's log", || {
        (ticks(&d.log("main")).len() > 5).then_some(())
    });
    // A new binary installed at the daemon's path, as an upgrade does.
    install(&binary);
    let out = d.ctl(&["reexec"]);
    assert!(
        out.status.success(),
        "reexec failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("re-executed"), "{}", stdout(&out));
    // The same process, now running the installed file (not the one it was started from).
    assert_eq!(exe_of(d.pid()), binary.display().to_string());
    let v = version(&d);
    assert!(v.contains(&format!("pid {}", d.pid())), "{v}");
    for (name, was) in ["main", "rescue"].iter().zip(&before) {
        let s = d.status(name);
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["pid"], was["pid"], "{name} was restarted: {s}");
        assert_eq!(s["restarts"], 0, "{s}");
        assert!(alive(pid_of(&s)));
    }
    // Lines written after the exec reach the log, and none before, during or after it is lost or
    // written twice.
    let at_exec = ticks(&d.log("main")).len();
    wait_for("ticks after the re-exec", || {
        (ticks(&d.log("main")).len() > at_exec + 10 && ticks(&d.log("rescue")).len() > at_exec + 10)
            .then_some(())
    });
    for name in ["main", "rescue"] {
        assert_whole(name, &d.log(name));
    }
    // The tail `logs` shows goes back to before the exec.
    let out = d.ctl(&["logs", "main", "-n", "1000"]);
    assert!(stdout(&out).contains("tick 1\n"), "{}", stdout(&out));
}

#[test]
fn sigusr2_reexecs_too_and_twice_is_fine() {
    let scene = Scene::new();
    let (d, _) = ticking(&scene);
    let main = running(&d, "main");
    for n in 1..=2 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.pid() as i32),
            nix::sys::signal::Signal::SIGUSR2,
        )
        .unwrap();
        wait_for("the exec count to go up", || {
            let out = d.ctl(&["version"]);
            (out.status.success() && stdout(&out).contains(&format!("execs {n}"))).then_some(())
        });
    }
    let s = running(&d, "main");
    assert_eq!(s["pid"], main["pid"]);
    let at = ticks(&d.log("main")).len();
    wait_for("ticks after two re-execs", || {
        (ticks(&d.log("main")).len() > at + 5).then_some(())
    });
    assert_whole("main", &d.log("main"));
}

#[test]
fn a_binary_that_cannot_take_over_changes_nothing() {
    let scene = Scene::new();
    let (d, binary) = ticking(&scene);
    let main = running(&d, "main");
    // Not a daemon at all.
    std::fs::write(&binary, "#!/bin/sh\necho 'some other program'\n").unwrap();
    let out = d.ctl(&["reexec"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("nothing changed")
            && err.contains("no handover check")
            && err.contains("some other program"),
        "{err}"
    );
    // A daemon, but the profiles on disk fail its check: the report says where.
    install(&binary);
    let bad = scene.path("supervisor.d/rescue.yaml");
    let good = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, format!("{good}portt: 1\n")).unwrap();
    let out = d.ctl(&["reexec"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("rescue.yaml") && err.contains("portt"),
        "{err}"
    );
    std::fs::write(&bad, good).unwrap();
    // Nothing changed: the same program, the same gateways, still serving.
    assert!(version(&d).contains("execs 0"), "{}", version(&d));
    let s = running(&d, "main");
    assert_eq!(s["pid"], main["pid"]);
    assert_eq!(s["restarts"], 0);
    let at = ticks(&d.log("main")).len();
    wait_for("ticks after the refusals", || {
        (ticks(&d.log("main")).len() > at + 5).then_some(())
    });
    assert_whole("main", &d.log("main"));
}

#[test]
fn clients_calling_through_a_reexec_see_unavailable_at_most() {
    use openclaw_supervisor::api::{client, v1};
    let scene = Scene::new();
    let (d, _) = ticking(&scene);
    running(&d, "main");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socket = d.socket.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..100 {
        let (socket, stop) = (socket.clone(), stop.clone());
        clients.push(rt.spawn(async move {
            let mut errors = Vec::new();
            let mut ok = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // A new connection now and then, as short-lived clients make.
                // A connection that cannot be made is UNAVAILABLE to a gRPC client, which a
                // channel would report on the call.
                let Ok(mut c) = client::connect(&socket).await else {
                    continue;
                };
                for _ in 0..5 {
                    let r = if i % 2 == 0 {
                        c.get_version(v1::GetVersionRequest {}).await.map(|_| ())
                    } else {
                        c.list_instances(v1::ListInstancesRequest { names: vec![] })
                            .await
                            .map(|_| ())
                    };
                    match r {
                        Ok(()) => ok += 1,
                        // UNAVAILABLE, or the daemon's graceful close of the connection
                        // (GOAWAY NO_ERROR), which tonic reports otherwise than gRPC's own
                        // clients do (see `client::unavailable`).
                        Err(s) if client::unavailable(&s) => {}
                        Err(s) => errors.push(format!(
                            "{:?}: {} ({:?})",
                            s.code(),
                            s.message(),
                            std::error::Error::source(&s)
                        )),
                    }
                }
            }
            (ok, errors)
        }));
    }
    // Everyone is calling; then the exec.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // And calls go on against the new program.
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ok = 0;
    for c in clients {
        let (n, errors) = rt.block_on(c).unwrap();
        assert!(errors.is_empty(), "a client saw: {errors:?}");
        ok += n;
    }
    assert!(ok > 0);
    assert!(version(&d).contains("execs 1"));
}

#[test]
fn under_systemd_a_reexec_says_reloading_then_ready_from_the_same_pid() {
    use std::os::unix::net::UnixDatagram;
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "");
    let notify = scene.path("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    // Every datagram is taken at once, as systemd takes them (a full socket would hold the
    // daemon's notices up): the test reads them from a channel.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut until = |what: &str, pred: &dyn Fn(&str) -> bool| -> String {
        loop {
            // Only a guard against a hang: the waits have no time limit of their own.
            let msg = rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("no {what} ({e}); seen: {seen:?}"));
            seen.push(msg.clone());
            if pred(&msg) {
                return msg;
            }
        }
    };
    let d = scene.daemon_with_env(&[], &[("NOTIFY_SOCKET", notify.to_str().unwrap())]);
    until("READY=1", &|m| m.lines().any(|l| l == "READY=1"));
    let main = running(&d, "main");
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reloading = until("RELOADING=1", &|m| m.lines().any(|l| l == "RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert!(reloading.contains("STATUS=re-executing"), "{reloading:?}");
    // The new program says it is ready, from the same pid (systemd's main pid).
    until("READY=1 again", &|m| m.lines().any(|l| l == "READY=1"));
    assert!(version(&d).contains(&format!("pid {}", d.pid())));
    let s = running(&d, "main");
    assert_eq!(s["pid"], main["pid"]);
    // The handover's variable is the daemon's, never a gateway's: not in one started since.
    let out = d.ctl(&["restart", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = running(&d, "main");
    assert_ne!(s["pid"], main["pid"]);
    let env = std::fs::read(format!("/proc/{}/environ", pid_of(&s))).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains("OPENCLAW_SUPERVISOR_HANDOVER"));
}

/// Ten threads of a Python grpcio client (gRPC's C core, default options) calling the health
/// service back to back, each on a new channel every five calls, for `secs`: "ok N" and the codes
/// of the calls that failed, one line.
const GRPCIO_CLIENTS: &str = r#"
import collections, sys, threading, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
sock, secs = sys.argv[1], float(sys.argv[2])
ok, codes, lock = [0], collections.Counter(), threading.Lock()
def run():
    end = time.time() + secs
    while time.time() < end:
        with grpc.insecure_channel("unix://" + sock) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for _ in range(5):
                try:
                    stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                    with lock: ok[0] += 1
                except grpc.RpcError as e:
                    with lock: codes[e.code().name] += 1
threads = [threading.Thread(target=run) for _ in range(10)]
for t in threads: t.start()
for t in threads: t.join()
print("ok", ok[0], "failed", dict(codes))
"#;

#[test]
fn a_grpcio_client_through_a_reexec_sees_unavailable_at_most() {
    if !crate::onboard_grpc::python_grpc() {
        return;
    }
    let scene = Scene::new();
    let (d, _) = ticking(&scene);
    running(&d, "main");
    let python = std::process::Command::new("python3")
        .args(["-c", GRPCIO_CLIENTS])
        .arg(&d.socket)
        .arg("3")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = python.wait_with_output().unwrap();
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    // "ok 1234 failed {'UNAVAILABLE': 7}": calls were answered, and any that failed was UNAVAILABLE.
    let line = said.lines().last().unwrap_or_default();
    eprintln!("grpcio clients through the re-exec: {line}");
    let ok: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ok > 0, "{said}");
    let failed = line.split_once("failed ").map_or("", |(_, f)| f);
    let other = failed
        .trim_matches(|c| c == '{' || c == '}')
        .split(", ")
        .filter(|kv| !kv.is_empty() && !kv.starts_with("'UNAVAILABLE'"))
        .collect::<Vec<_>>();
    assert!(
        other.is_empty(),
        "grpcio saw other errors than UNAVAILABLE: {line}"
    );
    assert!(version(&d).contains("execs 1"));
}

#[test]
fn a_reexec_while_a_gateway_is_stopping_is_refused_and_changes_nothing() {
    let scene = Scene::new();
    let ports = free_ports(2);
    // main ignores SIGTERM: its stop waits out the stop timeout, longer than a re-exec waits for
    // every instance to be at rest.
    scene.fake_profile("main", ports[0], "stop: { timeout: 12s }\n");
    let path = scene.path("supervisor.d/main.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"]\n", "\", \"--ignore-sigterm\"]\n")).unwrap();
    scene.fake_profile("rescue", ports[1], "");
    let d = scene.daemon();
    running(&d, "main");
    let rescue = running(&d, "rescue");
    let socket = d.socket.clone();
    let stopping = std::thread::spawn(move || {
        std::process::Command::new(bin_path("openclawctl"))
            .args(["stop", "main"])
            .env("OPENCLAW_SUPERVISOR_SOCKET", socket)
            .output()
            .unwrap()
    });
    d.wait_status("main", "stopping", |s| s["state"] == "stopping");
    let out = d.ctl(&["reexec"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("nothing changed") && err.contains("main still busy"),
        "{err}"
    );
    // Nothing changed: the same program; rescue untouched; main's stop goes on to its end.
    assert!(version(&d).contains("execs 0"), "{}", version(&d));
    let s = running(&d, "rescue");
    assert_eq!(s["pid"], rescue["pid"]);
    let stopped = stopping.join().unwrap();
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert_eq!(d.status("main")["state"], "stopped");
    // And once it has, a re-exec goes through.
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(running(&d, "rescue")["pid"], rescue["pid"]);
    assert_eq!(d.status("main")["state"], "stopped");
}

#[test]
fn a_profile_changed_on_disk_is_applied_by_the_reexec_as_a_reload_would() {
    let scene = Scene::new();
    let (d, _) = ticking(&scene);
    let main = running(&d, "main");
    let rescue = running(&d, "rescue");
    // rescue's env changes on disk (a restart field); main's autostart (no restart).
    for (name, extra) in [
        ("rescue", "env: { EXTRA: \"1\" }\n"),
        ("main", "autostart: true\n"),
    ] {
        let path = scene.path(&format!("supervisor.d/{name}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{extra}")).unwrap();
    }
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = running(&d, "main");
    assert_eq!(m["pid"], main["pid"], "main was restarted: {m}");
    let r = d.wait_status("rescue", "running again", |s| {
        s["state"] == "running" && s["pid"] != rescue["pid"]
    });
    // A start of the new profile, as a reload's: not a restart by policy.
    assert_eq!(r["restarts"], 0, "{r}");
    let env = std::fs::read(format!("/proc/{}/environ", pid_of(&r))).unwrap();
    assert!(String::from_utf8_lossy(&env).contains("EXTRA=1"));
    assert!(!alive(pid_of(&rescue)));
    let log = std::fs::read_to_string(&d.stderr).unwrap_or_default();
    assert!(log.contains("its profile changed on disk (env)"), "{log}");
}
