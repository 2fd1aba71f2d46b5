//! Descendants that try to outlive their instance (issue 11, point 3): a process that leaves the
//! gateway's session and clears its environment (`env -i setsid`) is still ended by `stop`, with a
//! cgroup per instance where the host offers a writable cgroup v2, and without (`--no-cgroups`).
//! Also: `version` says which mode the daemon is in, and `limits` the daemon cannot apply fail its
//! check at the line they are written on.
//!
//! The cgroup cases need root and a writable cgroup2 mount. Where the test cannot make a cgroup
//! itself, it skips with the reason; that holds under `CI=true` too, since a CI container may be
//! given a read-only cgroupfs, and then the daemon has none either. Where the test can, the daemon
//! must use cgroups (a daemon that falls back to the tree there fails the test).

use std::path::{Path, PathBuf};

use crate::common;

use common::{
    alive, both_modes, fake_gateway, free_ports, stderr, stdout, wait_for, writable_cgroup2, Scene,
};

/// The cgroup2 mount, or None after printing why the test is skipped.
fn cgroups_or_skip(test: &str) -> Option<PathBuf> {
    match writable_cgroup2() {
        Ok(m) => Some(m),
        Err(why) => {
            eprintln!("SKIPPED {test}: no writable cgroup v2 here ({why})");
            None
        }
    }
}

/// A profile `name` whose command is a shell script: it starts `env -i setsid sh -c '...; exec
/// sleep 1000'` in the background (a session of its own, no environment, so no marker), which
/// writes its pid to `escapee.pid` in the scene, then becomes the stand-in gateway.
fn escaping_profile(scene: &Scene, name: &str, port: u16) -> PathBuf {
    escaping_profile_with(scene, name, port, &[], "")
}

/// [`escaping_profile`] with arguments for the stand-in gateway and extra YAML.
fn escaping_profile_with(
    scene: &Scene,
    name: &str,
    port: u16,
    args: &[&str],
    extra: &str,
) -> PathBuf {
    let pid_file = scene.path(&format!("{name}-escapee.pid"));
    let script = scene.write(
        &format!("{name}-gateway.sh"),
        &format!(
            "#!/bin/sh\n\
             env -i /usr/bin/setsid /bin/sh -c 'echo $$ > {pid}.tmp && mv {pid}.tmp {pid} && exec sleep 1000' &\n\
             exec {gw:?} \"$@\"\n",
            pid = pid_file.display(),
            gw = fake_gateway().display().to_string(),
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    scene.profile(
        &format!("{name}.yaml"),
        &format!(
            "port: {port}\nstate_dir: ~/state/{name}\ncommand: [{:?}{}]\nstop: {{ timeout: 5s }}\n{extra}",
            script.display().to_string(),
            args.iter().map(|a| format!(", {a:?}")).collect::<String>()
        ),
    );
    pid_file
}

/// The escapee's pid, once the script has written it and it runs as `sleep`.
fn escapee(pid_file: &Path) -> u32 {
    wait_for("the escapee to write its pid and become sleep", || {
        let pid: u32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        cmdline.starts_with(b"sleep\0").then_some(pid)
    })
}

fn session_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    f[3].parse().unwrap()
}

/// The escapee is what the issue says: another session, and no marker in its environment.
fn assert_escaped(pid: u32, gateway: u32) {
    assert_ne!(session_of(pid), session_of(gateway), "setsid took it out");
    let env = common::environ(pid);
    assert!(
        !env.iter()
            .any(|v| v.starts_with("OPENCLAW_SUPERVISOR_INSTANCE=")
                || v.starts_with("OPENCLAW_STATE_DIR=")),
        "env -i cleared its environment, marker included: {env:?}"
    );
}

/// The daemon's `version` output.
fn containment(d: &common::Daemon) -> String {
    let out = d.ctl(&["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("containment: "))
        .unwrap_or_else(|| panic!("no containment line in: {}", stdout(&out)))
        .to_string()
}

/// Kills the escapee if a failed assertion left it behind.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `openclawctl stop escape` succeeds, and neither the escapee `pid` nor the `gateway` outlives it.
fn stop_ends_both(d: &common::Daemon, pid: u32, gateway: u32) {
    let out = d.ctl(&["stop", "escape"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !alive(pid),
        "the env -i setsid descendant outlived the stop"
    );
    assert!(!alive(gateway));
}

#[test]
fn an_env_i_setsid_descendant_is_gone_after_stop_with_cgroups() {
    let Some(mount) = cgroups_or_skip("an_env_i_setsid_descendant_is_gone_after_stop_with_cgroups")
    else {
        return;
    };
    let scene = Scene::new();
    let port = free_ports(1)[0];
    let pid_file = escaping_profile(&scene, "escape", port);
    let d = scene.daemon();
    let mode = containment(&d);
    assert!(
        mode.starts_with(&format!("cgroup v2 at {}", mount.display())),
        "the host has a writable cgroup v2, the daemon says: {mode}"
    );
    let s = d.wait_status("escape", "running", |s| s["state"] == "running");
    let gateway = s["pid"].as_u64().unwrap() as u32;
    let pid = escapee(&pid_file);
    let _reap = Reap(pid);
    assert_escaped(pid, gateway);
    // Both are in the instance's own cgroup.
    let cgroup_of = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            .unwrap()
    };
    let dir = cgroup_of(gateway);
    assert!(dir.ends_with("/escape"), "{dir}");
    assert_eq!(cgroup_of(pid), dir);
    let cgroup = mount.join(dir.trim_start_matches('/'));
    assert!(cgroup.is_dir());

    stop_ends_both(&d, pid, gateway);
    assert!(
        !cgroup.exists(),
        "the instance's cgroup is removed after the stop"
    );
}

#[test]
fn an_env_i_setsid_descendant_is_gone_after_stop_without_cgroups() {
    let scene = Scene::new();
    let port = free_ports(1)[0];
    let pid_file = escaping_profile(&scene, "escape", port);
    let d = scene.daemon_with(&["--no-cgroups"]);
    assert_eq!(containment(&d), "process tree (disabled by --no-cgroups)");
    let s = d.wait_status("escape", "running", |s| s["state"] == "running");
    let gateway = s["pid"].as_u64().unwrap() as u32;
    let pid = escapee(&pid_file);
    let _reap = Reap(pid);
    assert_escaped(pid, gateway);

    stop_ends_both(&d, pid, gateway);
}

#[test]
fn an_env_i_setsid_descendant_is_gone_after_the_daemon_stops() {
    // The same escapee, ended by the daemon's own shutdown (SIGTERM), in both modes.
    for flags in both_modes() {
        let scene = Scene::new();
        let port = free_ports(1)[0];
        let pid_file = escaping_profile(&scene, "escape", port);
        let mut d = scene.daemon_with(flags);
        d.wait_status("escape", "running", |s| s["state"] == "running");
        let pid = escapee(&pid_file);
        let _reap = Reap(pid);
        assert_eq!(d.terminate(), Some(0));
        assert!(!alive(pid), "{flags:?}: the escapee outlived the daemon");
    }
}

#[test]
fn an_env_i_setsid_descendant_of_a_gateway_that_crashed_is_ended() {
    // No stop, so no walk before a stop signal: without cgroups only the walks made while the
    // gateway lived (once a second; it lives 3 s) know the escapee.
    for flags in both_modes() {
        let scene = Scene::new();
        let port = free_ports(1)[0];
        let pid_file = escaping_profile_with(
            &scene,
            "escape",
            port,
            &["--crash-after-ms", "3000"],
            "restart: { policy: never }\n",
        );
        let d = scene.daemon_with(flags);
        let pid = escapee(&pid_file);
        let _reap = Reap(pid);
        d.wait_status("escape", "exited after its crash", |s| {
            s["state"] == "exited"
        });
        assert!(
            !alive(pid),
            "{flags:?}: the escapee outlived the gateway's crash"
        );
    }
}

#[test]
fn version_says_how_instances_are_contained() {
    let scene = Scene::new();
    let d = scene.daemon_with(&["--no-cgroups"]);
    assert_eq!(containment(&d), "process tree (disabled by --no-cgroups)");
    drop(d);
    let d = scene.daemon();
    let mode = containment(&d);
    match writable_cgroup2() {
        Ok(mount) => assert!(
            mode.starts_with(&format!(
                "cgroup v2 at {}/openclaw-supervisor/",
                mount.display()
            )),
            "{mode}"
        ),
        Err(why) => assert!(
            mode.starts_with("process tree (no writable cgroup v2"),
            "{why}: {mode}"
        ),
    }
}

#[test]
fn limits_the_daemon_cannot_apply_refuse_its_start_at_their_line() {
    let scene = Scene::new();
    let port = free_ports(1)[0];
    scene.fake_profile("main", port, "limits:\n  memory: 2G\n  cpu: 150%\n");
    // Without cgroups no limit can be applied, whatever the host.
    let mut d = scene.spawn_daemon_env(&["--no-cgroups"], &[]);
    assert_eq!(d.wait_exit("the daemon to refuse to start"), Some(1));
    let err = std::fs::read_to_string(&d.stderr).unwrap();
    for (line, field, controller) in [(5, "limits.memory", "memory"), (6, "limits.cpu", "cpu")] {
        let want = format!(
            "supervisor.d/main.yaml:{line}): {field}: limits need a cgroup v2 with the {controller} controller"
        );
        assert!(err.contains(&want), "no {want:?} in:\n{err}");
    }
    assert!(err.contains("disabled by --no-cgroups"), "{err}");
    assert!(!d.socket.exists(), "a refused daemon leaves no socket");
}

#[test]
fn limits_added_by_a_reload_the_daemon_cannot_apply_are_refused() {
    let scene = Scene::new();
    let port = free_ports(1)[0];
    scene.fake_profile("main", port, "");
    let d = scene.daemon_with(&["--no-cgroups"]);
    let before = d.wait_status("main", "running", |s| s["state"] == "running");
    scene.fake_profile("main", port, "limits: { memory: 512M }\n");
    let out = d.ctl(&["reload"]);
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains(
            "supervisor.d/main.yaml:4): limits.memory: limits need a cgroup v2 with the memory controller"
        ),
        "{text}"
    );
    // Nothing changed.
    assert_eq!(d.status("main")["pid"], before["pid"]);
}

#[test]
fn a_bad_limit_is_an_error_at_its_line() {
    let scene = Scene::new();
    scene.profile(
        "main.yaml",
        "port: 18789\nlimits:\n  memory: lots\n  cpu: 150\n",
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("supervisor.d/main.yaml:3: limits.memory: \"lots\" is not a memory size"),
        "{text}"
    );
    assert!(
        text.contains("supervisor.d/main.yaml:4: limits.cpu: 150 has no unit"),
        "{text}"
    );
}

#[test]
fn limits_are_written_to_the_instances_cgroup() {
    // Needs a cgroup v2 whose top offers the memory and cpu controllers.
    let Some(mount) = cgroups_or_skip("limits_are_written_to_the_instances_cgroup") else {
        return;
    };
    let offered = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| offered.split_whitespace().any(|o| o == c);
    if !(has("memory") && has("cpu")) {
        eprintln!(
            "SKIPPED limits_are_written_to_the_instances_cgroup: {} offers only: {offered}",
            mount.display()
        );
        return;
    }
    let scene = Scene::new();
    let port = free_ports(1)[0];
    scene.fake_profile("main", port, "limits: { memory: 256M, cpu: 150% }\n");
    let d = scene.daemon();
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    let pid = s["pid"].as_u64().unwrap();
    let dir = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap();
    let cgroup = mount.join(dir.trim_start_matches('/'));
    let read = |f: &str| std::fs::read_to_string(cgroup.join(f)).unwrap();
    assert_eq!(read("memory.max").trim(), (256u64 << 20).to_string());
    assert_eq!(read("cpu.max").trim(), "150000 100000");
}

#[test]
fn limits_on_a_cgroup_v2_without_the_controller_refuse_the_daemon_start() {
    // Where the daemon has cgroups but the hierarchy lacks the memory controller (a hybrid host
    // whose v1 hierarchies hold it), the error says what the host has.
    let Some(mount) =
        cgroups_or_skip("limits_on_a_cgroup_v2_without_the_controller_refuse_the_daemon_start")
    else {
        return;
    };
    let offered = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    if offered.split_whitespace().any(|c| c == "memory") {
        eprintln!(
            "SKIPPED limits_on_a_cgroup_v2_without_the_controller_refuse_the_daemon_start: {} offers the memory controller",
            mount.display()
        );
        return;
    }
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "limits: { memory: 2G }\n");
    let mut d = scene.spawn_daemon();
    assert_eq!(d.wait_exit("the daemon to refuse to start"), Some(1));
    let err = std::fs::read_to_string(&d.stderr).unwrap();
    let want = format!(
        "supervisor.d/main.yaml:4): limits.memory: limits need a cgroup v2 with the memory controller; this host has cgroup v2 at {} with controllers: ",
        mount.display()
    );
    assert!(err.contains(&want), "no {want:?} in:\n{err}");
}

/// A cgroup made for one test and marked delegated as systemd marks a `Delegate=yes` unit's
/// (`trusted.delegate` = "1"); removed with what the daemon made in it.
struct DelegatedCgroup(PathBuf);

impl DelegatedCgroup {
    fn new(mount: &Path, test: &str) -> DelegatedCgroup {
        let dir = mount.join(format!("openclaw-test-{test}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        let name = std::ffi::CString::new("trusted.delegate").unwrap();
        // SAFETY: both strings are NUL-terminated and the value's length is passed with it.
        let rc = unsafe {
            nix::libc::setxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0)
        };
        assert_eq!(rc, 0, "setxattr trusted.delegate on {}", dir.display());
        DelegatedCgroup(dir)
    }
}

impl Drop for DelegatedCgroup {
    fn drop(&mut self) {
        for sub in ["instances/escape", "instances", "supervisor", ""] {
            let _ = std::fs::remove_dir(self.0.join(sub));
        }
    }
}

#[test]
fn a_delegated_cgroup_holds_the_daemon_in_a_leaf_and_each_instance_below_it() {
    let Some(mount) = cgroups_or_skip("a_delegated_cgroup_holds_the_daemon_in_a_leaf") else {
        return;
    };
    let own = DelegatedCgroup::new(&mount, "delegated");
    let scene = Scene::new();
    let port = free_ports(1)[0];
    let pid_file = escaping_profile(&scene, "escape", port);
    // The daemon starts inside the delegated cgroup, as systemd would start it.
    let socket = scene.path("run/supervisor.sock");
    let stderr_file = scene.path("daemon.stderr");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            own.0.display()
        ))
        .arg(common::bin_path("openclaw-supervisord"))
        .args(["--config-dir", "supervisor.d", "--socket"])
        .arg(&socket)
        .arg("--log-dir")
        .arg(scene.path("logs"))
        .arg("--state-dir")
        .arg(scene.path("daemon-state"))
        .current_dir(scene.root.path())
        .env("HOME", scene.home())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let mut d = common::Daemon {
        child: Some(child),
        socket,
        logs: scene.path("logs"),
        stderr: stderr_file,
    };
    wait_for("the daemon's API to answer", || {
        d.ctl(&["status", "--json"]).status.success().then_some(())
    });
    assert_eq!(
        containment(&d),
        format!("cgroup v2 at {}/instances (delegated)", own.0.display())
    );
    let cgroup_of = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("0::")
                    .map(|p| mount.join(p.trim_start_matches('/')))
            })
            .unwrap()
    };
    assert_eq!(cgroup_of(d.pid()), own.0.join("supervisor"));
    let s = d.wait_status("escape", "running", |s| s["state"] == "running");
    let gateway = s["pid"].as_u64().unwrap() as u32;
    let pid = escapee(&pid_file);
    let _reap = Reap(pid);
    assert_eq!(cgroup_of(gateway), own.0.join("instances/escape"));
    assert_eq!(cgroup_of(pid), own.0.join("instances/escape"));
    let out = d.ctl(&["stop", "escape"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !alive(pid),
        "the env -i setsid descendant outlived the stop"
    );
    assert!(!own.0.join("instances/escape").exists());
    assert_eq!(d.terminate(), Some(0));
}
