//! Profiles: one YAML file per instance in a config directory, read, resolved and proven disjoint.
//!
//! The way through this module: [`load`] reads every file (`load.rs`, key by key so all bad keys show
//! at once), [`resolve`] applies OpenClaw's defaults and reads each instance's OpenClaw config file
//! (`openclaw.rs` derives the ports exactly as the gateway does), and [`check`] sweeps the whole set
//! for shared paths and ports. The result is a [`Plan`]: the profiles that may run, and a [`Report`]
//! of everything found. A plan whose report has an error must not be started.

pub mod check;
pub mod diagnostic;
pub mod load;
pub mod locate;
pub mod openclaw;
pub mod paths;
pub mod raw;
pub mod resolve;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Kind, Location, Report, Severity};
pub use raw::InstanceName;
pub use resolve::{Origin, PortClaim, Profile, Sourced};

/// A checked set of profiles.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config directory it was read from, as given.
    pub dir: PathBuf,
    /// Every profile that parsed and resolved, sorted by name.
    pub profiles: Vec<Profile>,
    /// Everything found; the plan may be started only if `report.ok()`.
    pub report: Report,
}

/// Reads and checks every profile in `dir`, with the daemon's environment for `~` and `${VAR}`.
/// The files' text is gone once this returns (a plan keeps none of it), and so is the memory
/// their parsing took (see [`give_back_memory`]).
pub fn load(dir: &Path) -> Plan {
    let plan = load_with_env(dir, &|var| std::env::var(var).ok());
    give_back_memory();
    plan
}

/// Hands freed heap memory back to the system. A large profile's parse (up to 1 MiB of YAML, tens
/// of MB of values) runs on one of tokio's blocking threads, whose malloc arena keeps what was
/// freed: without this, the daemon's RSS would stay at its peak after the profile is gone.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's arenas; it takes no pointer and
    // is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Reads and checks every profile in `dir`, looking variables up through `env`.
pub fn load_with_env(dir: &Path, env: resolve::EnvLookup<'_>) -> Plan {
    let load::DirContents {
        files,
        diagnostics: mut diags,
        count,
    } = load::read_dir(dir);
    let mut report = Report {
        profiles: count,
        ..Report::default()
    };
    let mut profiles = Vec::with_capacity(files.len());
    for pf in &files {
        let mut resolved = resolve::resolve(pf, env);
        diags.append(&mut resolved.diagnostics);
        profiles.extend(resolved.profile);
    }
    diags.extend(check::check(&profiles));
    report.diagnostics = diags;
    report.sort();
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    Plan {
        dir: dir.to_path_buf(),
        profiles,
        report,
    }
}
