//! What an OpenClaw gateway does with its port and its config file, computed exactly as the gateway
//! computes it (OpenClaw 2026.9.x: `src/config/paths.ts`, `extensions/browser/src/config/port-defaults.ts`).
//! Facts: ../shared/openclaw-gateway.md. Nothing here touches a process; it is pure derivation plus the
//! reading of the instance's JSON5 config file. It also names what OpenClaw keys by the profile name
//! (`src/logging/log-file-path.ts`, `src/daemon/constants.ts`): the rolling log file and the service
//! unit.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::locate::{self, Seg};

/// The port of an unnamed (`default`) OpenClaw profile.
pub const DEFAULT_GATEWAY_PORT: u16 = 18789;
/// Where OpenClaw puts the browser control service when `G + 2` is not a valid port.
pub const FALLBACK_CONTROL_PORT: u16 = 18791;
/// Where OpenClaw puts the managed-browser CDP range when `G + 11 .. G + 110` does not fit.
pub const FALLBACK_CDP_RANGE: (u16, u16) = (18800, 18899);
/// How many ports one gateway's block spans, `G ..= G + 110`.
pub const BLOCK_SPAN: u32 = 111;
/// The highest gateway port whose whole block fits below 65536.
pub const MAX_BLOCK_BASE: u32 = 65535 - (BLOCK_SPAN - 1);

/// FNV-1a, 32 bits, over the profile name's UTF-8 bytes, as OpenClaw hashes a profile into a port.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// The gateway port OpenClaw picks for a named profile with no port configured:
/// `20000 + fnv1a32(profile) % 40000`.
pub fn profile_port(profile: &str) -> u16 {
    // 20000 + (x % 40000) is at most 59999: always a valid u16.
    (20_000 + fnv1a32(profile.as_bytes()) % 40_000) as u16
}

/// What a port derived from the gateway port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The gateway's WebSocket + HTTP port `G`.
    Gateway,
    /// The MCP App sandbox host, `G + 1` (bound when `mcp.apps` is enabled, or on demand).
    McpSandbox,
    /// The browser control service, `G + 2`.
    BrowserControl,
    /// The derived default CDP port, `G + 3`.
    Cdp,
    /// The canvas host, `G + 4` (retired in 2026.9.x, still reserved).
    Canvas,
    /// Browser extension relays, `G + 10` counting down to `G + 3` (control + 1 ..= control + 8).
    ExtensionRelay,
    /// The managed-browser CDP range, `G + 11 ..= G + 110`.
    CdpRange,
}

impl Role {
    /// How a person calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Gateway => "gateway port",
            Role::McpSandbox => "MCP app sandbox port",
            Role::ExtensionRelay => "browser extension relay ports",
            Role::BrowserControl => "browser control port",
            Role::Cdp => "browser CDP port",
            Role::Canvas => "canvas host port",
            Role::CdpRange => "browser CDP range",
        }
    }

    /// Its formula, for messages.
    pub fn formula(self) -> &'static str {
        match self {
            Role::Gateway => "G",
            Role::McpSandbox => "G+1",
            Role::ExtensionRelay => "G+3..G+10",
            Role::BrowserControl => "G+2",
            Role::Cdp => "G+3",
            Role::Canvas => "G+4",
            Role::CdpRange => "G+11..G+110",
        }
    }
}

/// One port or range derived from the gateway port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedPort {
    /// What it is for.
    pub role: Role,
    /// First port. Values above 65535 are kept (as u32) so they can be reported.
    pub start: u32,
    /// Last port, inclusive.
    pub end: u32,
    /// Set when OpenClaw would not use the formula's value but fall back to a fixed default:
    /// what the formula gave, and why it was dropped.
    pub fallback: Option<String>,
}

/// Every port a gateway on port `gateway` binds, derived as OpenClaw derives it. A derived value that
/// OpenClaw rejects outright (the CDP port or canvas port above 65535) is returned as is, above 65535,
/// for the caller to report.
pub fn derive_ports(gateway: u16) -> Vec<DerivedPort> {
    let g = u32::from(gateway);
    let valid = |p: u32| (1..=65535).contains(&p);
    let one = |role, p: u32| DerivedPort {
        role,
        start: p,
        end: p,
        fallback: None,
    };
    let mut out = vec![one(Role::Gateway, g), one(Role::McpSandbox, g + 1)];

    let control = if valid(g + 2) {
        one(Role::BrowserControl, g + 2)
    } else {
        DerivedPort {
            fallback: Some(format!(
                "G+2 = {} passes 65535, so OpenClaw falls back to {FALLBACK_CONTROL_PORT}",
                g + 2
            )),
            ..one(Role::BrowserControl, u32::from(FALLBACK_CONTROL_PORT))
        }
    };
    let c = control.start;
    let control_fell_back = control.fallback.is_some();
    out.push(control);
    out.push(DerivedPort {
        fallback: control_fell_back
            .then(|| format!("it follows the browser control port {c} (+1)")),
        ..one(Role::Cdp, c + 1)
    });
    out.push(one(Role::Canvas, g + 4));
    out.push(DerivedPort {
        role: Role::ExtensionRelay,
        start: c + 1,
        end: c + 8,
        fallback: control_fell_back
            .then(|| format!("it follows the browser control port {c} (+1..+8)")),
    });

    let (start, end) = (c + 9, c + 9 + 99);
    let range = if !valid(start) || end > 65535 {
        DerivedPort {
            role: Role::CdpRange,
            start: u32::from(FALLBACK_CDP_RANGE.0),
            end: u32::from(FALLBACK_CDP_RANGE.1),
            fallback: Some(format!(
                "G+11..G+110 = {start}-{end} passes 65535, OpenClaw falls back to {}-{}",
                FALLBACK_CDP_RANGE.0, FALLBACK_CDP_RANGE.1
            )),
        }
    } else {
        DerivedPort {
            role: Role::CdpRange,
            start,
            end,
            fallback: control_fell_back
                .then(|| format!("it follows the browser control port {c} (+9..+108)")),
        }
    };
    out.push(range);
    out
}

/// A port claimed by an explicit setting in the OpenClaw config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPort {
    /// The setting, dotted: `browser.profiles.work.cdpPort`.
    pub field: String,
    /// The port.
    pub port: u16,
    /// Its line in the config file.
    pub line: usize,
}

/// What the supervisor needs from an instance's OpenClaw config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenClawConfig {
    /// `gateway.port`.
    pub gateway_port: Option<AtLine<u16>>,
    /// `agents.defaults.workspace` as written.
    pub workspace: Option<AtLine<String>>,
    /// Ports the file claims on this host: `browser.cdpUrl` (loopback), `browser.profiles.*.cdpPort`,
    /// `browser.profiles.*.cdpUrl` (loopback), `canvasHost.port`.
    pub ports: Vec<ConfigPort>,
    /// `mcp.apps.sandboxPort`, which replaces `G + 1`.
    pub mcp_sandbox_port: Option<AtLine<u16>>,
    /// Agents' own workspaces.
    pub agent_workspaces: Vec<AgentWorkspace>,
    /// `logging.file` as written: where the gateway writes its own log instead of the rolling file
    /// named after the profile.
    pub log_file: Option<AtLine<String>>,
}

/// A value of the config file and the line it is written on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtLine<T> {
    /// The value.
    pub value: T,
    /// Its line in the config file.
    pub line: usize,
}

/// The workspace of one agent that has its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentWorkspace {
    /// The setting, dotted: `agents.list[0].workspace`.
    pub field: String,
    /// The path as written.
    pub path: String,
    /// Its line in the config file.
    pub line: usize,
}

/// A problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The setting, dotted; empty for a problem of the whole file (unreadable, not JSON5).
    pub field: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads an OpenClaw config file as JSON5. A missing file is an empty config (OpenClaw starts without
/// one); an unreadable or malformed one gives every problem found.
pub fn read_config(path: &Path) -> Result<OpenClawConfig, Vec<ConfigProblem>> {
    // Non-blocking, regular files only, at most 1 MiB: a FIFO there must not hang the check.
    let text = match crate::fsx::read_regular(path, crate::fsx::MAX_PROFILE_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OpenClawConfig::default()),
        Err(e) => {
            return Err(vec![ConfigProblem {
                field: String::new(),
                line: 0,
                message: format!("cannot read it: {e}"),
            }])
        }
    };
    parse_config(&text)
}

/// Parses the text of an OpenClaw config file; see [`read_config`].
pub fn parse_config(text: &str) -> Result<OpenClawConfig, Vec<ConfigProblem>> {
    let root: Value = json5::from_str(text).map_err(|e| {
        let line = e.position().map_or(0, |p| p.line + 1);
        vec![ConfigProblem {
            field: String::new(),
            line,
            message: format!("not valid JSON5: {}", strip_position(&e.to_string())),
        }]
    })?;
    let mut cfg = OpenClawConfig::default();
    let mut problems = Vec::new();
    let line_of = |path: &[Seg]| locate::locate_json5(text, path).map_or(0, |p| p.line);

    let port_at = |path: Vec<Seg>, value: &Value, problems: &mut Vec<ConfigProblem>| {
        let field = locate::dotted(&path);
        let line = line_of(&path);
        match value
            .as_i64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|p| *p != 0)
        {
            Some(p) => Some(ConfigPort {
                field,
                port: p,
                line,
            }),
            None => {
                problems.push(ConfigProblem {
                    field,
                    line,
                    message: format!("{value} is not a port (1..65535)"),
                });
                None
            }
        }
    };

    if let Some(v) = root.pointer("/gateway/port").filter(|v| !v.is_null()) {
        if let Some(p) = port_at(locate::keys(&["gateway", "port"]), v, &mut problems) {
            cfg.gateway_port = Some(AtLine {
                value: p.port,
                line: p.line,
            });
        }
    }
    if let Some(v) = root.pointer("/canvasHost/port").filter(|v| !v.is_null()) {
        cfg.ports.extend(port_at(
            locate::keys(&["canvasHost", "port"]),
            v,
            &mut problems,
        ));
    }
    let url_at = |path: &[Seg], value: &Value, problems: &mut Vec<ConfigProblem>| {
        let why = match value.as_str().map(cdp_url) {
            Some(Ok(u)) => return Some(u),
            Some(Err(why)) => why,
            None => format!("{value} is not a URL string"),
        };
        problems.push(ConfigProblem {
            field: locate::dotted(path),
            line: line_of(path),
            message: why,
        });
        None
    };
    // browser.cdpUrl: its host is also where profiles that give only a cdpPort connect.
    let mut browser_host_local = true;
    if let Some(v) = root.pointer("/browser/cdpUrl").filter(|v| !v.is_null()) {
        let path = locate::keys(&["browser", "cdpUrl"]);
        if let Some(u) = url_at(&path, v, &mut problems) {
            browser_host_local = u.local;
            if u.local {
                cfg.ports.push(ConfigPort {
                    field: locate::dotted(&path),
                    port: u.port.unwrap_or(u.default_port),
                    line: line_of(&path),
                });
            }
        }
    }
    if let Some(Value::Object(profiles)) = root.pointer("/browser/profiles") {
        for (name, profile) in profiles {
            let path = |key: &str| locate::keys(&["browser", "profiles", name, key]);
            let cdp_port = match profile.get("cdpPort").filter(|v| !v.is_null()) {
                Some(v) => port_at(path("cdpPort"), v, &mut problems),
                None => None,
            };
            let url = match profile.get("cdpUrl").filter(|v| !v.is_null()) {
                Some(v) => url_at(&path("cdpUrl"), v, &mut problems),
                None => None,
            };
            // As OpenClaw resolves a profile: the URL's own port wins, then cdpPort, then 80/443;
            // a cdpPort alone connects to browser.cdpUrl's host.
            let claim = match (url, cdp_port) {
                (Some(u), _) if !u.local => None,
                (Some(u), Some(p)) if u.port.is_none() => Some(p),
                (Some(u), _) => {
                    let field = path("cdpUrl");
                    Some(ConfigPort {
                        field: locate::dotted(&field),
                        port: u.port.unwrap_or(u.default_port),
                        line: line_of(&field),
                    })
                }
                (None, Some(p)) if browser_host_local => Some(p),
                (None, _) => None,
            };
            cfg.ports.extend(claim);
        }
    }
    if let Some(v) = root
        .pointer("/mcp/apps/sandboxPort")
        .filter(|v| !v.is_null())
    {
        let path = locate::keys(&["mcp", "apps", "sandboxPort"]);
        if let Some(p) = port_at(path, v, &mut problems) {
            cfg.mcp_sandbox_port = Some(AtLine {
                value: p.port,
                line: p.line,
            });
        }
    }
    // Agents with a workspace of their own: `agents.list[i]` and `agents.entries.<id>`.
    let mut agents: Vec<(Vec<Seg>, &Value)> = Vec::new();
    if let Some(Value::Array(list)) = root.pointer("/agents/list") {
        for (i, a) in list.iter().enumerate() {
            let mut path = locate::keys(&["agents", "list"]);
            path.push(Seg::Index(i));
            agents.push((path, a));
        }
    }
    if let Some(Value::Object(entries)) = root.pointer("/agents/entries") {
        for (id, a) in entries {
            agents.push((locate::keys(&["agents", "entries", id]), a));
        }
    }
    for (mut path, agent) in agents {
        if let Some(w) = agent.get("workspace").and_then(Value::as_str) {
            path.push(Seg::Key("workspace".into()));
            if !w.trim().is_empty() {
                cfg.agent_workspaces.push(AgentWorkspace {
                    field: locate::dotted(&path),
                    path: w.to_string(),
                    line: line_of(&path),
                });
            }
        }
    }
    if let Some(v) = root
        .pointer("/agents/defaults/workspace")
        .filter(|v| !v.is_null())
    {
        let path = locate::keys(&["agents", "defaults", "workspace"]);
        match v.as_str() {
            Some(s) if !s.trim().is_empty() => {
                cfg.workspace = Some(AtLine {
                    value: s.to_string(),
                    line: line_of(&path),
                })
            }
            _ => problems.push(ConfigProblem {
                field: locate::dotted(&path),
                line: line_of(&path),
                message: format!("{v} is not a directory path"),
            }),
        }
    }
    if let Some(v) = root.pointer("/logging/file").filter(|v| !v.is_null()) {
        let path = locate::keys(&["logging", "file"]);
        match v.as_str() {
            // OpenClaw's schema takes any string; an empty one leaves the logger writing to "".
            Some(s) if !s.trim().is_empty() => {
                cfg.log_file = Some(AtLine {
                    value: s.to_string(),
                    line: line_of(&path),
                })
            }
            _ => problems.push(ConfigProblem {
                field: locate::dotted(&path),
                line: line_of(&path),
                message: format!("{v} is not a file path"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// Where OpenClaw puts its rolling log when `logging.file` is not set (its preferred temp root; it
/// falls back to a per-user dir under the system temp dir only when this one is unsafe).
pub const ROLLING_LOG_DIR: &str = "/tmp/openclaw";

/// Stands for the local date in the name of a rolling log file: OpenClaw starts a new file each day,
/// so two instances share one file every day exactly when their names agree with this in place.
pub const DATE_PLACEHOLDER: &str = "YYYY-MM-DD";

/// The profile's segment in the rolling log's name, as OpenClaw encodes it: letters and digits as
/// they are, `-` doubled, `_` as `-0`, a capital as `-1` and the letter; `None` for the default
/// profile. (Names past 220 encoded characters are hashed; a profile name has at most 64.)
pub fn log_profile_segment(profile: Option<&str>) -> Option<String> {
    let profile = profile.map(str::trim).filter(|p| !p.is_empty())?;
    if profile.eq_ignore_ascii_case("default") {
        return None;
    }
    let mut out = String::with_capacity(profile.len() * 2);
    for c in profile.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            '-' => out.push_str("--"),
            '_' => out.push_str("-0"),
            'A'..='Z' => {
                out.push_str("-1");
                out.push(c.to_ascii_lowercase());
            }
            other => out.push_str(&format!("-2{:x}-", u32::from(other))),
        }
    }
    Some(out)
}

/// The gateway's own log without `logging.file`: `/tmp/openclaw/openclaw-<profile>-YYYY-MM-DD.log`
/// (no profile segment for the default profile), the date standing as [`DATE_PLACEHOLDER`].
pub fn rolling_log_file(profile: Option<&str>) -> PathBuf {
    let name = match log_profile_segment(profile) {
        Some(seg) => format!("openclaw-{seg}-{DATE_PLACEHOLDER}.log"),
        None => format!("openclaw-{DATE_PLACEHOLDER}.log"),
    };
    Path::new(ROLLING_LOG_DIR).join(name)
}

/// The file a `logging.file` (expanded, absolute) makes the gateway write. A name of the old rolling
/// shape, `openclaw-YYYY-MM-DD.log` (literally, or with a date), rolls: OpenClaw writes
/// `openclaw-<today>.log` in that directory, whatever the profile. Any other name is used as is.
pub fn configured_log_file(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dated = name
        .strip_prefix("openclaw-")
        .and_then(|rest| rest.strip_suffix(".log"))
        .is_some_and(|date| {
            date == DATE_PLACEHOLDER
                || (date.len() == 10
                    && date.bytes().enumerate().all(|(i, b)| match i {
                        4 | 7 => b == b'-',
                        _ => b.is_ascii_digit(),
                    }))
        });
    if dated {
        path.with_file_name(format!("openclaw-{DATE_PLACEHOLDER}.log"))
    } else {
        path.to_path_buf()
    }
}

/// The systemd unit `openclaw [--profile P] gateway install` writes: `openclaw-gateway-P.service`,
/// `openclaw-gateway.service` for the default profile.
pub fn service_unit(profile: Option<&str>) -> String {
    match profile
        .map(str::trim)
        .filter(|p| !p.eq_ignore_ascii_case("default") && !p.is_empty())
    {
        Some(p) => format!("openclaw-gateway-{p}.service"),
        None => "openclaw-gateway.service".to_string(),
    }
}

/// A CDP URL as OpenClaw reads it.
struct CdpUrl {
    /// The port written in the URL.
    port: Option<u16>,
    /// 80, or 443 for https and wss.
    default_port: u16,
    /// Whether the host is this one: `localhost`, 127.0.0.0/8, ::1 or ::ffff:127.x.
    local: bool,
}

fn cdp_url(raw: &str) -> Result<CdpUrl, String> {
    let url =
        url::Url::parse(raw.trim()).map_err(|e| format!("{raw:?} is not a valid URL ({e})"))?;
    let default_port = match url.scheme() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        other => {
            return Err(format!(
                "{raw:?} has scheme {other}:, OpenClaw takes http, https, ws or wss"
            ))
        }
    };
    let local = match url.host() {
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    };
    Ok(CdpUrl {
        port: url.port(),
        default_port,
        local,
    })
}

/// json5's messages end in " at line L column C"; the line is reported separately.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(g: u16) -> Vec<(Role, u32, u32, bool)> {
        derive_ports(g)
            .into_iter()
            .map(|d| (d.role, d.start, d.end, d.fallback.is_some()))
            .collect()
    }

    #[test]
    fn default_gateway_derives_the_documented_ports() {
        assert_eq!(
            block(18789),
            vec![
                (Role::Gateway, 18789, 18789, false),
                (Role::McpSandbox, 18790, 18790, false),
                (Role::BrowserControl, 18791, 18791, false),
                (Role::Cdp, 18792, 18792, false),
                (Role::Canvas, 18793, 18793, false),
                (Role::ExtensionRelay, 18792, 18799, false),
                (Role::CdpRange, 18800, 18899, false),
            ]
        );
    }

    #[test]
    fn high_gateway_falls_back_to_the_default_cdp_range() {
        let b = block(65430);
        assert_eq!(b[2], (Role::BrowserControl, 65432, 65432, false));
        assert_eq!(b[3], (Role::Cdp, 65433, 65433, false));
        assert_eq!(b[6], (Role::CdpRange, 18800, 18899, true));
        // The highest gateway whose range still fits: 65425 + 110 = 65535.
        assert_eq!(block(65425)[6], (Role::CdpRange, 65436, 65535, false));
        assert_eq!(block(65426)[6], (Role::CdpRange, 18800, 18899, true));
    }

    #[test]
    fn gateway_at_the_top_falls_back_to_the_default_control_port() {
        let b = block(65534);
        assert_eq!(b[2], (Role::BrowserControl, 18791, 18791, true));
        assert_eq!(b[3], (Role::Cdp, 18792, 18792, true));
        assert_eq!(b[4], (Role::Canvas, 65538, 65538, false));
        assert_eq!(b[5], (Role::ExtensionRelay, 18792, 18799, true));
        assert_eq!(b[6], (Role::CdpRange, 18800, 18899, true));
        // G = 65533: control 65535 is valid, the CDP port 65536 is not (OpenClaw errors).
        let b = block(65533);
        assert_eq!(b[2], (Role::BrowserControl, 65535, 65535, false));
        assert_eq!(b[3], (Role::Cdp, 65536, 65536, false));
    }

    #[test]
    fn profile_ports_hash_like_openclaw() {
        // Reference values computed by the FNV-1a definition in the facts file.
        assert_eq!(fnv1a32(b""), 2_166_136_261);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
        assert_eq!(profile_port("a"), (20_000 + 0xe40c292c_u32 % 40_000) as u16);
        for name in ["main", "rescue", "x"] {
            let p = profile_port(name);
            assert!((20_000..60_000).contains(&p), "{name}: {p}");
        }
    }

    #[test]
    fn config_file_ports_and_workspace_are_read_with_lines() {
        let text = r#"{
  // JSON5: comments, unquoted keys, trailing commas
  gateway: { port: 19001, },
  canvasHost: { port: 19005 },
  browser: {
    cdpUrl: 'http://127.0.0.1:9222',
    profiles: {
      work: { cdpPort: 19020 },
      remote: { cdpUrl: 'http://10.1.2.3:9222' },
      local: { cdpUrl: 'ws://localhost/devtools' },
      mapped: { cdpUrl: 'http://[::ffff:127.0.0.1]', cdpPort: 19030 },
    },
  },
  agents: { defaults: { workspace: '~/bots/rescue' }, list: [{ id: 'ops', workspace: '/srv/ops' }] },
  mcp: { apps: { sandboxPort: 19040 } },
}"#;
        let cfg = parse_config(text).unwrap();
        assert_eq!(
            cfg.gateway_port,
            Some(AtLine {
                value: 19001,
                line: 3
            })
        );
        assert_eq!(
            cfg.workspace,
            Some(AtLine {
                value: "~/bots/rescue".to_string(),
                line: 14
            })
        );
        assert_eq!(
            cfg.agent_workspaces,
            vec![AgentWorkspace {
                field: "agents.list[0].workspace".to_string(),
                path: "/srv/ops".to_string(),
                line: 14
            }]
        );
        assert_eq!(
            cfg.mcp_sandbox_port,
            Some(AtLine {
                value: 19040,
                line: 15
            })
        );
        let ports: Vec<_> = cfg
            .ports
            .iter()
            .map(|p| (p.field.as_str(), p.port, p.line))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("canvasHost.port", 19005, 4),
                ("browser.cdpUrl", 9222, 6),
                ("browser.profiles.local.cdpUrl", 80, 10),
                ("browser.profiles.mapped.cdpPort", 19030, 11),
                ("browser.profiles.work.cdpPort", 19020, 8),
            ]
        );
    }

    #[test]
    fn malformed_config_names_the_line() {
        let err = parse_config("{\n  gateway: {\n    port: 18789,,\n  }\n}").unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].line, 3, "{err:?}");
        assert!(err[0].message.starts_with("not valid JSON5"), "{err:?}");
    }

    #[test]
    fn logging_file_is_read_with_its_line() {
        let text = "{\n  gateway: { port: 19001 },\n  logging: {\n    level: 'info',\n    file: '~/logs/main.log',\n  },\n}";
        let cfg = parse_config(text).unwrap();
        assert_eq!(
            cfg.log_file,
            Some(AtLine {
                value: "~/logs/main.log".to_string(),
                line: 5
            })
        );
        assert_eq!(
            parse_config("{ logging: { level: 'debug' } }")
                .unwrap()
                .log_file,
            None
        );
        let err = parse_config("{ logging: {\n file: '  ' } }").unwrap_err();
        assert_eq!(err[0].field, "logging.file");
        assert_eq!(err[0].line, 2);
        let err = parse_config("{ logging: { file: 3 } }").unwrap_err();
        assert_eq!(err[0].message, "3 is not a file path");
    }

    #[test]
    fn rolling_log_names_encode_the_profile_as_openclaw_does() {
        // OpenClaw's encodeLogProfileSegment: a-z0-9 kept, '-' doubled, '_' -> -0, A-Z -> -1 + lower.
        assert_eq!(
            rolling_log_file(Some("main")),
            PathBuf::from("/tmp/openclaw/openclaw-main-YYYY-MM-DD.log")
        );
        assert_eq!(
            log_profile_segment(Some("my-bot_2")).as_deref(),
            Some("my--bot-02")
        );
        assert_eq!(log_profile_segment(Some("Main")).as_deref(), Some("-1main"));
        // Case matters to OpenClaw on Linux: these are two files.
        assert_ne!(
            rolling_log_file(Some("Main")),
            rolling_log_file(Some("main"))
        );
        for default in [None, Some("default"), Some("DEFAULT"), Some(" ")] {
            assert_eq!(
                rolling_log_file(default),
                PathBuf::from("/tmp/openclaw/openclaw-YYYY-MM-DD.log")
            );
        }
    }

    #[test]
    fn a_configured_log_of_the_old_rolling_shape_rolls_without_the_profile() {
        let rolled = PathBuf::from("/var/log/oc/openclaw-YYYY-MM-DD.log");
        assert_eq!(
            configured_log_file(Path::new("/var/log/oc/openclaw-YYYY-MM-DD.log")),
            rolled
        );
        assert_eq!(
            configured_log_file(Path::new("/var/log/oc/openclaw-2026-01-31.log")),
            rolled
        );
        // A profile family or any other name is a fixed file.
        for fixed in [
            "/var/log/oc/openclaw-main-2026-01-31.log",
            "/var/log/oc/openclaw-2026-1-31.log",
            "/var/log/oc/main.log",
        ] {
            assert_eq!(configured_log_file(Path::new(fixed)), PathBuf::from(fixed));
        }
    }

    #[test]
    fn service_units_are_named_after_the_profile() {
        assert_eq!(
            service_unit(Some("rescue")),
            "openclaw-gateway-rescue.service"
        );
        assert_eq!(service_unit(None), "openclaw-gateway.service");
        assert_eq!(service_unit(Some("Default")), "openclaw-gateway.service");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = "{ gateway: { port: 70000 },\n browser: { cdpUrl: 'nope' } }";
        let err = parse_config(text).unwrap_err();
        let fields: Vec<_> = err.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(fields, vec![("gateway.port", 1), ("browser.cdpUrl", 2)]);
    }
}
