//! Turns a parsed profile into a checked [`Profile`]: every omitted value resolved the way
//! `openclaw --profile P gateway run` would resolve it, paths expanded (`~`, `${VAR}`) and made
//! absolute, the OpenClaw config file read, and every port the instance will bind derived. Code past
//! this point never sees an unchecked profile.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::diagnostic::{Diagnostic, Kind, Location};
use super::load::ProfileFile;
use super::openclaw::{self, AtLine, Role};
use super::paths::{absolute, real_path, without_dots};
use super::raw::{InstanceName, RawProfile, RestartPolicyKind, SignalName};

/// The command a profile runs when it names none.
pub const DEFAULT_COMMAND: [&str; 3] = ["openclaw", "gateway", "run"];

/// Variables the supervisor sets for every child from the profile; a profile's `env` may not set them.
pub const MANAGED_ENV: [(&str, &str); 5] = [
    ("OPENCLAW_CONFIG_PATH", "config_path"),
    ("OPENCLAW_STATE_DIR", "state_dir"),
    ("OPENCLAW_GATEWAY_PORT", "port"),
    ("OPENCLAW_PROFILE", "openclaw_profile"),
    ("OPENCLAW_WORKSPACE_DIR", "workspace"),
];

/// The variable the gateway reads its token from, which `gateway_token` sets.
pub const TOKEN_VAR: &str = "OPENCLAW_GATEWAY_TOKEN";

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Written in the profile.
    Profile(Location),
    /// Read from the instance's OpenClaw config file.
    ConfigFile(Location),
    /// OpenClaw's port for a named profile, `20000 + fnv1a32(profile) % 40000`.
    ProfileHash(String),
    /// OpenClaw's default for the profile.
    Default,
}

impl Origin {
    /// The short name used by `openclawctl ports`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Profile(_) => "profile",
            Origin::ConfigFile(_) => "config file",
            Origin::ProfileHash(_) => "profile hash",
            Origin::Default => "default",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Profile(at) => write!(f, "profile {at}"),
            Origin::ConfigFile(at) => write!(f, "config file {at}"),
            Origin::ProfileHash(p) => write!(f, "profile hash 20000 + fnv1a32({p:?}) % 40000"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A resolved value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub origin: Origin,
}

/// What a port claim is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    /// Derived from the gateway port.
    Derived(Role),
    /// An explicit setting in the OpenClaw config file (dotted field).
    Config(String),
    /// An entry of the profile's `reserve_ports`.
    Reserved,
}

/// A port or an inclusive range of ports one instance binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClaim {
    /// First port (kept as u32 so a derived value past 65535 can be reported).
    pub start: u32,
    /// Last port, inclusive.
    pub end: u32,
    /// What it is for.
    pub source: ClaimSource,
    /// Where it is decided: the profile's `port`, a config-file line, or a `reserve_ports` entry.
    pub at: Location,
    /// Set when OpenClaw falls back from the formula to a default value: why.
    pub fallback: Option<String>,
}

impl PortClaim {
    /// "browser CDP range", "gateway port", "browser.profiles.work.cdpPort", "reserved port".
    pub fn describe(&self) -> String {
        match &self.source {
            ClaimSource::Derived(role) => role.describe().to_string(),
            ClaimSource::Config(field) => format!("config `{field}` port"),
            ClaimSource::Reserved if self.start == self.end => "reserved port".to_string(),
            ClaimSource::Reserved => "reserved ports".to_string(),
        }
    }

    /// "18800-18899" or "18789".
    pub fn span(&self) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{}-{}", self.start, self.end)
        }
    }
}

/// `restart`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// When to restart.
    pub policy: RestartPolicyKind,
    /// Delay before the second restart in a row (the first after a stable run is immediate).
    pub backoff_initial: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
    /// A child up this long resets the backoff.
    pub backoff_reset_after: Duration,
    /// At most this many starts ...
    pub start_limit_burst: u32,
    /// ... in this window, or the instance turns fatal.
    pub start_limit_interval: Duration,
    /// Exit codes that mean "restarting will not help" (78 = EX_CONFIG).
    pub no_restart_exit_codes: Vec<i32>,
}

/// `stop`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPolicy {
    /// The signal sent first.
    pub signal: SignalName,
    /// How long to wait before SIGKILL.
    pub timeout: Duration,
}

/// `health`, resolved, `{port}` substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Polled until 2xx after a start.
    pub readiness_url: String,
    /// Polled every `interval` once ready.
    pub liveness_url: String,
    /// Time between liveness probes.
    pub interval: Duration,
    /// One probe's time limit.
    pub timeout: Duration,
    /// Consecutive liveness failures that make the instance unhealthy.
    pub failure_threshold: u32,
    /// How long a start may take to become ready.
    pub start_deadline: Duration,
}

/// `limits`, resolved: each value with where it is written (the daemon's check reports a limit it
/// cannot apply at that line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` of the instance's cgroup, in bytes.
    pub memory: Option<Sourced<u64>>,
    /// The CPU share, in percent of one CPU (`cpu.max`).
    pub cpu: Option<Sourced<u32>>,
}

/// One instance, checked and resolved: what the supervisor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The instance name.
    pub name: InstanceName,
    /// The profile file.
    pub file: PathBuf,
    /// Where the name is decided (the `name:` line, or the file for a name from the file stem).
    pub name_at: Location,
    /// The OpenClaw profile whose defaults apply; `None` is OpenClaw's unnamed `default` profile.
    pub openclaw_profile: Option<String>,
    /// Where the OpenClaw profile is decided: the `openclaw_profile:` line, else where the name is.
    pub openclaw_profile_at: Location,
    /// The file the gateway writes its own log to: the config file's `logging.file`, else OpenClaw's
    /// rolling file named after the profile. A rolling file's date stands as `YYYY-MM-DD`.
    pub log_file: Sourced<PathBuf>,
    /// The gateway port `G`.
    pub port: Sourced<u16>,
    /// `OPENCLAW_CONFIG_PATH`, absolute.
    pub config_path: Sourced<PathBuf>,
    /// `OPENCLAW_STATE_DIR`, absolute.
    pub state_dir: Sourced<PathBuf>,
    /// The agent workspace, absolute.
    pub workspace: Sourced<PathBuf>,
    /// Workspaces of agents that have their own (`agents.list[i].workspace` in the config file).
    pub agent_workspaces: Vec<Sourced<PathBuf>>,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Extra environment for the child.
    pub env: BTreeMap<String, String>,
    /// The child's working directory; `None` is the daemon's.
    pub working_dir: Option<PathBuf>,
    /// Start with the daemon.
    pub autostart: bool,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Stop policy.
    pub stop: StopPolicy,
    /// Health probes.
    pub health: HealthPolicy,
    /// Every port the instance binds, in the order derived.
    pub ports: Vec<PortClaim>,
    /// Resource limits, applied through the instance's cgroup.
    pub limits: Limits,
    /// `gateway_token: generate`: the daemon gives the gateway a token of its own, made once in
    /// the state dir (`supervise::token`), as `OPENCLAW_GATEWAY_TOKEN`.
    pub gateway_token: Option<super::raw::GatewayToken>,
    /// `runtime`: the OpenClaw release (and Node) from the daemon's runtime store; `None` runs
    /// whatever `openclaw` the PATH finds.
    pub runtime: Option<Sourced<crate::runtime::Spec>>,
}

/// Looks up an environment variable of the daemon.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One profile file, resolved.
#[derive(Debug)]
pub struct Resolved {
    /// The profile, if it has no error.
    pub profile: Option<Profile>,
    /// Every error and warning of it.
    pub diagnostics: Vec<Diagnostic>,
}

/// Resolves one parsed profile.
pub fn resolve(pf: &ProfileFile, env: EnvLookup<'_>) -> Resolved {
    let mut r = Resolver {
        pf,
        daemon_env: env,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let profile = r.run();
    let ok = r.errors.is_empty();
    let mut diagnostics = r.errors;
    diagnostics.append(&mut r.warnings);
    Resolved {
        profile: profile.filter(|_| ok),
        diagnostics,
    }
}

struct Resolver<'a> {
    pf: &'a ProfileFile,
    daemon_env: EnvLookup<'a>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// The fields of a profile that name a path, each expanded against the profile file's directory.
#[derive(Debug, Clone, Copy)]
enum PathField {
    StateDir,
    ConfigPath,
    Workspace,
    WorkingDir,
}

impl PathField {
    /// The key in the profile file.
    fn key(self) -> &'static str {
        match self {
            PathField::StateDir => "state_dir",
            PathField::ConfigPath => "config_path",
            PathField::Workspace => "workspace",
            PathField::WorkingDir => "working_dir",
        }
    }

    /// The value as written, if the profile sets it.
    fn written(self, raw: &RawProfile) -> Option<&str> {
        match self {
            PathField::StateDir => raw.state_dir.as_deref(),
            PathField::ConfigPath => raw.config_path.as_deref(),
            PathField::Workspace => raw.workspace.as_deref(),
            PathField::WorkingDir => raw.working_dir.as_deref(),
        }
    }
}

/// What every step after naming the instance needs: whom its findings are about, and what `~`,
/// `${VAR}` and relative paths of the profile mean.
struct Scope {
    /// The instance name, as findings name it.
    name: String,
    /// Where the name is decided.
    name_at: Location,
    /// The profile's `env`, looked up before the daemon's environment.
    env: BTreeMap<String, String>,
    /// OpenClaw's home (`~`): OPENCLAW_HOME, itself `~`-expanded, else HOME.
    home: Option<String>,
    /// The profile file's directory: relative paths of the profile start there.
    base: PathBuf,
}

/// The instance's OpenClaw config file, read, and where its relative paths start.
struct ConfigFile {
    path: PathBuf,
    cfg: openclaw::OpenClawConfig,
    /// OpenClaw resolves a relative workspace against the gateway's working directory.
    run_dir: PathBuf,
}

impl ConfigFile {
    fn at(&self, line: usize) -> Location {
        Location {
            file: self.path.clone(),
            line,
            column: 0,
        }
    }
}

impl Resolver<'_> {
    fn at(&self, path: &[&str]) -> Location {
        self.pf.locate(path)
    }

    fn error(
        &mut self,
        kind: Kind,
        path: &[&str],
        name: &str,
        msg: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::error(kind, self.at(path), msg)
            .instance(name)
            .field(path.join("."))
    }

    /// The steps in the order their findings are reported; a step that leaves nothing to build on
    /// ends the run with `None`.
    fn run(&mut self) -> Option<Profile> {
        let (name, name_at) = self.name()?;
        let openclaw_profile = self.openclaw_profile(&name);
        let scope = self.scope(&name, name_at);

        let state_dir = self.profile_path(&scope, PathField::StateDir);
        let config_path = self.profile_path(&scope, PathField::ConfigPath);
        let workspace = self.profile_path(&scope, PathField::Workspace);
        let working_dir = self
            .profile_path(&scope, PathField::WorkingDir)
            .map(|s| s.value);
        let state_dir = self.state_dir(&scope, state_dir, openclaw_profile.as_deref())?;
        let config_path = config_path.unwrap_or_else(|| Sourced {
            value: state_dir.value.join("openclaw.json"),
            origin: Origin::Default,
        });

        let config = self.config_file(&scope, &config_path.value, working_dir.as_deref());
        let cfg_workspace = match &config.cfg.workspace {
            Some(w) => Some(self.config_path(
                &scope,
                &config,
                "agents.defaults.workspace",
                &w.value,
                w.line,
            )?),
            None => None,
        };
        let agent_workspaces: Vec<Sourced<PathBuf>> = config
            .cfg
            .agent_workspaces
            .iter()
            .filter_map(|w| self.config_path(&scope, &config, &w.field, &w.path, w.line))
            .collect();
        let workspace = self.workspace(&scope, workspace, cfg_workspace, &state_dir)?;
        let log_file = self.log_file(&scope, &config, openclaw_profile.as_deref())?;

        let port = self.port(&scope, &config, openclaw_profile.as_deref());
        let ports = self.port_claims(&scope, &config, &port);
        let command = self.command(&scope.name);
        let restart = self.restart();
        let stop = self.stop();
        let health = self.health(&scope.name, port.value);

        let openclaw_profile_at = match &self.pf.raw.openclaw_profile {
            Some(_) => self.at(&["openclaw_profile"]),
            None => scope.name_at.clone(),
        };
        let Scope { name_at, env, .. } = scope;
        Some(Profile {
            name,
            file: self.pf.file.clone(),
            name_at,
            openclaw_profile,
            openclaw_profile_at,
            log_file,
            port,
            config_path,
            state_dir,
            workspace,
            agent_workspaces,
            command,
            env,
            working_dir,
            autostart: self.pf.raw.autostart.unwrap_or(true),
            restart,
            stop,
            health: health?,
            ports,
            limits: self.limits(),
            gateway_token: self.pf.raw.gateway_token,
            runtime: self.runtime(),
        })
    }

    /// The instance name, from `name:` or else the file's stem, and where it is decided.
    fn name(&mut self) -> Option<(InstanceName, Location)> {
        if let Some(n) = &self.pf.raw.name {
            return Some((n.clone(), self.at(&["name"])));
        }
        let stem = self
            .pf
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match stem.parse::<InstanceName>() {
            Ok(n) => Some((n, Location::file(&self.pf.file))),
            Err(why) => {
                self.errors.push(
                    Diagnostic::error(
                        Kind::InvalidValue,
                        Location::file(&self.pf.file),
                        format!("the instance takes its name from the file name, and {why}"),
                    )
                    .field("name")
                    .hint("rename the file or set `name:`"),
                );
                None
            }
        }
    }

    /// The OpenClaw profile whose defaults apply: `openclaw_profile:`, else the instance name;
    /// `None` for OpenClaw's unnamed `default` profile.
    fn openclaw_profile(&self, name: &InstanceName) -> Option<String> {
        match &self.pf.raw.openclaw_profile {
            Some(p) if p.as_str().eq_ignore_ascii_case("default") => None,
            Some(p) => Some(p.as_str().to_string()),
            None if name.as_str().eq_ignore_ascii_case("default") => None,
            None => Some(name.as_str().to_string()),
        }
    }

    /// Checks the profile's `env` and gathers what the later steps share.
    fn scope(&mut self, name: &InstanceName, name_at: Location) -> Scope {
        let n = name.as_str();
        let mut env = self.pf.raw.env.clone().unwrap_or_default();
        for (key, value) in env.iter_mut() {
            // `${VAR}` from the daemon's environment, as in paths; `$${` stands for `${`.
            match expand_vars(value, self.daemon_env) {
                Ok(v) => *value = v,
                Err(why) => {
                    let d = self
                        .error(Kind::UnsetVariable, &["env", key], n, format!("the value {why}"))
                        .hint(
                            "set it in the daemon's environment (its unit's `Environment=`), or write `$${` for a literal `${`",
                        );
                    self.errors.push(d);
                }
            }
        }
        if self.pf.raw.gateway_token.is_some() && env.contains_key(TOKEN_VAR) {
            let d = self
                .error(
                    Kind::InvalidValue,
                    &["env", TOKEN_VAR],
                    n,
                    format!("{TOKEN_VAR} is set both here and by `gateway_token`"),
                )
                .hint(format!(
                    "keep one: remove `{TOKEN_VAR}` from `env`, or `gateway_token:`"
                ));
            self.errors.push(d);
        }
        for key in env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                let d = self.error(
                    Kind::InvalidValue,
                    &["env", key],
                    n,
                    format!("{key:?} is not a valid environment variable name"),
                );
                self.errors.push(d);
            }
            if let Some((_, field)) = MANAGED_ENV.iter().find(|(k, _)| k == key) {
                let d = self
                    .error(
                        Kind::InvalidValue,
                        &["env", key],
                        n,
                        format!("{key} is set by the supervisor from the profile"),
                    )
                    .hint(format!("set `{field}:` instead"));
                self.errors.push(d);
            }
        }
        let home = self.openclaw_home(&env);
        Scope {
            name: n.to_string(),
            name_at,
            env,
            home,
            base: absolute(self.pf.file.parent().unwrap_or(Path::new("."))),
        }
    }

    /// A variable as the child will see it: the profile's `env` first, then the daemon's.
    fn lookup(&self, env: &BTreeMap<String, String>, var: &str) -> Option<String> {
        env.get(var).cloned().or_else(|| (self.daemon_env)(var))
    }

    /// OpenClaw's home: OPENCLAW_HOME (itself `~`-expanded), else HOME.
    fn openclaw_home(&self, env: &BTreeMap<String, String>) -> Option<String> {
        let os_home = self.lookup(env, "HOME").filter(|h| !h.is_empty());
        match self
            .lookup(env, "OPENCLAW_HOME")
            .filter(|h| !h.trim().is_empty())
        {
            Some(h) => match expand(h.trim(), os_home.as_deref(), &|_| None) {
                Ok(p) => Some(p.display().to_string()),
                Err(_) => os_home,
            },
            None => os_home,
        }
    }

    /// A path the profile sets, expanded and made absolute against the profile file's directory.
    fn profile_path(&mut self, scope: &Scope, field: PathField) -> Option<Sourced<PathBuf>> {
        let value = field.written(&self.pf.raw)?;
        let key = field.key();
        let at = self.at(&[key]);
        match expand(value, scope.home.as_deref(), &|var| {
            self.lookup(&scope.env, var)
        }) {
            Ok(p) => Some(Sourced {
                value: without_dots(&scope.base.join(p)),
                origin: Origin::Profile(at),
            }),
            Err(why) => {
                let d = self.error(Kind::UnsetVariable, &[key], &scope.name, why);
                self.errors.push(d);
                None
            }
        }
    }

    /// The state dir the profile sets, else OpenClaw's default under the home; without either,
    /// nothing else can be resolved.
    fn state_dir(
        &mut self,
        scope: &Scope,
        written: Option<Sourced<PathBuf>>,
        openclaw_profile: Option<&str>,
    ) -> Option<Sourced<PathBuf>> {
        if let Some(s) = written {
            return Some(s);
        }
        let Some(home) = &scope.home else {
            let what = "state_dir";
            let d = Diagnostic::error(
                Kind::UnsetVariable,
                scope.name_at.clone(),
                format!("HOME is not set, so OpenClaw's default {what} cannot be resolved"),
            )
            .instance(&scope.name)
            .field(what)
            .hint(format!("set `{what}:` in the profile or HOME in its `env`"));
            self.errors.push(d);
            return None;
        };
        Some(Sourced {
            value: without_dots(&Path::new(home).join(match openclaw_profile {
                Some(p) => format!(".openclaw-{p}"),
                None => ".openclaw".to_string(),
            })),
            origin: Origin::Default,
        })
    }

    /// Reads the OpenClaw config file: the ports and workspaces it claims. A file that cannot be
    /// read or parsed counts as empty, after its problems are reported.
    fn config_file(
        &mut self,
        scope: &Scope,
        path: &Path,
        working_dir: Option<&Path>,
    ) -> ConfigFile {
        let cfg = match openclaw::read_config(path) {
            Ok(c) => c,
            Err(problems) => {
                for problem in problems {
                    let mut d = Diagnostic::error(
                        Kind::Syntax,
                        Location {
                            file: path.to_path_buf(),
                            line: problem.line,
                            column: 0,
                        },
                        format!("OpenClaw config file: {}", problem.message),
                    )
                    .instance(&scope.name);
                    if !problem.field.is_empty() {
                        d.kind = Kind::InvalidValue;
                        d = d.field(problem.field);
                    }
                    self.errors.push(d);
                }
                openclaw::OpenClawConfig::default()
            }
        };
        ConfigFile {
            path: path.to_path_buf(),
            cfg,
            run_dir: working_dir.map_or_else(|| absolute(Path::new(".")), Path::to_path_buf),
        }
    }

    /// A path written in the config file (`~` expanded, no variables), made absolute as the
    /// gateway will.
    fn config_path(
        &mut self,
        scope: &Scope,
        config: &ConfigFile,
        field: &str,
        written: &str,
        line: usize,
    ) -> Option<Sourced<PathBuf>> {
        match expand(written, scope.home.as_deref(), &|_| None) {
            Ok(p) => Some(Sourced {
                value: without_dots(&config.run_dir.join(p)),
                origin: Origin::ConfigFile(config.at(line)),
            }),
            Err(why) => {
                self.errors.push(
                    Diagnostic::error(Kind::InvalidValue, config.at(line), why)
                        .instance(&scope.name)
                        .field(field),
                );
                None
            }
        }
    }

    /// The agent workspace: the config file's agents.defaults.workspace wins over
    /// OPENCLAW_WORKSPACE_DIR, which is how the supervisor passes the profile's `workspace`, so the
    /// two must agree; with neither, OpenClaw's default in the state dir.
    fn workspace(
        &mut self,
        scope: &Scope,
        written: Option<Sourced<PathBuf>>,
        in_config: Option<Sourced<PathBuf>>,
        state_dir: &Sourced<PathBuf>,
    ) -> Option<Sourced<PathBuf>> {
        match (written, in_config) {
            (Some(w), Some(c)) if real_path(&w.value) != real_path(&c.value) => {
                let Origin::ConfigFile(at) = &c.origin else {
                    return None;
                };
                self.errors.push(
                    Diagnostic::error(
                        Kind::Inconsistent,
                        self.at(&["workspace"]),
                        format!(
                            "workspace {} is overridden by agents.defaults.workspace {} in the config file ({at})",
                            w.value.display(),
                            c.value.display()
                        ),
                    )
                    .instance(&scope.name)
                    .field("workspace")
                    .hint("set the workspace in one place only"),
                );
                None
            }
            (_, Some(c)) => Some(c),
            (Some(w), None) => Some(w),
            (None, None) => Some(Sourced {
                value: state_dir.value.join("workspace"),
                origin: Origin::Default,
            }),
        }
    }

    /// The gateway's own log file: `logging.file` (`~` expanded, relative to the gateway's working
    /// directory, as Node opens it), else OpenClaw's rolling file named after the profile.
    fn log_file(
        &mut self,
        scope: &Scope,
        config: &ConfigFile,
        openclaw_profile: Option<&str>,
    ) -> Option<Sourced<PathBuf>> {
        match &config.cfg.log_file {
            Some(f) => {
                let written = self.config_path(scope, config, "logging.file", &f.value, f.line)?;
                Some(Sourced {
                    value: openclaw::configured_log_file(&written.value),
                    origin: written.origin,
                })
            }
            None => Some(Sourced {
                value: openclaw::rolling_log_file(openclaw_profile),
                origin: Origin::Default,
            }),
        }
    }

    /// The gateway port: the profile's `port` (which overrides the config file's, with a warning
    /// if they differ), else the config file's `gateway.port`, else OpenClaw's default for the
    /// profile.
    fn port(
        &mut self,
        scope: &Scope,
        config: &ConfigFile,
        openclaw_profile: Option<&str>,
    ) -> Sourced<u16> {
        match (self.pf.raw.port, &config.cfg.gateway_port) {
            (Some(p), cfg_port) => {
                if let Some(AtLine { value: c, line }) =
                    cfg_port.as_ref().filter(|c| c.value != p.0)
                {
                    self.warnings.push(
                        Diagnostic::warning(
                            Kind::Inconsistent,
                            self.at(&["port"]),
                            format!(
                                "port {} overrides gateway.port {c} of the config file ({}): the supervisor sets OPENCLAW_GATEWAY_PORT",
                                p.0,
                                config.at(*line)
                            ),
                        )
                        .instance(&scope.name)
                        .field("port")
                        .hint("make them agree to avoid surprises when the gateway is run by hand"),
                    );
                }
                Sourced {
                    value: p.0,
                    origin: Origin::Profile(self.at(&["port"])),
                }
            }
            (None, Some(c)) => Sourced {
                value: c.value,
                origin: Origin::ConfigFile(config.at(c.line)),
            },
            (None, None) => match openclaw_profile {
                Some(p) => Sourced {
                    value: openclaw::profile_port(p),
                    origin: Origin::ProfileHash(p.to_string()),
                },
                None => Sourced {
                    value: openclaw::DEFAULT_GATEWAY_PORT,
                    origin: Origin::Default,
                },
            },
        }
    }

    /// Every port the instance binds: those derived from the gateway port (where the config file
    /// may replace one), those the config file sets, and the profile's `reserve_ports`.
    fn port_claims(
        &self,
        scope: &Scope,
        config: &ConfigFile,
        port: &Sourced<u16>,
    ) -> Vec<PortClaim> {
        let port_at = match &port.origin {
            Origin::Profile(at) | Origin::ConfigFile(at) => at.clone(),
            _ if self.pf.raw.openclaw_profile.is_some() => self.at(&["openclaw_profile"]),
            _ => scope.name_at.clone(),
        };
        let mut ports = Vec::new();
        for d in openclaw::derive_ports(port.value) {
            // mcp.apps.sandboxPort replaces G+1.
            if let (Role::McpSandbox, Some(p)) = (d.role, &config.cfg.mcp_sandbox_port) {
                ports.push(PortClaim {
                    start: u32::from(p.value),
                    end: u32::from(p.value),
                    source: ClaimSource::Config("mcp.apps.sandboxPort".into()),
                    at: config.at(p.line),
                    fallback: None,
                });
                continue;
            }
            ports.push(PortClaim {
                start: d.start,
                end: d.end,
                source: ClaimSource::Derived(d.role),
                at: port_at.clone(),
                fallback: d.fallback,
            });
        }
        for c in &config.cfg.ports {
            ports.push(PortClaim {
                start: u32::from(c.port),
                end: u32::from(c.port),
                source: ClaimSource::Config(c.field.clone()),
                at: config.at(c.line),
                fallback: None,
            });
        }
        for (i, r) in self.pf.raw.reserve_ports.iter().flatten().enumerate() {
            ports.push(PortClaim {
                start: u32::from(r.start),
                end: u32::from(r.end),
                source: ClaimSource::Reserved,
                at: self.pf.locate_index(&["reserve_ports"], i),
                fallback: None,
            });
        }
        ports
    }

    /// The command, which must name a program and must not set the gateway's port itself.
    fn command(&mut self, n: &str) -> Vec<String> {
        let command = self
            .pf
            .raw
            .command
            .clone()
            .unwrap_or_else(|| DEFAULT_COMMAND.iter().map(|s| s.to_string()).collect());
        if command.first().is_none_or(|c| c.trim().is_empty()) {
            let d = self
                .error(Kind::InvalidValue, &["command"], n, "the command is empty")
                .hint("name the program first, e.g. [openclaw, gateway, run]");
            self.errors.push(d);
        }
        if let Some(i) = command
            .iter()
            .position(|a| a == "--port" || a.starts_with("--port="))
        {
            let mut d = Diagnostic::error(
                Kind::InvalidValue,
                self.pf.locate_index(&["command"], i),
                "the command sets --port, which would override the port the supervisor checked",
            )
            .instance(n)
            .field(format!("command[{i}]"))
            .hint("set the gateway port with `port:` instead");
            d.kind = Kind::Inconsistent;
            self.errors.push(d);
        }
        command
    }

    /// `restart`, with the defaults the README lists.
    fn restart(&self) -> RestartPolicy {
        let r = self.pf.raw.restart.clone().unwrap_or_default();
        let b = r.backoff.unwrap_or_default();
        let l = r.start_limit.unwrap_or_default();
        RestartPolicy {
            policy: r.policy.unwrap_or_default(),
            backoff_initial: b.initial.map_or(Duration::from_secs(1), |d| d.0),
            backoff_max: b.max.map_or(Duration::from_secs(60), |d| d.0),
            backoff_reset_after: b.reset_after.map_or(Duration::from_secs(60), |d| d.0),
            start_limit_burst: l.burst.unwrap_or(10),
            start_limit_interval: l.interval.map_or(Duration::from_secs(300), |d| d.0),
            no_restart_exit_codes: r.no_restart_exit_codes.unwrap_or_else(|| vec![78]),
        }
    }

    /// `stop`: SIGTERM unless given, and 330 s before SIGKILL (OpenClaw's own unit's stop timeout).
    fn stop(&self) -> StopPolicy {
        let s = self.pf.raw.stop.clone().unwrap_or_default();
        StopPolicy {
            signal: s.signal.unwrap_or(SignalName(Signal::SIGTERM)),
            timeout: s.timeout.map_or(Duration::from_secs(330), |d| d.0),
        }
    }

    /// `runtime`, with its line.
    fn runtime(&self) -> Option<Sourced<crate::runtime::Spec>> {
        let r = self.pf.raw.runtime.as_ref()?;
        Some(Sourced {
            value: crate::runtime::Spec {
                openclaw: r.openclaw.0.clone(),
                node: r.node.as_ref().map(|n| n.0.clone()),
            },
            origin: Origin::Profile(self.at(&["runtime"])),
        })
    }

    /// `limits`, each with its line.
    fn limits(&self) -> Limits {
        let l = self.pf.raw.limits.clone().unwrap_or_default();
        Limits {
            memory: l.memory.map(|m| Sourced {
                value: m.0,
                origin: Origin::Profile(self.at(&["limits", "memory"])),
            }),
            cpu: l.cpu.map(|c| Sourced {
                value: c.0,
                origin: Origin::Profile(self.at(&["limits", "cpu"])),
            }),
        }
    }

    /// `health`, its URLs on the gateway port unless given.
    fn health(&mut self, n: &str, port: u16) -> Option<HealthPolicy> {
        let h = self.pf.raw.health.clone().unwrap_or_default();
        let readiness_url = self.health_url(n, port, "readiness_url", h.readiness_url, "/readyz");
        let liveness_url = self.health_url(n, port, "liveness_url", h.liveness_url, "/healthz");
        let failure_threshold = h.failure_threshold.unwrap_or(3);
        if failure_threshold == 0 {
            let d = self.error(
                Kind::InvalidValue,
                &["health", "failure_threshold"],
                n,
                "must be at least 1",
            );
            self.errors.push(d);
        }
        Some(HealthPolicy {
            readiness_url: readiness_url?,
            liveness_url: liveness_url?,
            interval: h.interval.map_or(Duration::from_secs(10), |d| d.0),
            timeout: h.timeout.map_or(Duration::from_secs(2), |d| d.0),
            failure_threshold,
            start_deadline: h.start_deadline.map_or(Duration::from_secs(30), |d| d.0),
        })
    }

    /// A probe URL (`{port}` substituted, the default path on 127.0.0.1 when not given), which
    /// must be http:// with a host.
    fn health_url(
        &mut self,
        n: &str,
        port: u16,
        field: &str,
        given: Option<String>,
        default_path: &str,
    ) -> Option<String> {
        let text = given
            .unwrap_or_else(|| format!("http://127.0.0.1:{{port}}{default_path}"))
            .replace("{port}", &port.to_string());
        match url::Url::parse(&text) {
            Ok(u) if u.scheme() == "http" && u.host().is_some() => Some(text),
            _ => {
                let d = self
                    .error(
                        Kind::InvalidValue,
                        &["health", field],
                        n,
                        format!("{text:?} is not an http:// URL"),
                    )
                    .hint("write it like http://127.0.0.1:{port}/readyz");
                self.errors.push(d);
                None
            }
        }
    }
}

/// Expands a leading `~` (to `home`) and every `${VAR}` (through `lookup`).
pub fn expand(
    text: &str,
    home: Option<&str>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut rest = text;
    if rest == "~" || rest.starts_with("~/") {
        let home = home.ok_or_else(|| format!("{text:?} starts with ~ but HOME is not set"))?;
        out.push_str(home);
        rest = &rest[1..];
    }
    out.push_str(&expand_vars(rest, lookup).map_err(|why| format!("{text:?} {why}"))?);
    if out.is_empty() {
        return Err("the path is empty".to_string());
    }
    Ok(PathBuf::from(out))
}

/// `text` with each `${VAR}` replaced by `lookup(VAR)`; `$${` is a literal `${`. The error says
/// which variable is not set, without quoting `text` (an `env` value may be a secret): "uses
/// ${VAR}, which is not set" (paths and `env` values share it).
pub fn expand_vars(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "has a `${` without its closing `}`".to_string())?;
        let var = &after[..end];
        let value = lookup(var).ok_or_else(|| format!("uses ${{{var}}}, which is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubled_dollar_is_a_literal() {
        let vars = |v: &str| (v == "A").then(|| "x".to_string());
        assert_eq!(expand_vars("$${A}-${A}", &vars).unwrap(), "${A}-x");
        assert_eq!(expand_vars("$A ${A}$", &vars).unwrap(), "$A x$");
        assert!(expand_vars("${B}", &vars).unwrap_err().contains("${B}"));
    }

    #[test]
    fn tilde_and_variables_expand() {
        let vars = |v: &str| match v {
            "BOTS" => Some("/srv/bots".to_string()),
            _ => None,
        };
        assert_eq!(
            expand("~/x", Some("/home/u"), &vars).unwrap(),
            PathBuf::from("/home/u/x")
        );
        assert_eq!(
            expand("${BOTS}/main", None, &vars).unwrap(),
            PathBuf::from("/srv/bots/main")
        );
        assert_eq!(expand("a~b", None, &vars).unwrap(), PathBuf::from("a~b"));
        assert!(expand("${NOPE}/x", None, &vars)
            .unwrap_err()
            .contains("${NOPE}"));
        assert!(expand("~/x", None, &vars).unwrap_err().contains("HOME"));
        assert!(expand("${BOTS", None, &vars).is_err());
    }
}
