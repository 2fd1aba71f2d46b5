//! `openclawctl`: the command-line client of openclaw-supervisord.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use openclaw_supervisor::cli::{self, remote};
use openclaw_supervisor::paths;

/// Control the OpenClaw gateways of this host.
#[derive(Debug, Parser)]
#[command(name = "openclawctl", version, about)]
struct Args {
    /// The daemon's control socket [default: /run/openclaw-supervisor/supervisor.sock for root,
    /// $XDG_RUNTIME_DIR/openclaw-supervisor/supervisor.sock otherwise].
    #[arg(long, global = true, env = "OPENCLAW_SUPERVISOR_SOCKET")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prove that the profiles share no config file, state dir, workspace or port (no daemon needed).
    ///
    /// Exit status: 0 clean, 1 with the report otherwise, 2 for usage errors.
    Check {
        /// The profiles directory [default: /etc/openclaw-supervisor/supervisor.d for root,
        /// ~/.config/openclaw-supervisor/supervisor.d otherwise].
        #[arg(long, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
    },
    /// Write NAME.yaml for one more gateway on a free block of ports, and check the whole dir.
    ///
    /// The port: the lowest gateway port G from 18789 up (in steps of 111) whose block G..G+110
    /// no profile claims, where no process listens now, outside the kernel's ephemeral range.
    /// Never overwrites a file; removes it again if the check fails (exit 1).
    New {
        /// The instance name (letters, digits, `_`, `-`; compared ignoring case).
        name: String,
        /// Check this gateway port instead of searching for one; refused with the reason.
        #[arg(long)]
        port: Option<u16>,
        /// Take the state dir and config file of this existing OpenClaw profile (`default` for
        /// ~/.openclaw), and its gateway.port when the config file sets one.
        #[arg(long, value_name = "PROFILE")]
        from_profile: Option<String>,
        /// The profiles directory (same default as `check`).
        #[arg(long, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// Then ask the running daemon to reload, which starts the instance, and show its status.
        #[arg(long)]
        start: bool,
    },
    /// Show every instance's ports and paths, and where each value came from (no daemon needed).
    Ports {
        /// The profiles directory (same default as `check`).
        #[arg(long, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find this host's OpenClaw setups (~/.openclaw, ~/.openclaw-*, `openclaw gateway install`
    /// units) and propose a profile for each: prints each profile, where each value came from,
    /// the check of the config dir with them, and the commands that disable OpenClaw's own units.
    ///
    /// Dry run unless --write. Exit status: 0 clean, 1 if the check fails (then --write writes
    /// nothing unless --force), 2 for usage errors.
    Import {
        /// Write the profiles (never over an existing file).
        #[arg(long)]
        write: bool,
        /// With --write: write even if the check of the set fails.
        #[arg(long, requires = "write")]
        force: bool,
        /// The profiles directory (same default as `check`).
        #[arg(long, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// Look in this home only (repeatable) [default: OPENCLAW_HOME or HOME, and as root every
        /// home of /etc/passwd].
        #[arg(long = "home", value_name = "DIR")]
        homes: Vec<PathBuf>,
        /// Where system units live.
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        system_units: PathBuf,
    },
    /// Show the instances: state, pid, uptime, restarts, port, CPU and RSS of the whole tree, last exit.
    Status {
        /// Only these instances.
        names: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start instances and wait until each is ready (exit 1 if any failed).
    Start {
        /// The instances.
        #[arg(conflicts_with = "all")]
        names: Vec<String>,
        /// Every instance.
        #[arg(long)]
        all: bool,
    },
    /// Stop instances and their whole process trees, and keep them stopped.
    Stop {
        /// The instances.
        #[arg(conflicts_with = "all")]
        names: Vec<String>,
        /// Every instance.
        #[arg(long)]
        all: bool,
        /// Override the profiles' stop.timeout (e.g. 10s) before SIGKILL.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Stop (if running) and start instances, waiting until each is ready.
    Restart {
        /// The instances.
        #[arg(conflicts_with = "all")]
        names: Vec<String>,
        /// Every instance.
        #[arg(long)]
        all: bool,
    },
    /// Print an instance's log: the last lines the daemon keeps (up to 1000), then new ones with -f.
    Logs {
        /// The instance.
        name: String,
        /// How many of the last lines (0 for all kept).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: u32,
        /// Keep printing new lines as they come, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print every state change of the instances (or of those named) as it happens.
    Watch {
        /// Only these instances.
        names: Vec<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the daemon's profiles and apply the difference: new instances start, removed ones
    /// stop, changed ones restart, others are not touched. Exit 1, with the report, if the new
    /// profiles fail the check: then nothing changes.
    Reload {
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print this client's version and the daemon's.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `start`, `stop` and `restart` need names or `--all`: without either, exits 2 saying so (clap's
/// own "required arguments" message would not mention `--all`).
fn names_or_all(verb: &str, names: &[String], all: bool) {
    if names.is_empty() && !all {
        use clap::CommandFactory;
        let mut cmd = Args::command();
        cmd.build();
        let msg = format!("name the instances to {verb}, or --all for every instance");
        match cmd.find_subcommand_mut(verb) {
            Some(sub) => sub.error(clap::error::ErrorKind::MissingRequiredArgument, msg),
            None => cmd.error(clap::error::ErrorKind::MissingRequiredArgument, msg),
        }
        .exit();
    }
}

/// Runs a command that talks to the daemon, and reports how it ended.
fn on_daemon(f: impl std::future::Future<Output = Result<(), remote::Error>>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => remote::finish(rt.block_on(f)),
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = args.socket.unwrap_or_else(paths::default_socket);
    match args.command {
        Command::Check { config_dir } => {
            cli::check(&config_dir.unwrap_or_else(paths::default_config_dir))
        }
        Command::New {
            name,
            port,
            from_profile,
            config_dir,
            start,
        } => cli::new::run(&cli::new::Options {
            name,
            port,
            from_profile,
            config_dir: config_dir.unwrap_or_else(paths::default_config_dir),
            start,
            socket,
        }),
        Command::Ports { config_dir, json } => {
            cli::ports(&config_dir.unwrap_or_else(paths::default_config_dir), json)
        }
        Command::Import {
            write,
            force,
            config_dir,
            homes,
            system_units,
        } => cli::import::run(&cli::import::Options {
            config_dir: config_dir.unwrap_or_else(paths::default_config_dir),
            homes,
            system_units,
            write,
            force,
        }),
        Command::Status { names, json } => {
            on_daemon(Box::pin(remote::status(&socket, names, json)))
        }
        Command::Start { names, all } => {
            names_or_all("start", &names, all);
            on_daemon(Box::pin(remote::act(
                &socket,
                remote::Lifecycle::Start,
                names,
                all,
                None,
            )))
        }
        Command::Stop {
            names,
            all,
            timeout,
        } => {
            names_or_all("stop", &names, all);
            on_daemon(Box::pin(remote::act(
                &socket,
                remote::Lifecycle::Stop,
                names,
                all,
                timeout,
            )))
        }
        Command::Restart { names, all } => {
            names_or_all("restart", &names, all);
            on_daemon(Box::pin(remote::act(
                &socket,
                remote::Lifecycle::Restart,
                names,
                all,
                None,
            )))
        }
        Command::Logs {
            name,
            lines,
            follow,
        } => on_daemon(Box::pin(remote::logs(&socket, name, lines, follow))),
        Command::Watch { names, json } => on_daemon(Box::pin(remote::watch(&socket, names, json))),
        Command::Reload { dry_run } => on_daemon(Box::pin(remote::reload(&socket, dry_run))),
        Command::Version => on_daemon(Box::pin(remote::version(&socket))),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "openclawctl",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
