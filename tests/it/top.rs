//! `openclawctl top` as a person uses it: in a terminal (tmux, on a private server), reading the
//! screen (`capture-pane`) and pressing keys (`send-keys`), against a daemon running stand-ins.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{alive, bin_path, free_ports, stderr, wait_for, Scene};

/// Whether this is a CI run (`CI=true`, as `.ci/run` is run): there a missing tmux fails.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether tmux is here; without, the test is skipped with a banner, or fails under CI
/// (`.ci/run` installs it).
fn tmux_found() -> bool {
    let why = match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("tmux -V failed: {}", stderr(&o).trim()),
        Err(e) => format!("no tmux: {e}"),
    };
    assert!(
        !in_ci(),
        "{why}; with CI=true this test fails rather than skips (.ci/run installs it: apt-get install tmux)"
    );
    eprintln!("\n==== SKIPPED the test of `openclawctl top` in tmux: {why}\n==== install: apt-get install tmux\n");
    false
}

/// A tmux server of its own (`-S` a socket in the scene), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// The screen as text.
    fn screen(&self) -> String {
        common::stdout(&self.cmd(&["capture-pane", "-p", "-t", "top"]))
    }

    /// Waits until the screen shows what `pred` looks for.
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            last = if s.is_empty() { last } else { s };
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting for the screen to show {what}; it shows:\n{last}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        let o = self.cmd(&args);
        assert!(o.status.success(), "send-keys: {}", stderr(&o));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The row of `name` on the screen.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name) && l.contains("running"))
}

fn pid(d: &common::Daemon, name: &str) -> u64 {
    d.status(name)["pid"].as_u64().expect("a pid")
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// `openclawctl top` against `d`, in a 160x40 pane of a private tmux server; the pane's pid
/// (openclawctl's own: the shell execs it).
fn start_top(scene: &Scene, d: &common::Daemon) -> (Tmux, u32) {
    let tmux = Tmux {
        socket: scene.path("tmux.sock"),
    };
    let command = format!("exec {} top", shell_quote(&bin_path("openclawctl")));
    let o = Command::new("tmux")
        .arg("-S")
        .arg(&tmux.socket)
        .args(["-f", "/dev/null", "new-session", "-d", "-s", "top"])
        .args(["-x", "160", "-y", "40", &command])
        .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)
        .env_remove("OPENCLAW_SUPERVISOR_ENDPOINT")
        .output()
        .expect("run tmux");
    assert!(o.status.success(), "tmux new-session: {}", stderr(&o));
    let pane_pid = common::stdout(&tmux.cmd(&["display", "-p", "-t", "top", "#{pane_pid}"]))
        .trim()
        .parse()
        .expect("the pane's pid");
    (tmux, pane_pid)
}

#[test]
fn top_in_tmux_shows_every_instance_and_restarts_the_selected_one() {
    if !tmux_found() {
        return;
    }
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("alpha", ports[0], "");
    scene.fake_profile("beta", ports[1], "");
    let d = scene.daemon();
    for name in ["alpha", "beta"] {
        d.wait_status(name, "running", |s| s["state"] == "running");
    }
    let (alpha, beta) = (pid(&d, "alpha"), pid(&d, "beta"));

    let (tmux, pane_pid) = start_top(&scene, &d);

    // Both rows, each with its pid, and the first selected.
    let screen = tmux.wait_screen("both instances running with their pids", |s| {
        [("alpha", alpha), ("beta", beta)]
            .iter()
            .all(|(n, p)| row(s, n).is_some_and(|r| r.contains(&p.to_string())))
    });
    assert!(
        row(&screen, "alpha").is_some_and(|r| r.contains("> ")),
        "alpha is not selected at first:\n{screen}"
    );

    // Down to beta, restart it, confirm.
    tmux.keys(&["j"]);
    tmux.wait_screen("beta selected", |s| {
        row(s, "beta").is_some_and(|r| r.contains("> "))
    });
    tmux.keys(&["r"]);
    tmux.wait_screen("the confirmation", |s| s.contains("restart beta? (y/n)"));
    tmux.keys(&["y"]);
    let restarted = d.wait_status("beta", "restarted", |s| {
        s["state"] == "running" && s["pid"].as_u64().is_some_and(|p| p != beta)
    });
    let new_beta = restarted["pid"].as_u64().unwrap();
    assert_eq!(pid(&d, "alpha"), alpha, "alpha was restarted too");
    // The screen follows: beta's new pid, and the outcome on the status line.
    tmux.wait_screen("beta's new pid", |s| {
        row(s, "beta").is_some_and(|r| r.contains(&new_beta.to_string()))
            && s.contains("restart beta: running")
    });

    // q quits: the pane's process ends.
    tmux.keys(&["q"]);
    wait_for("openclawctl top to end after q", || {
        (!alive(pane_pid)).then_some(())
    });
    assert_eq!(pid(&d, "alpha"), alpha);
    assert_eq!(pid(&d, "beta"), new_beta);
}

#[test]
fn top_e_shows_why_an_instance_is_fatal() {
    if !tmux_found() {
        return;
    }
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.profile(
        "broken.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/broken\ncommand: [{:?}, \"--exit-code\", \"78\"]\n",
            ports[0],
            common::fake_gateway().display().to_string()
        ),
    );
    let d = scene.daemon();
    d.wait_status("broken", "fatal", |s| s["state"] == "fatal");
    let (tmux, pane_pid) = start_top(&scene, &d);
    tmux.wait_screen("broken, fatal", |s| {
        s.lines()
            .any(|l| l.contains("> broken") && l.contains("fatal"))
    });
    tmux.keys(&["e"]);
    let screen = tmux.wait_screen("broken's explanation", |s| {
        s.contains("explain broken") && s.contains("last error:")
    });
    // Its status, then the end of its history and what comes next (the Explain call).
    for want in [
        "state:      fatal",
        "last exit:  exit code 78",
        "EX_CONFIG",
        "next: fatal: waiting for",
    ] {
        assert!(
            screen.contains(want),
            "no {want:?} in the explanation:\n{screen}"
        );
    }
    // Any key closes it; q then quits.
    tmux.keys(&["Escape"]);
    tmux.wait_screen("the explanation closed", |s| !s.contains("explain broken"));
    tmux.keys(&["q"]);
    wait_for("openclawctl top to end after q", || {
        (!alive(pane_pid)).then_some(())
    });
}
