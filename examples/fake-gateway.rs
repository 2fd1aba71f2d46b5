//! A stand-in for `openclaw gateway run`, used by the tests and for demos: it binds the gateway port,
//! answers `/healthz` and `/readyz` like the real gateway, honours SIGTERM, and misbehaves on demand.
//!
//! Port: `--port N`, else `OPENCLAW_GATEWAY_PORT`, else 18789. Faults, all optional:
//!
//! - `--ready-after-ms N`  answer `/readyz` with 503 until N ms after start
//! - `--crash-after-ms N`  exit after N ms, with `--exit-code C` (default 1)
//! - `--exit-code C`       exit at once with code C (when given without `--crash-after-ms`)
//! - `--hang-after-ms N`   after N ms, accept connections but never answer (a hung gateway)
//! - `--ignore-sigterm`    log SIGTERM and carry on (so only SIGKILL ends it)
//! - `--spawn-setsid-grandchild` start a child that calls setsid() and sleeps, as OpenClaw's spawn
//!   broker does; it is not cleaned up on exit, so only the supervisor's tree walk can end it
//! - `--flood N`           write N numbered lines to stdout as fast as possible, then carry on
//! - `--stderr-line TEXT`  write TEXT to stderr once at start
//! - `--tick-ms N`         write `tick K` (K = 1, 2, ...) to stdout every N ms, for ever: the tests
//!   count them in the log to prove no line was lost or written twice

// A test stand-in: it may panic on what its test set up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// A line to stdout, like `println!`, but a write that fails (no reader left: the supervisor died)
/// is dropped instead of panicking, so the stand-in keeps serving and still honours SIGTERM. (The
/// real gateway dies at its first console line with no reader; see README "When the daemon
/// crashes".)
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The same for stderr.
macro_rules! esay {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(Default)]
struct Opts {
    port: Option<u16>,
    ready_after: Duration,
    crash_after: Option<Duration>,
    exit_code: Option<i32>,
    hang_after: Option<Duration>,
    ignore_sigterm: bool,
    grandchild: bool,
    flood: u64,
    stderr_line: Option<String>,
    tick: Option<Duration>,
}

fn parse() -> Opts {
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    let ms = |v: Option<String>| Duration::from_millis(v.and_then(|s| s.parse().ok()).unwrap_or(0));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => o.port = args.next().and_then(|s| s.parse().ok()),
            "--ready-after-ms" => o.ready_after = ms(args.next()),
            "--crash-after-ms" => o.crash_after = Some(ms(args.next())),
            "--exit-code" => o.exit_code = args.next().and_then(|s| s.parse().ok()),
            "--hang-after-ms" => o.hang_after = Some(ms(args.next())),
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--spawn-setsid-grandchild" => o.grandchild = true,
            "--flood" => o.flood = args.next().and_then(|s| s.parse().ok()).unwrap_or(0),
            "--stderr-line" => o.stderr_line = args.next(),
            "--tick-ms" => o.tick = Some(ms(args.next())),
            "--as-grandchild" => grandchild(),
            // The real gateway's flags are accepted and ignored, so profiles can share a command line.
            _ => {}
        }
    }
    o
}

/// The setsid'd helper: leaves the gateway's session and process group, then idles until killed.
fn grandchild() -> ! {
    let _ = nix::unistd::setsid();
    say!("grandchild pid={} left the session", std::process::id());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    // Block SIGTERM/SIGINT in every thread; one thread takes them with sigwait.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().expect("block signals");

    let o = parse();
    let port = o
        .port
        .or_else(|| std::env::var("OPENCLAW_GATEWAY_PORT").ok()?.parse().ok())
        .unwrap_or(18789);
    if let (Some(code), None) = (o.exit_code, o.crash_after) {
        say!("fake-gateway exiting at once with code {code}");
        std::process::exit(code);
    }
    if let Some(line) = &o.stderr_line {
        esay!("{line}");
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            esay!("fake-gateway: cannot bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    say!(
        "fake-gateway listening on 127.0.0.1:{port} pid={} state_dir={}",
        std::process::id(),
        std::env::var("OPENCLAW_STATE_DIR").unwrap_or_default()
    );
    if o.grandchild {
        let exe = std::env::current_exe().expect("current exe");
        let child = std::process::Command::new(exe)
            .arg("--as-grandchild")
            .spawn()
            .expect("spawn grandchild");
        say!("spawned setsid grandchild pid={}", child.id());
        std::mem::forget(child);
    }
    if o.flood > 0 {
        let mut out = std::io::stdout().lock();
        for i in 0..o.flood {
            let _ = writeln!(out, "flood line {i}");
        }
        let _ = out.flush();
        say!("flood done: {} lines", o.flood);
    }

    let ignore = o.ignore_sigterm;
    std::thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            if ignore {
                say!("received {sig:?}; ignoring it");
                continue;
            }
            say!("received {sig:?}; shutting down");
            std::process::exit(0);
        }
    });
    if let Some(after) = o.crash_after {
        let code = o.exit_code.unwrap_or(1);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            say!("fake-gateway crashing with code {code}");
            std::process::exit(code);
        });
    }

    if let Some(every) = o.tick {
        // A write blocks while the pipe is full (no reader drains it), as the real gateway's would.
        std::thread::spawn(move || {
            for k in 1u64.. {
                std::thread::sleep(every);
                say!("tick {k}");
            }
        });
    }

    let hung = Arc::new(AtomicBool::new(false));
    if let Some(after) = o.hang_after {
        let hung = hung.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            say!("fake-gateway hanging: probes will get no answer");
            hung.store(true, Ordering::SeqCst);
        });
    }
    let ready_after = o.ready_after;
    for stream in listener.incoming().flatten() {
        let hung = hung.clone();
        std::thread::spawn(move || serve(stream, started, ready_after, &hung));
    }
}

/// Answers requests on one connection until the client closes it: HTTP/1.1 keep-alive, as the real
/// gateway (a Node.js HTTP server) does.
fn serve(mut stream: TcpStream, started: Instant, ready_after: Duration, hung: &AtomicBool) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    loop {
        let mut request = String::new();
        match reader.read_line(&mut request) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut close = false;
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) if header == "\r\n" || header == "\n" => break,
                Ok(_) => {
                    let h = header.to_ascii_lowercase();
                    close |= h.starts_with("connection:") && h.contains("close");
                }
            }
        }
        if hung.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let uptime = started.elapsed().as_millis();
        let (status, body) = match path {
            "/healthz" | "/health" => ("200 OK", r#"{"ok":true,"status":"live"}"#.to_string()),
            "/readyz" if started.elapsed() >= ready_after => (
                "200 OK",
                format!(r#"{{"ready":true,"failing":[],"uptimeMs":{uptime}}}"#),
            ),
            "/readyz" => (
                "503 Service Unavailable",
                format!(r#"{{"ready":false,"failing":["startup"],"uptimeMs":{uptime}}}"#),
            ),
            _ => ("404 Not Found", "{}".to_string()),
        };
        let written = write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if written.is_err() || close {
            return;
        }
    }
}
