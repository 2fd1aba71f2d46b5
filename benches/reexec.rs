//! Benchmark of a re-exec, printing figures (no thresholds): `cargo bench --bench reexec`.
//!
//! With N stand-in gateways running (2, then 500), the daemon is re-executed (`Reexec`) several
//! times while a client calls `GetVersion` back to back; the figure is the API's gap: the longest
//! time between two answered calls around each exec (the median and the max over the runs). After
//! each exec every gateway must have kept its pid and no restart may be counted; the benchmark
//! fails otherwise.
//!
//! `cargo test --bench reexec` runs a short version (2 and 10 stand-ins, 2 execs each).
//! `REEXEC_INSTANCES=2,100 REEXEC_RUNS=3 cargo bench --bench reexec` chooses.

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fake_gateway, fake_profile, median, ms, ports, Daemon};
use openclaw_supervisor::api::{client, v1};

fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("REEXEC_INSTANCES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![2, 10] } else { vec![2, 500] });
    let runs: usize = var("REEXEC_RUNS").unwrap_or(if quick { 2 } else { 5 });
    let fake = fake_gateway();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("re-exec: the API's gap (longest time between two answered GetVersion calls around the exec), {runs} execs each");
    for n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        let profiles: Vec<(String, String)> = ports(n, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("gw{i:03}"), fake_profile(&fake, p, "")))
            .collect();
        let d = Daemon::start(tmp.path(), &profiles);
        // A stand-in whose port another program took meanwhile is left out (and said).
        let running = d.wait_all_running(n);
        let before = pids(&d);
        let mut gaps = Vec::new();
        for run in 1..=runs {
            let gap = rt.block_on(one_exec(&d.socket, run as u32));
            let after = pids(&d);
            assert_eq!(after, before, "a gateway changed its pid across the exec");
            let restarts: u64 = d
                .statuses()
                .iter()
                .filter(|s| s["state"] == "running")
                .map(|s| s["restarts"].as_u64().unwrap_or(0))
                .sum();
            assert_eq!(restarts, 0, "restarts were counted across the exec");
            gaps.push(gap);
        }
        let max = *gaps.iter().max().unwrap();
        println!(
            "  {n:>4} instances ({running} running): gap median {:.1} ms, max {:.1} ms; 0 gateway restarts, every pid kept",
            ms(median(gaps)),
            ms(max)
        );
    }
}

/// The running gateways' pids, by instance.
fn pids(d: &Daemon) -> Vec<(String, u64)> {
    d.statuses()
        .iter()
        .filter(|s| s["state"] == "running")
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                s["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// One exec with a client calling throughout: the longest time between two answers.
async fn one_exec(socket: &std::path::Path, execs: u32) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (socket, stop) = (socket.to_path_buf(), stop.clone());
        tokio::spawn(async move {
            let mut answers: Vec<Instant> = Vec::new();
            let mut c = None;
            while !stop.load(Ordering::SeqCst) {
                if c.is_none() {
                    c = client::connect(&socket).await.ok();
                }
                let Some(client) = c.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                match client.get_version(v1::GetVersionRequest {}).await {
                    Ok(_) => answers.push(Instant::now()),
                    Err(_) => c = None,
                }
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = client::connect(socket).await.unwrap();
    let asked = Instant::now();
    let r = c.reexec(v1::ReexecRequest {}).await;
    assert!(
        r.is_ok()
            || r.as_ref()
                .is_err_and(|s| s.code() == tonic::Code::Unavailable),
        "{r:?}"
    );
    // Until the new program answers, then a little more.
    loop {
        if let Ok(mut c) = client::connect(socket).await {
            if let Ok(v) = c.get_version(v1::GetVersionRequest {}).await {
                if v.into_inner().execs >= execs {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = prober.await.unwrap();
    if std::env::var_os("REEXEC_DEBUG").is_some() {
        let w = answers.windows(2).max_by_key(|w| w[1] - w[0]).unwrap();
        eprintln!(
            "gap from {:?} to {:?} after the reexec call",
            w[0].saturating_duration_since(asked),
            w[1].saturating_duration_since(asked)
        );
    }
    answers
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}
