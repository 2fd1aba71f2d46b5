//! `openclawctl`: the command-line client of openclaw-supervisord.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use openclaw_supervisor::{cli, paths};

/// Control the OpenClaw gateways of this host.
#[derive(Debug, Parser)]
#[command(name = "openclawctl", version, about)]
struct Args {
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
    /// Show every instance's ports and paths, and where each value came from (no daemon needed).
    Ports {
        /// The profiles directory (same default as `check`).
        #[arg(long, env = "OPENCLAW_SUPERVISOR_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Check { config_dir } => {
            cli::check(&config_dir.unwrap_or_else(paths::default_config_dir))
        }
        Command::Ports { config_dir, json } => {
            cli::ports(&config_dir.unwrap_or_else(paths::default_config_dir), json)
        }
    }
}
