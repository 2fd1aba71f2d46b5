//! `openclawctl check` and `ports` on real temp dirs, real symlinks and real JSON5 files, through the
//! real binaries. Each test asserts the report text an operator reads.

use crate::common;

use common::{stderr, stdout, Scene};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn shipped_main_and_rescue_pass_the_check() {
    // Only the two shipped files, copied: the README's tour adds its own profiles to supervisor.d/.
    let scene = Scene::new();
    for file in ["main.yaml", "rescue.yaml"] {
        std::fs::copy(
            common::repo().join("supervisor.d").join(file),
            scene.dir().join(file),
        )
        .unwrap();
    }
    let out = scene.check();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("check passed: 2 profiles"),
        "{}",
        stdout(&out)
    );
    // On the ports README's quick start gives them.
    let out = scene.run(
        "openclawctl",
        &["ports", "--config-dir", "supervisor.d", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ports: Vec<(&str, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap(),
                i["port"]["value"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("main", 18789), ("rescue", 19001)], "{v}");
}

#[test]
fn port_inside_another_cdp_range_names_both_files_and_where_to_move() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\n");
    // OpenClaw's docs advise 20 ports between instances; the CDP range is 100 wide.
    scene.profile(
        "rescue.yaml",
        "# 20 ports apart, as the docs advise\nport: 18809\n",
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        lines(&stdout(&out)),
        vec![
            "error: rescue (supervisor.d/rescue.yaml:2): port 18809 lies inside main's browser CDP range 18800-18899 (supervisor.d/main.yaml:1) (and 6 more overlaps between them); move rescue to 18900 or above",
            "check failed: 1 error in 2 profiles in supervisor.d",
        ]
    );
}

#[test]
fn move_hint_skips_blocks_taken_by_third_instances() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("rescue.yaml", "port: 18809\n");
    // 18900..19010 is taken, so the next free block for rescue starts after this one's range.
    scene.profile("third.yaml", "port: 18950\n");
    let out = scene.check();
    let text = stdout(&out);
    assert!(
        text.contains("port 18809 lies inside main's browser CDP range 18800-18899 (supervisor.d/main.yaml:1) (and 6 more overlaps between them); move rescue to 19061 or above"),
        "{text}"
    );
}

#[test]
fn same_gateway_port_is_reported_once_per_pair() {
    let scene = Scene::new();
    scene.profile("a.yaml", "port: 20000\n");
    scene.profile("b.yaml", "port: 20000\n");
    let out = scene.check();
    assert_eq!(
        lines(&stdout(&out))[0],
        "error: b (supervisor.d/b.yaml:1): port 20000 is also a's port 20000 (supervisor.d/a.yaml:1) (and 10 more overlaps between them); move b to 20111 or above"
    );
    assert_eq!(lines(&stdout(&out)).len(), 2);
}

#[test]
fn state_dir_shared_through_a_symlink_is_found() {
    let scene = Scene::new();
    std::fs::create_dir_all(scene.path("bots/real")).unwrap();
    std::os::unix::fs::symlink(scene.path("bots/real"), scene.path("bots/link")).unwrap();
    let real = scene.path("bots/real");
    let link = scene.path("bots/link");
    scene.profile(
        "main.yaml",
        &format!("port: 18789\nstate_dir: {}\n", real.display()),
    );
    scene.profile(
        "rescue.yaml",
        &format!("port: 19001\nstate_dir: {}\n", link.display()),
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let want = format!(
        "error: rescue (supervisor.d/rescue.yaml:2): state dir {link} (= {real}) is also main's state dir {real} (supervisor.d/main.yaml:2) (and 6 more shared paths inside it); give rescue its own state dir",
        link = link.display(),
        real = std::fs::canonicalize(&real).unwrap().display()
    );
    assert!(text.contains(&want), "want: {want}\n got: {text}");
}

#[test]
fn state_dir_shared_through_dotdot_is_found() {
    let scene = Scene::new();
    std::fs::create_dir_all(scene.path("bots/main")).unwrap();
    scene.profile("main.yaml", "port: 18789\nstate_dir: ../bots/main\n");
    scene.profile(
        "rescue.yaml",
        "port: 19001\nstate_dir: ../bots/rescue/../main\n",
    );
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("rescue (supervisor.d/rescue.yaml:2): state dir "),
        "{text}"
    );
    assert!(text.contains("bots/rescue/../main (= "), "{text}");
    assert!(text.contains("is also main's state dir"), "{text}");
}

#[test]
fn config_file_inside_another_state_dir_is_found() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\nstate_dir: ~/main-state\n");
    scene.profile(
        "rescue.yaml",
        "port: 19001\nstate_dir: ~/rescue-state\nconfig_path: ~/main-state/rescue.json\n",
    );
    let out = scene.check();
    let text = stdout(&out);
    let home = scene.home();
    let want = format!(
        "error: rescue (supervisor.d/rescue.yaml:3): config file {h}/main-state/rescue.json lies inside main's state dir {h}/main-state (supervisor.d/main.yaml:2); move rescue's config file out of main's state dir",
        h = home.display()
    );
    assert!(text.contains(&want), "want: {want}\n got: {text}");
}

#[test]
fn the_default_workspace_lies_in_the_state_dir_so_default_and_named_profiles_coexist() {
    // The supervisor sets OPENCLAW_STATE_DIR, so OpenClaw's default workspace is STATE_DIR/workspace.
    let scene = Scene::new();
    scene.profile("main.yaml", "openclaw_profile: default\n");
    scene.profile("rescue.yaml", "port: 19001\n");
    let out = scene.check();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = scene.run(
        "openclawctl",
        &["ports", "--config-dir", "supervisor.d", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let h = scene.home().display().to_string();
    assert_eq!(
        v[1]["workspace"]["value"],
        format!("{h}/.openclaw-rescue/workspace")
    );
    assert_eq!(v[1]["workspace"]["source"], "default");
}

#[test]
fn a_workspace_from_the_config_file_inside_another_state_dir_is_found() {
    let scene = Scene::new();
    scene.write(
        "home/.openclaw-rescue/openclaw.json",
        "{\n  agents: {\n    defaults: { workspace: '~/.openclaw-main/shared' },\n  },\n}\n",
    );
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("rescue.yaml", "port: 19001\n");
    let out = scene.check();
    let h = scene.home().display().to_string();
    let want = format!(
        "error: rescue ({h}/.openclaw-rescue/openclaw.json:3): workspace {h}/.openclaw-main/shared lies inside main's state dir {h}/.openclaw-main (OpenClaw's default) (supervisor.d/main.yaml); move rescue's workspace out of main's state dir"
    );
    assert_eq!(lines(&stdout(&out))[0], want);
}

#[test]
fn a_profile_workspace_the_config_file_overrides_is_an_error() {
    let scene = Scene::new();
    scene.write(
        "home/.openclaw-main/openclaw.json",
        "{ agents: { defaults: { workspace: '/srv/elsewhere' } } }",
    );
    scene.profile("main.yaml", "port: 18789\nworkspace: ~/ws\n");
    let out = scene.check();
    let h = scene.home().display().to_string();
    assert_eq!(
        lines(&stdout(&out))[0],
        format!("error: main (supervisor.d/main.yaml:2): workspace: workspace {h}/ws is overridden by agents.defaults.workspace /srv/elsewhere in the config file ({h}/.openclaw-main/openclaw.json:1); set the workspace in one place only")
    );
}

#[test]
fn ports_in_the_openclaw_config_file_are_claimed_with_their_line() {
    let scene = Scene::new();
    scene.write(
        "home/.openclaw-main/openclaw.json",
        "{\n  // JSON5, as OpenClaw writes it\n  browser: {\n    profiles: {\n      work: { cdpPort: 19020, },\n    },\n  },\n}\n",
    );
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("rescue.yaml", "port: 19001\n");
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let cfg = scene.home().join(".openclaw-main/openclaw.json");
    let want = format!(
        "error: main ({}:5): config `browser.profiles.work.cdpPort` port 19020 lies inside rescue's browser CDP range 19012-19111 (supervisor.d/rescue.yaml:1); change `browser.profiles.work.cdpPort` in {}",
        cfg.display(),
        cfg.display()
    );
    assert_eq!(lines(&stdout(&out))[0], want);
}

#[test]
fn remote_cdp_urls_claim_nothing_here() {
    let scene = Scene::new();
    scene.write(
        "home/.openclaw-main/openclaw.json",
        "{ browser: { cdpUrl: 'http://10.0.0.5:19020' } }",
    );
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("rescue.yaml", "port: 19001\n");
    let out = scene.check();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn gateway_port_from_the_config_file_is_used_and_shown() {
    let scene = Scene::new();
    scene.write(
        "home/.openclaw-rescue/openclaw.json",
        "{\n  gateway: { port: 19500 },\n}\n",
    );
    scene.profile("rescue.yaml", "# no port: the config file has one\n");
    let out = scene.run(
        "openclawctl",
        &["ports", "--config-dir", "supervisor.d", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["port"]["value"], 19500);
    assert_eq!(v[0]["port"]["source"], "config file");
    let cfg = scene.home().join(".openclaw-rescue/openclaw.json");
    assert_eq!(v[0]["port"]["at"], format!("{}:2", cfg.display()));
    let range = v[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["what"] == "browser CDP range")
        .unwrap();
    assert_eq!(range["start"], 19511);
    assert_eq!(range["end"], 19610);
}

#[test]
fn a_malformed_config_file_is_named_with_its_line() {
    let scene = Scene::new();
    scene.write(
        "home/.openclaw-main/openclaw.json",
        "{\n  gateway: {\n    port: 18789,,\n  },\n}\n",
    );
    scene.profile("main.yaml", "port: 18789\n");
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let cfg = scene.home().join(".openclaw-main/openclaw.json");
    let first = lines(&stdout(&out))[0].to_string();
    assert!(
        first.starts_with(&format!(
            "error: main ({}:3): OpenClaw config file: not valid JSON5",
            cfg.display()
        )),
        "{first}"
    );
}

#[test]
fn a_missing_config_file_is_fine() {
    let scene = Scene::new();
    scene.profile(
        "main.yaml",
        "port: 18789\nconfig_path: ~/nowhere/openclaw.json\n",
    );
    assert_eq!(scene.check().status.code(), Some(0));
}

#[test]
fn a_high_gateway_port_falls_back_onto_the_default_range() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("high.yaml", "port: 65430\n");
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("error: high (supervisor.d/high.yaml:1): port: gateway port 65430 makes OpenClaw fall back onto the default instance's ports: browser CDP range 18800-18899 (G+11..G+110 = 65441-65540 passes 65535, OpenClaw falls back to 18800-18899); use a gateway port of 65425 or below"),
        "{text}"
    );
    // ... and the fallen-back range really collides with main's.
    assert!(
        text.contains("error: high (supervisor.d/high.yaml:1): browser CDP range 18800-18899 is also main's browser CDP range 18800-18899 (supervisor.d/main.yaml:1)")
            || text.contains("main (supervisor.d/main.yaml:1): browser CDP range 18800-18899 lies inside high's browser CDP range 18800-18899"),
        "{text}"
    );
}

#[test]
fn duplicate_names_across_files_are_reported() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile(
        "other.yaml",
        "name: main\nport: 19001\nstate_dir: ~/other\nworkspace: ~/other-ws\n",
    );
    let out = scene.check();
    assert_eq!(
        lines(&stdout(&out))[0],
        "error: main (supervisor.d/other.yaml:1): two profiles define the instance main: this one and supervisor.d/main.yaml; give each instance its own name (names are compared ignoring case)"
    );
}

#[test]
fn every_error_of_every_file_comes_in_one_run_sorted() {
    let scene = Scene::new();
    scene.profile("a.yaml", "prot: 18789\nrestart:\n  policy: sometimes\n");
    scene.profile(
        "b.yaml",
        "port: 18789\nstop:\n  timout: 30s\n  signal: SIGFOO\n",
    );
    scene.profile("c.yaml", "port: [\n");
    scene.write("supervisor.d/notes.txt", "not a profile");
    let out = scene.check();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        lines(&stdout(&out)),
        vec![
            "error: supervisor.d/a.yaml:1: prot: unknown key `prot`; did you mean `port`?",
            "error: supervisor.d/a.yaml:3: restart.policy: `sometimes` is not one of always, on-failure, never",
            "error: supervisor.d/b.yaml:3: stop.timout: unknown key `timout`; did you mean `timeout`?",
            "error: supervisor.d/b.yaml:4: stop.signal: \"SIGFOO\" is not a stop signal; use one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL",
            "error: supervisor.d/c.yaml:2: not valid YAML: did not find expected node content at line 2 column 1, while parsing a flow node",
            "check failed: 5 errors in 3 profiles in supervisor.d",
        ]
    );
}

#[test]
fn unnamed_profile_takes_openclaws_default_port_and_dirs() {
    let scene = Scene::new();
    scene.profile("main.yaml", "openclaw_profile: default\n");
    let out = scene.run(
        "openclawctl",
        &["ports", "--config-dir", "supervisor.d", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let h = scene.home().display().to_string();
    assert_eq!(v[0]["port"]["value"], 18789);
    assert_eq!(v[0]["port"]["source"], "default");
    assert_eq!(v[0]["openclaw_profile"], "default");
    assert_eq!(v[0]["state_dir"]["value"], format!("{h}/.openclaw"));
    assert_eq!(
        v[0]["config_path"]["value"],
        format!("{h}/.openclaw/openclaw.json")
    );
    assert_eq!(
        v[0]["workspace"]["value"],
        format!("{h}/.openclaw/workspace")
    );
}

#[test]
fn named_profile_without_a_port_takes_the_hashed_port() {
    let scene = Scene::new();
    scene.profile("rescue.yaml", "");
    let out = scene.run(
        "openclawctl",
        &["ports", "--config-dir", "supervisor.d", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // 20000 + fnv1a32("rescue") % 40000, by the definition in the facts file.
    let mut h: u32 = 2_166_136_261;
    for b in b"rescue" {
        h = (h ^ u32::from(*b)).wrapping_mul(16_777_619);
    }
    assert_eq!(v[0]["port"]["value"], 20_000 + h % 40_000);
    assert_eq!(v[0]["port"]["source"], "profile hash");
    let dir = scene.home().join(".openclaw-rescue");
    assert_eq!(v[0]["state_dir"]["value"], dir.display().to_string());
}

#[test]
fn ports_table_shows_origins() {
    let scene = Scene::new();
    scene.profile(
        "main.yaml",
        "port: 18789\nreserve_ports: [\"19500-19510\"]\n",
    );
    let out = scene.run("openclawctl", &["ports", "--config-dir", "supervisor.d"]);
    let text = stdout(&out);
    assert!(
        text.starts_with("main (supervisor.d/main.yaml)\n"),
        "{text}"
    );
    let row = |label: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} row in\n{text}"));
        line[line.find(label).unwrap() + label.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("gateway port"),
        ["18789", "profile", "supervisor.d/main.yaml:1"]
    );
    assert_eq!(row("MCP app sandbox port"), ["18790", "G+1"]);
    assert_eq!(row("browser CDP range"), ["18800-18899", "G+11..G+110"]);
    assert_eq!(
        row("reserved ports"),
        ["19500-19510", "profile", "supervisor.d/main.yaml:2"]
    );
}

#[test]
fn variables_expand_and_unset_ones_are_errors() {
    let scene = Scene::new();
    scene.profile(
        "main.yaml",
        "port: 18789\nenv:\n  BOTS: /srv/bots\nstate_dir: ${BOTS}/main\nworkspace: ${NOT_SET_ANYWHERE}/ws\n",
    );
    let out = scene.check();
    assert_eq!(
        lines(&stdout(&out))[0],
        "error: main (supervisor.d/main.yaml:5): workspace: \"${NOT_SET_ANYWHERE}/ws\" uses ${NOT_SET_ANYWHERE}, which is not set"
    );
}

#[test]
fn usage_errors_exit_2() {
    let scene = Scene::new();
    let out = scene.run("openclawctl", &["check", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = scene.run("openclaw-supervisord", &["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_config_dir_is_an_error_naming_it() {
    let scene = Scene::new();
    let out = scene.run("openclawctl", &["check", "--config-dir", "nope.d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(
            "error: nope.d: cannot read the config directory: No such file or directory"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn daemon_check_prints_the_same_report() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("rescue.yaml", "port: 18809\n");
    let ctl = scene.check();
    let daemon = scene.run(
        "openclaw-supervisord",
        &["check", "--config-dir", "supervisor.d"],
    );
    assert_eq!(daemon.status.code(), Some(1));
    assert_eq!(stdout(&daemon), stdout(&ctl));
}

#[test]
fn daemon_refuses_to_start_on_a_failed_check() {
    let scene = Scene::new();
    scene.profile("main.yaml", "port: 18789\n");
    scene.profile("rescue.yaml", "port: 18809\n");
    let out = scene.run("openclaw-supervisord", &["--config-dir", "supervisor.d"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // The daemon names its config dir absolute: its report is the check's of that dir.
    let dir = scene.dir().canonicalize().unwrap();
    let check = scene.run(
        "openclawctl",
        &["check", "--config-dir", dir.to_str().unwrap()],
    );
    assert!(err.contains(lines(&stdout(&check))[0]), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}

#[test]
fn shipped_failing_examples_fail_the_check() {
    let examples = common::repo().join("examples/profiles");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        seen += 1;
        let scene = Scene::new();
        let out = scene.run(
            "openclawctl",
            &["check", "--config-dir", dir.to_str().unwrap()],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} passed:\n{}",
            dir.display(),
            stdout(&out)
        );
        assert!(stdout(&out).contains("check failed"), "{}", stdout(&out));
    }
    assert!(seen >= 4, "only {seen} example sets");
}
