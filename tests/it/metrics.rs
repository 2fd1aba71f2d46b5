//! `--metrics`: the Prometheus endpoint as a scraper meets it, parsed by a Prometheus text-format
//! parser (prometheus-parse), every family with its type and labels.

use crate::common;

use std::collections::HashMap;
use std::io::{Read, Write};

use common::{free_ports, stderr, wait_for, Scene};
use prometheus_parse::{LineInfo, SampleType, Scrape, Value};

/// One HTTP/1.1 GET; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The declared type of each family (`# TYPE` lines), and the samples.
fn parse(body: &str) -> (HashMap<String, SampleType>, Scrape) {
    let mut types = HashMap::new();
    for line in body.lines() {
        if let LineInfo::Type {
            metric_name,
            metric_alias,
            sample_type,
        } = LineInfo::parse(line)
        {
            // A histogram's TYPE names `_bucket`, its family is the alias.
            types.insert(metric_alias.unwrap_or(metric_name), sample_type);
        }
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    (types, scrape)
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().map(|h| h.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

#[test]
fn a_scrape_has_every_metric_with_its_type_and_labels() {
    let scene = Scene::new();
    let ports = free_ports(3);
    scene.fake_profile("main", ports[0], "health: { interval: 200ms }\n");
    scene.fake_profile("idle", ports[1], "autostart: false\n");
    let addr = format!("127.0.0.1:{}", ports[2]);
    let d = scene.daemon_with(&["--metrics", &addr]);
    d.wait_status("main", "running", |s| s["state"] == "running");
    let out = d.ctl(&["restart", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.ctl(&["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.ctl(&["stop", "nosuch"]);
    assert!(!out.status.success());
    // The restart's `running` reaches the metrics through the event broadcast.
    let (types, scrape) = wait_for("the restart in the metrics", || {
        let (status, body) = get(&addr, "/metrics");
        assert!(status.contains("200"), "{status}");
        let (types, scrape) = parse(&body);
        let counted = value(
            &scrape,
            "openclaw_supervisor_instance_time_to_ready_seconds_count",
            &[("instance", "main")],
        );
        let probed = value(
            &scrape,
            "openclaw_supervisor_instance_probe_seconds_count",
            &[("instance", "main")],
        );
        (counted == Some(2.0) && probed.is_some_and(|n| n > 0.0)).then_some((types, scrape))
    });
    let p = "openclaw_supervisor_";
    for (family, ty) in [
        ("instance_up", SampleType::Gauge),
        ("instance_state", SampleType::Gauge),
        ("instance_starts", SampleType::Counter),
        ("instance_last_exit_code", SampleType::Gauge),
        ("instance_last_exit_signal", SampleType::Gauge),
        ("instance_seconds_since_start", SampleType::Gauge),
        ("instance_time_to_ready_seconds", SampleType::Histogram),
        ("instance_cpu_percent", SampleType::Gauge),
        ("instance_cpu_seconds", SampleType::Counter),
        ("instance_rss_bytes", SampleType::Gauge),
        ("instance_probe_seconds", SampleType::Histogram),
        ("instance_probe_failures", SampleType::Counter),
        ("instance_log_lines", SampleType::Counter),
        ("instance_log_bytes", SampleType::Counter),
        ("instance_log_dropped_lines", SampleType::Counter),
        ("instance_runtime_info", SampleType::Gauge),
        ("uptime_seconds", SampleType::Gauge),
        ("reloads", SampleType::Counter),
        ("api_calls", SampleType::Counter),
    ] {
        assert_eq!(types.get(&format!("{p}{family}")), Some(&ty), "{family}");
    }
    let main = [("instance", "main")];
    let idle = [("instance", "idle")];
    let v = |m: &str, l: &[(&str, &str)]| value(&scrape, &format!("{p}{m}"), l);
    assert_eq!(v("instance_up", &main), Some(1.0));
    assert_eq!(v("instance_up", &idle), Some(0.0));
    assert_eq!(
        v(
            "instance_state",
            &[("instance", "main"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "instance_state",
            &[("instance", "main"), ("state", "stopped")]
        ),
        Some(0.0)
    );
    assert_eq!(
        v(
            "instance_state",
            &[("instance", "idle"), ("state", "stopped")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "instance_starts_total",
            &[("instance", "main"), ("reason", "first")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "instance_starts_total",
            &[("instance", "main"), ("reason", "operator")]
        ),
        Some(1.0)
    );
    // The restart stopped the first child with SIGTERM: it ended by it, or exited 0 on it.
    let exit = (
        v("instance_last_exit_code", &main).unwrap(),
        v("instance_last_exit_signal", &main).unwrap(),
    );
    assert!(exit == (0.0, 0.0) || exit == (-1.0, 15.0), "{exit:?}");
    assert!(v("instance_seconds_since_start", &main).unwrap() >= 0.0);
    assert_eq!(v("instance_seconds_since_start", &idle), Some(0.0));
    assert!(v("instance_rss_bytes", &main).unwrap() > 0.0);
    assert!(v("instance_cpu_percent", &main).is_some());
    assert_eq!(v("instance_probe_failures_total", &main), Some(0.0));
    // At least the supervisor's own "started pid" notes.
    assert!(v("instance_log_lines_total", &main).unwrap() >= 2.0);
    assert!(v("instance_log_bytes_total", &main).unwrap() > 0.0);
    assert_eq!(v("instance_log_dropped_lines_total", &main), Some(0.0));
    // The stand-in on PATH is in no OpenClaw package: its version is not known (`runtimes_run`
    // has one on a runtime).
    assert_eq!(
        v(
            "instance_runtime_info",
            &[("instance", "main"), ("openclaw", "")]
        ),
        Some(1.0)
    );
    assert_eq!(v("reloads_total", &[("outcome", "applied")]), Some(1.0));
    assert_eq!(v("reloads_total", &[("outcome", "refused")]), Some(0.0));
    assert!(v("uptime_seconds", &[]).unwrap() > 0.0);
    // Each call openclawctl made, by method and code; the stop of an unknown name failed.
    let call = |method: &str, code: &str| {
        v(
            "api_calls_total",
            &[
                ("service", "openclaw.supervisor.v1.SupervisorService"),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(call("RestartInstance", "OK"), Some(1.0));
    assert_eq!(call("Reload", "OK"), Some(1.0));
    assert_eq!(call("StopInstance", "NOT_FOUND"), Some(1.0));
    assert_eq!(call("StopInstance", "OK"), None);
    assert!(call("ListInstances", "OK").unwrap() >= 1.0);
    assert!(v("build_info", &[("version", env!("CARGO_PKG_VERSION"))]).is_some());
}

/// utime + stime + cutime + cstime of `pid` in seconds, as /proc/PID/stat has them.
fn cpu_of(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    (f[11] + f[12] + f[13] + f[14]) / ticks
}

#[test]
fn cpu_seconds_count_children_that_ended_and_go_on_across_restarts() {
    for flags in common::both_modes() {
        cpu_seconds_in(flags);
    }
}

/// The CPU time counter of a gateway whose shell first waits for a child that keeps a core busy a
/// moment, then becomes the gateway: the tree's CPU time is mostly that of a child that ended.
fn cpu_seconds_in(flags: &[&str]) {
    let scene = Scene::new();
    let ports = free_ports(2);
    let fake = common::fake_gateway();
    scene.profile(
        "busy.yaml",
        &format!(
            "port: {}\nstate_dir: ~/state/busy\ncommand: [/bin/sh, -c, '(i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done); exec {}']\n",
            ports[0],
            fake.display()
        ),
    );
    let addr = format!("127.0.0.1:{}", ports[1]);
    let mut args = vec!["--metrics", addr.as_str()];
    args.extend_from_slice(flags);
    let d = scene.daemon_with(&args);
    let cpu = || {
        let (_, body) = get(&addr, "/metrics");
        let (_, scrape) = parse(&body);
        value(
            &scrape,
            "openclaw_supervisor_instance_cpu_seconds_total",
            &[("instance", "busy")],
        )
        .unwrap_or(0.0)
    };
    let pid = |d: &common::Daemon| {
        let s = d.wait_status("busy", "running", |s| s["state"] == "running");
        s["pid"].as_u64().unwrap()
    };
    let first = pid(&d);
    let used = cpu_of(first);
    assert!(used > 0.0, "{flags:?}: the busy child used no CPU time");
    let before = wait_for(
        &format!("{flags:?}: the first child's CPU time in the metrics"),
        || {
            let c = cpu();
            (c >= used).then_some(c)
        },
    );
    let out = d.ctl(&["restart", "busy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = pid(&d);
    assert_ne!(first, second);
    let used = cpu_of(second);
    wait_for(
        &format!("{flags:?}: both children's CPU time in the metrics"),
        || (cpu() >= before + used).then_some(()),
    );
}

#[test]
fn metrics_serves_only_get_metrics() {
    let scene = Scene::new();
    let ports = free_ports(2);
    scene.fake_profile("main", ports[0], "autostart: false\n");
    let addr = format!("127.0.0.1:{}", ports[1]);
    let _d = scene.daemon_with(&["--metrics", &addr]);
    let (status, _) = get(&addr, "/");
    assert!(status.contains("404"), "{status}");
    let (status, body) = get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

#[test]
fn metrics_refuses_a_non_loopback_address_without_leave() {
    let scene = Scene::new();
    scene.fake_profile("main", free_ports(1)[0], "autostart: false\n");
    let out = scene.run(
        "openclaw-supervisord",
        &[
            "--config-dir",
            "supervisor.d",
            "--socket",
            scene.path("s.sock").to_str().unwrap(),
            "--metrics",
            "0.0.0.0:1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--metrics-allow-remote"),
        "{}",
        stderr(&out)
    );
}
