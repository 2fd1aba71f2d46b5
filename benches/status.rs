//! Benchmark of the status query, printing figures (no thresholds): `cargo bench --bench status`.
//!
//! Parts 1 to 3: with 2 and with 500 instances of the stand-in gateway running, each system in turn
//! (ours, then PyPI's `supervisor` on the same number of the same programs, so they never compete
//! for the CPU):
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
//! 4. The authority layer (`api::authority::Normalized`, which reads a client's header blocks on
//!    the socket before h2 does, until the first valid `:authority` settles the connection): the
//!    bytes a tonic client (set up as `api::client::channel`) writes for 2,002 `ListInstances`
//!    calls on one connection to the real daemon (2 instances) are recorded, write by write, then
//!    read back from memory through `Normalized` and, as the peer, bare; the thread CPU time per
//!    request of each and their difference, median of 7 rounds of 10 readings. Beside it, the
//!    daemon's process CPU per round trip over the recorded calls and their median wall time, with
//!    the difference's share of each; then a connection of one call (the writes up to the end of
//!    the first request, what `openclawctl` makes), where the layer's one authority decode falls.
//!    Then the same for grpc-core-style requests built here (grpcio's field order and HPACK
//!    pattern), once with `localhost` (passed on) and once with the percent-encoded socket path
//!    (re-encoded, every block decoded).
//!
//! `cargo bench --bench status -- authority` (or `status`) runs one part: 4 (or 1 to 3).
//! `cargo test --bench status` runs a short version (2 and 10 instances, 5 timed calls each; 52
//! recorded calls, one round of 2 readings).

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
    // `cargo bench --bench status -- authority` (or `status`) runs one part.
    let only = |part: &str| {
        let parts = ["status", "authority"];
        !args.iter().any(|a| parts.contains(&a.as_str())) || args.iter().any(|a| a == part)
    };
    let fake = fake_gateway();
    let tmp = tempfile::tempdir().unwrap();
    if only("status") {
        status(quick, &fake, tmp.path());
    }
    if only("authority") {
        authority::run(quick, &fake, tmp.path());
    }
}

/// Parts 1 to 3: `openclawctl status`, its gRPC round trip and `supervisorctl status`.
fn status(quick: bool, fake: &Path, tmp: &Path) {
    let reps = if quick { 5 } else { 30 };
    let supervisor = Supervisord::found();
    for n in [2usize, if quick { 10 } else { 500 }] {
        // Ours.
        let dir = tmp.join(format!("ours-{n}"));
        let profiles: Vec<(String, String)> = ports(n, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("bot{i:03}"), fake_profile(fake, p, NEVER_RESTART)))
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
        let killed = d.stop(fake);

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
        let dir = tmp.join(format!("supervisord-{n}"));
        let mut s = Supervisord::start(supervisord, supervisorctl, &dir, fake, &ports(n, 1100));
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
        let killed = s.stop(fake);
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

/// Part 4: the cost of `api::authority::Normalized`, the layer that reads each client's HTTP/2
/// header blocks on the socket before h2 does.
mod authority {
    use std::io;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::{Duration, Instant};

    use hyper_util::rt::TokioIo;
    use openclaw_supervisor::api::authority::Normalized;
    use openclaw_supervisor::api::v1::supervisor_service_client::SupervisorServiceClient;
    use openclaw_supervisor::api::v1::ListInstancesRequest;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::common::{cpu, fake_profile, median, ports, Daemon};
    use super::{NEVER_RESTART, WARM_UP};

    /// The CPU time of the calling thread, from the kernel's clock.
    fn thread_cpu() -> Duration {
        Duration::from(
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap(),
        )
    }

    /// The client's side of its connection to the daemon, keeping a copy of every write: the
    /// bytes the daemon reads, in the pieces the client wrote them.
    struct Recorded {
        inner: tokio::net::UnixStream,
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Recorded {
        fn keep(&self, bufs: &[io::IoSlice<'_>], mut n: usize) {
            let mut w = Vec::with_capacity(n);
            for b in bufs {
                let k = n.min(b.len());
                w.extend_from_slice(&b[..k]);
                n -= k;
            }
            self.writes.lock().unwrap().push(w);
        }
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = r {
                this.keep(&[io::IoSlice::new(buf)], n);
            }
            r
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            if let Poll::Ready(Ok(n)) = r {
                this.keep(bufs, n);
            }
            r
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// Recorded bytes read back, one recorded write per read (less if the reader's buffer is
    /// smaller), then end of file.
    struct Replay<'a> {
        writes: &'a [Vec<u8>],
        at: usize,
        offset: usize,
    }

    impl<'a> Replay<'a> {
        fn new(writes: &'a [Vec<u8>]) -> Self {
            Replay {
                writes,
                at: 0,
                offset: 0,
            }
        }
    }

    impl AsyncRead for Replay<'_> {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(w) = this.writes.get(this.at) {
                let n = buf.remaining().min(w.len() - this.offset);
                buf.put_slice(&w[this.offset..this.offset + n]);
                this.offset += n;
                if this.offset == w.len() {
                    this.at += 1;
                    this.offset = 0;
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Reads `r` to its end as h2 would, in reads of up to 8 KiB; returns how many bytes came.
    /// Neither reader ever waits, so a waker that does nothing serves.
    fn drain(mut r: impl AsyncRead + Unpin, mut keep: Option<&mut Vec<u8>>) -> usize {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut chunk = [0u8; 8192];
        let mut total = 0;
        loop {
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut r).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return total,
                Poll::Ready(Ok(())) => {
                    total += buf.filled().len();
                    if let Some(k) = keep.as_deref_mut() {
                        k.extend_from_slice(buf.filled());
                    }
                }
                other => panic!("replay read: {other:?}"),
            }
        }
    }

    /// The thread CPU time per request of reading `writes` (holding `requests` requests) to the
    /// end, bare and through `Normalized`: the median of `rounds` rounds, each reading the whole
    /// connection `times` times each way. Returns (bare, normalized, their difference), the
    /// difference being the median of each round's.
    fn replay_cost(
        writes: &[Vec<u8>],
        requests: usize,
        rounds: usize,
        times: usize,
    ) -> (Duration, Duration, Duration) {
        let total: usize = writes.iter().map(Vec::len).sum();
        let per = |d: Duration| d / (requests * times) as u32;
        let (mut bare, mut wrapped, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = thread_cpu();
            for _ in 0..times {
                assert_eq!(drain(Replay::new(writes), None), total);
            }
            let b = per(thread_cpu() - t);
            let t = thread_cpu();
            for _ in 0..times {
                assert!(drain(Normalized::new(Replay::new(writes)), None) > 0);
            }
            let w = per(thread_cpu() - t);
            bare.push(b);
            wrapped.push(w);
            diff.push(w.saturating_sub(b));
        }
        (median(bare), median(wrapped), median(diff))
    }

    /// How many of a connection's recorded writes hold its first request: up to the first DATA
    /// frame that ends a stream (after the 24-byte preface, frame by frame).
    fn first_request_writes(writes: &[Vec<u8>]) -> usize {
        let all = writes.concat();
        let mut at = 24;
        let mut end = all.len();
        while at + 9 <= all.len() {
            let len = (usize::from(all[at]) << 16)
                | (usize::from(all[at + 1]) << 8)
                | usize::from(all[at + 2]);
            let (kind, flags) = (all[at + 3], all[at + 4]);
            at += 9 + len;
            if kind == 0 && flags & 1 != 0 {
                end = at;
                break;
            }
        }
        let mut sum = 0;
        writes
            .iter()
            .take_while(|w| {
                let before = sum;
                sum += w.len();
                before < end
            })
            .count()
    }

    fn us(d: Duration) -> f64 {
        d.as_secs_f64() * 1e6
    }

    /// The HPACK string literal `s`, no Huffman coding (RFC 7541 §5.2).
    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend(loona_hpack::encoder::encode_integer(s.len(), 7));
        out.extend_from_slice(s);
    }

    /// A connection of `requests` ListInstances calls as grpc-core (Python's grpcio 1.85) writes
    /// them on a `unix:` target, `:authority` being `authority`: the first request's fields are
    /// literals with incremental indexing and literal names, without Huffman coding, later
    /// requests name them by dynamic index (the pattern and order of grpcio's bytes, recorded
    /// once). Each request is one write: its HEADERS frame and a DATA frame with the empty
    /// message.
    fn grpc_core_connection(authority: &[u8], requests: usize) -> Vec<Vec<u8>> {
        let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>| {
            let n = payload.len();
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags]);
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(payload);
        };
        // Indexed: after the first two, :method POST and :scheme http from the static table.
        let fields: [(&[u8], &[u8]); 6] = [
            (
                b":path",
                b"/openclaw.supervisor.v1.SupervisorService/ListInstances",
            ),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"grpc-accept-encoding", b"identity, deflate, gzip"),
            (
                b"user-agent",
                b"grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)",
            ),
        ];
        let mut first = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(0x4, 0, 0, &[], &mut first);
        let mut writes = vec![first];
        for i in 0..requests {
            let mut block = Vec::new();
            for (k, (name, value)) in fields.iter().enumerate() {
                if k == 2 {
                    block.extend([0x83, 0x86]);
                }
                if i == 0 {
                    block.push(0x40);
                    string(name, &mut block);
                    string(value, &mut block);
                } else {
                    // Once all are in, the field indexed k-th is at 62 + (fields - 1 - k).
                    block.push(0x80 | (62 + fields.len() - 1 - k) as u8);
                }
            }
            let stream = 2 * i as u32 + 1;
            let mut w = Vec::new();
            frame(0x1, 0x4, stream, &block, &mut w);
            frame(0x0, 0x1, stream, &[0, 0, 0, 0, 0], &mut w);
            writes.push(w);
        }
        writes
    }

    pub fn run(quick: bool, fake: &Path, tmp: &Path) {
        let calls = if quick { 50 } else { 2_000 };
        let (rounds, times) = if quick { (1, 2) } else { (7, 10) };
        let profiles: Vec<(String, String)> = ports(2, 1100)
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("bot{i:03}"), fake_profile(fake, p, NEVER_RESTART)))
            .collect();
        let d = Daemon::start(&tmp.join("authority"), &profiles);
        let running = d.wait_all_running(2);
        std::thread::sleep(Duration::from_secs(1));

        // What tonic writes for `calls` ListInstances calls on one connection, recorded on their
        // way to the real daemon, with the daemon's CPU time and each call's wall time. A runtime
        // of its own, dropped before the daemon is stopped (see `status`).
        let writes = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (wall, daemon_cpu) = rt.block_on(async {
            let (socket, kept) = (d.socket.clone(), writes.clone());
            // As `api::client::channel` connects, the stream recorded.
            let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
                .unwrap()
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(4 << 20))
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let (socket, writes) = (socket.clone(), kept.clone());
                    async move {
                        let inner = tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, io::Error>(TokioIo::new(Recorded { inner, writes }))
                    }
                }))
                .await
                .unwrap();
            let mut client = SupervisorServiceClient::new(channel);
            let (mut times, mut before) = (Vec::new(), 0);
            for i in 0..WARM_UP + calls {
                if i == WARM_UP {
                    before = cpu(d.child.id()).unwrap().ns;
                }
                let t = Instant::now();
                let r = client
                    .list_instances(ListInstancesRequest { names: vec![] })
                    .await
                    .unwrap()
                    .into_inner();
                times.push(t.elapsed());
                assert_eq!(r.instances.len(), 2);
            }
            let after = cpu(d.child.id()).unwrap().ns;
            (
                median(times[WARM_UP..].to_vec()),
                Duration::from_nanos(after - before) / calls as u32,
            )
        });
        drop(rt);
        d.stop(fake);
        let tonic_writes = std::mem::take(&mut *writes.lock().unwrap());
        let requests = WARM_UP + calls;

        // Outside the timing: tonic's bytes pass byte for byte, and grpc-core's socket path is
        // read as localhost.
        let mut out = Vec::new();
        drain(Normalized::new(Replay::new(&tonic_writes)), Some(&mut out));
        assert_eq!(out, tonic_writes.concat(), "tonic's bytes changed");
        let path = b"%2Frun%2Fopenclaw-supervisor%2Fsupervisor.sock";
        let bad = grpc_core_connection(path, requests);
        let good = grpc_core_connection(b"localhost", requests);
        let mut out = Vec::new();
        drain(Normalized::new(Replay::new(&bad)), Some(&mut out));
        assert!(!out.windows(path.len()).any(|w| w == path));
        assert!(out.windows(9).any(|w| w == b"localhost"));

        let (tb, tn, td) = replay_cost(&tonic_writes, requests, rounds, times);
        // A connection of one call, as `openclawctl status` makes: the writes up to the end of
        // the first request (its DATA frame with END_STREAM), where the layer decodes once.
        let first = first_request_writes(&tonic_writes);
        let (_, _, fd) = replay_cost(&tonic_writes[..first], 1, rounds, times * 20);
        let (gb, gn, gd) = replay_cost(&good, requests, rounds, times);
        let (bb, bn, bd) = replay_cost(&bad, requests, rounds, times);
        println!(
            "authority layer (api::authority::Normalized), {requests} ListInstances requests on one connection replayed from memory ({} bytes from tonic); thread CPU time per request, median of {rounds} rounds of {times} replays:",
            tonic_writes.iter().map(Vec::len).sum::<usize>()
        );
        println!(
            "  tonic's bytes (recorded from a client of the daemon, {running} instances running), passed on: {:.3} µs through it vs {:.3} µs read bare, difference {:.3} µs",
            us(tn),
            us(tb),
            us(td)
        );
        println!(
            "  daemon per ListInstances round trip over the recorded calls: {:.1} µs of process CPU, {:.1} µs wall (median); the difference is {:.2}% of its CPU, {:.2}% of its wall time",
            us(daemon_cpu),
            us(wall),
            100.0 * td.as_secs_f64() / daemon_cpu.as_secs_f64(),
            100.0 * td.as_secs_f64() / wall.as_secs_f64()
        );
        println!(
            "  a connection of one call (the first request's {first} writes): {:.2} µs more through it; {:.1}% of the daemon's CPU per round trip above",
            us(fd),
            100.0 * fd.as_secs_f64() / daemon_cpu.as_secs_f64()
        );
        println!(
            "  grpc-core-style requests (built here), :authority localhost, passed on: {:.3} µs vs {:.3} µs bare, difference {:.3} µs",
            us(gn),
            us(gb),
            us(gd)
        );
        println!(
            "  the same with the percent-encoded socket path, re-encoded: {:.3} µs vs {:.3} µs bare, difference {:.3} µs",
            us(bn),
            us(bb),
            us(bd)
        );
    }
}
