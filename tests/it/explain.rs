//! `openclawctl explain`: an instance's recent history, told in order with the reason of each
//! decision, compared with what happened (the instance's log, its status).

use crate::common;

use common::{fake_gateway, free_ports, stderr, stdout, Scene};

/// `explain NAME --json`, parsed.
fn explain(d: &common::Daemon, name: &str) -> serde_json::Value {
    let out = d.ctl(&["explain", name, "--json"]);
    assert!(out.status.success(), "explain failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// The entries as (kind, text).
fn entries(e: &serde_json::Value) -> Vec<(String, String)> {
    e["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap().to_string(),
                h["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn explain_tells_a_crash_loop_that_ends_fatal_in_order() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.profile(
        "crashy.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/crashy\ncommand: [{:?}, \"--crash-after-ms\", \"300\", \"--exit-code\", \"3\"]\n\
             restart:\n  backoff: {{ initial: 100ms, max: 400ms, reset_after: 60s }}\n  start_limit: {{ burst: 4, interval: 5m }}\n",
            ports[0],
            fake_gateway().display().to_string()
        ),
    );
    let d = scene.daemon();
    let status = d.wait_status("crashy", "fatal", |s| s["state"] == "fatal");
    let e = explain(&d, "crashy");
    assert_eq!(e["name"], "crashy");
    assert_eq!(e["next"], "fatal: waiting for `openclawctl start crashy`");
    let all = entries(&e);
    let story: Vec<(String, String)> = all.iter().filter(|(k, _)| k != "state").cloned().collect();

    // What happened, from the instance's log: the pids started, in order, and the waits chosen.
    let log = d.log("crashy");
    let pids: Vec<String> = log
        .lines()
        .filter_map(|l| l.split("started pid ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(pids.len(), 4, "{log}");
    assert_eq!(status["restarts"], 3);

    // Each start with its cause and the start-limit count, each exit, each restart decision with
    // its reason; then the limit.
    let mut want: Vec<(&str, String)> = Vec::new();
    for (i, pid) in pids.iter().enumerate() {
        let cause = if i == 0 {
            "started by the supervisor".to_string()
        } else {
            "restart by policy after: ended by exit code 3".to_string()
        };
        want.push((
            "start",
            format!(
                "pid {pid} started ({cause}); {} of 4 starts in 300 s",
                i + 1
            ),
        ));
        want.push(("exit", format!("pid {pid} ended: exit code 3 after")));
        match i {
            0 => want.push((
                "restart",
                "1st crash in a row within 60 s: restart at once".into(),
            )),
            1 => want.push(("restart", "2nd crash in a row within 60 s: backoff ".into())),
            2 => want.push(("restart", "3rd crash in a row within 60 s: backoff ".into())),
            _ => want.push((
                "start-limit",
                "4 of 4 starts in 300 s: the limit is reached, no more starts".into(),
            )),
        }
    }
    assert_eq!(story.len(), want.len(), "{story:#?}");
    for ((kind, text), (want_kind, want_text)) in story.iter().zip(&want) {
        assert_eq!(kind, want_kind, "{story:#?}");
        assert!(
            text.starts_with(want_text.as_str()),
            "{text:?} should start with {want_text:?}"
        );
    }
    // The waits double: the backoff's initial 100 ms, then twice that (jitter takes up to half).
    assert!(
        story[5].1.ends_with("(100 ms, half of it jitter)"),
        "{}",
        story[5].1
    );
    assert!(
        story[8].1.ends_with("(100 ms × 2, half of it jitter)"),
        "{}",
        story[8].1
    );
    // As many waits as the log says the daemon waited.
    let waits = log.lines().filter(|l| l.contains("restarting in ")).count();
    assert_eq!(waits, 2, "{log}");

    // The transitions, in order: the last one is to fatal, with the start limit as its reason.
    let (kind, last) = all.last().unwrap();
    assert_eq!(kind, "state");
    assert!(
        last.starts_with("stopping -> fatal: started 4 times within 5m: giving up (start limit)"),
        "{last}"
    );
    let backoffs = all
        .iter()
        .filter(|(k, t)| {
            k == "state"
                && t.starts_with("stopping -> backoff: ended by exit code 3; restarting in")
        })
        .count();
    assert_eq!(backoffs, 2, "{all:#?}");

    // The human form: one line per entry, then what comes next.
    let out = d.ctl(&["explain", "crashy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), all.len() + 1, "{text}");
    assert_eq!(
        *lines.last().unwrap(),
        "next: fatal: waiting for `openclawctl start crashy`"
    );
}

#[test]
fn explain_names_the_operator_and_where_the_call_came_from() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "");
    let d = scene.daemon();
    d.wait_status("main", "running", |s| s["state"] == "running");
    let e = explain(&d, "main");
    assert!(
        e["next"]
            .as_str()
            .unwrap()
            .starts_with("running; next liveness probe in "),
        "{e}"
    );
    let out = d.ctl(&["stop", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = explain(&d, "main");
    let all = entries(&e);
    assert!(
        all.contains(&("operator".into(), "stop (socket), while running".into())),
        "{all:#?}"
    );
    assert_eq!(e["next"], "stopped: waiting for `openclawctl start main`");
}

#[test]
fn explain_of_an_unknown_instance_is_not_found() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "");
    let d = scene.daemon();
    let out = d.ctl(&["explain", "mian"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("mian"), "{err}");
    assert!(err.contains("main"), "{err}");
}

#[test]
fn explain_keeps_the_history_across_a_reexec() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.fake_profile("main", ports[0], "");
    let d = scene.daemon();
    let first = d.wait_status("main", "running", |s| s["state"] == "running");
    let out = d.ctl(&["restart", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = explain(&d, "main");
    let told = entries(&before);
    assert!(
        told.contains(&("operator".into(), "restart (socket), while running".into())),
        "{told:#?}"
    );
    let out = d.ctl(&["reexec"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = explain(&d, "main");
    // The same entries, with the same times, then whatever happened since.
    let (was, now) = (
        before["entries"].as_array().unwrap(),
        after["entries"].as_array().unwrap(),
    );
    assert!(now.len() >= was.len(), "{after}");
    assert_eq!(&now[..was.len()], &was[..], "{after}");
    assert_ne!(d.status("main")["pid"], first["pid"]);
}

#[test]
fn explain_gives_each_failed_probe_with_its_error_and_the_restart_it_caused() {
    let scene = Scene::new();
    let ports = free_ports(1);
    scene.profile(
        "hangs.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/hangs\ncommand: [{:?}, \"--hang-after-ms\", \"300\"]\n\
             health: {{ interval: 200ms, timeout: 200ms, failure_threshold: 2 }}\n",
            ports[0],
            fake_gateway().display().to_string()
        ),
    );
    let d = scene.daemon();
    let first = d.wait_status("hangs", "running", |s| s["state"] == "running");
    d.wait_status("hangs", "restarted", |s| {
        s["restarts"].as_u64() >= Some(1) && s["pid"] != first["pid"]
    });
    let all = entries(&explain(&d, "hangs"));
    // The two failures, in order, each with the error; then unhealthy for that reason; then the
    // restart decision.
    let probes: Vec<usize> = (0..all.len()).filter(|&i| all[i].0 == "probe").collect();
    assert!(probes.len() >= 2, "{all:#?}");
    assert!(
        all[probes[0]]
            .1
            .starts_with("liveness probe failed (1 of 2 in a row): "),
        "{all:#?}"
    );
    assert!(
        all[probes[1]]
            .1
            .starts_with("liveness probe failed (2 of 2 in a row): "),
        "{all:#?}"
    );
    let unhealthy = all
        .iter()
        .position(|(k, t)| {
            k == "state"
                && t.starts_with("running -> unhealthy: 2 liveness probes failed in a row (")
        })
        .expect("the transition to unhealthy");
    assert!(unhealthy > probes[1], "{all:#?}");
    let restart = all
        .iter()
        .position(|(k, t)| k == "restart" && t.starts_with("1st crash in a row"))
        .expect("the restart decision");
    assert!(restart > unhealthy, "{all:#?}");
}
