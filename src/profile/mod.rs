//! Profiles: one YAML file per instance in a config directory, read, resolved and proven disjoint.
//!
//! The way through this module: [`load`] reads every file (`load.rs`, key by key so all bad keys show
//! at once), [`resolve`] applies OpenClaw's defaults and reads each instance's OpenClaw config file
//! (`openclaw.rs` derives the ports exactly as the gateway does), and [`check`] sweeps the whole set
//! for shared paths and ports. The result is a [`Plan`]: the profiles that may run, and a [`Report`]
//! of everything found. A plan whose report has an error must not be started.

pub mod check;
pub mod diagnostic;
pub mod edit;
pub mod ephemeral;
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
    /// The host's ephemeral ports as the check read them (`None`: not read, or unreadable).
    pub ephemeral: Option<ephemeral::Ephemeral>,
}

impl Plan {
    /// Adds what the check says of the instances' runtimes, knowing `store` (`check::runtimes`:
    /// warnings only).
    pub fn check_runtimes(&mut self, store: &crate::runtime::Store) {
        let found = check::runtimes(&self.profiles, store);
        if !found.is_empty() {
            self.report.diagnostics.extend(found);
            self.report.sort();
        }
    }
}

/// Reads and checks every profile in `dir`, with the daemon's environment for `~` and `${VAR}`
/// and the host's ephemeral port range (read once, now). The files' text is gone once this
/// returns (a plan keeps none of it), and so is the memory their parsing took (see
/// [`give_back_memory`]).
pub fn load(dir: &Path) -> Plan {
    load_marking(dir, &|_| false)
}

/// Like [`load`], with the instances for which `fresh` holds (new or changed ones: a reload, `new`)
/// told to move in a port clash with one that is not. Resolves first, then asks `fresh`, then checks.
pub fn load_marking(dir: &Path, fresh: &dyn Fn(&Profile) -> bool) -> Plan {
    let env = |var: &str| std::env::var(var).ok();
    let read = read_resolved(dir, &env);
    let marked: std::collections::BTreeSet<String> = read
        .profiles
        .iter()
        .filter(|p| fresh(p))
        .map(|p| p.name.to_string())
        .collect();
    let ctx = check::Context {
        ephemeral: ephemeral::Ephemeral::read(),
        fresh: (!marked.is_empty()).then_some(marked),
    };
    let plan = read.check(dir, &ctx);
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

/// Reads and checks every profile in `dir`, looking variables up through `env`, knowing nothing of
/// the host.
pub fn load_with_env(dir: &Path, env: resolve::EnvLookup<'_>) -> Plan {
    load_with(dir, env, &check::Context::default())
}

/// Reads and checks every profile in `dir`, looking variables up through `env`, with what `ctx`
/// knows (the ephemeral range, the new instances).
pub fn load_with(dir: &Path, env: resolve::EnvLookup<'_>, ctx: &check::Context) -> Plan {
    read_resolved(dir, env).check(dir, ctx)
}

/// Every profile of a dir, read and resolved, not yet checked as a set.
struct Resolved {
    profiles: Vec<Profile>,
    diagnostics: Vec<Diagnostic>,
    count: usize,
}

fn read_resolved(dir: &Path, env: resolve::EnvLookup<'_>) -> Resolved {
    let load::DirContents {
        files,
        diagnostics: mut diags,
        count,
    } = load::read_dir(dir);
    let mut profiles = Vec::with_capacity(files.len());
    for pf in &files {
        let mut resolved = resolve::resolve(pf, env);
        diags.append(&mut resolved.diagnostics);
        profiles.extend(resolved.profile);
    }
    Resolved {
        profiles,
        diagnostics: diags,
        count,
    }
}

impl Resolved {
    fn check(self, dir: &Path, ctx: &check::Context) -> Plan {
        let Resolved {
            mut profiles,
            diagnostics: mut diags,
            count,
        } = self;
        let mut report = Report {
            profiles: count,
            ..Report::default()
        };
        diags.extend(check::check_with(&profiles, ctx));
        report.diagnostics = diags;
        report.sort();
        profiles.sort_by(|a, b| a.name.cmp(&b.name));
        Plan {
            dir: dir.to_path_buf(),
            profiles,
            report,
            ephemeral: ctx.ephemeral.clone(),
        }
    }
}
