//! `openclaw-supervisord`: the daemon that runs a host's OpenClaw gateways.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use openclaw_supervisor::supervise::spawn::OnCrash;
use openclaw_supervisor::{cli, daemon, paths};

/// Supervise the OpenClaw gateways described by the profiles in a config directory.
#[derive(Debug, Parser)]
#[command(name = "openclaw-supervisord", version, about)]
struct Args {
    /// The profiles directory, one YAML file per instance [default:
    /// /etc/openclaw-supervisor/supervisor.d for root, ~/.config/openclaw-supervisor/supervisor.d
    /// otherwise].
    #[arg(long, global = true, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// The control socket [default: /run/openclaw-supervisor/supervisor.sock for root,
    /// $XDG_RUNTIME_DIR/openclaw-supervisor/supervisor.sock otherwise].
    #[arg(long, env = "OPENCLAW_SUPERVISOR_SOCKET")]
    socket: Option<PathBuf>,
    /// Where instance logs (NAME.log) go [default: /var/log/openclaw-supervisor for root,
    /// ~/.local/state/openclaw-supervisor/logs otherwise].
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The daemon's own state [default: /var/lib/openclaw-supervisor for root,
    /// ~/.local/state/openclaw-supervisor otherwise].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The runtime store: OpenClaw releases with their Node, one directory each, that profiles
    /// name with `runtime:` [default: STATE_DIR/runtimes].
    #[arg(long, env = "OPENCLAW_SUPERVISOR_RUNTIMES")]
    runtimes: Option<PathBuf>,
    /// Rotate an instance log when it passes this many bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    log_max_bytes: u64,
    /// How many rotated instance logs to keep.
    #[arg(long, default_value_t = 5)]
    log_keep: usize,
    /// Make the control socket mode 0660 and of this group, for its members to use openclawctl
    /// [default: none; the socket is 0600, its owner's alone].
    #[arg(long)]
    socket_group: Option<String>,
    /// Also serve the API on this TCP address (loopback unless --tcp-allow-remote); every call
    /// must carry the token of --token-file.
    #[arg(long, requires = "token_file")]
    tcp: Option<std::net::SocketAddr>,
    /// Allow --tcp to listen on an address other than loopback.
    #[arg(long, requires = "tcp")]
    tcp_allow_remote: bool,
    /// Serve Prometheus metrics on this TCP address at /metrics (loopback unless
    /// --metrics-allow-remote; no token: anyone who reaches it may read the figures).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Allow --metrics to listen on an address other than loopback.
    #[arg(long, requires = "metrics")]
    metrics_allow_remote: bool,
    /// The file whose first line is the TCP bearer token; read on every call, so it may be rotated.
    #[arg(long, env = "OPENCLAW_SUPERVISOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Contain each instance by its process tree (its descendants, its marker, and the processes
    /// seen in its tree while it lived) even where a writable cgroup v2 would let the daemon give
    /// it a cgroup of its own; `limits` then fail the check. The variable takes 1/0, true/false,
    /// yes/no, on/off.
    #[arg(
        long,
        env = "OPENCLAW_SUPERVISOR_NO_CGROUPS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    no_cgroups: bool,
    /// What becomes of the gateways if the daemon dies without stopping them (SIGKILL, a panic, the
    /// OOM killer, the watchdog): `kill` ends them with it (PR_SET_PDEATHSIG); `keep` leaves them
    /// running, and the next daemon adopts them. A stop (SIGTERM, Ctrl-C) stops them either way
    /// [default: keep under systemd (NOTIFY_SOCKET set), kill otherwise].
    #[arg(long, env = "OPENCLAW_SUPERVISOR_ON_CRASH", value_enum)]
    on_crash: Option<OnCrash>,
    /// The program `openclawctl reexec` (or SIGUSR2) replaces the daemon's with [default: the
    /// path the daemon was started from: `install` a new binary there, then re-exec].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// The daemon's own log level (error, warn, info, debug, trace); RUST_LOG, if set, wins.
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the profiles and exit: 0 clean, 1 with the report otherwise.
    Check,
    /// Say, as one JSON line, whether this binary can take over from a running daemon by a
    /// re-exec (its version, the API it serves, the handover formats it reads, its check of the
    /// profiles); what a re-exec runs first. Exit 0 if it can.
    HandoverCheck,
    /// Install a runtime into the runtime store (--runtimes, else STATE_DIR/runtimes) from npm
    /// without a running daemon, as `openclawctl runtime install` does through one: for
    /// provisioning and the quick start. SPEC: `openclaw@VERSION[+node@VERSION]`. Progress on
    /// stderr; the runtime's id and directory on stdout. Exit 69 when the npm registry cannot be
    /// reached, 1 on any other failure.
    InstallRuntime {
        /// `openclaw@VERSION[+node@VERSION]`.
        spec: String,
    },
    /// The unit's ExecStopPost: after a stop that did not finish (the daemon hung and was killed
    /// alone), end the gateways it left; after a crash, nothing.
    #[command(hide = true)]
    StopLeftovers,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.config_dir.unwrap_or_else(paths::default_config_dir);
    let runtimes = args
        .runtimes
        .clone()
        .or_else(|| args.state_dir.as_ref().map(|d| d.join("runtimes")))
        .unwrap_or_else(|| paths::default_state_dir().join("runtimes"));
    match args.command {
        Some(Command::Check) => return cli::check(&dir, &runtimes),
        Some(Command::InstallRuntime { spec }) => return install_runtime(&runtimes, &spec),
        Some(Command::HandoverCheck) => return openclaw_supervisor::handover::check_mode(&dir),
        Some(Command::StopLeftovers) | None => {}
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // journald adds its own timestamps; a terminal gets them from us.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    if journal {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
    // Diagnostics, status and errors name profile files by this dir: absolute, they mean the same
    // to a client in another directory (and to the daemon after a `cd` of its service manager).
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let opts = daemon::Options {
        config_dir: dir,
        socket: args.socket.unwrap_or_else(paths::default_socket),
        log_dir: args.log_dir.unwrap_or_else(paths::default_log_dir),
        // Absolute, as the config dir: what `runtime list` and `check` name means the same to a
        // client elsewhere.
        runtimes: std::path::absolute(&runtimes).unwrap_or(runtimes),
        state_dir: args.state_dir.unwrap_or_else(paths::default_state_dir),
        log_max_bytes: args.log_max_bytes,
        log_keep: args.log_keep,
        socket_group: args.socket_group,
        tcp: args.tcp,
        tcp_allow_remote: args.tcp_allow_remote,
        metrics: args.metrics,
        metrics_allow_remote: args.metrics_allow_remote,
        token_file: args.token_file,
        no_cgroups: args.no_cgroups,
        on_crash: args
            .on_crash
            .unwrap_or_else(|| OnCrash::default_for(std::env::var_os("NOTIFY_SOCKET").is_some())),
        binary: openclaw_supervisor::handover::program(
            args.binary.map(|b| std::path::absolute(&b).unwrap_or(b)),
        ),
    };
    if matches!(args.command, Some(Command::StopLeftovers)) {
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r.block_on(openclaw_supervisor::systemd::stop_leftovers(
                &opts.config_dir,
                &opts.state_dir,
                &opts.socket,
            )),
            Err(e) => {
                eprintln!("openclaw-supervisord: cannot start its runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The main thread forks every child and runs the re-exec (spawn::JobQueue::run); the runtime
    // turns on a thread of its own.
    let (jobs, queue) = openclaw_supervisor::supervise::spawn::jobs();
    let runtime = std::thread::Builder::new()
        .name("runtime".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                // /proc walks run on blocking threads; a few are enough, and each costs memory.
                .max_blocking_threads(8)
                .enable_all()
                .build()
            {
                Ok(r) => r.block_on(daemon::run(opts, jobs)),
                Err(e) => {
                    eprintln!("openclaw-supervisord: cannot start its runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        });
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("openclaw-supervisord: cannot start its runtime thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    queue.run(|| runtime.is_finished());
    runtime.join().unwrap_or(ExitCode::FAILURE)
}

/// `install-runtime SPEC`: the install `openclawctl runtime install` asks a daemon for, run here.
fn install_runtime(store: &std::path::Path, spec: &str) -> ExitCode {
    use openclaw_supervisor::runtime::{InstallError, Spec, Store};
    let spec = match Spec::parse(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("openclaw-supervisord: {e}");
            return ExitCode::from(2);
        }
    };
    match Store::new(store).install(&spec, &mut |line| eprintln!("{line}")) {
        Ok(r) => {
            println!("{}  {}", r.id(), r.dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("openclaw-supervisord: {e}");
            ExitCode::from(match e {
                InstallError::Unreachable(_) => 69,
                InstallError::Failed(_) => 1,
            })
        }
    }
}
