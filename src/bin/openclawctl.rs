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
    /// Talk to the daemon's TCP listener (its `--tcp`) instead of the socket, e.g.
    /// http://127.0.0.1:7777; needs --token-file.
    #[arg(long, global = true, env = "OPENCLAW_SUPERVISOR_ENDPOINT")]
    endpoint: Option<String>,
    /// With --endpoint: the file whose first line is the daemon's token (its --token-file).
    #[arg(long, global = true, env = "OPENCLAW_SUPERVISOR_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prove that the profiles share no config file, state dir, workspace or port (no daemon needed).
    ///
    /// Exit status: 0 clean, 1 with the report otherwise, 2 for usage errors.
    Check {
        /// The profiles directory [default: the running daemon's, else
        /// /etc/openclaw-supervisor/supervisor.d for root, ~/.config/openclaw-supervisor/supervisor.d
        /// otherwise].
        #[arg(long, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// The runtime store the profiles' `runtime` is looked up in [default: the running
        /// daemon's, else STATE_DIR/runtimes: /var/lib/openclaw-supervisor/runtimes for root,
        /// ~/.local/state/openclaw-supervisor/runtimes otherwise].
        #[arg(long, env = "OPENCLAW_SUPERVISOR_RUNTIMES")]
        runtimes: Option<PathBuf>,
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
    /// A full-screen live view: every instance (state, pid, uptime, restarts, CPU, RSS, port),
    /// the selected one's log; keys start (s), stop (x), restart (r, each asking y/n) and explain
    /// (e) it; q, Esc or Ctrl-C quits.
    Top,
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
    /// Replace the daemon's program with the binary installed at its path, in place: every
    /// gateway keeps running (same pids, same pipes), the API is away for a moment. The new binary
    /// is checked first; if it cannot take over, nothing changes. Upgrading the supervisor is
    /// `install` the new binary, then `openclawctl reexec`.
    Reexec,
    /// Why an instance is in its state: its recent history (transitions with their reasons,
    /// restart decisions with their delays, the start-limit count, probe failures, operator
    /// actions), oldest first, then what will happen next.
    Explain {
        /// The instance.
        name: String,
        /// One JSON object: {name, entries: [{time, time_unix_ms, kind, text}], next}.
        #[arg(long)]
        json: bool,
    },
    /// Print the gateway token the daemon made for an instance (`gateway_token: generate`).
    Token {
        /// The instance.
        name: String,
    },
    /// Print, as shell exports, the environment the daemon gives an instance's gateway:
    /// `eval "$(openclawctl env rescue)"`.
    Env {
        /// The instance.
        name: String,
    },
    /// Run a command with an instance's environment and working directory (as its gateway's),
    /// e.g. `openclawctl exec rescue -- openclaw doctor`. Exit status: the command's.
    Exec {
        /// The instance.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Upgrade one instance to another OpenClaw runtime: install it if needed, restart the
    /// instance on it, keep it only if it becomes ready and stays healthy for the soak, else roll
    /// back and say why. The daemon carries it through even if this command is interrupted.
    ///
    /// Exit status: 0 kept, written or nothing to do; 1 rolled back or failed.
    Upgrade {
        /// The instance.
        name: String,
        /// The runtime: openclaw@VERSION[+node@VERSION], or a bare VERSION.
        #[arg(long, required_unless_present = "write")]
        to: Option<String>,
        /// How long it must stay healthy once ready.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
        soak: std::time::Duration,
        /// Then write the choice into the instance's profile (comments kept); alone, write the
        /// current choice.
        #[arg(long)]
        write: bool,
    },
    /// The daemon's runtime store: OpenClaw releases, each on its Node, that profiles name with
    /// `runtime:`.
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// The instance names, one a line (for shell completion): the daemon's, else the config dir's.
    #[command(name = "__complete-names", hide = true)]
    CompleteNames,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum RuntimeCommand {
    /// Install a runtime from npm (the daemon runs npm): `openclaw@VERSION` takes the Node that
    /// release declares (one the store has when it fits), `openclaw@VERSION+node@VERSION` names
    /// it. Prints the installer's progress as it comes, then the runtime and its directory.
    Install {
        /// `openclaw@VERSION[+node@VERSION]`.
        spec: String,
    },
    /// The installed runtimes and the instances that use each.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a runtime (and its Node if no other runtime is on it); refused (exit 1) while an
    /// instance uses it.
    Remove {
        /// `openclaw@VERSION[+node@VERSION]`.
        spec: String,
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

/// `start`, `stop` or `restart` of the names (or `--all`).
fn lifecycle(
    target: &remote::Target,
    call: remote::Lifecycle,
    names: Vec<String>,
    all: bool,
    timeout: Option<std::time::Duration>,
) -> ExitCode {
    let verb = match call {
        remote::Lifecycle::Start => "start",
        remote::Lifecycle::Stop => "stop",
        remote::Lifecycle::Restart => "restart",
    };
    names_or_all(verb, &names, all);
    on_daemon(Box::pin(remote::act(target, call, names, all, timeout)))
}

/// A runtime for the commands that talk to the daemon.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start a runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Runs a command that talks to the daemon, and reports how it ended.
fn on_daemon(f: impl std::future::Future<Output = Result<(), remote::Error>>) -> ExitCode {
    match runtime() {
        Ok(rt) => remote::finish(rt.block_on(f)),
        Err(code) => code,
    }
}

/// Where the daemon answers: --endpoint (with --token-file), else the socket.
fn target(args: &Args) -> Result<remote::Target, String> {
    match (&args.endpoint, &args.token_file) {
        (Some(endpoint), Some(token_file)) => Ok(remote::Target::Tcp {
            endpoint: endpoint.clone(),
            token_file: token_file.clone(),
        }),
        (Some(endpoint), None) => Err(format!(
            "--endpoint {endpoint} needs --token-file FILE (or OPENCLAW_SUPERVISOR_TOKEN_FILE): every call over TCP carries the daemon's token"
        )),
        (None, _) => Ok(remote::Target::Socket(
            args.socket.clone().unwrap_or_else(paths::default_socket),
        )),
    }
}

/// The config dir of `check` and `ports`: the one given, else the running daemon's (said on
/// stderr), else the default.
fn config_dir(given: Option<PathBuf>, target: &remote::Target) -> PathBuf {
    if let Some(dir) = given {
        return dir;
    }
    let asked = runtime()
        .ok()
        .and_then(|rt| rt.block_on(remote::daemon_config_dir(target)));
    match asked {
        Some(dir) => {
            eprintln!(
                "using the running daemon's config dir {} (--config-dir or OPENCLAW_SUPERVISOR_CONFIG_DIR to choose another)",
                dir.display()
            );
            dir
        }
        None => paths::default_config_dir(),
    }
}

/// The runtime store of `check`: the one given, else the running daemon's, else the default. Not
/// announced: a warning about a runtime names the store it looked in.
fn runtimes_dir(given: Option<PathBuf>, target: &remote::Target) -> PathBuf {
    given
        .or_else(|| {
            runtime()
                .ok()
                .and_then(|rt| rt.block_on(cli::runtimes::daemon_store(target)))
        })
        .unwrap_or_else(|| paths::default_state_dir().join("runtimes"))
}

/// `__complete-names`: the daemon's instance names, else those of the config dir's profiles;
/// nothing (and exit 0) when neither answers, so a completion never prints an error.
fn complete_names(target: &remote::Target) -> ExitCode {
    let from_daemon = runtime()
        .ok()
        .and_then(|rt| rt.block_on(remote::instance_names(target)).ok());
    let names = from_daemon.unwrap_or_else(|| {
        let dir = std::env::var_os("OPENCLAW_SUPERVISOR_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(paths::default_config_dir);
        openclaw_supervisor::profile::load(&dir)
            .profiles
            .iter()
            .map(|p| p.name.to_string())
            .collect()
    });
    for n in names {
        println!("{n}");
    }
    ExitCode::SUCCESS
}

/// `exec NAME -- CMD...`: replaces this process with CMD, run with the instance's environment
/// (on top of this one's) in its working directory. Returns only if that fails.
fn exec(target: &remote::Target, name: String, command: Vec<String>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (vars, cwd) = match rt.block_on(remote::environment(target, name)) {
        Ok(v) => v,
        Err(e) => return remote::finish(Err(e)),
    };
    drop(rt);
    let Some((program, args)) = command.split_first() else {
        eprintln!("error: no command given after --");
        return ExitCode::from(2);
    };
    // A PATH among `vars` is the one the program is looked up on (std does so when the child's
    // PATH is set).
    let e = std::process::Command::new(program)
        .args(args)
        .envs(vars)
        .current_dir(&cwd)
        .exec();
    eprintln!("error: cannot run {program} (in {}): {e}", cwd.display());
    ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = match target(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let target = &target;
    match args.command {
        Command::Check {
            config_dir: dir,
            runtimes,
        } => cli::check(&config_dir(dir, target), &runtimes_dir(runtimes, target)),
        Command::New {
            name,
            port,
            from_profile,
            config_dir: dir,
            start,
        } => cli::new::run(&cli::new::Options {
            name,
            port,
            from_profile,
            config_dir: dir.unwrap_or_else(paths::default_config_dir),
            start,
            target: target.clone(),
        }),
        Command::Ports {
            config_dir: dir,
            json,
        } => cli::ports(&config_dir(dir, target), json),
        Command::Import {
            write,
            force,
            config_dir: dir,
            homes,
            system_units,
        } => cli::import::run(&cli::import::Options {
            config_dir: dir.unwrap_or_else(paths::default_config_dir),
            homes,
            system_units,
            write,
            force,
        }),
        Command::Status { names, json } => on_daemon(Box::pin(remote::status(target, names, json))),
        Command::Start { names, all } => {
            lifecycle(target, remote::Lifecycle::Start, names, all, None)
        }
        Command::Stop {
            names,
            all,
            timeout,
        } => lifecycle(target, remote::Lifecycle::Stop, names, all, timeout),
        Command::Restart { names, all } => {
            lifecycle(target, remote::Lifecycle::Restart, names, all, None)
        }
        Command::Logs {
            name,
            lines,
            follow,
        } => on_daemon(Box::pin(remote::logs(target, name, lines, follow))),
        Command::Top => on_daemon(Box::pin(cli::top::top(target))),
        Command::Watch { names, json } => on_daemon(Box::pin(remote::watch(target, names, json))),
        Command::Reload { dry_run } => on_daemon(Box::pin(remote::reload(target, dry_run))),
        Command::Version => on_daemon(Box::pin(remote::version(target))),
        Command::Reexec => on_daemon(Box::pin(remote::reexec(target))),
        Command::Explain { name, json } => on_daemon(Box::pin(remote::explain(target, name, json))),
        Command::Token { name } => on_daemon(Box::pin(remote::token(target, name))),
        Command::Env { name } => on_daemon(Box::pin(remote::env(target, name))),
        Command::Exec { name, command } => exec(target, name, command),
        Command::Upgrade {
            name,
            to,
            soak,
            write,
        } => on_daemon(Box::pin(remote::upgrade(target, name, to, soak, write))),
        Command::Runtime { command } => on_daemon(Box::pin(async move {
            match command {
                RuntimeCommand::Install { spec } => cli::runtimes::install(target, spec).await,
                RuntimeCommand::List { json } => cli::runtimes::list(target, json).await,
                RuntimeCommand::Remove { spec } => cli::runtimes::remove(target, spec).await,
            }
        })),
        Command::CompleteNames => complete_names(target),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut out = std::io::stdout();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "openclawctl", &mut script);
            let script = String::from_utf8_lossy(&script);
            let script = match shell {
                clap_complete::Shell::Bash => cli::completion::bash_with_names(&script),
                clap_complete::Shell::Fish => cli::completion::fish_with_names(&script),
                clap_complete::Shell::Zsh => cli::completion::zsh_with_names(&script),
                _ => script.into_owned(),
            };
            let _ = out.write_all(script.as_bytes());
            ExitCode::SUCCESS
        }
    }
}
