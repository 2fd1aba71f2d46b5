//! `openclaw-supervisord`: the daemon that runs a host's OpenClaw gateways.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use openclaw_supervisor::{cli, paths, profile};

/// Supervise the OpenClaw gateways described by the profiles in a config directory.
#[derive(Debug, Parser)]
#[command(name = "openclaw-supervisord", version, about)]
struct Args {
    /// The profiles directory, one YAML file per instance [default:
    /// /etc/openclaw-supervisor/supervisor.d for root, ~/.config/openclaw-supervisor/supervisor.d
    /// otherwise].
    #[arg(long, global = true, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the profiles and exit: 0 clean, 1 with the report otherwise.
    Check,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.config_dir.unwrap_or_else(paths::default_config_dir);
    match args.command {
        Some(Command::Check) => cli::check(&dir),
        None => run(&dir),
    }
}

fn run(dir: &std::path::Path) -> ExitCode {
    let plan = profile::load(dir);
    if !plan.report.ok() {
        eprint!("{}", plan.report);
        eprintln!("{}", plan.report.summary(dir));
        eprintln!(
            "openclaw-supervisord: refusing to start: fix the profiles above, then start again"
        );
        return ExitCode::from(cli::EXIT_CHECK_FAILED);
    }
    eprint!("{}", plan.report);
    eprintln!("{}", plan.report.summary(dir));
    ExitCode::SUCCESS
}
