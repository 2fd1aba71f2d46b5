//! The commands of `openclawctl` (and the daemon's own `check`) that need no running daemon:
//! `check` proves a config directory disjoint, `ports` shows what every instance will bind and claim
//! (ports, paths, its OpenClaw profile and log file) and where each value came from. Both print to stdout and return the process exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

pub mod completion;
pub mod import;
pub mod new;
pub mod remote;
pub mod runtimes;
pub mod top;

use crate::profile::ephemeral::{self, Ephemeral};
use crate::profile::resolve::ClaimSource;
use crate::profile::{self, Origin, Plan, Profile, Sourced};

/// Exit code of a check that found errors.
pub const EXIT_CHECK_FAILED: u8 = 1;

/// `check [--config-dir DIR] [--runtimes DIR]`: prints the report (with what it says of the
/// runtimes in the store at `runtimes`) and its summary; exit 0 when clean, 1 otherwise.
pub fn check(dir: &Path, runtimes: &Path) -> ExitCode {
    let mut plan = profile::load(dir);
    plan.check_runtimes(&crate::runtime::Store::new(runtimes));
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", plan.report);
    let _ = writeln!(out, "{}", plan.report.summary(dir));
    exit_for(&plan)
}

fn exit_for(plan: &Plan) -> ExitCode {
    if plan.report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    }
}

/// `ports [--config-dir DIR] [--json]`: each instance's ports and paths with their origins, and
/// the host's ephemeral range (claims in it marked). The check's diagnostics follow on stderr;
/// exit 1 if it failed.
pub fn ports(dir: &Path, json: bool) -> ExitCode {
    let plan = profile::load(dir);
    let mut out = std::io::stdout().lock();
    if json {
        let eph = plan.ephemeral.as_ref();
        let view: Vec<InstanceView> = plan
            .profiles
            .iter()
            .map(|p| InstanceView::of(p, eph))
            .collect();
        match serde_json::to_string_pretty(&view) {
            Ok(text) => {
                let _ = writeln!(out, "{text}");
            }
            Err(e) => {
                eprintln!("error: cannot render JSON: {e}");
                return ExitCode::from(EXIT_CHECK_FAILED);
            }
        }
    } else {
        let _ = write!(
            out,
            "{}",
            ports_table(&plan.profiles, plan.ephemeral.as_ref())
        );
    }
    if !plan.report.diagnostics.is_empty() {
        eprint!("{}", plan.report);
        eprintln!("{}", plan.report.summary(dir));
    }
    exit_for(&plan)
}

/// The human form of `ports`: a block per instance, one row per port or path, with its origin; a
/// claim the kernel may hand out as an ephemeral port is marked, and the range ends the table.
pub fn ports_table(profiles: &[Profile], eph: Option<&Ephemeral>) -> String {
    let mut s = String::new();
    for p in profiles {
        let mut rows: Vec<[String; 3]> = vec![[
            "openclaw profile".to_string(),
            p.openclaw_profile
                .as_deref()
                .unwrap_or("default")
                .to_string(),
            openclaw_profile_origin(p),
        ]];
        for c in &p.ports {
            let from = match &c.source {
                ClaimSource::Derived(crate::profile::openclaw::Role::Gateway) => {
                    p.port.origin.to_string()
                }
                ClaimSource::Derived(role) => match &c.fallback {
                    Some(why) => format!("{}, fallback: {why}", role.formula()),
                    None => role.formula().to_string(),
                },
                ClaimSource::Config(_) => format!("config file {}", c.at),
                ClaimSource::Reserved => format!("profile {}", c.at),
            };
            let from = match eph.map(|e| e.overlap(c.start, c.end)) {
                Some(o) if o == [(c.start, c.end)] && c.end <= 65535 => {
                    format!("{from}  ! ephemeral")
                }
                Some(o) if !o.is_empty() && c.end <= 65535 => {
                    format!("{from}  ! ephemeral: {}", ephemeral::spans(&o))
                }
                _ => from,
            };
            rows.push([c.describe(), c.span(), from]);
        }
        for (what, v) in [
            ("config file", &p.config_path),
            ("state dir", &p.state_dir),
            ("workspace", &p.workspace),
        ] {
            rows.push([
                what.to_string(),
                v.value.display().to_string(),
                v.origin.to_string(),
            ]);
        }
        rows.push([
            "log file".to_string(),
            p.log_file.value.display().to_string(),
            match &p.log_file.origin {
                Origin::Default => "OpenClaw's rolling log of the profile".to_string(),
                other => other.to_string(),
            },
        ]);
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!("{} ({})\n", p.name, p.file.display()));
        s.push_str(&align(&rows, "  "));
    }
    if let Some(e) = eph {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!(
            "kernel ephemeral ports: {e} ({}; `! ephemeral` marks claims in it)\n",
            ephemeral::RANGE_FILE
        ));
    }
    s
}

/// Where the OpenClaw profile is decided: its own key, or the instance name it defaults to.
fn openclaw_profile_origin(p: &Profile) -> String {
    if p.openclaw_profile_at == p.name_at {
        format!("instance name {}", p.openclaw_profile_at)
    } else {
        format!("profile {}", p.openclaw_profile_at)
    }
}

/// Rows as columns two spaces apart, each line starting with `indent`, trailing spaces trimmed.
pub fn align<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    // Written cell by cell into one buffer: `status` of hundreds of instances goes through here.
    let line: usize = indent.len() + widths.iter().map(|w| w + 2).sum::<usize>();
    let mut out = String::with_capacity(rows.len() * line);
    for r in rows {
        let start = out.len();
        out.push_str(indent);
        for (c, w) in r.iter().zip(widths) {
            out.push_str(c);
            out.extend(std::iter::repeat_n(' ', w - c.len() + 2));
        }
        let end = out[start..].trim_end().len() + start;
        out.truncate(end);
        out.push('\n');
    }
    out
}

/// One instance in `ports --json`.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// Instance name.
    pub name: String,
    /// Its profile file.
    pub file: PathBuf,
    /// OpenClaw profile (`default` for the unnamed one).
    pub openclaw_profile: String,
    /// The gateway port and its origin.
    pub port: ValueView<u16>,
    /// Every port or range it binds.
    pub ports: Vec<PortView>,
    /// Config file path.
    pub config_path: ValueView<PathBuf>,
    /// State dir.
    pub state_dir: ValueView<PathBuf>,
    /// Workspace.
    pub workspace: ValueView<PathBuf>,
    /// The gateway's own log file: the config file's `logging.file` (source `config file`), else
    /// OpenClaw's rolling log named after the profile (source `default`); a rolling file's date
    /// stands as `YYYY-MM-DD`.
    pub log_file: ValueView<PathBuf>,
    /// The host's ephemeral port range (the same for every instance; `null` if unreadable).
    pub ephemeral_range: Option<RangeView>,
}

/// The kernel's ephemeral ports in `ports --json`.
#[derive(Debug, Serialize)]
pub struct RangeView {
    /// First port of `net.ipv4.ip_local_port_range`.
    pub start: u32,
    /// Last port, inclusive.
    pub end: u32,
    /// `net.ipv4.ip_local_reserved_ports` (`8080,9000-9100`; empty if none).
    pub reserved: String,
}

/// A value and where it came from.
#[derive(Debug, Serialize)]
pub struct ValueView<T> {
    /// The value.
    pub value: T,
    /// `profile`, `config file`, `profile hash` or `default`.
    pub source: &'static str,
    /// The file and line it was read from, when it was read from one.
    pub at: Option<String>,
}

/// A port claim in `ports --json`.
#[derive(Debug, Serialize)]
pub struct PortView {
    /// What it is for: `gateway port`, `browser CDP range`, `config `browser.cdpUrl` port`, ...
    pub what: String,
    /// First port.
    pub start: u32,
    /// Last port, inclusive.
    pub end: u32,
    /// `derived`, `config file` or `reserve_ports`.
    pub source: &'static str,
    /// Where it is decided.
    pub at: String,
    /// Why OpenClaw falls back from the formula, when it does.
    pub fallback: Option<String>,
    /// The ports of the claim that lie in the kernel's ephemeral range (and are not reserved),
    /// `40000-40110` or `32768-32800,32900`; `null` when none.
    pub ephemeral: Option<String>,
}

fn value_view<T: Clone>(s: &Sourced<T>) -> ValueView<T> {
    ValueView {
        value: s.value.clone(),
        source: s.origin.kind(),
        at: match &s.origin {
            Origin::Profile(at) | Origin::ConfigFile(at) => Some(at.to_string()),
            Origin::ProfileHash(_) | Origin::Default => None,
        },
    }
}

impl InstanceView {
    /// The view of `p`, its claims weighed against `eph`.
    pub fn of(p: &Profile, eph: Option<&Ephemeral>) -> Self {
        InstanceView {
            name: p.name.to_string(),
            file: p.file.clone(),
            openclaw_profile: p
                .openclaw_profile
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            port: value_view(&p.port),
            ports: p
                .ports
                .iter()
                .map(|c| PortView {
                    what: c.describe(),
                    start: c.start,
                    end: c.end,
                    source: match c.source {
                        ClaimSource::Derived(_) => "derived",
                        ClaimSource::Config(_) => "config file",
                        ClaimSource::Reserved => "reserve_ports",
                    },
                    at: c.at.to_string(),
                    fallback: c.fallback.clone(),
                    ephemeral: eph
                        .map(|e| e.overlap(c.start, c.end))
                        .filter(|o| !o.is_empty() && c.end <= 65535)
                        .map(|o| ephemeral::spans(&o)),
                })
                .collect(),
            config_path: value_view(&p.config_path),
            state_dir: value_view(&p.state_dir),
            workspace: value_view(&p.workspace),
            log_file: value_view(&p.log_file),
            ephemeral_range: eph.map(|e| RangeView {
                start: e.start,
                end: e.end,
                reserved: e.reserved_text(),
            }),
        }
    }
}
