//! Files the daemon does not own: links planted where it writes, a file at its socket's path,
//! directories another user owns or can write, profiles that are FIFOs, huge, someone else's or
//! links to a root-only file, and a log disk that fills up. Each is refused or survived, never
//! followed, deleted, hung on or lost without a trace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common;

use common::{bin_path, fake_gateway, free_ports, stderr, stdout, wait_for, Scene};

/// Whether this test may do what needs root; if not, says why it skips, or fails under `CI=true`
/// (CI runs the suite as root).
fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} needs root; CI runs this test as root");
    }
    eprintln!("SKIPPED: {what} needs root");
    false
}

/// Runs `cmd` to its end, or fails the test (killing it) if it has not ended after a generous
/// deadline: what this guards against is a hang, not a slow machine.
fn run_to_end(cmd: &mut Command, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} hangs (killed after 60 s)");
        }
    }
}

fn ctl_to_end(d: &common::Daemon, args: &[&str]) -> Output {
    run_to_end(
        Command::new(bin_path("openclawctl"))
            .args(args)
            .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket),
        &format!("openclawctl {}", args.join(" ")),
    )
}

fn daemon_log(d: &common::Daemon) -> String {
    std::fs::read_to_string(&d.stderr).unwrap_or_default()
}

/// Runs the daemon on the scene until it exits by itself, which must be with 1 and `needle` in its
/// stderr; returns that stderr.
fn daemon_refuses_saying(scene: &Scene, needle: &str) -> String {
    let mut d = scene.spawn_daemon();
    let code = d.wait_exit("the daemon to refuse to start");
    let log = daemon_log(&d);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(needle), "{log}");
    log
}

#[test]
fn a_symlink_at_an_instance_log_is_refused_and_its_target_left_alone() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let target = scene.write("precious", "precious\n");
    std::fs::create_dir_all(scene.path("logs")).unwrap();
    std::os::unix::fs::symlink(&target, scene.path("logs/main.log")).unwrap();

    let d = scene.daemon();
    // The instance runs all the same, and its lines are in the tail.
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    let logs = ctl_to_end(&d, &["logs", "main"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    let tail = stdout(&logs);
    assert!(
        tail.contains(&format!("started pid {}", s["pid"])),
        "{tail}"
    );
    let refusal = format!(
        "{} is a symbolic link; refused",
        scene.path("logs/main.log").display()
    );
    assert!(tail.contains(&refusal), "the tail says why: {tail}");
    assert!(daemon_log(&d).contains(&refusal), "{}", daemon_log(&d));
    // Never followed: the target is as it was.
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(scene.path("logs/main.log"))
        .unwrap()
        .is_symlink());
}

#[test]
fn a_log_file_the_daemon_creates_is_0640_in_a_0750_dir() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&scene.path("logs")) & !0o750, 0);
    assert_eq!(mode(&scene.path("logs/main.log")) & !0o640, 0);
    assert_eq!(mode(&scene.path("daemon-state")) & !0o700, 0);
    assert_eq!(mode(&scene.path("run")) & !0o700, 0);
}

#[test]
fn a_symlink_at_the_desired_state_temp_file_is_replaced_not_followed() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let target = scene.write("precious", "precious\n");
    std::fs::create_dir_all(scene.path("daemon-state")).unwrap();
    let tmp = scene.path("daemon-state/.desired-state.json.tmp");
    std::os::unix::fs::symlink(&target, &tmp).unwrap();

    let mut d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let out = ctl_to_end(&d, &["stop", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl_to_end(&d, &["start", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.terminate(), Some(0));

    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    let saved = std::fs::read_to_string(scene.path("daemon-state/desired-state.json")).unwrap();
    assert!(saved.contains("\"main\": \"running\""), "{saved}");
    let mode = std::fs::metadata(scene.path("daemon-state/desired-state.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused_not_deleted() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let file = scene.write("run/supervisor.sock", "not a socket\n");
    daemon_refuses_saying(
        &scene,
        &format!(
            "{} is a regular file, not a socket; refusing to delete it",
            file.display()
        ),
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket\n");
}

#[test]
fn a_stale_socket_is_still_replaced() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let socket = scene.path("run/supervisor.sock");
    std::fs::create_dir_all(scene.path("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let d = scene.daemon();
    assert!(ctl_to_end(&d, &["status"]).status.success());
}

#[test]
fn openclawctl_refuses_a_socket_dir_anyone_may_write() {
    let scene = Scene::new();
    let open = scene.path("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_to_end(
        Command::new(bin_path("openclawctl"))
            .arg("status")
            .env("OPENCLAW_SUPERVISOR_SOCKET", open.join("supervisor.sock")),
        "openclawctl status",
    );
    assert!(!out.status.success(), "no daemon there");
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "error: refusing the socket {}: the socket directory {} has mode 0777",
            open.join("supervisor.sock").display(),
            open.display()
        )),
        "{said}"
    );
}

#[test]
fn a_socket_dir_owned_by_another_user_is_refused() {
    if !root_or_skip("chown to nobody") {
        return;
    }
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let run = scene.path("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&run, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    daemon_refuses_saying(
        &scene,
        &format!(
            "the socket directory {} is owned by uid 65534",
            run.display()
        ),
    );
    assert!(!run.join("supervisor.sock").exists());
    // Nothing started before the refusal.
    assert!(!scene.path("logs/main.log").exists());
}

#[test]
fn a_world_writable_log_or_state_dir_is_refused() {
    for dir in ["logs", "daemon-state"] {
        let scene = Scene::new();
        scene.fake_profile("main", free_ports(1)[0], "");
        let path = scene.path(dir);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let log = daemon_refuses_saying(&scene, &format!("{} has mode 0777", path.display()));
        assert!(log.contains("refusing to start"), "{log}");
        assert!(!scene.path("run/supervisor.sock").exists());
    }
}

#[test]
fn a_fifo_profile_is_an_error_of_check_start_and_reload_never_a_hang() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let fifo = scene.path("supervisor.d/x.yaml");
    let mkfifo =
        || nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    mkfifo();
    let named = format!(
        "{}: it is a FIFO, not a regular file",
        Path::new("supervisor.d/x.yaml").display()
    );

    let check = run_to_end(
        Command::new(bin_path("openclawctl"))
            .args(["check", "--config-dir", "supervisor.d"])
            .current_dir(scene.root.path()),
        "openclawctl check",
    );
    assert_eq!(check.status.code(), Some(1));
    assert!(stdout(&check).contains(&named), "{}", stdout(&check));

    let mut d = scene.spawn_daemon();
    let code = d.wait_exit("the daemon to refuse the FIFO");
    assert_eq!(code, Some(1));
    assert!(daemon_log(&d).contains(&named), "{}", daemon_log(&d));

    std::fs::remove_file(&fifo).unwrap();
    let mut d = scene.daemon();
    mkfifo();
    let reload = ctl_to_end(&d, &["reload"]);
    assert!(!reload.status.success());
    let said = format!("{}{}", stdout(&reload), stderr(&reload));
    assert!(said.contains(&named), "{said}");
    // Nor does the FIFO keep the daemon from exiting.
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn a_fifo_as_an_openclaw_config_file_is_an_error_never_a_hang() {
    let scene = Scene::new();
    let fifo = scene.path("openclaw.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    scene.fake_profile(
        "main",
        free_ports(1)[0],
        &format!("config_path: {}\n", fifo.display()),
    );
    let check = run_to_end(
        Command::new(bin_path("openclawctl"))
            .args(["check", "--config-dir", "supervisor.d"])
            .current_dir(scene.root.path()),
        "openclawctl check",
    );
    exits_1_saying(
        &check,
        &stdout(&check),
        "cannot read it: it is a FIFO, not a regular file",
    );
}

#[test]
fn a_fifo_as_the_token_file_is_refused_never_a_hang() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let fifo = scene.path("token");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = run_to_end(
        Command::new(bin_path("openclaw-supervisord"))
            .args(["--config-dir", "supervisor.d", "--socket"])
            .arg(scene.path("run/supervisor.sock"))
            .arg("--log-dir")
            .arg(scene.path("logs"))
            .arg("--state-dir")
            .arg(scene.path("daemon-state"))
            .args(["--tcp", &format!("127.0.0.1:{}", free_ports(1)[0])])
            .arg("--token-file")
            .arg(&fifo)
            .current_dir(scene.root.path())
            .env("HOME", scene.home()),
        "the daemon with a FIFO as its token file",
    );
    exits_1_saying(&out, &stderr(&out), "it is a FIFO, not a regular file");
}

#[test]
fn an_oversized_profile_is_refused_naming_the_cap() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "");
    let big = format!("# {}\n", "x".repeat(2 << 20));
    scene.profile("big.yaml", &big);
    let out = scene.check();
    exits_1_saying(
        &out,
        &stdout(&out),
        "supervisor.d/big.yaml: a profile is at most 1 MiB (1048576 bytes); this file is 2097155 bytes: not read",
    );
}

/// Lines like a shadow file's.
const SHADOW: &str =
    "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n";

#[test]
fn a_profile_linked_to_a_root_only_file_is_never_echoed() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let secret = scene.write("shadow", SHADOW);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = scene.path("supervisor.d/x.yaml");

    let d = scene.daemon();
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let check = scene.check();
    assert_eq!(check.status.code(), Some(1));
    let reload = ctl_to_end(&d, &["reload"]);
    assert!(!reload.status.success());
    for out in [&check, &reload] {
        let said = format!("{}{}", stdout(out), stderr(out));
        assert!(said.contains("supervisor.d/x.yaml:1"), "{said}");
        for line in SHADOW.lines() {
            let start = &line[..line.find("::").unwrap()];
            assert!(!said.contains(start), "{start} echoed: {said}");
        }
    }
}

#[test]
fn a_profile_another_user_owns_or_anyone_may_write_is_refused() {
    let scene = Scene::new();
    let ports = free_ports(2);
    let open = scene.fake_profile("main", ports[0], "");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = scene.check();
    exits_1_saying(
        &out,
        &stdout(&out),
        "supervisor.d/main.yaml: its mode 0666 lets every user change it",
    );
    if !root_or_skip("chown to nobody") {
        return;
    }
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let theirs = scene.fake_profile("rescue", ports[1], "");
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let said = stdout(&out);
    assert!(
        said.contains("supervisor.d/rescue.yaml: it is owned by uid 65534"),
        "{said}"
    );
    assert!(!said.contains("main.yaml"), "{said}");
}

/// A tmpfs mounted by the test, unmounted (lazily) when dropped.
struct SmallFs {
    mount: std::path::PathBuf,
}

impl SmallFs {
    /// A 64 KiB tmpfs at `path`; `None` (saying why) where this machine cannot mount one, except
    /// under `CI=true`, where that is a failure.
    fn mount(path: &Path) -> Option<SmallFs> {
        std::fs::create_dir_all(path).unwrap();
        let why = if nix::unistd::geteuid().is_root() {
            match Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64k,mode=0750", "tmpfs"])
                .arg(path)
                .output()
            {
                Ok(o) if o.status.success() => {
                    return Some(SmallFs {
                        mount: path.to_path_buf(),
                    })
                }
                Ok(o) => stderr(&o),
                Err(e) => e.to_string(),
            }
        } else {
            "not root".to_string()
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("cannot mount a small tmpfs ({why}); CI runs this test as root");
        }
        eprintln!("SKIPPED: cannot mount a small tmpfs ({why})");
        None
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// The numbers of the whole `line N end` lines of a log, in order.
fn numbered(lines: &[&str]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            l.split_once(" | ")?
                .1
                .strip_prefix("line ")?
                .strip_suffix(" end")?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn lines_a_full_log_disk_refused_are_counted_in_the_file_once_it_has_room() {
    let scene = Scene::new();
    let Some(fs) = SmallFs::mount(&scene.path("logs")) else {
        return;
    };
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo \"line $i end\"; sleep 0.02; done & exec {}",
        fake_gateway().display()
    );
    scene.profile(
        "main.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/main\ncommand: [\"/bin/sh\", \"-c\", {script:?}]\n",
            free_ports(1)[0]
        ),
    );
    let d = scene.daemon();
    let s = d.wait_status("main", "running", |s| s["state"] == "running");
    wait_for("lines in the log", || {
        (numbered(&d.log("main").lines().collect::<Vec<_>>()).len() > 10).then_some(())
    });

    // Fill the disk.
    let filler = fs.mount.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = [b'.'; 512];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(b".");
    }
    let tail = || stdout(&ctl_to_end(&d, &["logs", "-n", "0", "main"]));
    wait_for("the tail to say the log cannot be written", || {
        tail().contains("No space left on device").then_some(())
    });
    // Said once for the episode, in the daemon's log too.
    let said = daemon_log(&d);
    assert_eq!(
        said.matches("cannot write the instance's log").count(),
        1,
        "{said}"
    );
    // Lines go on, into the tail only.
    let before = numbered(&d.log("main").lines().collect::<Vec<_>>());
    let last_on_disk = *before.last().unwrap();
    wait_for("lines the file cannot take", || {
        let t = tail();
        numbered(&t.lines().collect::<Vec<_>>())
            .last()
            .filter(|n| **n > last_on_disk + 20)
            .map(|_| ())
    });
    assert_eq!(
        d.status("main")["pid"],
        s["pid"],
        "the instance keeps running"
    );

    std::fs::remove_file(&filler).unwrap();
    let text = wait_for("the file to say what it misses", || {
        let t = d.log("main");
        let marked = t.lines().position(|l| l.contains("lost "))?;
        // And a line after it.
        (numbered(&t.lines().skip(marked).collect::<Vec<_>>()).len() > 2).then_some(t)
    });
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.contains("lost ")).unwrap();
    let marker = lines[at];
    // A line of its own: the torn line before it was ended first.
    let (head, said) = marker.split_once(" | ").unwrap();
    assert!(head.ends_with(" supervisor"), "{marker}");
    assert!(
        said.contains("here: writing it failed: No space left on device"),
        "{marker}"
    );
    let lost: u64 = said
        .strip_prefix("lost ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bytes: u64 = said
        .split_once(" lines (")
        .unwrap()
        .1
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Exactly the lines missing between the last whole one before and the first after; a line
    // torn just before its newline looks whole in the file, and is counted as lost (its newline is).
    let last_before = *numbered(&lines[..at]).last().unwrap();
    let first_after = numbered(&lines[at + 1..])[0];
    let gap = first_after - last_before - 1;
    let torn_at_its_end = numbered(&lines[at - 1..at]) == [last_before];
    assert!(
        lost == gap || (torn_at_its_end && lost == gap + 1),
        "lost {lost}, missing {gap}:\n{text}"
    );
    assert!(lost > 20 && bytes > lost * 10, "{marker}");
    assert!(
        head.starts_with("20"),
        "the marker starts its own line: {marker:?}"
    );
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn memory_returns_after_a_large_profile_is_removed() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let d = scene.daemon();
    let reload = |ok: bool| {
        let out = ctl_to_end(&d, &["reload"]);
        assert_eq!(out.status.success(), ok, "{}", stderr(&out));
        out
    };
    reload(true);
    let baseline = rss_kib(d.pid());

    // Close to the cap: 1 MiB of keys that are no profile's.
    let mut near = String::new();
    let mut i = 0;
    while near.len() < (1 << 20) - 64 {
        near.push_str(&format!("key{i}: [1, 2, 3]\n"));
        i += 1;
    }
    scene.profile("near.yaml", &near);
    let out = reload(false);
    assert!(
        out.stdout.len() + out.stderr.len() < 64 << 10,
        "the reply carries no file: {} bytes",
        out.stdout.len() + out.stderr.len()
    );
    // Far past the cap: never read.
    let huge: String = (0..20)
        .map(|n| near.replace("key", &format!("k{n}_")))
        .collect();
    scene.profile("huge.yaml", &huge);
    let out = reload(false);
    assert!(
        stdout(&out).contains("a profile is at most 1 MiB")
            || stderr(&out).contains("at most 1 MiB"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    std::fs::remove_file(scene.path("supervisor.d/near.yaml")).unwrap();
    std::fs::remove_file(scene.path("supervisor.d/huge.yaml")).unwrap();
    reload(true);
    let after = rss_kib(d.pid());
    eprintln!("daemon RSS: {baseline} KiB before, {after} KiB after");
    assert!(
        after < baseline + 20 * 1024,
        "RSS {after} KiB after the large profiles are gone, {baseline} KiB before"
    );
}

/// `out` exited 1, and `said` (its stdout or stderr) contains `needle`.
fn exits_1_saying(out: &std::process::Output, said: &str, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(needle), "{said}");
}
