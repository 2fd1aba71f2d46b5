//! The daemon's life: check the profiles, take the control socket, become a child subreaper, start
//! the instances, serve the API, and on SIGTERM/SIGINT stop everything in parallel and exit 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::api::{self, v1::supervisor_service_server::SupervisorServiceServer};
use crate::profile;
use crate::supervise::{logs::LogConfig, Supervisor};

/// Where the daemon reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The profiles directory.
    pub config_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Instance logs.
    pub log_dir: PathBuf,
    /// The daemon's own state.
    pub state_dir: PathBuf,
    /// Rotate an instance log past this size.
    pub log_max_bytes: u64,
    /// Rotated instance logs kept.
    pub log_keep: usize,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> ExitCode {
    let plan = profile::load(&opts.config_dir);
    if !plan.report.ok() {
        eprint!("{}", plan.report);
        eprintln!("{}", plan.report.summary(&opts.config_dir));
        eprintln!(
            "openclaw-supervisord: refusing to start: fix the profiles above, then start again"
        );
        return ExitCode::from(crate::cli::EXIT_CHECK_FAILED);
    }
    for d in &plan.report.diagnostics {
        tracing::warn!("{d}");
    }
    tracing::info!("{}", plan.report.summary(&opts.config_dir));

    // Take the socket before starting anything: a second daemon must stop here.
    let listener = match api::socket::bind(&opts.socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "openclaw-supervisord: cannot serve on {}: {e}",
                opts.socket.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opts.state_dir) {
        eprintln!(
            "openclaw-supervisord: cannot create its state dir {}: {e}",
            opts.state_dir.display()
        );
        return ExitCode::FAILURE;
    }
    // Each instance holds a few descriptors (two pipes, probe connections, its log): allow as many
    // as the hard limit permits.
    raise_fd_limit();
    // Orphaned descendants of the gateways (a setsid'd spawn broker) come back to us to be reaped.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(
            "cannot become a child subreaper ({e}): orphans of the gateways will go to init"
        );
    }

    let cancel = CancellationToken::new();
    let mut term = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            eprintln!("openclaw-supervisord: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let log_cfg = LogConfig {
        dir: opts.log_dir.clone(),
        max_bytes: opts.log_max_bytes,
        keep: opts.log_keep,
        tail_lines: 1000,
    };
    crate::supervise::clear_leftovers(&plan.profiles).await;
    let supervisor = match Supervisor::start(plan, &log_cfg, cancel.child_token()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("openclaw-supervisord: cannot start: {e}");
            let _ = std::fs::remove_file(&opts.socket);
            return ExitCode::FAILURE;
        }
    };

    let api = api::server::Api {
        supervisor: supervisor.clone(),
        config_dir: opts.config_dir.clone(),
        started: Instant::now(),
    };
    let server_stop = CancellationToken::new();
    let server = {
        let stop = server_stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SupervisorServiceServer::new(api))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async move { stop.cancelled().await },
                ),
        )
    };
    tracing::info!(socket = %opts.socket.display(), "serving the control API");

    loop {
        tokio::select! {
            _ = term.0.recv() => { tracing::info!("SIGTERM: stopping every instance"); break; }
            _ = term.1.recv() => { tracing::info!("SIGINT: stopping every instance"); break; }
            _ = term.2.recv() => { tracing::warn!("SIGHUP: reloading is not available yet; profiles unchanged"); }
        }
    }
    supervisor.shutdown().await;
    server_stop.cancel();
    let _ = server.await;
    let _ = std::fs::remove_file(&opts.socket);
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
            }
        }
    }
}
