//! Benchmark of a Prometheus scrape, printing figures (no thresholds): `cargo bench --bench metrics`.
//!
//! With 500 instances of the stand-in gateway running (10 under `cargo test --bench metrics`), a
//! daemon started with `--metrics` is scraped (`GET /metrics`, one connection a scrape, as
//! Prometheus does with keep-alive off): the wall time of a scrape, median of 30 after 2 warm-up
//! scrapes, with the least and the most; and the daemon's own CPU time per scrape (its
//! `/proc/PID/stat` utime + stime and its process CPU clock over the timed scrapes, less what it
//! used over an idle spell as long).

// A benchmark may panic on what it sets up itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

mod common;

use common::{clk_tck, cpu, fake_gateway, fake_profile, gateways_under, median, ms, ports};

/// See benches/status.rs: a gateway whose port was taken stays exited.
const NEVER_RESTART: &str = "restart: { policy: never }\n";
const WARM_UP: usize = 2;

fn scrape(addr: &str) -> usize {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"), "scrape failed");
    body.len()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, reps) = if quick { (10, 5) } else { (500, 30) };
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let all = ports(n + 1, 1300);
    let profiles: Vec<(String, String)> = all[..n]
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("bot{i:03}"), fake_profile(&fake, *p, NEVER_RESTART)))
        .collect();
    let addr = format!("127.0.0.1:{}", all[n]);
    let d = common::Daemon::start_with(dir, &profiles, &["--metrics", &addr]);
    let pid = d.child.id();
    let running = d.wait_all_running(n);
    std::thread::sleep(Duration::from_secs(if quick { 1 } else { 5 }));

    let mut bytes = 0;
    let mut times = Vec::new();
    for i in 0..WARM_UP + reps {
        let t = Instant::now();
        bytes = scrape(&addr);
        if i >= WARM_UP {
            times.push(t.elapsed());
        }
    }
    // CPU: the timed scrapes back to back, then an idle spell as long.
    let before = cpu(pid).unwrap();
    let t = Instant::now();
    for _ in 0..reps {
        scrape(&addr);
    }
    let busy = t.elapsed();
    let mid = cpu(pid).unwrap();
    std::thread::sleep(busy);
    let after = cpu(pid).unwrap();
    let per = |a: u64, b: u64, c: u64| (b - a).saturating_sub(c - b) as f64 / reps as f64;
    let ns = per(before.ns, mid.ns, after.ns);
    let ticks = per(before.ticks, mid.ticks, after.ticks);

    let (min, max) = (
        times.iter().min().copied().unwrap_or_default(),
        times.iter().max().copied().unwrap_or_default(),
    );
    println!("metrics scrape, {n} instances ({running} running), {bytes} bytes a response:");
    println!(
        "  wall time: median {:.3} ms (min {:.3}, max {:.3}) over {reps}",
        ms(median(times)),
        ms(min),
        ms(max)
    );
    println!(
        "  daemon CPU per scrape (less idle): {:.3} ms (process CPU clock); {:.3} ms (stat ticks, {} Hz)",
        ns / 1e6,
        ticks * 1000.0 / clk_tck() as f64,
        clk_tck()
    );

    // Dropping the daemon stops it (SIGTERM, then waits); then no gateway is left.
    let gateways = gateways_under(pid, &fake);
    drop(d);
    common::reap_leftovers(&gateways, &fake);
}
