//! `openclawctl import`: finds the OpenClaw setups of this host and proposes one supervisor profile
//! per setup.
//!
//! A setup is what `openclaw [--profile P] setup` and `openclaw [--profile P] gateway install`
//! leave: a state dir (`~/.openclaw` for the default profile, `~/.openclaw-P` for a named one, under
//! `OPENCLAW_HOME` when set) with its `openclaw.json`, and maybe a systemd unit
//! (`openclaw-gateway[-P].service`, once `clawdbot-gateway[-P].service`) in the user's
//! `~/.config/systemd/user/` or in `/etc/systemd/system/`. A unit's `ExecStart=` flags
//! (`--profile`, `--port`) and its environment (`Environment=`, `EnvironmentFile=`) are what really
//! runs, so they override what the state dir alone suggests.
//!
//! The parsing (unit files, systemd's quoting, environment files) and the discovery are pure
//! functions over the homes and unit dir given, so the tests run them on fixture trees. `run` adds
//! the check of the existing profiles plus the proposals (the same check `openclawctl check` runs)
//! and, with `--write`, writes the files (never over an existing one).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::profile::{self, load::ProfileFile, openclaw, paths::without_dots, InstanceName};

/// The most a unit or environment file may hold for `import` to read it.
const MAX_UNIT_BYTES: u64 = 1 << 20;

/// A home directory to look in, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Where OpenClaw's state dirs are (`OPENCLAW_HOME` for the user running `import`, when set).
    pub dir: PathBuf,
    /// The user's own home: their user units are under `.config/systemd/user`, `%h` of a unit.
    pub os_home: PathBuf,
    /// Its owner's uid.
    pub uid: u32,
    /// Its owner's name (the uid as text when it has none).
    pub user: String,
}

impl Home {
    /// `dir`, owned by whoever owns it on disk.
    pub fn of_dir(dir: &Path) -> Home {
        use std::os::unix::fs::MetadataExt;
        let uid =
            std::fs::metadata(dir).map_or_else(|_| nix::unistd::geteuid().as_raw(), |m| m.uid());
        Home {
            dir: dir.to_path_buf(),
            os_home: dir.to_path_buf(),
            uid,
            user: user_name(uid),
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// What one unit file says that matters here: its `[Service]` section's command and environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    /// `ExecStart=`, split into words as systemd does (its prefixes `-@:+!` dropped).
    pub exec_start: Vec<String>,
    /// `Environment=` assignments, in order (later ones win).
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths, and whether each is optional (a leading `-`).
    pub environment_files: Vec<(PathBuf, bool)>,
}

/// Parses a unit file's text; `home` is what `%h` stands for.
pub fn parse_unit(text: &str, home: &Path) -> Result<UnitFile, String> {
    let mut unit = UnitFile::default();
    let mut section = String::new();
    let mut logical = String::new();
    for raw in text.lines() {
        // A trailing backslash continues the line (systemd joins with a space).
        if let Some(head) = raw.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if section != "Service" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "ExecStart" => {
                let cmd = value.trim_start_matches(['-', '@', ':', '+', '!']);
                unit.exec_start =
                    split_words(cmd, home).map_err(|e| format!("ExecStart={value}: {e}"))?;
            }
            "Environment" => {
                // An empty assignment resets the list, as in systemd.
                if value.is_empty() {
                    unit.environment.clear();
                }
                for word in
                    split_words(value, home).map_err(|e| format!("Environment={value}: {e}"))?
                {
                    if let Some((k, v)) = word.split_once('=') {
                        unit.environment.push((k.to_string(), v.to_string()));
                    }
                }
            }
            "EnvironmentFile" => {
                if value.is_empty() {
                    unit.environment_files.clear();
                    continue;
                }
                let (optional, path) = match value.strip_prefix('-') {
                    Some(p) => (true, p),
                    None => (false, value),
                };
                let path = expand_specifiers(path, home);
                unit.environment_files.push((PathBuf::from(path), optional));
            }
            _ => {}
        }
    }
    Ok(unit)
}

/// `%%` is `%` and `%h` the home; other specifiers are left as written.
fn expand_specifiers(s: &str, home: &Path) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(&home.display().to_string()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Splits a command line or an `Environment=` value into words as systemd does: whitespace
/// separates, double or single quotes group (a quote may start mid-word: `A="b c"`), a backslash
/// escapes the next character (`\n`, `\t` and the like in C style), `%%` is `%`.
pub fn split_words(s: &str, home: &Path) -> Result<Vec<String>, String> {
    let s = expand_specifiers(s, home);
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                let e = chars.next().ok_or("it ends with a lone backslash")?;
                word.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is not closed"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// An environment file as systemd reads it: `KEY=VALUE` lines, `#` and `;` comments, values
/// optionally quoted, an `export ` prefix tolerated.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = match (v.chars().next(), v.chars().last()) {
            (Some(a @ ('"' | '\'')), Some(b)) if a == b && v.len() >= 2 => &v[1..v.len() - 1],
            _ => v,
        };
        out.push((k.trim().to_string(), v.to_string()));
    }
    out
}

/// What `ExecStart=` says of the gateway: `--profile P` (or `--dev`), `--port N`, `--bind B`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecFlags {
    /// The OpenClaw profile it selects.
    pub profile: Option<String>,
    /// The gateway port it forces.
    pub port: Option<u16>,
    /// Where it binds.
    pub bind: Option<String>,
}

/// Reads the flags OpenClaw's CLI takes before or after `gateway run`.
pub fn exec_flags(argv: &[String]) -> ExecFlags {
    let mut f = ExecFlags::default();
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match flag {
            "--profile" => f.profile = value(),
            "--dev" => f.profile = Some("dev".to_string()),
            "--port" => f.port = value().and_then(|p| p.parse().ok()),
            "--bind" => f.bind = value(),
            _ => {}
        }
    }
    f
}

/// The OpenClaw profile a unit's name stands for: `openclaw-gateway-rescue.service` → `rescue`,
/// `openclaw-gateway.service` → the default (`Some(None)`); `None` if it is not such a unit.
pub fn unit_profile(unit: &str) -> Option<Option<String>> {
    let stem = unit.strip_suffix(".service")?;
    let rest = stem
        .strip_prefix("openclaw-gateway")
        .or_else(|| stem.strip_prefix("clawdbot-gateway"))?;
    match rest {
        "" => Some(None),
        r => r
            .strip_prefix('-')
            .filter(|p| p.parse::<InstanceName>().is_ok())
            .map(|p| Some(p.to_string())),
    }
}

/// Where a unit is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitScope {
    /// A user's unit (`~/.config/systemd/user/`).
    User {
        /// The user.
        user: String,
        /// Their uid.
        uid: u32,
    },
    /// A system unit.
    System,
}

/// A unit found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUnit {
    /// `openclaw-gateway-rescue.service`.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// User or system.
    pub scope: UnitScope,
}

impl FoundUnit {
    /// The command that disables and stops it, run by user `me` (`None`: as root).
    pub fn disable_command(&self, me_uid: u32) -> String {
        match &self.scope {
            UnitScope::System => format!("systemctl disable --now {}", self.name),
            UnitScope::User { uid, .. } if *uid == me_uid => {
                format!("systemctl --user disable --now {}", self.name)
            }
            UnitScope::User { user, .. } => {
                format!("systemctl --user -M {user}@ disable --now {}", self.name)
            }
        }
    }

    fn describe(&self) -> String {
        match &self.scope {
            UnitScope::System => format!("system unit {}", self.path.display()),
            UnitScope::User { user, .. } => {
                format!("{user}'s user unit {}", self.path.display())
            }
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<T> {
    /// The value.
    pub value: T,
    /// Where it was found: "unit X: Environment OPENCLAW_STATE_DIR", "config file F", ...
    pub from: String,
}

fn from<T>(value: T, from: impl Into<String>) -> Found<T> {
    Found {
        value,
        from: from.into(),
    }
}

/// One OpenClaw setup found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The home it was found in.
    pub home: Home,
    /// Its OpenClaw profile (`None`: the default one).
    pub profile: Found<Option<String>>,
    /// Its state dir.
    pub state_dir: Found<PathBuf>,
    /// Its config file.
    pub config_path: Found<PathBuf>,
    /// The gateway port it would use.
    pub port: Found<u16>,
    /// `--bind` of the unit's command line.
    pub bind: Option<String>,
    /// The unit that runs it.
    pub unit: Option<FoundUnit>,
    /// Other units for the same state dir (an old `clawdbot-gateway` beside the new one): they
    /// compete too.
    pub other_units: Vec<FoundUnit>,
    /// Variables of the unit's environment that the profile does not carry (the token among them).
    pub not_copied: Vec<String>,
    /// What could not be read (a config file, an environment file).
    pub problems: Vec<String>,
    /// The `OPENCLAW_GATEWAY_TOKEN` the unit gives its gateway: `--write` keeps it as the
    /// instance's token (`STATE_DIR/.openclaw-supervisor.token`, 0600), never in the profile.
    pub unit_token: Option<Secret>,
}

/// A value never printed: `Debug` shows only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The variables a unit sets that the profile expresses by its own keys, or that only OpenClaw's
/// unit has reason to set.
const UNIT_ONLY_ENV: [&str; 10] = [
    "OPENCLAW_STATE_DIR",
    "OPENCLAW_CONFIG_PATH",
    "OPENCLAW_GATEWAY_PORT",
    "OPENCLAW_PROFILE",
    "OPENCLAW_HOME",
    "OPENCLAW_SERVICE_MARKER",
    "OPENCLAW_SERVICE_KIND",
    "OPENCLAW_SERVICE_VERSION",
    "HOME",
    "PATH",
];

/// Finds every setup in `homes` (state dirs and user units) and among the system units in
/// `system_units` (`/etc/systemd/system`). Reads files; pure otherwise.
pub fn discover(homes: &[Home], system_units: &Path) -> Vec<Setup> {
    let mut setups: Vec<Setup> = Vec::new();
    for home in homes {
        for (dir, profile) in state_dirs(&home.dir) {
            let where_ = format!("state dir found in {}", home.dir.display());
            setups.push(setup_from_dir(home, profile, &dir, &where_));
        }
    }
    let mut units = Vec::new();
    for home in homes {
        let dir = home.os_home.join(".config/systemd/user");
        for path in unit_files(&dir) {
            let scope = UnitScope::User {
                user: home.user.clone(),
                uid: home.uid,
            };
            units.push((home.clone(), path, scope));
        }
    }
    for path in unit_files(system_units) {
        let root_home = Home {
            dir: PathBuf::from("/root"),
            os_home: PathBuf::from("/root"),
            uid: 0,
            user: "root".to_string(),
        };
        units.push((root_home, path, UnitScope::System));
    }
    for (home, path, scope) in units {
        let Some(found) = setup_from_unit(&home, &path, scope) else {
            continue;
        };
        match setups
            .iter_mut()
            .find(|s| same_dir(&s.state_dir.value, &found.state_dir.value))
        {
            // What the unit runs wins over what the state dir alone suggests.
            Some(s) if s.unit.is_none() => *s = found,
            // A second unit on the same state dir: the first one's values stand; both compete.
            Some(s) => s.other_units.extend(found.unit),
            None => setups.push(found),
        }
    }
    setups
}

/// Whether two paths name the same directory (compared resolved when both exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => without_dots(a) == without_dots(b),
    }
}

/// `~/.openclaw` (default profile) and `~/.openclaw-P` directories of a home, by name.
pub fn state_dirs(home: &Path) -> Vec<(PathBuf, Option<String>)> {
    let Ok(entries) = std::fs::read_dir(home) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Option<String>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let profile = if name == ".openclaw" {
                None
            } else {
                let p = name.strip_prefix(".openclaw-")?;
                p.parse::<InstanceName>().ok()?;
                Some(p.to_string())
            };
            Some((e.path(), profile))
        })
        .collect();
    out.sort();
    out
}

/// The OpenClaw gateway units in a unit directory, by name.
fn unit_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| unit_profile(n).is_some())
        })
        .collect();
    out.sort();
    out
}

/// The port a setup's gateway would take from its config file, else OpenClaw's default for the
/// profile.
fn config_port(config: &Path, profile: Option<&str>, problems: &mut Vec<String>) -> Found<u16> {
    match openclaw::read_config(config) {
        Ok(cfg) => {
            if let Some(p) = cfg.gateway_port {
                return from(
                    p.value,
                    format!("gateway.port of {}:{}", config.display(), p.line),
                );
            }
        }
        Err(problems_found) => {
            for p in problems_found {
                problems.push(format!(
                    "config file {}:{}: {}",
                    config.display(),
                    p.line,
                    p.message
                ));
            }
        }
    }
    match profile {
        Some(p) => from(
            openclaw::profile_port(p),
            format!("OpenClaw's port for profile {p} (20000 + fnv1a32 % 40000)"),
        ),
        None => from(
            openclaw::DEFAULT_GATEWAY_PORT,
            "OpenClaw's default port".to_string(),
        ),
    }
}

fn setup_from_dir(home: &Home, profile: Option<String>, dir: &Path, where_: &str) -> Setup {
    let config = dir.join("openclaw.json");
    let mut problems = Vec::new();
    let port = config_port(&config, profile.as_deref(), &mut problems);
    let profile_from = match &profile {
        Some(_) => format!("the state dir's name {}", dir.display()),
        None => "the state dir's name (default profile)".to_string(),
    };
    Setup {
        home: home.clone(),
        profile: from(profile, profile_from),
        state_dir: from(dir.to_path_buf(), where_),
        config_path: from(config, "OpenClaw's default: openclaw.json in the state dir"),
        port,
        bind: None,
        unit: None,
        other_units: Vec::new(),
        not_copied: Vec::new(),
        unit_token: None,
        problems,
    }
}

/// The setup a unit runs: its profile, state dir, config and port as the gateway would see them.
fn setup_from_unit(home: &Home, path: &Path, scope: UnitScope) -> Option<Setup> {
    let name = path.file_name()?.to_str()?.to_string();
    let by_name = unit_profile(&name)?;
    let mut problems = Vec::new();
    let unit_home = match &scope {
        UnitScope::User { .. } => home.os_home.clone(),
        UnitScope::System => PathBuf::from("/root"),
    };
    let unit = match crate::fsx::read_regular(path, MAX_UNIT_BYTES) {
        Ok(text) => match parse_unit(&text, &unit_home) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("unit {}: {e}", path.display()));
                UnitFile::default()
            }
        },
        Err(e) => {
            problems.push(format!("cannot read unit {}: {e}", path.display()));
            UnitFile::default()
        }
    };
    let mut env: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (k, v) in &unit.environment {
        env.insert(
            k.clone(),
            (v.clone(), format!("unit {name}: Environment={k}")),
        );
    }
    // systemd: the files' settings override Environment=.
    for (file, optional) in &unit.environment_files {
        match crate::fsx::read_regular(file, MAX_UNIT_BYTES) {
            Ok(text) => {
                for (k, v) in parse_env_file(&text) {
                    let at = format!("{} (EnvironmentFile of {name})", file.display());
                    env.insert(k, (v, at));
                }
            }
            Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!(
                "EnvironmentFile {} of unit {name}: {e}",
                file.display()
            )),
        }
    }
    let flags = exec_flags(&unit.exec_start);
    let get = |k: &str| env.get(k).filter(|(v, _)| !v.is_empty()).cloned();

    let profile = match (&flags.profile, get("OPENCLAW_PROFILE")) {
        (Some(p), _) => from(Some(p.clone()), format!("unit {name}: ExecStart --profile")),
        (None, Some((p, at))) => from(Some(p), at),
        (None, None) => from(by_name, format!("unit name {name}")),
    };
    let profile = Found {
        value: profile.value.filter(|p| !p.eq_ignore_ascii_case("default")),
        from: profile.from,
    };
    let os_home = get("HOME").map_or(unit_home.clone(), |(h, _)| PathBuf::from(h));
    let oc_home = match get("OPENCLAW_HOME") {
        Some((h, _)) => expand_tilde(&h, &os_home),
        None => os_home.clone(),
    };
    let state_dir = match get("OPENCLAW_STATE_DIR") {
        Some((d, at)) => from(expand_tilde(&d, &oc_home), at),
        None => from(
            oc_home.join(match &profile.value {
                Some(p) => format!(".openclaw-{p}"),
                None => ".openclaw".to_string(),
            }),
            format!(
                "OpenClaw's default for the unit's profile under {}",
                oc_home.display()
            ),
        ),
    };
    let config_path = match get("OPENCLAW_CONFIG_PATH") {
        Some((c, at)) => from(expand_tilde(&c, &oc_home), at),
        None => from(
            state_dir.value.join("openclaw.json"),
            "OpenClaw's default: openclaw.json in the state dir",
        ),
    };
    let port = match (flags.port, get("OPENCLAW_GATEWAY_PORT")) {
        (Some(p), _) => from(p, format!("unit {name}: ExecStart --port")),
        (None, Some((p, at))) => match p.trim().parse::<u16>() {
            Ok(p) if p > 0 => from(p, at),
            _ => {
                problems.push(format!("{at}: {p:?} is not a port"));
                config_port(&config_path.value, profile.value.as_deref(), &mut problems)
            }
        },
        (None, None) => config_port(&config_path.value, profile.value.as_deref(), &mut problems),
    };
    let not_copied = env
        .keys()
        .filter(|k| !UNIT_ONLY_ENV.contains(&k.as_str()))
        .cloned()
        .collect();
    Some(Setup {
        home: Home {
            os_home,
            ..home.clone()
        },
        profile,
        state_dir,
        config_path,
        port,
        bind: flags.bind,
        unit: Some(FoundUnit {
            name,
            path: path.to_path_buf(),
            scope,
        }),
        other_units: Vec::new(),
        unit_token: get("OPENCLAW_GATEWAY_TOKEN")
            .map(|(t, _)| Secret(t.trim().to_string()))
            .filter(|t| !t.0.is_empty()),
        not_copied,
        problems,
    })
}

fn expand_tilde(p: &str, home: &Path) -> PathBuf {
    let p = p.trim();
    let path = match p.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    };
    without_dots(&path)
}

/// One proposed profile.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The instance name (the file is `NAME.yaml`).
    pub name: String,
    /// The profile's text.
    pub yaml: String,
}

/// Instance names for the setups: the OpenClaw profile (`default` for the unnamed one), prefixed
/// with the user where two homes have the same profile, numbered if still taken.
pub fn names(setups: &[Setup]) -> Vec<String> {
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for s in setups {
        let base = s.profile.value.clone().unwrap_or_else(|| "default".into());
        let mut name = base.clone();
        if taken.contains(&name) {
            let user: String = s
                .home
                .user
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            name = format!("{user}-{base}");
        }
        let mut n = 2;
        let stem = name.clone();
        while taken.contains(&name) || name.parse::<InstanceName>().is_err() {
            name = format!("{stem}-{n}");
            n += 1;
            if n > 1000 {
                name = format!("openclaw-{}", out.len() + 1);
                break;
            }
        }
        taken.insert(name.clone());
        out.push(name);
    }
    out
}

fn quoted(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// The profile text for a setup. `daemon_home` is the HOME the daemon would give the gateway: a
/// setup of another home sets its own.
pub fn profile_yaml(s: &Setup, daemon_home: Option<&Path>) -> String {
    let mut y = String::new();
    let source = match &s.unit {
        Some(u) => format!("{} and {}", s.state_dir.value.display(), u.describe()),
        None => s.state_dir.value.display().to_string(),
    };
    let _ = writeln!(y, "# Imported by `openclawctl import` from {source}.");
    let _ = writeln!(
        y,
        "openclaw_profile: {}",
        s.profile.value.as_deref().unwrap_or("default")
    );
    let _ = writeln!(
        y,
        "state_dir: {}",
        quoted(&s.state_dir.value.display().to_string())
    );
    let _ = writeln!(
        y,
        "config_path: {}",
        quoted(&s.config_path.value.display().to_string())
    );
    let _ = writeln!(y, "port: {}", s.port.value);
    if let Some(bind) = &s.bind {
        let _ = writeln!(
            y,
            "command: [openclaw, gateway, run, --bind, {}]",
            quoted(bind)
        );
    }
    if daemon_home.is_none_or(|h| !same_dir(h, &s.home.os_home)) {
        let _ = writeln!(
            y,
            "env:\n  HOME: {}",
            quoted(&s.home.os_home.display().to_string())
        );
    }
    // As the shipped profiles: Node gateways starting together on a small host take 10-30 s each.
    let _ = writeln!(
        y,
        "health:\n  # Several gateways starting at once on a small machine take a while (about 10-30 s each).\n  start_deadline: 120s"
    );
    if s.unit_token.is_some() {
        let _ = writeln!(
            y,
            "# The token OpenClaw's unit gave this gateway is kept (import --write puts it in the state dir's\n# .openclaw-supervisor.token, mode 0600), so its clients keep working; it is never copied here."
        );
        let _ = writeln!(y, "gateway_token: generate");
    } else {
        let _ = writeln!(
            y,
            "# Until this is uncommented the gateway takes its token from its config file (gateway.auth.token)\n# or makes one at run time; uncommented, the supervisor makes one of its own for it."
        );
        let _ = writeln!(y, "# gateway_token: generate");
    }
    y
}

/// `import`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The supervisor's profiles dir.
    pub config_dir: PathBuf,
    /// The homes to look in; empty: the defaults (see [`default_homes`]).
    pub homes: Vec<PathBuf>,
    /// Where system units live (`/etc/systemd/system`).
    pub system_units: PathBuf,
    /// Write the profiles.
    pub write: bool,
    /// Write them even if the check fails.
    pub force: bool,
}

/// The homes `import` looks in without `--home`: OpenClaw's home for this user (`OPENCLAW_HOME`,
/// else `HOME`), and as root every home of /etc/passwd that exists.
pub fn default_homes() -> Vec<Home> {
    let mut out: Vec<Home> = Vec::new();
    let mine = std::env::var("OPENCLAW_HOME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .map(|h| {
            let home = std::env::var("HOME").unwrap_or_default();
            expand_tilde(&h, Path::new(&home))
        })
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
        });
    if let Some(dir) = mine {
        let mut home = Home::of_dir(&dir);
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            home.os_home = PathBuf::from(h);
        }
        out.push(home);
    }
    if crate::paths::is_root() {
        if let Ok(passwd) = crate::fsx::read_regular(Path::new("/etc/passwd"), MAX_UNIT_BYTES) {
            for line in passwd.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() < 7 {
                    continue;
                }
                let (Some(uid), dir) = (f[2].parse::<u32>().ok(), Path::new(f[5])) else {
                    continue;
                };
                if dir.as_os_str().is_empty() || dir == Path::new("/") || !dir.is_dir() {
                    continue;
                }
                if out
                    .iter()
                    .any(|h| same_dir(&h.dir, dir) || same_dir(&h.os_home, dir))
                {
                    continue;
                }
                out.push(Home {
                    dir: dir.to_path_buf(),
                    os_home: dir.to_path_buf(),
                    uid,
                    user: f[0].to_string(),
                });
            }
        }
    }
    out
}

/// `openclawctl import`: prints the proposals, the check of the set, the commands that disable the
/// competing units; with `--write`, writes the profiles. Exit 1 when the check fails (then
/// `--write` writes nothing unless `--force`), 0 otherwise.
pub fn run(opts: &Options) -> ExitCode {
    let homes: Vec<Home> = if opts.homes.is_empty() {
        default_homes()
    } else {
        opts.homes
            .iter()
            .map(|d| Home::of_dir(&crate::profile::paths::absolute(d)))
            .collect()
    };
    let dir = crate::profile::paths::absolute(&opts.config_dir);
    let setups = discover(&homes, &opts.system_units);
    let mut out = String::new();
    if setups.is_empty() {
        let where_: Vec<String> = homes.iter().map(|h| h.dir.display().to_string()).collect();
        let _ = writeln!(
            out,
            "no OpenClaw setup found (looked for ~/.openclaw, ~/.openclaw-* and openclaw-gateway*.service units in {} and {})",
            where_.join(", "),
            opts.system_units.display()
        );
        print!("{out}");
        return ExitCode::SUCCESS;
    }

    // The profiles there are now, and which setups they already cover.
    let existing = profile::load::read_dir(&dir);
    let env = |var: &str| std::env::var(var).ok();
    let resolved: Vec<profile::Profile> = existing
        .files
        .iter()
        .filter_map(|pf| profile::resolve::resolve(pf, &env).profile)
        .collect();
    let daemon_home = std::env::var("HOME").ok().map(PathBuf::from);
    let names = names(&setups);
    let mut proposals = Vec::new();
    let _ = writeln!(out, "Found {} OpenClaw setup(s):", setups.len());
    for (name, s) in names.into_iter().zip(setups) {
        let _ = writeln!(out);
        if let Some(p) = resolved
            .iter()
            .find(|p| same_dir(&p.state_dir.value, &s.state_dir.value))
        {
            let _ = writeln!(
                out,
                "{}: already imported as {} ({})",
                s.state_dir.value.display(),
                p.name,
                p.file.display()
            );
            proposals.push((None, s));
            continue;
        }
        let file = dir.join(format!("{name}.yaml"));
        describe_setup(&mut out, &name, &file, &s);
        if file.exists() {
            let _ = writeln!(
                out,
                "  skipped: {} exists and is never overwritten; rename it or import this setup by hand",
                file.display()
            );
            proposals.push((None, s));
            continue;
        }
        let yaml = profile_yaml(&s, daemon_home.as_deref());
        let _ = writeln!(out, "--- {}", file.display());
        out.push_str(&yaml);
        let _ = writeln!(out, "---");
        proposals.push((Some(Proposal { name, yaml }), s));
    }

    // The check of the existing profiles plus the proposals: what `check` will say once written.
    let mut files: Vec<ProfileFile> = existing.files.clone();
    let mut diags = existing.diagnostics.clone();
    for p in proposals.iter().filter_map(|(p, _)| p.as_ref()) {
        let file = dir.join(format!("{}.yaml", p.name));
        match profile::load::parse_profile(&file, &p.yaml) {
            Ok(raw) => files.push(ProfileFile {
                file,
                text: p.yaml.clone(),
                raw,
            }),
            Err(mut e) => diags.append(&mut e),
        }
    }
    let count = files.len() + (existing.count - existing.files.len());
    let mut plan_profiles = Vec::new();
    for pf in &files {
        let mut r = profile::resolve::resolve(pf, &env);
        diags.append(&mut r.diagnostics);
        plan_profiles.extend(r.profile);
    }
    diags.extend(profile::check::check(&plan_profiles));
    let mut report = profile::Report {
        diagnostics: diags,
        profiles: count,
    };
    report.sort();
    let _ = writeln!(out, "\nCheck of {} with these profiles:", dir.display());
    let _ = write!(out, "{report}");
    let _ = writeln!(out, "{}", report.summary(&dir));

    let _ = writeln!(
        out,
        "\nTokens: no token of a unit is copied into a profile (profiles are world-readable). A unit's OPENCLAW_GATEWAY_TOKEN is kept, with --write, in the setup's state dir (.openclaw-supervisor.token, 0600) and given to that gateway only (gateway_token: generate); a gateway without one keeps its config file's token."
    );

    let to_write: Vec<(&Proposal, &Setup)> = proposals
        .iter()
        .filter_map(|(p, s)| Some((p.as_ref()?, s)))
        .collect();
    let mut failed = !report.ok();
    if opts.write {
        if failed && !opts.force {
            let _ = writeln!(
                out,
                "\nnothing written: the check failed; change the setups (or pass --force to write the profiles anyway and edit them)"
            );
        } else {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                let _ = writeln!(out, "\nerror: cannot create {}: {e}", dir.display());
                print!("{out}");
                return ExitCode::from(super::EXIT_CHECK_FAILED);
            }
            let _ = writeln!(out);
            for (p, setup) in &to_write {
                let file = dir.join(format!("{}.yaml", p.name));
                match write_new(&file, &p.yaml) {
                    Ok(()) => {
                        let _ = writeln!(out, "wrote {}", file.display());
                        if let Some(t) = &setup.unit_token {
                            let state_dir = &setup.state_dir.value;
                            let kept = crate::supervise::token::keep(state_dir, &t.0);
                            let at = crate::supervise::token::path(state_dir);
                            let _ = match kept {
                                Ok(true) => writeln!(
                                    out,
                                    "  kept the unit's gateway token in {} (mode 0600)",
                                    at.display()
                                ),
                                Ok(false) => writeln!(
                                    out,
                                    "  {} exists: the instance keeps the token there, not the unit's",
                                    at.display()
                                ),
                                Err(e) => {
                                    failed = true;
                                    writeln!(out, "  error: cannot keep the unit's gateway token: {e}")
                                }
                            };
                        }
                    }
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(out, "error: cannot write {}: {e}", file.display());
                    }
                }
            }
        }
    } else if !to_write.is_empty() {
        let _ = writeln!(
            out,
            "\nDry run: nothing written; run with --write to write the profiles."
        );
    }

    let me = nix::unistd::geteuid().as_raw();
    let units: Vec<&FoundUnit> = proposals
        .iter()
        .flat_map(|(_, s)| s.unit.iter().chain(&s.other_units))
        .collect();
    if !units.is_empty() {
        let _ = writeln!(
            out,
            "\nOpenClaw's own units would fight the supervisor for these ports and state dirs; disable them before the supervisor starts the instances:"
        );
        for u in units {
            let _ = writeln!(out, "  {}", u.disable_command(me));
        }
    }
    print!("{out}");
    if failed {
        ExitCode::from(super::EXIT_CHECK_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn describe_setup(out: &mut String, name: &str, file: &Path, s: &Setup) {
    let _ = writeln!(out, "{name} ({})", file.display());
    let mut rows: Vec<[String; 3]> = vec![
        [
            "openclaw profile".into(),
            s.profile.value.clone().unwrap_or_else(|| "default".into()),
            s.profile.from.clone(),
        ],
        [
            "state dir".into(),
            s.state_dir.value.display().to_string(),
            s.state_dir.from.clone(),
        ],
        [
            "config file".into(),
            s.config_path.value.display().to_string(),
            s.config_path.from.clone(),
        ],
        ["port".into(), s.port.value.to_string(), s.port.from.clone()],
    ];
    for u in s.unit.iter().chain(&s.other_units) {
        rows.push(["unit".into(), u.name.clone(), u.describe()]);
    }
    out.push_str(&super::align(&rows, "  "));
    let me = nix::unistd::geteuid().as_raw();
    if s.home.uid != me {
        let _ = writeln!(
            out,
            "  note: the supervisor runs the gateway as its own user ({}), not as {}: files it makes in {} will be {}'s",
            user_name(me),
            s.home.user,
            s.state_dir.value.display(),
            user_name(me)
        );
    }
    if !s.not_copied.is_empty() {
        let _ = writeln!(
            out,
            "  not copied from the unit's environment: {} (add what the gateway needs to the profile's env:, never a token)",
            s.not_copied.join(", ")
        );
    }
    for p in &s.problems {
        let _ = writeln!(out, "  warning: {p}");
    }
}

/// Writes a new file, 0644, failing if anything is at its name.
fn write_new(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(file)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> PathBuf {
        PathBuf::from("/home/ann")
    }

    #[test]
    fn words_follow_systemd_quoting() {
        let w = split_words(
            r#"/usr/bin/node "/opt/open claw/index.js" gateway --port 19001 'a b' x\ y 100%% %h/x"#,
            &home(),
        )
        .unwrap();
        assert_eq!(
            w,
            [
                "/usr/bin/node",
                "/opt/open claw/index.js",
                "gateway",
                "--port",
                "19001",
                "a b",
                "x y",
                "100%",
                "/home/ann/x"
            ]
        );
        assert_eq!(
            split_words(r#"A="b c" D=e"#, &home()).unwrap(),
            ["A=b c", "D=e"]
        );
        assert!(split_words("\"open", &home()).is_err());
    }

    #[test]
    fn a_unit_as_openclaw_writes_it_parses() {
        let text = r#"[Unit]
Description=OpenClaw Gateway (profile: rescue, v2026.9.6)
Environment=IGNORED=1

[Service]
ExecStart=/usr/bin/node /usr/lib/node_modules/openclaw/dist/index.js --profile rescue gateway \
  --port 19001 --bind loopback
Restart=always
Environment=HOME=/home/ann
Environment="OPENCLAW_STATE_DIR=/home/ann/.openclaw-rescue" OPENCLAW_GATEWAY_TOKEN=s3cr%%t
Environment=OPENCLAW_SERVICE_MARKER=openclaw
EnvironmentFile=-%h/.openclaw-rescue/.env
EnvironmentFile=/etc/openclaw.env
[Install]
WantedBy=default.target
"#;
        let u = parse_unit(text, &home()).unwrap();
        let f = exec_flags(&u.exec_start);
        assert_eq!(f.profile.as_deref(), Some("rescue"));
        assert_eq!(f.port, Some(19001));
        assert_eq!(f.bind.as_deref(), Some("loopback"));
        assert_eq!(
            u.environment,
            [
                ("HOME".to_string(), "/home/ann".to_string()),
                (
                    "OPENCLAW_STATE_DIR".to_string(),
                    "/home/ann/.openclaw-rescue".to_string()
                ),
                ("OPENCLAW_GATEWAY_TOKEN".to_string(), "s3cr%t".to_string()),
                (
                    "OPENCLAW_SERVICE_MARKER".to_string(),
                    "openclaw".to_string()
                ),
            ]
        );
        assert_eq!(
            u.environment_files,
            [
                (PathBuf::from("/home/ann/.openclaw-rescue/.env"), true),
                (PathBuf::from("/etc/openclaw.env"), false)
            ]
        );
    }

    #[test]
    fn flags_take_both_spellings() {
        let argv: Vec<String> = ["openclaw", "--profile=x", "gateway", "run", "--port=7"]
            .map(String::from)
            .into();
        assert_eq!(
            exec_flags(&argv),
            ExecFlags {
                profile: Some("x".into()),
                port: Some(7),
                bind: None
            }
        );
        let argv: Vec<String> = ["openclaw", "--dev", "gateway"].map(String::from).into();
        assert_eq!(exec_flags(&argv).profile.as_deref(), Some("dev"));
    }

    #[test]
    fn env_files_read_like_systemd() {
        let e = parse_env_file("# c\n; c\nA=1\nexport B=\"two words\"\nC='x'\nbad line\n");
        assert_eq!(
            e,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "x".to_string())
            ]
        );
    }

    #[test]
    fn unit_names_give_the_profile() {
        assert_eq!(unit_profile("openclaw-gateway.service"), Some(None));
        assert_eq!(
            unit_profile("openclaw-gateway-rescue.service"),
            Some(Some("rescue".into()))
        );
        assert_eq!(
            unit_profile("clawdbot-gateway-old.service"),
            Some(Some("old".into()))
        );
        assert_eq!(unit_profile("openclaw-gatewayx.service"), None);
        assert_eq!(unit_profile("openclaw-gateway-a.b.service"), None);
        assert_eq!(unit_profile("openclaw-supervisor.service"), None);
    }

    #[test]
    fn disable_commands_fit_who_runs_them() {
        let u = |scope| FoundUnit {
            name: "openclaw-gateway-rescue.service".into(),
            path: PathBuf::new(),
            scope,
        };
        let ann = UnitScope::User {
            user: "ann".into(),
            uid: 1000,
        };
        assert_eq!(
            u(ann.clone()).disable_command(0),
            "systemctl --user -M ann@ disable --now openclaw-gateway-rescue.service"
        );
        assert_eq!(
            u(ann).disable_command(1000),
            "systemctl --user disable --now openclaw-gateway-rescue.service"
        );
        assert_eq!(
            u(UnitScope::System).disable_command(0),
            "systemctl disable --now openclaw-gateway-rescue.service"
        );
    }

    fn fixture_home(root: &Path) -> Home {
        Home {
            dir: root.join("home"),
            os_home: root.join("home"),
            uid: 1000,
            user: "ann".into(),
        }
    }

    #[test]
    fn discovery_merges_dirs_and_units_and_the_unit_wins() {
        let t = tempfile::tempdir().unwrap();
        let h = fixture_home(t.path());
        let w = |rel: &str, text: &str| {
            let p = h.dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w(".openclaw/openclaw.json", "{gateway: {port: 18789}}");
        w(
            ".openclaw-rescue/openclaw.json",
            "{\n gateway: {\n port: 19001 } }",
        );
        w(".openclaw-nocfg/keep", "");
        w(".openclaw-bad.name/keep", "");
        let hd = h.dir.display();
        w(
            ".config/systemd/user/openclaw-gateway-rescue.service",
            &format!(
                "[Service]\nExecStart=/x/openclaw --profile rescue gateway\nEnvironment=OPENCLAW_GATEWAY_PORT=19500 OPENCLAW_GATEWAY_TOKEN=t SLACK_KEY=k\nEnvironmentFile=-{hd}/.openclaw-rescue/.env\nEnvironmentFile=-{hd}/.missing\n"
            ),
        );
        w(".openclaw-rescue/.env", "OPENCLAW_GATEWAY_PORT=19600\n");
        let system = t.path().join("system");
        let setups = discover(std::slice::from_ref(&h), &system);
        let by: BTreeMap<Option<String>, &Setup> = setups
            .iter()
            .map(|s| (s.profile.value.clone(), s))
            .collect();
        assert_eq!(setups.len(), 3, "{setups:#?}");
        assert_eq!(by[&None].port.value, 18789);
        assert!(by[&None].port.from.contains("gateway.port"));
        let nocfg = by[&Some("nocfg".to_string())];
        assert_eq!(nocfg.port.value, openclaw::profile_port("nocfg"));
        let rescue = by[&Some("rescue".to_string())];
        // The environment file overrides Environment=, and both override the config file.
        assert_eq!(rescue.port.value, 19600);
        assert!(rescue.port.from.contains(".env"), "{}", rescue.port.from);
        assert_eq!(rescue.state_dir.value, h.dir.join(".openclaw-rescue"));
        assert_eq!(
            rescue.unit.as_ref().unwrap().name,
            "openclaw-gateway-rescue.service"
        );
        assert_eq!(rescue.not_copied, ["OPENCLAW_GATEWAY_TOKEN", "SLACK_KEY"]);
        assert!(rescue.problems.is_empty(), "{:?}", rescue.problems);
    }

    #[test]
    fn a_unit_state_dir_from_its_environment() {
        let t = tempfile::tempdir().unwrap();
        let h = fixture_home(t.path());
        let units = h.dir.join(".config/systemd/user");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(
            units.join("openclaw-gateway.service"),
            "[Service]\nExecStart=openclaw gateway --port 18000\nEnvironment=OPENCLAW_STATE_DIR=~/elsewhere OPENCLAW_CONFIG_PATH=/etc/oc.json\n",
        )
        .unwrap();
        let setups = discover(std::slice::from_ref(&h), &t.path().join("none"));
        assert_eq!(setups.len(), 1);
        let s = &setups[0];
        assert_eq!(s.profile.value, None);
        assert_eq!(s.state_dir.value, h.dir.join("elsewhere"));
        assert_eq!(s.config_path.value, PathBuf::from("/etc/oc.json"));
        assert_eq!(s.port.value, 18000);
    }

    #[test]
    fn openclaw_home_holds_the_state_and_home_the_units() {
        let t = tempfile::tempdir().unwrap();
        let h = Home {
            dir: t.path().join("oc"),
            os_home: t.path().join("home"),
            uid: 1000,
            user: "ann".into(),
        };
        std::fs::create_dir_all(h.dir.join(".openclaw-main")).unwrap();
        // A stray state dir in the OS home is not OpenClaw's while OPENCLAW_HOME is set.
        std::fs::create_dir_all(h.os_home.join(".openclaw-stray")).unwrap();
        let units = h.os_home.join(".config/systemd/user");
        std::fs::create_dir_all(&units).unwrap();
        // An old clawdbot unit beside the new one, both for main: one setup, both units compete.
        let oc = h.dir.display();
        for name in ["openclaw-gateway-main", "clawdbot-gateway-main"] {
            std::fs::write(
                units.join(format!("{name}.service")),
                format!("[Service]\nExecStart=openclaw gateway --port 18000\nEnvironment=OPENCLAW_HOME={oc}\n"),
            )
            .unwrap();
        }
        let setups = discover(std::slice::from_ref(&h), &t.path().join("none"));
        assert_eq!(setups.len(), 1, "{setups:#?}");
        let s = &setups[0];
        assert_eq!(s.state_dir.value, h.dir.join(".openclaw-main"));
        assert_eq!(s.port.value, 18000);
        assert_eq!(
            s.unit.as_ref().unwrap().name,
            "clawdbot-gateway-main.service"
        );
        assert_eq!(s.other_units.len(), 1);
        assert_eq!(s.other_units[0].name, "openclaw-gateway-main.service");
    }

    #[test]
    fn names_are_unique_and_valid() {
        let t = tempfile::tempdir().unwrap();
        let mk = |user: &str, profile: Option<&str>| {
            let mut s = setup_from_dir(
                &Home {
                    dir: t.path().to_path_buf(),
                    os_home: t.path().to_path_buf(),
                    uid: 1,
                    user: user.into(),
                },
                profile.map(String::from),
                t.path(),
                "x",
            );
            s.home.user = user.into();
            s
        };
        let n = names(&[
            mk("ann", Some("rescue")),
            mk("bob.b", Some("rescue")),
            mk("ann", None),
            mk("bob.b", Some("rescue")),
        ]);
        assert_eq!(n, ["rescue", "bob-b-rescue", "default", "bob-b-rescue-2"]);
    }
}
