//! Benchmark of the disjointness check, printing figures (no thresholds): run with
//! `cargo bench --bench check`.
//!
//! 1. The tightest legal packing a host allows: gateways 111 ports apart from 1024 up (581 instances),
//!    each with its own state dir and workspace. The check must pass.
//! 2. 10,000 profiles full of conflicts: gateways 20 ports apart (as OpenClaw's docs advise) wrapping
//!    around the port space three times, and every tenth instance on its neighbour's state dir. The
//!    time includes rendering the whole report.
//!
//! Each figure is the median of several runs of the whole `profile::load` (read the files, parse,
//! resolve, sweep), then of the sweep alone on already-resolved profiles.

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use openclaw_supervisor::profile::{self, check};

mod common;

fn write_profiles(dir: &Path, n: usize, profile: impl Fn(usize) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("bot{i:05}.yaml")), profile(i)).unwrap();
    }
}

fn bench(label: &str, dir: &Path, runs: usize) {
    let home = dir.parent().unwrap().join("home");
    let env = move |var: &str| match var {
        "HOME" => Some(home.display().to_string()),
        _ => None,
    };
    let mut full = Vec::new();
    let mut report_len = 0;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let plan = profile::load_with_env(dir, &env);
        let text = format!("{}{}", plan.report, plan.report.summary(dir));
        full.push(t.elapsed());
        report_len = text.lines().count();
        last = Some(plan);
    }
    let plan = last.unwrap();
    let mut sweep = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let found = check::check(&plan.profiles);
        sweep.push(t.elapsed());
        std::hint::black_box(found);
    }
    println!(
        "{label}: {} profiles, {} errors, report {} lines; load+check+report median {:.1} ms, sweep alone median {:.2} ms ({runs} runs)",
        plan.report.profiles,
        plan.report.errors(),
        report_len,
        common::median(full).as_secs_f64() * 1e3,
        common::median(sweep).as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 1 } else { 7 };
    let tmp = tempfile::tempdir().unwrap();

    let packed = tmp.path().join("packed/supervisor.d");
    let n = ((65425 - 1024) / 111 + 1) as usize;
    write_profiles(&packed, n, |i| {
        format!(
            "port: {}\nstate_dir: ../state/bot{i}\nworkspace: ../ws/bot{i}\n",
            1024 + 111 * i
        )
    });
    bench("tightest legal packing", &packed, runs);
    let plan = profile::load_with_env(&packed, &|_| Some("/nonexistent-home".into()));
    assert!(
        plan.report.ok(),
        "the tight packing must pass:\n{}",
        plan.report
    );

    let conflicts = tmp.path().join("conflicts/supervisor.d");
    write_profiles(&conflicts, 10_000, |i| {
        let state = if i % 10 == 9 { i - 1 } else { i };
        format!(
            "port: {}\nstate_dir: ../state/bot{state}\nworkspace: ../ws/bot{i}\n",
            1024 + (20 * i) % 64_000
        )
    });
    bench(
        "10,000 conflicting profiles",
        &conflicts,
        if quick { 1 } else { 5 },
    );
}
