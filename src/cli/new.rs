//! `openclawctl new NAME`: writes a profile for one more gateway, on a block of ports that is free
//! now and stays free: no profile of the config dir claims any port of it, no process of the host
//! listens in it, and the kernel does not hand its ports out as ephemeral ones. Then it checks the
//! whole dir with the new file (and takes the file back if the check fails), and with `--start`
//! asks the daemon to reload.
//!
//! The port search ([`pick`], [`refusals`]) is pure: it is given the claims, the listeners and the
//! ephemeral range, so it is tested without the host.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::profile::ephemeral::{self, Ephemeral};
use crate::profile::openclaw::{self, BLOCK_SPAN, DEFAULT_GATEWAY_PORT, MAX_BLOCK_BASE};
use crate::profile::paths::{absolute, without_dots};
use crate::profile::{self, InstanceName, Plan};

/// What `openclawctl new` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The instance name (the file is `NAME.yaml`).
    pub name: String,
    /// A gateway port chosen by the operator, checked rather than searched for.
    pub port: Option<u16>,
    /// An existing OpenClaw profile whose state dir and config file the instance takes over.
    pub from_profile: Option<String>,
    /// The profiles directory.
    pub config_dir: PathBuf,
    /// Reload the daemon afterwards, so that it starts the instance.
    pub start: bool,
    /// Where the daemon answers (for `--start`).
    pub target: super::remote::Target,
}

/// A port range some profile claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// First port.
    pub start: u32,
    /// Last port, inclusive.
    pub end: u32,
    /// The instance that claims it.
    pub instance: String,
    /// What it is for (`browser CDP range`).
    pub what: String,
    /// Where it is decided (`file:line`).
    pub at: String,
}

/// A process listening on a port of the host now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The port.
    pub port: u16,
    /// Its socket, `socket:[inode]`, to find the process when one must be named.
    pub socket: String,
}

/// Why a gateway port will not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The block would pass 65535 (OpenClaw then falls back onto the default instance's ports).
    PastTop,
    /// Another profile claims ports of the block.
    Claimed(Claim),
    /// A process listens on a port of the block.
    Listening(Listener),
    /// Ports of the block lie in the kernel's ephemeral range.
    Ephemeral(Vec<(u32, u32)>),
}

/// The ports a gateway on `g` claims: `g..=g+110` (the derivation's every port, see
/// `profile::openclaw::derive_ports`).
fn block(g: u16) -> (u32, u32) {
    (u32::from(g), u32::from(g) + BLOCK_SPAN - 1)
}

/// Every reason why gateway port `g` will not do; empty when its block is free.
pub fn refusals(
    g: u16,
    claims: &[Claim],
    listeners: &[Listener],
    eph: Option<&Ephemeral>,
) -> Vec<Refusal> {
    if u32::from(g) > MAX_BLOCK_BASE {
        return vec![Refusal::PastTop];
    }
    let (lo, hi) = block(g);
    let mut out: Vec<Refusal> = claims
        .iter()
        .filter(|c| c.start <= hi && c.end >= lo)
        .cloned()
        .map(Refusal::Claimed)
        .collect();
    out.extend(
        listeners
            .iter()
            .filter(|l| (lo..=hi).contains(&u32::from(l.port)))
            .cloned()
            .map(Refusal::Listening),
    );
    if let Some(e) = eph {
        let o = e.overlap(lo, hi);
        if !o.is_empty() {
            out.push(Refusal::Ephemeral(o));
        }
    }
    out
}

/// The lowest gateway port, from OpenClaw's default 18789 up in steps of a whole block, whose block
/// is free (see [`refusals`]); `None` when no block up to 65535 is.
pub fn pick(claims: &[Claim], listeners: &[Listener], eph: Option<&Ephemeral>) -> Option<u16> {
    (u32::from(DEFAULT_GATEWAY_PORT)..=MAX_BLOCK_BASE)
        .step_by(BLOCK_SPAN as usize)
        .filter_map(|g| u16::try_from(g).ok())
        .find(|&g| refusals(g, claims, listeners, eph).is_empty())
}

/// Every port claim of the profiles, as [`refusals`] weighs them.
pub fn claims_of(plan: &Plan) -> Vec<Claim> {
    plan.profiles
        .iter()
        .flat_map(|p| {
            p.ports.iter().map(|c| Claim {
                start: c.start,
                end: c.end,
                instance: p.name.to_string(),
                what: c.describe(),
                at: c.at.to_string(),
            })
        })
        .collect()
}

/// A refusal as one line: who claims or holds what.
fn describe(r: &Refusal, g: u16, eph: Option<&Ephemeral>) -> String {
    let (lo, hi) = block(g);
    match r {
        Refusal::PastTop => format!(
            "its block {lo}-{hi} passes 65535 (OpenClaw would fall back onto the default instance's ports): use {MAX_BLOCK_BASE} or below"
        ),
        Refusal::Claimed(c) => format!(
            "its block {lo}-{hi} meets {}'s {} {} (claimed at {})",
            c.instance,
            c.what,
            if c.start == c.end {
                c.start.to_string()
            } else {
                format!("{}-{}", c.start, c.end)
            },
            c.at
        ),
        Refusal::Listening(l) => {
            let holder = holder(l);
            format!("{holder} listens on port {} of its block {lo}-{hi}", l.port)
        }
        Refusal::Ephemeral(o) => format!(
            "ports {} of its block {lo}-{hi} lie inside the kernel's ephemeral range {} ({}): any outgoing connection may take them first",
            ephemeral::spans(o),
            eph.map_or_else(String::new, |e| e.to_string()),
            ephemeral::RANGE_FILE
        ),
    }
}

/// One line per reason, the claims of one instance folded into its first ("and 7 more").
fn refusal_lines(all: &[Refusal], g: u16, eph: Option<&Ephemeral>) -> Vec<String> {
    let mut out: Vec<(Option<&str>, String, usize)> = Vec::new();
    for r in all {
        let who = match r {
            Refusal::Claimed(c) => Some(c.instance.as_str()),
            _ => None,
        };
        match out.iter_mut().find(|(w, _, _)| who.is_some() && *w == who) {
            Some(seen) => seen.2 += 1,
            None => out.push((who, describe(r, g, eph), 0)),
        }
    }
    out.into_iter()
        .map(|(who, line, more)| match (who, more) {
            (Some(who), 1..) => format!("  {line} (and {more} more of {who}'s claims)"),
            _ => format!("  {line}"),
        })
        .collect()
}

/// `process 4242 (node server.js)`, or `a process` when it cannot be found (another user's, gone).
fn holder(l: &Listener) -> String {
    let inode = l
        .socket
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<u64>().ok());
    match inode.map(|i| crate::supervise::ownership::holder_of(i, l.port)) {
        Some(h) if h.pid > 0 => format!("process {} ({})", h.pid, h.command),
        _ => "a process".to_string(),
    }
}

/// The host's listening sockets now.
fn listeners() -> Vec<Listener> {
    crate::supervise::tree::all_listeners()
        .into_iter()
        .map(|(port, socket)| Listener { port, socket })
        .collect()
}

/// An existing OpenClaw profile, as `openclaw --profile P` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The profile name (`default` for OpenClaw's unnamed one).
    pub profile: String,
    /// Its state dir.
    pub state_dir: PathBuf,
    /// Its config file.
    pub config_path: PathBuf,
}

/// Where `openclaw --profile P` keeps its state and config, through `env`: `OPENCLAW_STATE_DIR`
/// when set (OpenClaw keeps it over the profile's), else `~/.openclaw-P` (`~/.openclaw` for
/// `default`), `~` being `OPENCLAW_HOME` (itself `~`-expanded) else `HOME`; the config file
/// `OPENCLAW_CONFIG_PATH` when set, else `openclaw.json` in the state dir.
pub fn locate_existing(
    profile: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Existing, String> {
    let set = |v: &str| {
        env(v)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let os_home = set("HOME");
    let home = match set("OPENCLAW_HOME") {
        Some(h) => Some(
            profile::resolve::expand(&h, os_home.as_deref(), &|_| None)
                .map_err(|e| format!("OPENCLAW_HOME: {e}"))?
                .display()
                .to_string(),
        ),
        None => os_home,
    };
    let expand = |what: &str, text: &str| {
        profile::resolve::expand(text, home.as_deref(), &|_| None)
            .map(|p| without_dots(&absolute(&p)))
            .map_err(|e| format!("{what}: {e}"))
    };
    let state_dir = match set("OPENCLAW_STATE_DIR") {
        Some(s) => expand("OPENCLAW_STATE_DIR", &s)?,
        None => {
            let home = home.as_deref().ok_or(
                "neither OPENCLAW_HOME nor HOME is set, so OpenClaw's state dir cannot be found",
            )?;
            Path::new(home).join(if profile == "default" {
                ".openclaw".to_string()
            } else {
                format!(".openclaw-{profile}")
            })
        }
    };
    let config_path = match set("OPENCLAW_CONFIG_PATH") {
        Some(c) => expand("OPENCLAW_CONFIG_PATH", &c)?,
        None => state_dir.join("openclaw.json"),
    };
    Ok(Existing {
        profile: profile.to_string(),
        state_dir,
        config_path,
    })
}

/// The profile's text: commented in the style of the shipped ones.
pub fn profile_text(
    name: &str,
    port: Option<u16>,
    shown_port: u16,
    why_port: &str,
    existing: Option<&Existing>,
) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "# The gateway {name}, written by `openclawctl new`. Every key below is optional; see README.md\n\
         # \"Profile reference\" for all keys and their defaults.\n"
    ));
    t.push_str(&format!(
        "# Its block of ports, as `openclawctl ports` shows them ({why_port}):\n"
    ));
    for d in openclaw::derive_ports(shown_port) {
        let span = if d.start == d.end {
            d.start.to_string()
        } else {
            format!("{}-{}", d.start, d.end)
        };
        t.push_str(&format!("#   {span} {}\n", d.role.describe()));
    }
    match existing {
        Some(e) => {
            t.push_str(&format!(
                "# State and config of the existing OpenClaw profile `{}`, as `openclaw --profile {}` finds them.\n",
                e.profile, e.profile
            ));
            if e.profile != name {
                t.push_str(&format!("openclaw_profile: {}\n", e.profile));
            }
            t.push_str(&format!(
                "state_dir: {}\nconfig_path: {}\n",
                yaml_str(&e.state_dir),
                yaml_str(&e.config_path)
            ));
        }
        None => t.push_str(&format!(
            "# State: ~/.openclaw-{name} (OpenClaw's default for the profile `{name}`), config file and\n\
             # workspace in it.\n"
        )),
    }
    match port {
        Some(p) => t.push_str(&format!("port: {p}\n")),
        None => t.push_str(&format!(
            "# port: {shown_port} comes from the config file's gateway.port.\n"
        )),
    }
    t.push_str(
        "# Loopback only; --allow-unconfigured lets a gateway without a config file start.\n\
         command: [openclaw, gateway, run, --bind, loopback, --allow-unconfigured]\n\
         env:\n  NO_COLOR: \"1\"\n\
         health:\n  # A Node gateway takes a while to start on a small machine (about 10-30 s).\n  start_deadline: 120s\n",
    );
    match existing {
        // Its clients know the token of its config file (gateway.auth.token): keep that one.
        Some(_) => t.push_str(
            "# Until this is uncommented the gateway takes its token from its config file (gateway.auth.token)\n\
             # or makes one at run time; uncommented, the supervisor makes one of its own for it.\n\
             # gateway_token: generate\n",
        ),
        None => t.push_str(
            "# A token of its own, made once by the supervisor in the state dir (`openclawctl token NAME`).\n\
             gateway_token: generate\n",
        ),
    }
    t
}

/// A path as a YAML scalar: JSON's double-quoted string is one.
fn yaml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap_or_default()
}

/// What went wrong, for the one `error:` line; exit 1.
fn refuse(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(super::EXIT_CHECK_FAILED)
}

/// `openclawctl new NAME [--port N] [--from-profile P] [--config-dir DIR] [--start]`.
pub fn run(opts: &Options) -> ExitCode {
    match write(opts) {
        Err(why) => refuse(why),
        Ok(None) => ExitCode::from(super::EXIT_CHECK_FAILED),
        Ok(Some(_)) if !opts.start => {
            println!(
                "next: `openclawctl reload` (or `new` with --start) has the daemon start {}",
                opts.name
            );
            ExitCode::SUCCESS
        }
        Ok(Some(file)) => start(&opts.target, &opts.name, &file),
    }
}

/// The steps up to the check: the file written and checked (`Some`), or taken back because the
/// check failed (`None`, said), or refused before anything was written (`Err`).
fn write(opts: &Options) -> Result<Option<PathBuf>, String> {
    let name: InstanceName = opts
        .name
        .parse()
        .map_err(|e| format!("instance name {e}"))?;
    let name = name.as_str();
    let dir = without_dots(&absolute(&opts.config_dir));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the config dir {}: {e}", dir.display()))?;
    let before = profile::load(&dir);
    name_is_free(&dir, name, &before)?;
    let existing = match &opts.from_profile {
        None => None,
        Some(p) => Some(existing_profile(p)?),
    };
    let config_port = match &existing {
        Some(e) => gateway_port_of(e)?,
        None => None,
    };

    let claims = claims_of(&before);
    let found = listeners();
    let eph = Ephemeral::read();
    let asked = match (opts.port, &config_port) {
        (Some(p), _) => Some((p, "--port".to_string())),
        (None, Some((p, at))) => Some((*p, format!("gateway.port of {at}"))),
        (None, None) => None,
    };
    let (port, why_port) = match asked {
        Some((p, from)) => {
            let no = refusals(p, &claims, &found, eph.as_ref());
            if !no.is_empty() {
                let lines = refusal_lines(&no, p, eph.as_ref());
                let free = pick(&claims, &found, eph.as_ref()).map_or_else(String::new, |g| {
                    format!("; the lowest free block starts at {g} (leave out --port to take it)")
                });
                return Err(format!(
                    "port {p} ({from}) will not do:\n{}\nnothing written{free}",
                    lines.join("\n")
                ));
            }
            (p, format!("from {from}"))
        }
        None => (
            pick(&claims, &found, eph.as_ref()).ok_or(
                "no block of 111 ports from 18789 to 65535 is free of claims, listeners and the ephemeral range: pick one with --port",
            )?,
            "the lowest free block from 18789 up".to_string(),
        ),
    };
    // A port from the config file stays there: the profile does not repeat it.
    let written_port = match (opts.port, config_port) {
        (None, Some(_)) => None,
        _ => Some(port),
    };
    let text = profile_text(name, written_port, port, &why_port, existing.as_ref());

    let file = dir.join(format!("{name}.yaml"));
    // O_EXCL: a file that appeared meanwhile is not overwritten either.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&file)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    println!("wrote {}", file.display());
    println!(
        "port {port}: {why_port}: no profile claims its block {}-{}, nothing listens in it, and it lies outside the kernel's ephemeral range{}",
        port,
        u32::from(port) + BLOCK_SPAN - 1,
        eph.as_ref().map_or_else(String::new, |e| format!(" {e}"))
    );

    // The check of the whole dir, the new instance the one told to move in a clash.
    let plan = profile::load_marking(&dir, &|p| p.name.as_str() == name);
    let mine: Vec<profile::Profile> = plan
        .profiles
        .iter()
        .filter(|p| p.name.as_str() == name)
        .cloned()
        .collect();
    print!("{}", super::ports_table(&mine, plan.ephemeral.as_ref()));
    print!("{}", plan.report);
    println!("{}", plan.report.summary(&dir));
    if !plan.report.ok() {
        let _ = std::fs::remove_file(&file);
        eprintln!(
            "error: the check above failed with the new profile: removed {} again",
            file.display()
        );
        return Ok(None);
    }
    Ok(Some(file))
}

/// Refuses a name a file of `dir` has (even one that does not parse) or an instance of it has,
/// ignoring case.
fn name_is_free(dir: &Path, name: &str, before: &Plan) -> Result<(), String> {
    let files = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| profile::load::is_profile_file(p))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(f) = files.iter().find(|f| {
        f.file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.eq_ignore_ascii_case(name))
    }) {
        return Err(format!(
            "{} exists: `new` never overwrites a profile; edit it, or pick another name",
            f.display()
        ));
    }
    match before
        .profiles
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
    {
        Some(p) => Err(format!(
            "the instance {} already exists ({}); names are compared ignoring case: pick another name",
            p.name, p.name_at
        )),
        None => Ok(()),
    }
}

/// `--from-profile P`: the profile as OpenClaw finds it in this process's environment; its state
/// dir must exist.
fn existing_profile(p: &str) -> Result<Existing, String> {
    p.parse::<InstanceName>()
        .map_err(|e| format!("--from-profile: OpenClaw profile {e}"))?;
    let e = locate_existing(p, &|v| std::env::var(v).ok())
        .map_err(|why| format!("--from-profile {p}: {why}"))?;
    if e.state_dir.to_str().is_none() || e.config_path.to_str().is_none() {
        return Err(format!(
            "--from-profile {p}: {} or {} is not UTF-8, which a profile cannot hold",
            e.state_dir.display(),
            e.config_path.display()
        ));
    }
    if !e.state_dir.is_dir() {
        return Err(format!(
            "--from-profile {p}: OpenClaw's state dir {} does not exist; set the profile up first (`openclaw --profile {p} setup`), or leave out --from-profile",
            e.state_dir.display()
        ));
    }
    Ok(e)
}

/// The config file's `gateway.port` and its `file:line`, if it sets one.
fn gateway_port_of(e: &Existing) -> Result<Option<(u16, String)>, String> {
    let show = |line: usize| {
        if line > 0 {
            format!("{}:{line}", e.config_path.display())
        } else {
            e.config_path.display().to_string()
        }
    };
    match openclaw::read_config(&e.config_path) {
        Ok(cfg) => Ok(cfg.gateway_port.map(|p| (p.value, show(p.line)))),
        Err(problems) => {
            let list: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", show(p.line), p.message))
                .collect();
            Err(format!(
                "--from-profile: cannot read the config file: {}",
                list.join("; ")
            ))
        }
    }
}

/// `--start`: the daemon's reload, then the instance's status.
fn start(target: &super::remote::Target, name: &str, file: &Path) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return refuse(format!("cannot start a runtime: {e}")),
    };
    println!("reloading the daemon ({target})");
    let r = rt.block_on(super::remote::reload(target, false));
    if r.is_err() {
        eprintln!(
            "note: {} stays written; start the daemon, or run `openclawctl reload` once it runs",
            file.display()
        );
        return super::remote::finish(r);
    }
    match rt.block_on(super::remote::instance_names(target)) {
        Ok(names) if !names.iter().any(|n| n == name) => {
            eprintln!(
                "error: the daemon did not take {name}: it reads another config dir than {} (see `openclawctl version` and its --config-dir)",
                file.parent().map_or_else(String::new, |d| d.display().to_string())
            );
            return ExitCode::from(super::EXIT_CHECK_FAILED);
        }
        Ok(_) => {}
        Err(e) => return super::remote::finish(Err(e)),
    }
    // The reload added the instance and its task starts it; a start waits until it is ready (or
    // says why not), as `openclawctl start` does.
    let r = rt.block_on(super::remote::act(
        target,
        super::remote::Lifecycle::Start,
        vec![name.to_string()],
        false,
        None,
    ));
    super::remote::finish(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(instance: &str, start: u32, end: u32) -> Claim {
        Claim {
            start,
            end,
            instance: instance.to_string(),
            what: "browser CDP range".to_string(),
            at: format!("{instance}.yaml:1"),
        }
    }

    fn listening(port: u16) -> Listener {
        Listener {
            port,
            socket: "socket:[1]".to_string(),
        }
    }

    fn linux_default() -> Ephemeral {
        Ephemeral {
            start: 32768,
            end: 60999,
            reserved: Vec::new(),
        }
    }

    #[test]
    fn a_fresh_host_gets_openclaws_default_port() {
        assert_eq!(pick(&[], &[], Some(&linux_default())), Some(18789));
        assert_eq!(pick(&[], &[], None), Some(18789));
    }

    #[test]
    fn the_search_steps_a_whole_block_past_each_claim() {
        // main 18789-18899: the next block starts at 18900.
        let main = [claim("main", 18789, 18793), claim("main", 18800, 18899)];
        assert_eq!(pick(&main, &[], None), Some(18900));
        // rescue 19001-19111 meets 18900-19010 and 19011-19121.
        let both = [
            claim("main", 18789, 18899),
            claim("rescue", 19001, 19005),
            claim("rescue", 19012, 19111),
        ];
        assert_eq!(pick(&both, &[], None), Some(19122));
    }

    #[test]
    fn a_listener_anywhere_in_the_block_moves_the_choice_on() {
        assert_eq!(pick(&[], &[listening(18789)], None), Some(18900));
        // The last port of the block counts too.
        assert_eq!(pick(&[], &[listening(18899)], None), Some(18900));
        assert_eq!(pick(&[], &[listening(18900)], None), Some(18789));
    }

    #[test]
    fn no_block_is_chosen_in_the_ephemeral_range() {
        let low = Ephemeral {
            start: 18000,
            end: 30000,
            reserved: Vec::new(),
        };
        let g = pick(&[], &[], Some(&low)).unwrap();
        assert!(u32::from(g) > 30000, "{g}");
        assert_eq!(u32::from(g) - 18789, (30000 - 18789) / 111 * 111 + 111);
        // Reserved ports are not the kernel's to take: a block inside them will do.
        let reserved = Ephemeral {
            reserved: vec![(18789, 18899)],
            ..low
        };
        assert_eq!(pick(&[], &[], Some(&reserved)), Some(18789));
    }

    #[test]
    fn no_block_left_is_none() {
        let all = [claim("wide", 1, 65535)];
        assert_eq!(pick(&all, &[], None), None);
    }

    #[test]
    fn a_chosen_port_is_refused_with_every_reason() {
        let claims = [claim("rescue", 19012, 19111)];
        let eph = Ephemeral {
            start: 19100,
            end: 60999,
            reserved: Vec::new(),
        };
        let r = refusals(19050, &claims, &[listening(19060)], Some(&eph));
        assert_eq!(
            r,
            [
                Refusal::Claimed(claims[0].clone()),
                Refusal::Listening(listening(19060)),
                Refusal::Ephemeral(vec![(19100, 19160)]),
            ]
        );
        assert_eq!(refusals(65500, &[], &[], None), [Refusal::PastTop]);
        assert!(refusals(MAX_BLOCK_BASE as u16, &[], &[], None).is_empty());
        assert!(refusals(18789, &claims, &[], Some(&eph)).is_empty());
    }

    #[test]
    fn an_existing_profile_is_found_as_openclaw_finds_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                vars.iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, val)| val.to_string())
            }
        };
        let e = locate_existing("rescue", &env(&[("HOME", "/home/a")])).unwrap();
        assert_eq!(e.state_dir, Path::new("/home/a/.openclaw-rescue"));
        assert_eq!(
            e.config_path,
            Path::new("/home/a/.openclaw-rescue/openclaw.json")
        );
        let e = locate_existing("default", &env(&[("HOME", "/home/a")])).unwrap();
        assert_eq!(e.state_dir, Path::new("/home/a/.openclaw"));
        // OPENCLAW_HOME wins over HOME, and may itself start with ~.
        let e = locate_existing(
            "rescue",
            &env(&[("HOME", "/home/a"), ("OPENCLAW_HOME", "~/oc")]),
        )
        .unwrap();
        assert_eq!(e.state_dir, Path::new("/home/a/oc/.openclaw-rescue"));
        // OPENCLAW_STATE_DIR and OPENCLAW_CONFIG_PATH win over the profile's defaults.
        let e = locate_existing(
            "rescue",
            &env(&[
                ("HOME", "/home/a"),
                ("OPENCLAW_STATE_DIR", "~/s"),
                ("OPENCLAW_CONFIG_PATH", "/etc/oc.json"),
            ]),
        )
        .unwrap();
        assert_eq!(e.state_dir, Path::new("/home/a/s"));
        assert_eq!(e.config_path, Path::new("/etc/oc.json"));
        assert!(locate_existing("rescue", &env(&[])).is_err());
    }

    #[test]
    fn the_written_profile_parses_and_names_its_ports() {
        let text = profile_text("ops", Some(19122), 19122, "chosen", None);
        let raw: crate::profile::raw::RawProfile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(raw.port.map(|p| p.0), Some(19122));
        assert!(text.contains("#   19133-19232 browser CDP range"), "{text}");
        let e = Existing {
            profile: "default".to_string(),
            state_dir: PathBuf::from("/home/a b/.openclaw"),
            config_path: PathBuf::from("/home/a b/.openclaw/openclaw.json"),
        };
        let text = profile_text("main", None, 18789, "from the config", Some(&e));
        let raw: crate::profile::raw::RawProfile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(raw.port, None);
        assert_eq!(raw.state_dir.as_deref(), Some("/home/a b/.openclaw"));
        assert_eq!(
            raw.openclaw_profile.map(|p| p.to_string()),
            Some("default".to_string())
        );
    }
}
