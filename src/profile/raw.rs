//! The profile file format as written: one YAML mapping per instance. Every key is optional here;
//! defaults are applied when the profile is resolved (`resolve.rs`). Values that can be checked on
//! their own (names, ports, durations, signals) are checked while parsing, so the error points at the
//! value's line.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer};

/// An instance or OpenClaw profile name: OpenClaw's rule `^[a-z0-9][a-z0-9_-]{0,63}$`, case-insensitive.
/// It can never contain `/` or `.`, so a name joined to a directory stays inside it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceName(String);

impl InstanceName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InstanceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = s.as_bytes();
        let ok_first = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
        let ok_rest = bytes[1.min(bytes.len())..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        if ok_first && ok_rest && bytes.len() <= 64 {
            Ok(InstanceName(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a valid name: use 1 to 64 letters, digits, `_` or `-`, starting with a letter or digit (OpenClaw's profile rule)"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for InstanceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A TCP port, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u16);

impl Port {
    /// A port from any integer, if it is in 1..=65535.
    pub fn new(n: i64) -> Option<Port> {
        u16::try_from(n).ok().filter(|p| *p != 0).map(Port)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Port::new(n)
            .ok_or_else(|| serde::de::Error::custom(format!("port {n} is outside 1..65535")))
    }
}

/// A duration written as a human string: `30s`, `5m`, `1h 30m`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// The longest duration a profile may give.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(s.trim()).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration; write it like 500ms, 30s, 5m or 1h"
            ))
        })?;
        // Deadlines are computed as now + duration; a year is past any sensible setting and keeps
        // that sum far from overflowing.
        if d > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is longer than a year; write at most 365d"
            )));
        }
        Ok(HumanDuration(d))
    }
}

/// A stop signal, by name: `SIGTERM`, `TERM`, `SIGINT`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub Signal);

impl SignalName {
    /// The signal to send.
    pub fn signal(self) -> Signal {
        self.0
    }

    /// Its name as written in messages: `SIGTERM`.
    pub fn name(self) -> &'static str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        const SIGNALS: &[(&str, Signal)] = &[
            ("TERM", Signal::SIGTERM),
            ("INT", Signal::SIGINT),
            ("QUIT", Signal::SIGQUIT),
            ("HUP", Signal::SIGHUP),
            ("KILL", Signal::SIGKILL),
            ("USR1", Signal::SIGUSR1),
            ("USR2", Signal::SIGUSR2),
        ];
        SIGNALS
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|(_, sig)| SignalName(*sig))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a stop signal; use one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL"
                ))
            })
    }
}

/// One entry of `reserve_ports`: a port (`19500`) or an inclusive range (`"19600-19610"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port, inclusive.
    pub end: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(i64),
            Text(String),
        }
        let bad = |what: &str| {
            serde::de::Error::custom(format!(
                "{what} is not a port or a range; write 19500 or \"19600-19610\" (ports 1..65535)"
            ))
        };
        match Either::deserialize(d)? {
            Either::One(n) => Port::new(n)
                .map(|p| PortRange {
                    start: p.0,
                    end: p.0,
                })
                .ok_or_else(|| bad(&n.to_string())),
            Either::Text(s) => {
                let parse = |t: &str| t.trim().parse::<i64>().ok().and_then(Port::new);
                let (a, b) = match s.split_once('-') {
                    Some((a, b)) => (parse(a), parse(b)),
                    None => (parse(&s), parse(&s)),
                };
                match (a, b) {
                    (Some(a), Some(b)) if a <= b => Ok(PortRange {
                        start: a.0,
                        end: b.0,
                    }),
                    _ => Err(bad(&format!("{s:?}"))),
                }
            }
        }
    }
}

/// `limits.memory`: bytes, or a number with a unit `K`, `M`, `G` or `T` (powers of 1024; `Ki`,
/// `KiB`, `KB` read the same): `2G`, `512M`, `1.5G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySize(pub u64);

/// The least memory limit a profile may set: below it no gateway starts, and the kernel would
/// OOM-kill it at once.
pub const MIN_MEMORY: u64 = 16 << 20;

impl FromStr for MemorySize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a memory size; write it like 2G, 512M or 1073741824 (bytes)");
        let t = s.trim();
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(end);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KI" | "KIB" => 10,
            "M" | "MB" | "MI" | "MIB" => 20,
            "G" | "GB" | "GI" | "GIB" => 30,
            "T" | "TB" | "TI" | "TIB" => 40,
            _ => return Err(bad()),
        };
        let bytes = number * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes > (1u64 << 50) as f64 {
            return Err(format!(
                "{s:?} is more memory than any host has; write at most 1024T"
            ));
        }
        let bytes = bytes as u64;
        if bytes < MIN_MEMORY {
            return Err(format!(
                "{s:?} is below 16M: no gateway runs in that little memory"
            ));
        }
        Ok(MemorySize(bytes))
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Bytes(u64),
            Text(String),
        }
        let text = match Either::deserialize(d)? {
            Either::Bytes(n) => n.to_string(),
            Either::Text(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `limits.cpu`: a percentage of one CPU, `150%` for one and a half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPercent(pub u32);

impl FromStr for CpuPercent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let n = s
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                format!("{s:?} is not a CPU share; write a percentage of one CPU, like 50% or 150%")
            })?;
        if !(1..=100_000).contains(&n) {
            return Err(format!("{s:?} is outside 1%..100000%"));
        }
        Ok(CpuPercent(n))
    }
}

impl<'de> Deserialize<'de> for CpuPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(i64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Err(serde::de::Error::custom(format!(
                "{n} has no unit; write a percentage of one CPU, like {n}%"
            ))),
            Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `limits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub memory: Option<MemorySize>,
    pub cpu: Option<CpuPercent>,
}

/// When a child that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyKind {
    /// After every exit, clean or not (OpenClaw's own unit: `Restart=always`).
    #[default]
    Always,
    /// After an exit with a non-zero code or by a signal.
    OnFailure,
    /// Never.
    Never,
}

impl RestartPolicyKind {
    /// The name a profile writes (`restart.policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicyKind::Always => "always",
            RestartPolicyKind::OnFailure => "on-failure",
            RestartPolicyKind::Never => "never",
        }
    }
}

/// `gateway_token`: where the gateway's token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayToken {
    /// A random token the daemon makes once in the state dir (`supervise::token`) and gives the
    /// gateway as `OPENCLAW_GATEWAY_TOKEN`.
    Generate,
}

impl<'de> Deserialize<'de> for GatewayToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A string, so that a map or a list is told what is expected, not serde's enum internals.
        let s = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("takes `generate` (a token of its own, made by the daemon)")
        })?;
        match s.as_str() {
            "generate" => Ok(GatewayToken::Generate),
            _ => Err(serde::de::Error::custom(
                "takes `generate` (a token of its own, made by the daemon); to give a token yourself, set `env: { OPENCLAW_GATEWAY_TOKEN: ... }` or the config file's gateway.auth.token",
            )),
        }
    }
}

/// `restart.backoff`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub initial: Option<HumanDuration>,
    pub max: Option<HumanDuration>,
    pub reset_after: Option<HumanDuration>,
}

/// `restart.start_limit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStartLimit {
    pub burst: Option<u32>,
    pub interval: Option<HumanDuration>,
}

/// `restart`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub policy: Option<RestartPolicyKind>,
    pub backoff: Option<RawBackoff>,
    pub start_limit: Option<RawStartLimit>,
    pub no_restart_exit_codes: Option<Vec<i32>>,
}

/// `stop`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    pub signal: Option<SignalName>,
    pub timeout: Option<HumanDuration>,
}

/// `health`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub readiness_url: Option<String>,
    pub liveness_url: Option<String>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub failure_threshold: Option<u32>,
    pub start_deadline: Option<HumanDuration>,
}

/// A whole profile file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: Option<InstanceName>,
    pub port: Option<Port>,
    pub config_path: Option<String>,
    pub state_dir: Option<String>,
    pub workspace: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub working_dir: Option<String>,
    pub autostart: Option<bool>,
    pub restart: Option<RawRestart>,
    pub stop: Option<RawStop>,
    pub health: Option<RawHealth>,
    pub reserve_ports: Option<Vec<PortRange>>,
    pub openclaw_profile: Option<InstanceName>,
    pub limits: Option<RawLimits>,
    pub gateway_token: Option<GatewayToken>,
    pub runtime: Option<RawRuntime>,
}

/// `runtime`: the OpenClaw release (and optionally the Node) the instance runs, from the daemon's
/// runtime store (`crate::runtime`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub openclaw: Version,
    pub node: Option<Version>,
}

/// A version as npm publishes them (`2026.9.6`, `24.21.0`), written as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a version, MAJOR.MINOR.PATCH, as in 2026.9.6")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Version, E> {
                crate::runtime::check_version(v).map_err(E::custom)?;
                Ok(Version(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "`{v}` is not a version: MAJOR.MINOR.PATCH, as in 2026.9.6 (quote it)"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Version, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Version, E> {
                self.visit_f64(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_openclaw_rule() {
        for ok in [
            "main",
            "rescue",
            "a",
            "bot_2",
            "x-y",
            "Main",
            &"a".repeat(64),
        ] {
            assert!(ok.parse::<InstanceName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "a/b",
            "..",
            "a.b",
            "a b",
            &"a".repeat(65),
            "é",
        ] {
            assert!(bad.parse::<InstanceName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_token_takes_generate_and_never_echoes_a_value() {
        let t: GatewayToken = serde_yaml::from_str("generate").unwrap();
        assert_eq!(t, GatewayToken::Generate);
        // Someone may write the token itself there.
        let e = serde_yaml::from_str::<GatewayToken>("s3cret-token")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("takes `generate`") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(serde_yaml::from_str::<GatewayToken>("{ file: /x }").is_err());
    }

    #[test]
    fn port_ranges_parse() {
        let r: Vec<PortRange> = serde_yaml::from_str("[19500, \"19600-19610\", \"7\"]").unwrap();
        assert_eq!((r[0].start, r[0].end), (19500, 19500));
        assert_eq!((r[1].start, r[1].end), (19600, 19610));
        assert_eq!((r[2].start, r[2].end), (7, 7));
        for bad in ["[0]", "[65536]", "[\"5-3\"]", "[\"a-b\"]", "[\"1-70000\"]"] {
            assert!(
                serde_yaml::from_str::<Vec<PortRange>>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn stop_signals_parse_with_or_without_sig() {
        let s: Vec<SignalName> =
            serde_yaml::from_str("[SIGTERM, int, \" Usr2 \", SIGKILL]").unwrap();
        let got: Vec<Signal> = s.iter().map(|s| s.signal()).collect();
        assert_eq!(
            got,
            [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGUSR2,
                Signal::SIGKILL
            ]
        );
        assert_eq!(s[2].name(), "SIGUSR2");
        for bad in ["SIGFOO", "15", "SIGSTOP", "\"\""] {
            assert!(serde_yaml::from_str::<SignalName>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_parse_with_binary_units() {
        let m: Vec<MemorySize> =
            serde_yaml::from_str("[2G, 512M, \"1.5G\", 1073741824, 2GiB, 64mb]").unwrap();
        let got: Vec<u64> = m.iter().map(|m| m.0).collect();
        assert_eq!(
            got,
            [2 << 30, 512 << 20, 3 << 29, 1 << 30, 2 << 30, 64 << 20]
        );
        for bad in [
            "2X",
            "G",
            "\"\"",
            "-1G",
            "1M",
            "\"1.2.3G\"",
            "99999T",
            "[1]",
        ] {
            let e = serde_yaml::from_str::<MemorySize>(bad);
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_shares_are_percentages() {
        let c: Vec<CpuPercent> = serde_yaml::from_str("[150%, \" 50 %\", 1%]").unwrap();
        let got: Vec<u32> = c.iter().map(|c| c.0).collect();
        assert_eq!(got, [150, 50, 1]);
        for bad in ["150", "1.5", "0%", "x%", "100001%", "-5%"] {
            assert!(serde_yaml::from_str::<CpuPercent>(bad).is_err(), "{bad}");
        }
        let e = serde_yaml::from_str::<CpuPercent>("150").unwrap_err();
        assert!(e.to_string().contains("like 150%"), "{e}");
    }

    #[test]
    fn durations_parse_up_to_a_year() {
        let d: HumanDuration = serde_yaml::from_str("\"1m 30s\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        let d: HumanDuration = serde_yaml::from_str("365d").unwrap();
        assert_eq!(d.0, MAX_DURATION);
        let e = serde_yaml::from_str::<HumanDuration>("366d").unwrap_err();
        assert!(e.to_string().contains("longer than a year"), "{e}");
        assert!(serde_yaml::from_str::<HumanDuration>("soon").is_err());
    }
}
