//! Benchmark of the status query, printing figures (no thresholds): `cargo bench --bench status`.
//!
//! With 2 and with 500 instances of the stand-in gateway running, each system in turn (ours, then
//! PyPI's `supervisor` on the same number of the same programs, so they never compete for the CPU):
//!
//! 1. `openclawctl status`, the whole process from spawn to exit with its stdout on a pipe: median
//!    of 30 after 2 warm-up calls, with the least and the most.
//! 2. The gRPC round trip alone: one tonic client on the Unix socket calling `ListInstances` for all
//!    instances, median of 30 after 2 warm-up calls.
//! 3. `supervisorctl status` of supervisord managing the same programs, timed as in 1, and the
//!    ratio openclawctl / supervisorctl. Skipped, with a note, if supervisorctl is not on PATH.
//!
//! The target, reported against and not asserted: `openclawctl status` at most 5 ms median with 500
//! instances. The daemon samples CPU and RSS at most once a second in the background, so the first
//! call after a quiet spell can be slower; that is what the warm-up calls absorb.
//!
//! `cargo test --bench status` runs a short version (2 and 10 instances, 5 timed calls each).

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use openclaw_supervisor::api::v1::ListInstancesRequest;

mod common;

use common::peers::Supervisord;
use common::{
    fake_gateway, fake_profile, gateways_under, kill, ms, ports, reap_leftovers, run_once, Daemon,
};

/// A gateway whose port was taken between the choice of ports and its start stays exited instead
/// of crash-looping (see benches/supervise.rs on the ephemeral range).
const NEVER_RESTART: &str = "restart: { policy: never }\n";

const WARM_UP: usize = 2;
const TARGET_MS: f64 = 5.0;

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    n: usize,
}

/// Runs `f` WARM_UP times untimed, then `reps` times timed.
fn measure(reps: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..WARM_UP {
        f();
    }
    let v: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    Stats::of(v)
}

impl Stats {
    /// The median, least and most of `v` (at least one time).
    fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.2} ms of {} (min {:.2} ms, max {:.2} ms)",
            ms(self.median),
            self.n,
            ms(self.min),
            ms(self.max)
        )
    }
}

impl Daemon {
    /// SIGTERM, wait for the daemon, then make sure none of its gateways is left. Returns how many
    /// gateways had to be killed after it exited.
    fn stop(mut self, fake: &Path) -> usize {
        let gateways = gateways_under(self.child.id(), fake);
        kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                println!("  note: openclaw-supervisord still running 60 s after SIGTERM; killed");
                kill(self.child.id(), nix::sys::signal::Signal::SIGKILL);
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reap_leftovers(&gateways, fake)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let reps = if quick { 5 } else { 30 };
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();
    let supervisor = Supervisord::found();
    for n in [2usize, if quick { 10 } else { 500 }] {
        // Ours.
        let dir = tmp.path().join(format!("ours-{n}"));
        let profiles: Vec<(String, String)> = ports(n, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("bot{i:03}"), fake_profile(&fake, p, NEVER_RESTART)))
            .collect();
        let d = Daemon::start(&dir, &profiles);
        let running = d.wait_all_running(n);
        // Let start-up work (readiness probes, log files) settle before timing.
        std::thread::sleep(Duration::from_secs(if quick { 1 } else { 5 }));

        let whole = measure(reps, || {
            let out = run_once(d.ctl().arg("status"));
            assert!(out.status.success(), "openclawctl status failed: {out:?}");
        });
        // Outside the timing: it listed every instance (a header line, then one per instance).
        let out = run_once(d.ctl().arg("status"));
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(
            lines > n,
            "openclawctl status printed {lines} lines for {n} instances"
        );

        // A runtime of its own, dropped before the daemon is stopped: a client connection left
        // open on a runtime nobody drives never answers the server's shutdown (GOAWAY and PING),
        // and the daemon would wait for it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let grpc = rt.block_on(async {
            let mut client = openclaw_supervisor::api::client::connect(&d.socket)
                .await
                .unwrap();
            let mut times = Vec::new();
            for i in 0..WARM_UP + reps {
                let t = Instant::now();
                let r = client
                    .list_instances(ListInstancesRequest { names: vec![] })
                    .await
                    .unwrap()
                    .into_inner();
                let e = t.elapsed();
                assert_eq!(r.instances.len(), n);
                if i >= WARM_UP {
                    times.push(e);
                }
            }
            Stats::of(times)
        });
        drop(rt);
        let killed = d.stop(&fake);

        println!("status with {n} instances ({running} running):");
        println!("  openclawctl status (whole process): {whole}");
        println!("  gRPC ListInstances round trip (one connected client): {grpc}");
        if !quick && n >= 500 {
            let verdict = if ms(whole.median) <= TARGET_MS {
                "met"
            } else {
                "NOT met"
            };
            println!(
                "  target openclawctl status <= {TARGET_MS:.0} ms median with 500 instances: {verdict}"
            );
        }
        if killed > 0 {
            println!("  note: {killed} gateway(s) outlived openclaw-supervisord and were killed");
        }

        // PyPI's supervisor on the same programs, after ours has stopped.
        let Some((supervisord, supervisorctl)) = &supervisor else {
            println!("  supervisorctl not found (pip install supervisor); no ratio");
            continue;
        };
        let dir = tmp.path().join(format!("supervisord-{n}"));
        let mut s = Supervisord::start(supervisord, supervisorctl, &dir, &fake, &ports(n, 1100));
        let theirs_running = s.wait_all_running(n);
        std::thread::sleep(Duration::from_secs(if quick { 1 } else { 5 }));
        // supervisorctl status exits 3 when a program is not running; only its output is checked.
        let theirs = measure(reps, || {
            let out = run_once(s.ctl().arg("status"));
            assert!(
                !out.stdout.is_empty(),
                "supervisorctl status printed nothing"
            );
        });
        let killed = s.stop(&fake);
        println!(
            "  supervisorctl status (whole process, supervisor {}, {theirs_running} running): {theirs}",
            Supervisord::version(supervisord)
        );
        println!(
            "  ratio openclawctl / supervisorctl (whole process, medians): {:.3}",
            whole.median.as_secs_f64() / theirs.median.as_secs_f64()
        );
        if killed > 0 {
            println!("  note: {killed} gateway(s) outlived supervisord and were killed");
        }
    }
}
