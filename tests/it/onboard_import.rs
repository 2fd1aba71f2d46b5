//! Coming from an OpenClaw install: `openclawctl import` on fixture homes laid out as OpenClaw's
//! docs leave a host (`openclaw --profile P setup`, `openclaw --profile P gateway install`), and the
//! daemon started on what it wrote. The gateway is the stand-in, found as `openclaw` on the
//! daemon's PATH: the imported profiles run the daemon's default command, as a real host would.

use std::path::{Path, PathBuf};

use crate::common::{fake_gateway, free_ports, stdout, Scene};

/// A unit file as `openclaw --profile P gateway install` writes it (2026.9.6): node running the
/// CLI with the profile and port, the state dir and port in the environment, the service marker,
/// a token, and an optional environment file. Only parsed here: nothing runs it.
fn unit_text(home: &Path, profile: &str, port: u16, token: &str) -> String {
    let h = home.display();
    format!(
        "[Unit]\n\
         Description=OpenClaw Gateway (profile: {profile}, v2026.9.6)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart=\"/usr/bin/node\" \"{h}/.npm-global/lib/node_modules/openclaw/dist/index.js\" --profile {profile} gateway --port {port}\n\
         Restart=always\n\
         RestartSec=5\n\
         KillMode=mixed\n\
         Environment=HOME={h}\n\
         Environment=\"PATH={h}/.npm-global/bin:/usr/local/bin:/usr/bin:/bin\"\n\
         Environment=OPENCLAW_PROFILE={profile}\n\
         Environment=OPENCLAW_STATE_DIR={h}/.openclaw-{profile}\n\
         Environment=OPENCLAW_CONFIG_PATH={h}/.openclaw-{profile}/openclaw.json\n\
         Environment=OPENCLAW_GATEWAY_PORT={port}\n\
         Environment=OPENCLAW_GATEWAY_TOKEN={token}\n\
         Environment=OPENCLAW_SERVICE_MARKER=openclaw\n\
         Environment=OPENCLAW_SERVICE_KIND=gateway\n\
         EnvironmentFile=-%h/.openclaw-{profile}/.env\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// One OpenClaw profile set up in the scene's home: its state dir and config file with
/// `gateway.port`, and (with `unit_port`) its user unit, whose port may differ from the config's.
fn setup(s: &Scene, profile: &str, config_port: u16, unit_port: Option<u16>, token: &str) {
    s.write(
        &format!("home/.openclaw-{profile}/openclaw.json"),
        &format!("// written by openclaw setup\n{{\n  gateway: {{\n    port: {config_port},\n    mode: \"local\",\n  }},\n}}\n"),
    );
    if let Some(port) = unit_port {
        s.write(
            &format!("home/.config/systemd/user/openclaw-gateway-{profile}.service"),
            &unit_text(&s.home(), profile, port, token),
        );
    }
}

/// `openclawctl import ARGS --home HOME` with no system units, from the scene root.
fn import(s: &Scene, args: &[&str]) -> std::process::Output {
    let home = s.home().display().to_string();
    let system = s.path("no-system-units").display().to_string();
    let mut all = vec!["import", "--config-dir", "supervisor.d", "--home", &home];
    all.extend(["--system-units", &system]);
    all.extend(args);
    s.run("openclawctl", &all)
}

/// A dir holding an executable `openclaw` that runs the stand-in gateway with the arguments it was
/// given (it takes its port from OPENCLAW_GATEWAY_PORT, as the real one does).
fn openclaw_on_path(s: &Scene) -> PathBuf {
    let bin = s.path("bin");
    let shim = s.write(
        "bin/openclaw",
        &format!(
            "#!/bin/sh\nexec {:?} \"$@\"\n",
            fake_gateway().display().to_string()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn yaml_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

#[test]
fn import_write_then_start_runs_both_setups() {
    let s = Scene::new();
    let ports = free_ports(2);
    setup(&s, "main", ports[0], Some(ports[0]), "main-unit-token");
    setup(&s, "rescue", ports[1], Some(ports[1]), "rescue-unit-token");

    let out = import(&s, &["--write"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        crate::common::stderr(&out)
    );
    assert_eq!(yaml_files(&s.dir()), ["main.yaml", "rescue.yaml"], "{text}");
    assert!(text.contains("check passed: 2 profiles"), "{text}");
    // The disable step, one command per unit (run by their owner: us).
    for p in ["main", "rescue"] {
        assert!(
            text.contains(&format!(
                "systemctl --user disable --now openclaw-gateway-{p}.service"
            )),
            "{text}"
        );
    }
    // No token of the units lands in a profile: each is kept in its state dir, owner-only, and
    // the profile has the gateway take it from there.
    for p in ["main", "rescue"] {
        let y = std::fs::read_to_string(s.dir().join(format!("{p}.yaml"))).unwrap();
        assert!(!y.contains("unit-token"), "{p}.yaml:\n{y}");
        assert!(y.contains("\ngateway_token: generate"), "{p}.yaml:\n{y}");
        let kept = s
            .home()
            .join(format!(".openclaw-{p}/.openclaw-supervisor.token"));
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap().trim(),
            format!("{p}-unit-token")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", kept.display());
    }
    assert!(s.check().status.success(), "{}", stdout(&s.check()));

    // (The units are disabled here: nothing ran them.) The daemon starts both, with no clash.
    let path = format!(
        "{}:{}",
        openclaw_on_path(&s).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = s.daemon_with_env(&[], &[("PATH", &path)]);
    for (name, port) in [("main", ports[0]), ("rescue", ports[1])] {
        let st = d.wait_status(name, "running", |v| v["state"] == "running");
        assert_eq!(st["port"], port, "{st}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "{name} listens on {port}"
        );
        // The gateway keeps the token its unit gave it: its clients keep working.
        let pid = st["pid"].as_u64().unwrap() as u32;
        let want = format!("OPENCLAW_GATEWAY_TOKEN={name}-unit-token");
        assert!(
            crate::common::environ(pid).contains(&want),
            "{name}'s gateway lacks {want}"
        );
    }
    let daemon_log = std::fs::read_to_string(&d.stderr).unwrap_or_default();
    assert!(!daemon_log.contains("check failed"), "{daemon_log}");
}

#[test]
fn import_of_clashing_setups_shows_the_check_and_writes_nothing() {
    let s = Scene::new();
    let ports = free_ports(1);
    // OpenClaw's docs say "at least 20 ports apart": rescue's unit puts it 20 above main, inside
    // main's browser CDP range (G+11..G+110).
    setup(&s, "main", ports[0], None, "");
    setup(&s, "rescue", ports[0] + 5000, Some(ports[0] + 20), "t");

    let out = import(&s, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("check failed"), "{text}");
    let clash = text
        .lines()
        .find(|l| l.contains("error") && l.contains(&(ports[0] + 20).to_string()))
        .unwrap_or_else(|| panic!("no error line naming port {}:\n{text}", ports[0] + 20));
    assert!(
        clash.contains("main") && clash.contains("rescue"),
        "{clash}"
    );
    // The port came from the unit, and the output says so.
    assert!(text.contains("ExecStart --port"), "{text}");
    assert!(text.contains("Dry run"), "{text}");
    assert!(yaml_files(&s.dir()).is_empty());

    let out = import(&s, &["--write"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("nothing written: the check failed"), "{text}");
    assert!(yaml_files(&s.dir()).is_empty());

    let out = import(&s, &["--write", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(yaml_files(&s.dir()), ["main.yaml", "rescue.yaml"]);
}

#[test]
fn import_never_overwrites_and_knows_what_is_imported() {
    let s = Scene::new();
    let ports = free_ports(2);
    setup(&s, "main", ports[0], None, "");
    setup(&s, "rescue", ports[1], Some(ports[1]), "t");
    // An operator's own rescue.yaml, for another state dir: kept as it is.
    let mine = s.fake_profile("rescue", ports[1] + 2000, "");
    let before = std::fs::read_to_string(&mine).unwrap();

    let out = import(&s, &["--write"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("rescue.yaml exists and is never overwritten"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), before);
    assert_eq!(yaml_files(&s.dir()), ["main.yaml", "rescue.yaml"]);

    // Once imported, a setup is said to be, and nothing is written again.
    let out = import(&s, &["--write"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{}: already imported as main",
            s.home().join(".openclaw-main").display()
        )),
        "{text}"
    );
    assert!(!text.contains("wrote "), "{text}");
}

/// Where a cgroup2 hierarchy is mounted (`/sys/fs/cgroup` or, on a hybrid host,
/// `/sys/fs/cgroup/unified`), from this process's mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

/// A cgroup named like OpenClaw's unit of a profile, removed (once empty) when dropped.
struct UnitCgroup(PathBuf);

impl UnitCgroup {
    /// Makes it, or says why it cannot be made here.
    fn make(name: &str) -> Result<UnitCgroup, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("it needs root to make a cgroup".into());
        }
        let mount = cgroup2_mount().ok_or("no cgroup2 hierarchy is mounted")?;
        let dir = mount.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        Ok(UnitCgroup(dir))
    }

    fn enter(&self, pid: u32) -> Result<(), String> {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cannot move pid {pid} into {}: {e}", self.0.display()))
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        // The holder is killed and reaped before this runs; the kernel may take a moment to empty
        // the cgroup. No panic here: this may run while a failed test unwinds.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::remove_dir(&self.0).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// A process the test started: killed and reaped when dropped, even when the test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Point 3 of issue 12: a gateway that OpenClaw's own unit runs on an instance's port is named by
/// its unit, with the command that stops it, in the error, in `status` and in `status --json`.
/// The holder is put in a cgroup named like that unit (a transient systemd unit cannot be made
/// here, nor in CI); where no cgroup can be made (not root, no cgroup2 mount: CI's container may
/// lack a writable one) the test skips and says why, under CI too.
#[test]
fn a_holder_run_by_openclaws_unit_is_named_with_the_command_that_stops_it() {
    let s = Scene::new();
    let ports = free_ports(1);
    let unit = format!("openclaw-gateway-it{}.service", std::process::id());
    let cgroup = match UnitCgroup::make(&unit) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let holder = Killed(
        std::process::Command::new(fake_gateway())
            .args(["--port", &ports[0].to_string()])
            .env("OPENCLAW_SERVICE_MARKER", "openclaw")
            .env("OPENCLAW_SERVICE_KIND", "gateway")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    if let Err(why) = cgroup.enter(holder.0.id()) {
        eprintln!("skipped: {why}");
        return;
    }
    crate::common::wait_for("the holder to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", ports[0]))
            .is_ok()
            .then_some(())
    });
    s.fake_profile("main", ports[0], "");
    let d = s.daemon();
    let st = d.wait_status("main", "blocked", |v| v["state"] == "blocked");
    let stop = format!("systemctl stop {unit}");
    assert_eq!(st["holder"]["pid"], holder.0.id(), "{st}");
    assert_eq!(st["holder"]["unit"], unit.as_str(), "{st}");
    assert_eq!(st["holder"]["stop_hint"], stop.as_str(), "{st}");
    let said = format!(
        "it is a gateway run by OpenClaw's own service, systemd unit {unit}: stop it with `{stop}` and keep it from starting again with `systemctl disable {unit}`"
    );
    assert!(st["last_error"].as_str().unwrap().contains(&said), "{st}");
    let out = d.ctl(&["start", "main"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::common::stderr(&out).contains(&said),
        "{}",
        crate::common::stderr(&out)
    );
    let table = stdout(&d.ctl(&["status"]));
    assert!(table.contains(&said), "{table}");
}
