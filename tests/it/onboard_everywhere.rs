//! A token per gateway (`gateway_token: generate`, `openclawctl token`), `${VAR}` in `env`, and
//! openclawctl everywhere: over TCP (`--endpoint`, `--token-file`), `check`/`ports` on the running
//! daemon's config dir, `env` and `exec` with an instance's environment, and instance names in the
//! shell completion.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use common::{bin_path, environ, free_ports, stderr, stdout, Daemon, Scene};

const TOKEN_FILE: &str = ".openclaw-supervisor.token";

fn running(s: &serde_json::Value) -> bool {
    s["state"] == "running"
}

fn pid_of(d: &Daemon, name: &str) -> u32 {
    d.wait_status(name, "running", running)["pid"]
        .as_u64()
        .expect("a pid") as u32
}

/// The value of `var` in the environment of `pid`.
fn env_of(pid: u32, var: &str) -> Option<String> {
    let prefix = format!("{var}=");
    environ(pid)
        .into_iter()
        .find_map(|v| v.strip_prefix(&prefix).map(str::to_string))
}

fn ctl_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.ctl(args);
    assert!(
        out.status.success(),
        "openclawctl {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn a_generated_token_is_made_once_kept_0600_and_given_to_its_gateway_only() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("a", ports[0], "gateway_token: generate\n");
    scene.fake_profile("b", ports[1], "gateway_token: generate\n");
    let mut d = scene.daemon();
    let a = pid_of(&d, "a");
    let b = pid_of(&d, "b");
    let token_a = env_of(a, "OPENCLAW_GATEWAY_TOKEN").expect("a's gateway has a token");
    let token_b = env_of(b, "OPENCLAW_GATEWAY_TOKEN").expect("b's gateway has a token");
    assert_ne!(token_a, token_b, "each gateway has its own token");
    assert!(token_a.len() >= 32, "{token_a}");

    let file = scene.home().join("state/a").join(TOKEN_FILE);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token_a);
    assert_eq!(ctl_ok(&d, &["token", "a"]).trim(), token_a);

    // The same token after a restart of the instance...
    ctl_ok(&d, &["restart", "a"]);
    let a2 = pid_of(&d, "a");
    assert_ne!(a, a2);
    assert_eq!(env_of(a2, "OPENCLAW_GATEWAY_TOKEN"), Some(token_a.clone()));
    // ...and of the daemon.
    d.terminate();
    let d = scene.daemon();
    let a3 = pid_of(&d, "a");
    assert_eq!(env_of(a3, "OPENCLAW_GATEWAY_TOKEN"), Some(token_a.clone()));
    assert_eq!(ctl_ok(&d, &["token", "b"]).trim(), token_b);
}

#[test]
fn a_planted_symlink_at_the_token_path_is_refused() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("a", ports[0], "gateway_token: generate\nautostart: false\n");
    let state = scene.home().join("state/a");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = scene.write("secret", "someone-elses-token\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = state.join(TOKEN_FILE);
    std::os::unix::fs::symlink(&secret, &link).unwrap();

    let d = scene.daemon();
    let out = d.ctl(&["start", "a"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&link.display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    let status = d.status("a");
    assert!(status["pid"].is_null(), "{status}");
    assert_eq!(status["state"], "fatal", "{status}");
    // The target is untouched, and not handed out.
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "someone-elses-token\n"
    );
    let out = d.ctl(&["token", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout(&out).contains("someone-elses-token"));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

#[test]
fn token_of_an_instance_without_gateway_token_says_why() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("a", ports[0], "autostart: false\n");
    let d = scene.daemon();
    let out = d.ctl(&["token", "a"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("gateway_token: generate") && err.contains("supervisor.d/a.yaml"),
        "{err}"
    );
}

#[test]
fn env_values_expand_the_daemons_variables() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile(
        "a",
        ports[0],
        "env:\n  GREETING: \"hi-${WHO}, $${literal}\"\n",
    );
    let d = scene.daemon_with_env(&[], &[("WHO", "there")]);
    let pid = pid_of(&d, "a");
    assert_eq!(
        env_of(pid, "GREETING").as_deref(),
        Some("hi-there, ${literal}")
    );
}

#[test]
fn an_unset_variable_in_env_is_a_check_error_with_its_line() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile(
        "a",
        ports[0],
        "env:\n  NO_COLOR: \"1\"\n  GREETING: \"secret-${NOBODY_SETS_THIS}\"\n",
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    // fake_profile writes port, state_dir, command, then env: GREETING is on line 6.
    assert!(text.contains("a.yaml:6"), "{text}");
    assert!(text.contains("${NOBODY_SETS_THIS}"), "{text}");
    assert!(text.contains("env.GREETING"), "{text}");
    // A value may be a secret: it is not quoted.
    assert!(!text.contains("secret-"), "{text}");
}

#[test]
fn a_token_both_generated_and_set_in_env_is_a_check_error_that_keeps_it_secret() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile(
        "a",
        ports[0],
        "gateway_token: generate\nenv:\n  OPENCLAW_GATEWAY_TOKEN: very-secret-value\n",
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("OPENCLAW_GATEWAY_TOKEN") && text.contains("gateway_token"),
        "{text}"
    );
    assert!(!text.contains("very-secret-value"), "{text}");
}

/// openclawctl with `args` and `env`, without the socket variable of the test's environment.
fn ctl_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin_path("openclawctl"))
        .args(args)
        .env_remove("OPENCLAW_SUPERVISOR_SOCKET")
        .env_remove("OPENCLAW_SUPERVISOR_ENDPOINT")
        .env_remove("OPENCLAW_SUPERVISOR_TOKEN_FILE")
        .env_remove("OPENCLAW_SUPERVISOR_CONFIG_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn endpoint_and_token_file_reach_the_tcp_listener() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("a", ports[0], "");
    let token = scene.write("api-token", "s3cret-token\n");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let addr = format!("127.0.0.1:{}", ports[1]);
    let d = scene.daemon_with(&["--tcp", &addr, "--token-file", token.to_str().unwrap()]);
    let first = pid_of(&d, "a");
    let endpoint = format!("http://{addr}");
    let token_file = token.to_str().unwrap();
    // No socket anywhere: a call that worked went over TCP.
    let nowhere = scene.path("no/such.sock");
    let nowhere = nowhere.to_str().unwrap();

    let out = ctl_with(
        &[
            "--socket",
            nowhere,
            "--endpoint",
            &endpoint,
            "--token-file",
            token_file,
            "status",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["pid"].as_u64(), Some(u64::from(first)));

    // The environment variables work as the options do.
    let out = ctl_with(
        &["restart", "a"],
        &[
            ("OPENCLAW_SUPERVISOR_SOCKET", nowhere),
            ("OPENCLAW_SUPERVISOR_ENDPOINT", &endpoint),
            ("OPENCLAW_SUPERVISOR_TOKEN_FILE", token_file),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("a: running"), "{}", stdout(&out));
    assert_ne!(pid_of(&d, "a"), first);

    // A wrong token: refused, naming the file.
    let wrong = scene.write("wrong-token", "s3cret-tokem\n");
    let out = ctl_with(
        &[
            "--endpoint",
            &endpoint,
            "--token-file",
            wrong.to_str().unwrap(),
            "restart",
            "a",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&wrong.display().to_string()) && err.contains("refused the token"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "said once: {err}");

    // --endpoint alone: a usage error that says what is missing.
    let out = ctl_with(&["--endpoint", &endpoint, "status"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--token-file"), "{}", stderr(&out));
}

#[test]
fn check_and_ports_use_the_running_daemons_config_dir() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("a", ports[0], "autostart: false\n");
    let d = scene.daemon();
    let socket = d.socket.to_str().unwrap();
    let dir = scene.dir().canonicalize().unwrap();
    for args in [&["check"][..], &["ports", "--json"][..]] {
        // From another directory, with no --config-dir: the daemon's is used, and said.
        let out = Command::new(bin_path("openclawctl"))
            .args(args)
            .current_dir("/")
            .env("OPENCLAW_SUPERVISOR_SOCKET", socket)
            .env_remove("OPENCLAW_SUPERVISOR_CONFIG_DIR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("running daemon's config dir") && err.contains(&dir.display().to_string()),
            "{args:?}: {err}"
        );
        assert!(
            stdout(&out).contains("\"a\"") || stdout(&out).contains("1 profile"),
            "{args:?}: {}",
            stdout(&out)
        );
    }
    let version = stdout(&d.ctl(&["version"]));
    assert!(
        version.contains(&format!("config dir: {}", dir.display())),
        "{version}"
    );
    // A --config-dir given wins, and is not announced.
    let out = Command::new(bin_path("openclawctl"))
        .args(["check", "--config-dir"])
        .arg(scene.dir())
        .env("OPENCLAW_SUPERVISOR_SOCKET", socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("running daemon's"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_config_dir_names_the_option_and_the_variable() {
    let scene = Scene::new();
    let out = scene.run("openclawctl", &["check", "--config-dir", "nope.d"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("--config-dir") && text.contains("OPENCLAW_SUPERVISOR_CONFIG_DIR"),
        "{text}"
    );
}

#[test]
fn env_prints_exactly_what_the_gateway_got_without_the_marker() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile(
        "a",
        ports[0],
        "gateway_token: generate\nenv:\n  QUOTED: \"it's $HOME\"\n",
    );
    let d = scene.daemon();
    let pid = pid_of(&d, "a");
    let child = environ(pid);
    let printed = ctl_ok(&d, &["env", "a"]);
    assert!(
        !printed.contains("OPENCLAW_SUPERVISOR_INSTANCE"),
        "{printed}"
    );
    // Evaluated by a shell, each variable is the gateway's.
    for var in [
        "OPENCLAW_STATE_DIR",
        "OPENCLAW_CONFIG_PATH",
        "OPENCLAW_GATEWAY_PORT",
        "OPENCLAW_GATEWAY_TOKEN",
        "XDG_CACHE_HOME",
        "PATH",
        "QUOTED",
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "eval \"$(\"$0\" env a)\" && printf '%s' \"${var}\""
            ))
            .arg(bin_path("openclawctl"))
            .env("OPENCLAW_SUPERVISOR_SOCKET", &d.socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let want = format!("{var}={}", stdout(&out));
        assert!(
            child.contains(&want),
            "{want} not in the gateway's {child:?}"
        );
    }
    assert_eq!(env_of(pid, "QUOTED").as_deref(), Some("it's $HOME"));
}

#[test]
fn exec_runs_a_command_as_the_instance_with_its_exit_status() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("a", ports[0], "autostart: false\nworking_dir: /tmp\n");
    let d = scene.daemon();
    let out = d.ctl(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "echo \"$OPENCLAW_GATEWAY_PORT\"; pwd; echo \"${OPENCLAW_SUPERVISOR_INSTANCE:-unmarked}\"; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\n/tmp\nunmarked\n", ports[0]));
    let out = d.ctl(&["exec", "a", "--", "no-such-program-anywhere"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("no-such-program-anywhere"),
        "{}",
        stderr(&out)
    );
}

/// What bash completes for `words` (the last one being completed), with `env`.
fn bash_complete(
    script: &std::path::Path,
    words: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> Vec<String> {
    let bin_dir = bin_path("openclawctl").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _openclawctl_with_names openclawctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .env("PATH", path)
        .env_remove("OPENCLAW_SUPERVISOR_SOCKET")
        .env_remove("OPENCLAW_SUPERVISOR_CONFIG_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut v: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn bash_completion_offers_instance_names() {
    let scene = Scene::new();
    let ports = free_ports(3);
    scene.fake_profile("alpha", ports[0], "autostart: false\n");
    scene.fake_profile("alps", ports[1], "autostart: false\n");
    scene.fake_profile("beta", ports[2], "autostart: false\n");
    let out = scene.run("openclawctl", &["completions", "bash"]);
    assert!(out.status.success());
    let script = scene.write("openclawctl.bash", &stdout(&out));
    let d = scene.daemon();
    let socket = d.socket.as_os_str();
    let from_daemon = [("OPENCLAW_SUPERVISOR_SOCKET", socket)];
    assert_eq!(
        bash_complete(&script, "openclawctl restart al", &from_daemon),
        ["alpha", "alps"]
    );
    assert_eq!(
        bash_complete(&script, "openclawctl logs ''", &from_daemon),
        ["alpha", "alps", "beta"]
    );
    // The socket given on the command line is the one asked.
    assert_eq!(
        bash_complete(
            &script,
            &format!("openclawctl --socket {} exec b", d.socket.display()),
            &[]
        ),
        ["beta"]
    );
    // No daemon: the config dir's profiles.
    let nowhere = scene.path("no/such.sock");
    let dir = scene.dir();
    assert_eq!(
        bash_complete(
            &script,
            "openclawctl token ''",
            &[
                ("OPENCLAW_SUPERVISOR_SOCKET", nowhere.as_os_str()),
                ("OPENCLAW_SUPERVISOR_CONFIG_DIR", dir.as_os_str()),
            ]
        ),
        ["alpha", "alps", "beta"]
    );
    // Subcommands are still completed by clap's script.
    assert!(
        bash_complete(&script, "openclawctl rest", &from_daemon).contains(&"restart".to_string())
    );
}
