//! The peers the benchmarks compare with, each supervising stand-in gateways in a directory of its
//! own: runit (`runsvdir` and one `runsv` per service), PyPI's `supervisor` (supervisord) and npm's
//! PM2. Each is found on PATH or reported missing; each lists the processes that are the supervisor
//! itself (not its children), and stops leaving no gateway behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{children, gateways_under, kill, on_path, reap_leftovers, run_once, wait_every};

/// Waits for `child` to exit, SIGKILLing it after `grace`.
fn wait_or_kill(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            kill(child.id(), nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// runit: `runsvdir` on a directory of services, each `run` execing the stand-in on its port. A
/// service whose gateway exits (its port taken) is taken down by its `finish` script rather than
/// restarted every second, as the other supervisors are told not to restart.
pub struct Runit {
    child: Child,
    services: Vec<PathBuf>,
}

impl Runit {
    pub fn found() -> bool {
        on_path("runsvdir").is_some() && on_path("runsv").is_some() && on_path("sv").is_some()
    }

    pub fn start(dir: &Path, fake: &Path, ports: &[u16]) -> Runit {
        use std::os::unix::fs::PermissionsExt;
        let root = dir.join("service");
        let mut services = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let sv = root.join(format!("bot{i:03}"));
            std::fs::create_dir_all(&sv).unwrap();
            for (name, text) in [
                (
                    "run",
                    format!("#!/bin/sh\nexec {} --port {p}\n", fake.display()),
                ),
                ("finish", "#!/bin/sh\nexec sv down \"$PWD\"\n".to_string()),
            ] {
                let file = sv.join(name);
                std::fs::write(&file, text).unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            services.push(sv);
        }
        let child = Command::new("runsvdir")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Runit { child, services }
    }

    /// Waits until every service is up or down for good. Returns how many gateways run.
    pub fn wait_settled(&self, fake: &Path) -> usize {
        wait_every(
            "every runit service to settle",
            Duration::from_millis(500),
            || {
                self.services.iter().all(|sv| {
                    let stat =
                        std::fs::read_to_string(sv.join("supervise/stat")).unwrap_or_default();
                    ["run", "down"].contains(&stat.trim())
                })
            },
        );
        gateways_under(self.child.id(), fake).len()
    }

    /// runsvdir and every runsv: runit's own processes.
    pub fn own_pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(children(self.child.id()).into_iter().filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "runsv")
        }));
        pids
    }

    /// `sv down` every service, then SIGHUP runsvdir (which TERMs each runsv and exits).
    pub fn stop(mut self, fake: &Path) -> usize {
        let gateways = gateways_under(self.child.id(), fake);
        let _ = run_once(
            Command::new("sv")
                .args(["-w", "30", "down"])
                .args(&self.services)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        kill(self.child.id(), nix::sys::signal::Signal::SIGHUP);
        wait_or_kill(&mut self.child, Duration::from_secs(30));
        reap_leftovers(&gateways, fake)
    }

    pub fn version() -> String {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "runit"])
            .stderr(Stdio::null())
            .output();
        out.ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|| "?".into())
    }
}

impl Drop for Runit {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), nix::sys::signal::Signal::SIGHUP);
            wait_or_kill(&mut self.child, Duration::from_secs(10));
        }
    }
}

/// supervisord run in the foreground, on a Unix socket in its own directory.
pub struct Supervisord {
    child: Child,
    conf: PathBuf,
    ctl: PathBuf,
}

impl Supervisord {
    /// supervisord and supervisorctl, if both are on PATH.
    pub fn found() -> Option<(PathBuf, PathBuf)> {
        Some((on_path("supervisord")?, on_path("supervisorctl")?))
    }

    pub fn start(supervisord: &Path, ctl: &Path, dir: &Path, fake: &Path, ports: &[u16]) -> Self {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let d = dir.display();
        let mut text = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}/logs\nnodaemon=true\nminfds=4096\nloglevel=warn\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n"
        );
        // As for ours: no restart of a gateway that exits (its port taken), so the set settles.
        for (i, p) in ports.iter().enumerate() {
            text += &format!(
                "\n[program:bot{i:03}]\ncommand={} --port {p}\nautostart=true\nautorestart=false\nstartsecs=1\nstartretries=0\nstopsignal=TERM\n",
                fake.display()
            );
        }
        let conf = dir.join("supervisord.conf");
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(supervisord)
            .arg("-c")
            .arg(&conf)
            .arg("-n")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Supervisord {
            child,
            conf,
            ctl: ctl.to_path_buf(),
        }
    }

    pub fn ctl(&self) -> Command {
        let mut c = Command::new(&self.ctl);
        c.arg("-c").arg(&self.conf);
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `supervisorctl status` lists all `n` programs, each RUNNING or settled (FATAL,
    /// EXITED). Returns how many run.
    pub fn wait_all_running(&mut self, n: usize) -> usize {
        let mut running = 0;
        wait_every(
            "every supervisord program to settle",
            Duration::from_millis(500),
            || {
                if let Ok(Some(st)) = self.child.try_wait() {
                    panic!("supervisord exited early: {st}");
                }
                let out = run_once(self.ctl().arg("status"));
                let text = String::from_utf8_lossy(&out.stdout);
                let states: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .collect();
                running = states.iter().filter(|s| **s == "RUNNING").count();
                states.len() == n
                    && states
                        .iter()
                        .all(|s| ["RUNNING", "FATAL", "EXITED"].contains(s))
            },
        );
        running
    }

    /// `supervisorctl shutdown`, wait for supervisord, then make sure none of its gateways is left.
    pub fn stop(mut self, fake: &Path) -> usize {
        let gateways = gateways_under(self.child.id(), fake);
        let _ = run_once(self.ctl().arg("shutdown"));
        wait_or_kill(&mut self.child, Duration::from_secs(120));
        reap_leftovers(&gateways, fake)
    }

    pub fn version(supervisord: &Path) -> String {
        Command::new(supervisord)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "?".into())
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// PM2 with a `PM2_HOME` of its own: its "God Daemon" (which daemonizes itself, so it is no child
/// of the bench) runs the stand-ins from an ecosystem file, `interpreter: none`, no autorestart.
pub struct Pm2 {
    pm2: PathBuf,
    home: PathBuf,
    daemon: u32,
}

impl Pm2 {
    pub fn found() -> Option<PathBuf> {
        on_path("pm2")
    }

    fn cmd(pm2: &Path, home: &Path) -> Command {
        let mut c = Command::new(pm2);
        c.env("PM2_HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    pub fn start(pm2: &Path, dir: &Path, fake: &Path, ports: &[u16]) -> Pm2 {
        std::fs::create_dir_all(dir).unwrap();
        let apps: Vec<serde_json::Value> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::json!({
                    "name": format!("bot{i:03}"),
                    "script": fake,
                    "args": ["--port", p.to_string()],
                    "interpreter": "none",
                    "autorestart": false,
                })
            })
            .collect();
        let eco = dir.join("ecosystem.json");
        std::fs::write(&eco, serde_json::json!({ "apps": apps }).to_string()).unwrap();
        let home = dir.join("pm2-home");
        let st = Self::cmd(pm2, &home)
            .arg("start")
            .arg(&eco)
            .status()
            .unwrap();
        assert!(st.success(), "pm2 start failed: {st}");
        let daemon = std::fs::read_to_string(home.join("pm2.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("pm2.pid after pm2 start");
        Pm2 {
            pm2: pm2.to_path_buf(),
            home,
            daemon,
        }
    }

    /// Waits until `pm2 jlist` shows all `n` apps, each online or stopped for good. Returns how
    /// many gateways run.
    pub fn wait_settled(&self, n: usize, fake: &Path) -> usize {
        wait_every(
            "every PM2 app to settle",
            Duration::from_millis(500),
            || {
                let out = run_once(
                    Self::cmd(&self.pm2, &self.home)
                        .arg("jlist")
                        .stdout(Stdio::piped()),
                );
                let list: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                list.len() == n
                    && list.iter().all(|a| {
                        ["online", "stopped", "errored"]
                            .contains(&a["pm2_env"]["status"].as_str().unwrap_or(""))
                    })
            },
        );
        gateways_under(self.daemon, fake).len()
    }

    /// The God Daemon.
    pub fn pid(&self) -> u32 {
        self.daemon
    }

    /// `pm2 kill`: stops every app and the daemon.
    pub fn stop(self, fake: &Path) -> usize {
        let gateways = gateways_under(self.daemon, fake);
        let _ = run_once(Self::cmd(&self.pm2, &self.home).arg("kill"));
        wait_every("PM2's daemon to exit", Duration::from_millis(20), || {
            !super::alive(self.daemon)
        });
        reap_leftovers(&gateways, fake)
    }

    pub fn version(&self) -> String {
        let out = run_once(
            Self::cmd(&self.pm2, &self.home)
                .arg("--version")
                .stdout(Stdio::piped()),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
