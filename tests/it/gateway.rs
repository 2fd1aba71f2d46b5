//! End to end with the real OpenClaw gateway: installs the pinned release with
//! `scripts/install-openclaw`, runs a main and a rescue gateway under the daemon, and checks readiness,
//! isolation of their state dirs, the restart after a SIGKILL, whole-tree stops and the daemon's
//! shutdown. Skipped, loudly, when the npm registry cannot be reached; failed instead under
//! `CI=true`, where a skip would let a run pass that tested no real gateway.

use crate::common;

use common::{alive, environ, pids_with_env, Daemon, Scene};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MARKER: &str = "OPENCLAW_SUPERVISOR_INSTANCE";
const NAMES: [&str; 2] = ["main", "rescue"];
/// Long enough for a slow, shared 2-core machine; only stops a test that would otherwise hang.
const DEADLINE: Duration = Duration::from_secs(360);

/// Whether this is a CI run: CI services set `CI=true` (as `.ci/run` reads it); there no skip.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs the install script; the PATH dirs of the gateway and its Node, or None when the registry
/// cannot be reached (after a banner saying the test is skipped). Under CI that is a failure.
fn install() -> Option<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-openclaw");
    let t = Instant::now();
    let out = Command::new(&script)
        .arg("--print-path")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
    eprint!("{stderr}");
    match out.status.code() {
        Some(0) => {}
        Some(69) if in_ci() => panic!(
            "FAILED: the real-gateway end-to-end test cannot run: the npm registry cannot be \
             reached, so OpenClaw could not be installed (scripts/install-openclaw exited 69), and \
             with CI=true this test fails rather than skips (the script's output is above)"
        ),
        Some(69) => {
            let banner = format!(
                "\n{bar}\nSKIPPED: the real-gateway end-to-end test: the npm registry cannot be reached,\n\
                 so OpenClaw could not be installed (scripts/install-openclaw exited 69).\n\
                 Nothing about the real gateway was tested. Its output:\n{stderr}{bar}\n",
                bar = "#".repeat(78)
            );
            // Straight to the fds, not print!: the test harness captures print! of a passing test.
            let _ = std::io::stderr().write_all(banner.as_bytes());
            let _ = std::io::stdout().write_all(banner.as_bytes());
            return None;
        }
        code => panic!(
            "scripts/install-openclaw failed ({code:?}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    }
    let dirs = stdout.trim().to_string();
    assert!(
        !dirs.is_empty() && !dirs.contains('\n'),
        "install-openclaw --print-path printed {stdout:?}"
    );
    eprintln!("install-openclaw: {:.1?}", t.elapsed());
    Some(dirs)
}

/// `GET path` on 127.0.0.1:port over HTTP/1.1: the status code and the body.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    Ok((code, body.to_string()))
}

/// The absolute paths a process has open (files and dirs; no pipes, sockets or anon inodes).
fn open_paths(pid: u32) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.is_absolute())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// One variable of a process's environment.
fn environ_var(pid: u32, var: &str) -> Option<String> {
    let prefix = format!("{var}=");
    environ(pid)
        .into_iter()
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
}

/// The paths under `dir`, `depth` levels down, relative to it.
fn tree(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = PathBuf::from(entry.file_name());
        if depth > 1 && entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(
                tree(&entry.path(), depth - 1)
                    .into_iter()
                    .map(|p| name.join(p)),
            );
        }
        out.push(name);
    }
    out.sort();
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The daemon and its two gateways, with what a failure message needs.
struct E2e {
    scene: Scene,
    daemon: Daemon,
    ports: [u16; 2],
    states: [PathBuf; 2],
}

impl E2e {
    fn idx(name: &str) -> usize {
        NAMES.iter().position(|n| *n == name).unwrap()
    }

    /// The daemon's stderr and each instance's log, last lines.
    fn diag(&self) -> String {
        let mut s = format!(
            "\n--- daemon stderr (tail) ---\n{}\n",
            tail(
                &std::fs::read_to_string(&self.daemon.stderr).unwrap_or_default(),
                80
            )
        );
        for name in NAMES {
            s.push_str(&format!(
                "--- {name}.log (tail) ---\n{}\n",
                tail(&self.daemon.log(name), 60)
            ));
        }
        s
    }

    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}{}", self.diag())
    }

    fn ensure(&self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            self.fail(&msg())
        }
    }

    /// openclawctl, which must succeed.
    fn ctl(&self, args: &[&str]) -> String {
        let out = self.daemon.ctl(args);
        self.ensure(out.status.success(), || {
            format!(
                "openclawctl {} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.status.code(),
                common::stdout(&out),
                common::stderr(&out)
            )
        });
        common::stdout(&out)
    }

    fn status(&self, name: &str) -> serde_json::Value {
        let text = self.ctl(&["status", "--json", name]);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| self.fail(&format!("status --json: {e}: {text}")));
        v[0].clone()
    }

    fn running_pid(&self, name: &str) -> u32 {
        let st = self.status(name);
        self.ensure(st["state"] == "running", || {
            format!("{name} is not running: {st}")
        });
        st["pid"]
            .as_u64()
            .unwrap_or_else(|| self.fail(&format!("{name} has no pid: {st}"))) as u32
    }

    /// Polls `cond` until it gives Some, up to [`DEADLINE`].
    fn wait<T>(&self, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = cond() {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(&format!("gave up waiting ({DEADLINE:?}) for: {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every live process of the instance: its marker and its state dir in the environment, as
    /// the daemon finds them (other tests running beside this one have instances named main too).
    fn procs(&self, name: &str) -> Vec<u32> {
        let state = format!(
            "OPENCLAW_STATE_DIR={}",
            self.states[Self::idx(name)].display()
        );
        let mut p: Vec<u32> = pids_with_env(MARKER, name)
            .into_iter()
            .filter(|pid| environ(*pid).contains(&state))
            .collect();
        p.sort();
        p
    }

    fn broker(&self, name: &str) -> Option<u32> {
        self.procs(name)
            .into_iter()
            .find(|pid| cmdline(*pid).contains("spawn-broker"))
    }

    /// Waits until `path` on the instance's port answers 200 with `want` in the body.
    fn wait_http(&self, name: &str, path: &str, want: &str) -> String {
        let port = self.ports[Self::idx(name)];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match http_get(port, path) {
                Ok((200, body)) if body.contains(want) => return body,
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                self.fail(&format!(
                    "GET {path} on {name}'s port {port}: no 200 with {want}; last: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn port_free(port: u16) -> bool {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
            && (TcpListener::bind(("::1", 0)).is_err() || TcpListener::bind(("::1", port)).is_ok())
    }
}

#[test]
fn real_gateways_main_and_rescue_end_to_end() {
    let t0 = Instant::now();
    // 1. The pinned gateway.
    let Some(dirs) = install() else { return };

    // 2. Two instances, each with its own port block and state dir.
    let scene = Scene::new();
    let ports: [u16; 2] = common::free_ports(2).try_into().unwrap();
    let root = scene.root.path().canonicalize().unwrap();
    let states = NAMES.map(|n| root.join("state").join(n));
    for (i, name) in NAMES.iter().enumerate() {
        scene.profile(
            &format!("{name}.yaml"),
            &format!(
                "port: {port}\n\
                 state_dir: {state}\n\
                 command: [openclaw, gateway, run, --bind, loopback, --allow-unconfigured]\n\
                 gateway_token: generate\n\
                 env:\n  NO_COLOR: \"1\"\n\
                 health: {{ start_deadline: 300s }}\n\
                 stop: {{ timeout: 60s }}\n",
                port = ports[i],
                state = serde_json::to_string(&states[i]).unwrap(),
            ),
        );
    }
    let check = scene.check();
    assert!(
        check.status.success(),
        "the profiles fail the check:\n{}{}",
        common::stdout(&check),
        common::stderr(&check)
    );
    let path = format!("{dirs}:{}", std::env::var("PATH").unwrap_or_default());
    // Kept through a crash of the daemon (step 5b).
    let env = [
        ("PATH", path.as_str()),
        ("OPENCLAW_SUPERVISOR_ON_CRASH", "keep"),
    ];
    let daemon = scene.daemon_with_env(&[], &env);
    let mut e = E2e {
        scene,
        daemon,
        ports,
        states,
    };
    eprintln!("gateways: main on {}, rescue on {}", ports[0], ports[1]);

    // 3. Both started (the daemon autostarts them together; `start` waits until each is ready).
    let t = Instant::now();
    e.ctl(&["start", "main", "rescue"]);
    eprintln!(
        "start main rescue: both ready {:.1?} after the start command ({:.1?} into the test)",
        t.elapsed(),
        t0.elapsed()
    );
    for name in NAMES {
        e.running_pid(name);
    }

    // 4. Each answers its own readiness and liveness endpoints.
    for name in NAMES {
        let ready = e.wait_http(name, "/readyz", "\"ready\":true");
        let live = e.wait_http(name, "/healthz", "\"ok\":true");
        eprintln!("{name}: /readyz {ready} /healthz {live}");
    }

    // 4b. Each has a token of its own (`gateway_token: generate`), and OpenClaw's own CLI, run with
    //     the environment the daemon gave the gateway (`openclawctl exec`), reaches it with it.
    let tokens = NAMES.map(|n| e.ctl(&["token", n]).trim().to_string());
    e.ensure(tokens[0] != tokens[1] && !tokens[0].is_empty(), || {
        format!("main and rescue share a token: {tokens:?}")
    });
    for name in NAMES {
        let health = e.ctl(&["exec", name, "--", "openclaw", "gateway", "health"]);
        e.ensure(health.contains("OK"), || {
            format!("`openclaw gateway health` as {name}: {health}")
        });
    }

    // 5. Each writes only to its own state dir: every file it holds open under the scene lies there
    //    (observed: its sqlite db, the gateway locks in STATE/tmp, a control-UI asset cache in
    //    STATE/cache, its sqlite snapshot staging dirs in STATE/cache/openclaw because the daemon
    //    sets XDG_CACHE_HOME, and the debug log of an `npm root` it runs in STATE/cache/npm/_logs
    //    because the daemon sets npm_config_cache; without those they were in a ~/.cache/openclaw
    //    and a ~/.npm shared by both), and no file elsewhere (such as OpenClaw's lock files in
    //    /tmp/openclaw-state-locks-UID, named by a hash of the state dir) is held by both.
    let prefix = Path::new(dirs.rsplit(':').next().unwrap())
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    let home = e.scene.home().canonicalize().unwrap();
    let mut elsewhere: [Vec<PathBuf>; 2] = Default::default();
    for (i, name) in NAMES.iter().enumerate() {
        let state = &e.states[i];
        let mut in_state = 0;
        for pid in e.procs(name) {
            let paths = open_paths(pid);
            eprintln!("{name} pid {pid} ({}):", cmdline(pid));
            for p in &paths {
                eprintln!("    {}", p.display());
                if p.starts_with(state) {
                    in_state += 1;
                } else if p.starts_with(&root) {
                    e.fail(&format!(
                        "{name} pid {pid} has {} open, outside its state dir {}",
                        p.display(),
                        state.display()
                    ));
                } else if !p.starts_with("/dev") && !p.starts_with(&prefix) {
                    elsewhere[i].push(p.clone());
                }
            }
        }
        e.ensure(in_state > 0, || {
            format!(
                "no process of {name} has a file open in its state dir {}",
                state.display()
            )
        });
        let db = state.join("state/openclaw.sqlite");
        e.ensure(db.is_file(), || format!("{} is missing", db.display()));
    }
    let shared: Vec<_> = elsewhere[0]
        .iter()
        .filter(|p| elsewhere[1].contains(p))
        .collect();
    e.ensure(shared.is_empty(), || {
        format!("main and rescue both hold open: {shared:?}")
    });
    let in_home = tree(&home, 3);
    eprintln!("HOME ({}) holds: {in_home:#?}", home.display());
    let fallback: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(|d| d.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".openclaw"))
        .collect();
    e.ensure(fallback.is_empty(), || {
        format!("the gateways fell back to a default state dir in HOME: {fallback:?}")
    });

    // 5b. SIGKILL the daemon: both gateways run on and answer /readyz while no daemon runs, and a
    //     new daemon on the same dirs adopts them: the same pids, `running`, no restart.
    let before = NAMES.map(|n| e.running_pid(n));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.daemon.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    e.daemon.wait_exit("the SIGKILLed daemon to be gone");
    let ready_now = |e: &E2e, when: &str| {
        for (i, name) in NAMES.iter().enumerate() {
            let got = http_get(e.ports[i], "/readyz");
            e.ensure(
                matches!(&got, Ok((200, body)) if body.contains("\"ready\":true")),
                || format!("{name}'s /readyz {when}: {got:?}"),
            );
        }
    };
    // Long enough for the gateways to log a line or two to their pipes, which nobody reads now.
    for _ in 0..5 {
        ready_now(&e, "while no daemon runs");
        std::thread::sleep(Duration::from_secs(1));
    }
    let t = Instant::now();
    e.daemon = e.scene.daemon_with_env(&[], &env);
    for (i, name) in NAMES.iter().enumerate() {
        let st = e.wait(&format!("{name} adopted and running"), || {
            let st = e.status(name);
            (st["state"] != "starting").then_some(st)
        });
        e.ensure(
            st["state"] == "running"
                && st["pid"].as_u64() == Some(u64::from(before[i]))
                && st["restarts"] == 0,
            || format!("{name} was not adopted as it ran (pid {}): {st}", before[i]),
        );
    }
    eprintln!(
        "daemon SIGKILLed; a new one adopted main and rescue in {:.1?}",
        t.elapsed()
    );
    ready_now(&e, "after the adoption");

    // 5c. Re-exec the daemon (what an upgrade of the supervisor does): both gateways answer /readyz
    //     all along, and keep their pids, `running`, with no restart.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probes = {
        let (ports, watching) = (e.ports, watching.clone());
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            let mut n = 0;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, port) in ports.iter().enumerate() {
                    n += 1;
                    match http_get(*port, "/readyz") {
                        Ok((200, body)) if body.contains("\"ready\":true") => {}
                        other => failed.push(format!("{}: {other:?}", NAMES[i])),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (n, failed)
        })
    };
    let t = Instant::now();
    let out = e.ctl(&["reexec"]);
    eprintln!("{}", out.trim());
    let reexec_took = t.elapsed();
    for (i, name) in NAMES.iter().enumerate() {
        let st = e.status(name);
        e.ensure(
            st["state"] == "running"
                && st["pid"].as_u64() == Some(u64::from(before[i]))
                && st["restarts"] == 0,
            || {
                format!(
                    "{name} did not keep running through the re-exec (pid {}): {st}",
                    before[i]
                )
            },
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let (probed, failed) = probes.join().unwrap();
    e.ensure(failed.is_empty(), || {
        format!("/readyz failed during the re-exec: {failed:?}")
    });
    eprintln!(
        "daemon re-executed in {reexec_took:.1?}: main and rescue kept their pids and answered all {probed} /readyz probes"
    );

    // 6. SIGKILL main's gateway: it comes back with a new pid; rescue is not touched.
    let rescue_pid = e.running_pid("rescue");
    let main_pid = e.running_pid("main");
    let main_broker = e.broker("main");
    eprintln!(
        "main: gateway {main_pid}, spawn broker {main_broker:?}; rescue: gateway {rescue_pid}"
    );
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(main_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let new_pid = e.wait("main running again with a new pid", || {
        let st = e.status("main");
        (st["state"] == "running" && st["pid"].as_u64().is_some_and(|p| p != main_pid as u64))
            .then(|| st["pid"].as_u64().unwrap() as u32)
    });
    eprintln!(
        "main: SIGKILLed {main_pid}, running again as {new_pid} after {:.1?}",
        t.elapsed()
    );
    e.wait_http("main", "/readyz", "\"ready\":true");
    if let Some(b) = main_broker {
        e.ensure(!alive(b), || {
            format!(
                "main's old spawn broker {b} outlived the SIGKILLed gateway: {}",
                cmdline(b)
            )
        });
    }
    let st = e.status("rescue");
    e.ensure(
        st["state"] == "running" && st["pid"].as_u64() == Some(rescue_pid as u64),
        || format!("rescue changed while main restarted (pid was {rescue_pid}): {st}"),
    );

    // 7. Stopping rescue ends its whole tree, the setsid'd spawn broker included.
    // The pinned release always starts one (in its own session, out of the gateway's group).
    let broker = e.wait("rescue's spawn broker", || e.broker("rescue"));
    eprintln!(
        "rescue's spawn broker: {broker} (session {:?}) {}",
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(broker as i32))).ok(),
        cmdline(broker)
    );
    let rescue_state_env = environ_var(rescue_pid, "OPENCLAW_STATE_DIR")
        .unwrap_or_else(|| e.states[1].display().to_string());
    let t = Instant::now();
    e.ctl(&["stop", "rescue"]);
    eprintln!("stop rescue: {:.1?}", t.elapsed());
    let left = e.procs("rescue");
    e.ensure(left.is_empty(), || {
        format!("processes of rescue outlived its stop: {left:?}")
    });
    let left = pids_with_env("OPENCLAW_STATE_DIR", &rescue_state_env);
    e.ensure(left.is_empty(), || {
        format!("processes with OPENCLAW_STATE_DIR={rescue_state_env} outlived the stop: {left:?}")
    });
    e.ensure(!alive(broker), || {
        format!("rescue's spawn broker {broker} outlived the stop")
    });
    e.ensure(e.status("rescue")["state"] == "stopped", || {
        format!("rescue is not stopped: {}", e.status("rescue"))
    });

    // 8. SIGTERM to the daemon: exit 0, nothing left, both ports free.
    let t = Instant::now();
    let code = e.daemon.terminate();
    eprintln!("daemon SIGTERM: exited {code:?} after {:.1?}", t.elapsed());
    e.ensure(code == Some(0), || {
        format!("the daemon exited {code:?} after SIGTERM")
    });
    for name in NAMES {
        let left = e.procs(name);
        e.ensure(left.is_empty(), || {
            format!("processes of {name} outlived the daemon: {left:?}")
        });
    }
    for (i, name) in NAMES.iter().enumerate() {
        e.ensure(E2e::port_free(e.ports[i]), || {
            format!(
                "{name}'s port {} is still taken after the daemon exited",
                e.ports[i]
            )
        });
    }
    eprintln!("real-gateway end-to-end: {:.1?} in all", t0.elapsed());
}

/// The runtime store the real-gateway tests share across runs, beside the install prefix
/// (`.gateway/runtimes`, git-ignored): npm's work is done once per machine, as for `.gateway`.
fn shared_store() -> PathBuf {
    let prefix = std::env::var_os("OPENCLAW_GATEWAY_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".gateway"));
    prefix.join("runtimes")
}

/// The release main starts on before its upgrade to the pinned one (`scripts/install-openclaw`'s).
const EARLIER: &str = "2026.9.5";
const PINNED: &str = "2026.9.6";

#[test]
fn real_gateways_main_upgraded_between_releases_while_rescue_stays() {
    let t0 = Instant::now();
    // Rescue runs the pinned release the way OpenClaw's docs install it (on the PATH); main runs
    // an earlier release from the daemon's runtime store, then is upgraded to the pinned one.
    let Some(dirs) = install() else { return };
    let store = shared_store();
    let scene = Scene::new();
    let ports: [u16; 2] = common::free_ports(2).try_into().unwrap();
    let root = scene.root.path().canonicalize().unwrap();
    let states = NAMES.map(|n| root.join("state").join(n));
    for (i, name) in NAMES.iter().enumerate() {
        let runtime = if *name == "main" {
            format!("runtime: {{ openclaw: {EARLIER} }}\n")
        } else {
            String::new()
        };
        scene.profile(
            &format!("{name}.yaml"),
            &format!(
                "# {name}: kept through --write\n\
                 port: {port}\n\
                 state_dir: {state}\n\
                 command: [openclaw, gateway, run, --bind, loopback, --allow-unconfigured]\n\
                 gateway_token: generate\n\
                 env:\n  NO_COLOR: \"1\"\n\
                 health: {{ start_deadline: 300s }}\n\
                 stop: {{ timeout: 60s }}\n\
                 {runtime}",
                port = ports[i],
                state = serde_json::to_string(&states[i]).unwrap(),
            ),
        );
    }
    let path = format!("{dirs}:{}", std::env::var("PATH").unwrap_or_default());
    let store_arg = store.display().to_string();
    let daemon = scene.daemon_with_env(&["--runtimes", &store_arg], &[("PATH", path.as_str())]);
    let e = E2e {
        scene,
        daemon,
        ports,
        states,
    };

    // 1. main's release from npm, through the daemon (a no-op when an earlier run installed it);
    //    main waits for it, then starts on it by itself.
    let t = Instant::now();
    let installed = e.ctl(&["runtime", "install", &format!("openclaw@{EARLIER}")]);
    eprintln!(
        "runtime install openclaw@{EARLIER}: {:.1?}\n{}",
        t.elapsed(),
        tail(&installed, 5)
    );
    e.ctl(&["start", "main", "rescue"]);
    let version = |name: &str| {
        let st = e.status(name);
        (
            st["openclaw_version"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            st["runtime"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (main_before, main_runtime) = version("main");
    e.ensure(
        main_before == EARLIER && main_runtime.starts_with(&format!("openclaw@{EARLIER}+node@")),
        || format!("main runs {main_before} from {main_runtime:?}, not {EARLIER} from the store"),
    );
    let rescue_version = version("rescue");
    e.ensure(
        rescue_version == (PINNED.to_string(), String::new()),
        || format!("rescue runs {rescue_version:?}, not {PINNED} from the PATH"),
    );
    for name in NAMES {
        e.wait_http(name, "/readyz", "\"ready\":true");
    }
    e.running_pid("main");
    let rescue_pid = e.running_pid("rescue");

    // 2. Rescue is probed all through main's upgrades.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rescue_port = ports[1];
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match http_get(rescue_port, "/readyz") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (ok, failed)
        })
    };

    // 3. A failed upgrade: main is killed during the soak on the pinned release (installed into
    //    the store by npm unless there already). It must be rolled back to its release, which
    //    refuses the database the new one migrated unless the daemon puts back the copy it made.
    let t = Instant::now();
    let upgrade = Command::new(common::bin_path("openclawctl"))
        .args(["upgrade", "main", "--to", PINNED, "--soak", "120s"])
        .env("OPENCLAW_SUPERVISOR_SOCKET", &e.daemon.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let soaking = e.wait("main soaking on the pinned release", || {
        let st = e.status("main");
        (st["state"] == "running"
            && st["openclaw_version"] == PINNED
            && st["soak_until_unix_ms"].as_u64().is_some_and(|u| u > 0))
        .then(|| st["pid"].as_u64().unwrap() as i32)
    });
    e.wait_http("main", "/readyz", "\"ready\":true");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(soaking),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = upgrade.wait_with_output().unwrap();
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    eprintln!(
        "failed upgrade: {:.1?} from the kill to the answer ({:.1?} in all)\n{}",
        killed.elapsed(),
        t.elapsed(),
        tail(&text, 20)
    );
    e.ensure(
        out.status.code() == Some(1) && text.contains("rolled back"),
        || format!("the upgrade of a killed main was not rolled back:\n{text}"),
    );
    e.ensure(version("main").0 == EARLIER, || {
        format!("after the rollback main runs {:?}", version("main"))
    });
    e.wait_http("main", "/readyz", "\"ready\":true");
    let log = e.daemon.log("main");
    e.ensure(log.contains("upgrade: restored"), || {
        format!("main's databases were not restored:\n{}", tail(&log, 30))
    });
    let main_pid = e.running_pid("main");
    e.ensure(e.running_pid("rescue") == rescue_pid, || {
        "rescue was restarted".into()
    });

    // 4. The upgrade again: main restarted on the pinned release, ready, healthy for the soak,
    //    kept.
    let t = Instant::now();
    let out = e
        .daemon
        .ctl(&["upgrade", "main", "--to", PINNED, "--soak", "20s"]);
    let took = t.elapsed();
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    eprintln!(
        "upgrade main --to {PINNED}: {took:.1?}\n{}",
        tail(&text, 12)
    );
    e.ensure(out.status.success(), || {
        format!("the upgrade failed:\n{text}")
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = prober.join().unwrap();
    eprintln!(
        "rescue answered /readyz {ok} times during main's upgrade, failed {}",
        failed.len()
    );
    e.ensure(failed.is_empty() && ok > 0, || {
        format!("rescue did not answer /readyz all through main's upgrade: {failed:?}")
    });

    // 5. main runs the pinned release from the store; rescue is untouched.
    let (main_after, main_runtime) = version("main");
    e.ensure(
        main_after == PINNED && main_runtime.starts_with(&format!("openclaw@{PINNED}+node@")),
        || format!("after the upgrade main runs {main_after} from {main_runtime:?}"),
    );
    let upgraded_pid = e.running_pid("main");
    e.ensure(upgraded_pid != main_pid, || "main was not restarted".into());
    let bin = store.join(format!("openclaw-{PINNED}+node-"));
    let child_path = environ_var(upgraded_pid, "PATH").unwrap_or_default();
    e.ensure(child_path.starts_with(&*bin.to_string_lossy()), || {
        format!("main's PATH does not start with its runtime's bin: {child_path}")
    });
    e.wait_http("main", "/readyz", "\"ready\":true");
    e.ensure(e.running_pid("rescue") == rescue_pid, || {
        "rescue was restarted".into()
    });
    let rescue = e.status("rescue");
    e.ensure(
        version("rescue") == (PINNED.to_string(), String::new()) && rescue["restarts"] == 0,
        || format!("rescue changed: {rescue}"),
    );

    // 6. Written into main's profile, comments kept; a reload then restarts nothing.
    e.ctl(&["upgrade", "main", "--write"]);
    let written = std::fs::read_to_string(e.scene.path("supervisor.d/main.yaml")).unwrap();
    e.ensure(
        written.contains("# main: kept through --write") && written.contains(PINNED),
        || format!("main.yaml after --write:\n{written}"),
    );
    e.ctl(&["reload"]);
    e.ensure(e.running_pid("main") == upgraded_pid, || {
        "the reload after --write restarted main".into()
    });
    e.ensure(e.running_pid("rescue") == rescue_pid, || {
        "rescue was restarted".into()
    });
    let sizes = Command::new("du")
        .args(["-sh"])
        .args(
            std::fs::read_dir(&store)
                .unwrap()
                .flatten()
                .map(|d| d.path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')),
        )
        .output()
        .map(|o| common::stdout(&o))
        .unwrap_or_default();
    eprintln!("the runtime store ({}):\n{sizes}", store.display());
    eprintln!("real-gateway upgrade: {:.1?} in all", t0.elapsed());
}

/// This file's end-to-end test run alone in a child of this test binary, with an empty install
/// prefix and a registry nothing answers on; `ci` is the `CI` variable it sees.
fn end_to_end_without_registry(ci: Option<&str>) -> Output {
    let scene = Scene::new();
    let port = common::free_ports(1)[0];
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "gateway::real_gateways_main_and_rescue_end_to_end",
        "--test-threads=1",
    ])
    .env("OPENCLAW_GATEWAY_PREFIX", scene.path("gateway"))
    .env("npm_config_registry", format!("http://127.0.0.1:{port}/"))
    .env_remove("NPM_CONFIG_REGISTRY")
    // npm's logs and caches go to the scene, not the user's ~/.npm.
    .env("HOME", scene.home())
    .env_remove("CI");
    if let Some(ci) = ci {
        cmd.env("CI", ci);
    }
    cmd.output().unwrap()
}

#[test]
fn unreachable_registry_fails_the_real_gateway_test_under_ci() {
    let out = end_to_end_without_registry(Some("true"));
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(text.contains("running 1 test"), "{text}");
    assert_eq!(out.status.code(), Some(101), "{text}");
    assert!(
        text.contains("test result: FAILED. 0 passed; 1 failed"),
        "{text}"
    );
    assert!(
        text.contains("the npm registry cannot be reached") && text.contains("with CI=true"),
        "{text}"
    );
    assert!(!text.contains("SKIPPED"), "{text}");
}

#[test]
fn unreachable_registry_skips_the_real_gateway_test_loudly_outside_ci() {
    let out = end_to_end_without_registry(None);
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(text.contains("running 1 test"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "SKIPPED: the real-gateway end-to-end test: the npm registry cannot be reached"
        ),
        "{text}"
    );
}
