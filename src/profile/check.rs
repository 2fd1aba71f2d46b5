//! The disjointness check: proves, over all instances at once, that no two share a config file, a state
//! dir, a workspace, a log file, a port or (unless each sets `logging.file`) an OpenClaw profile name,
//! and that no derived port falls back onto OpenClaw's defaults.
//!
//! Both sweeps sort once and walk once (sort-and-sweep), so a check costs O(n log n + findings) rather
//! than comparing every pair: paths are sorted component-wise, which puts every path right after its
//! ancestors; port claims are sorted by their first port, so only claims still open can overlap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, Kind, Location};
use super::ephemeral::{self, Ephemeral};
use super::openclaw::{self, Role};
use super::openclaw::{BLOCK_SPAN, MAX_BLOCK_BASE};
use super::paths::RealPaths;
use super::resolve::{ClaimSource, Origin, PortClaim, Profile, Sourced};

/// What a check knows beyond the profiles themselves.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The host's ephemeral ports, read once for the check; `None`: unknown, nothing said of them.
    pub ephemeral: Option<Ephemeral>,
    /// The instances that are new or changed (a reload: compared with what the daemon runs;
    /// `openclawctl new`: the one being written). In a port clash between one of these and an
    /// instance that is not, the hint tells the new one to move; `None` (a plain check) keeps the
    /// rule "the one whose claim starts later moves".
    pub fresh: Option<BTreeSet<String>>,
}

impl Context {
    /// The host's ephemeral range (read now), no knowledge of new instances.
    pub fn host() -> Context {
        Context {
            ephemeral: Ephemeral::read(),
            fresh: None,
        }
    }

    fn is_fresh(&self, p: &Profile) -> bool {
        self.fresh
            .as_ref()
            .is_some_and(|f| f.contains(p.name.as_str()))
    }
}

/// Every finding about the set of profiles, unsorted, knowing nothing of the host.
pub fn check(profiles: &[Profile]) -> Vec<Diagnostic> {
    check_with(profiles, &Context::default())
}

/// Every finding about the set of profiles, unsorted.
pub fn check_with(profiles: &[Profile], ctx: &Context) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicate_names(profiles, &mut out);
    shared_openclaw_profiles(profiles, &mut out);
    port_validity(profiles, &mut out);
    port_overlaps(profiles, ctx, &mut out);
    if let Some(e) = &ctx.ephemeral {
        ephemeral_ports(profiles, e, &mut out);
    }
    path_overlaps(profiles, &mut out);
    out
}

/// What the check says of the instances' runtimes, knowing the runtime store: a `runtime` that is
/// not installed (with the command that installs it), and 2+ instances that all run on one runtime
/// (all the same spec, or all none: the `openclaw` on the daemon's PATH, said only once the store
/// holds a runtime, so that a host that never used runtimes is not told on every check).
/// Warnings only: the daemon must start, so that `openclawctl runtime install` can reach it.
pub fn runtimes(profiles: &[Profile], store: &crate::runtime::Store) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for p in profiles {
        let Some(r) = &p.runtime else { continue };
        if store.find(&r.value).is_some() {
            continue;
        }
        let at = match &r.origin {
            Origin::Profile(at) => at.clone(),
            _ => p.name_at.clone(),
        };
        out.push(
            Diagnostic::warning(
                Kind::RuntimeMissing,
                at,
                format!(
                    "{} is not installed in the runtime store {}: the instance will not start until it is",
                    r.value,
                    store.root().display()
                ),
            )
            .instance(p.name.as_str())
            .field("runtime")
            .hint(format!(
                "install it: openclawctl runtime install {} (without a running daemon: openclaw-supervisord --runtimes {} install-runtime {})",
                r.value,
                store.root().display(),
                r.value
            )),
        );
    }
    if let Some(d) = one_runtime_for_all(profiles) {
        let on_path = profiles.iter().all(|p| p.runtime.is_none());
        if !on_path || !store.list().is_empty() {
            out.push(d);
        }
    }
    out
}

/// The warning for 2+ instances on one runtime, at the profile of the one to move (rescue, if
/// there is one; else the last by name).
fn one_runtime_for_all(profiles: &[Profile]) -> Option<Diagnostic> {
    let (first, rest) = profiles.split_first()?;
    let spec = |p: &Profile| p.runtime.as_ref().map(|r| r.value.clone());
    if rest.is_empty() || rest.iter().any(|p| spec(p) != spec(first)) {
        return None;
    }
    let mut names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    let mover = profiles
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case("rescue"))
        .or_else(|| {
            profiles
                .iter()
                .max_by(|a, b| a.name.as_str().cmp(b.name.as_str()))
        })?;
    let runtime = match spec(first) {
        Some(s) => s.to_string(),
        None => "the `openclaw` on the daemon's PATH (no profile names a `runtime`)".to_string(),
    };
    let at = match mover.runtime.as_ref().map(|r| &r.origin) {
        Some(Origin::Profile(at)) => at.clone(),
        _ => Location::file(&mover.file),
    };
    Some(
        Diagnostic::warning(
            Kind::SharedRuntime,
            at,
            format!(
                "every instance ({}) runs on {runtime}: an upgrade that breaks one breaks all; give {} its own",
                names.join(", "),
                mover.name
            ),
        )
        .instance(mover.name.as_str())
        .field("runtime")
        .hint(format!(
            "pin another release in {}'s profile, e.g. `runtime: {{ openclaw: VERSION }}`, and install it with openclawctl runtime install openclaw@VERSION",
            mover.name
        )),
    )
}

fn duplicate_names(profiles: &[Profile], out: &mut Vec<Diagnostic>) {
    let mut order: Vec<usize> = (0..profiles.len()).collect();
    let key = |i: usize| profiles[i].name.as_str().to_ascii_lowercase();
    order.sort_by_key(|&i| (key(i), profiles[i].file.clone()));
    for w in order.windows(2) {
        let (first, dup) = (&profiles[w[0]], &profiles[w[1]]);
        if key(w[0]) == key(w[1]) {
            out.push(
                Diagnostic::error(
                    Kind::DuplicateName,
                    dup.name_at.clone(),
                    format!(
                        "two profiles define the instance {}: this one and {}",
                        dup.name, first.name_at
                    ),
                )
                .instance(dup.name.as_str())
                .field("name")
                .other(first.name.as_str(), first.name_at.clone())
                .hint("give each instance its own name (names are compared ignoring case)"),
            );
        }
    }
}

/// Instances under one OpenClaw profile name. OpenClaw keys by the name, as written (case counts on
/// Linux): its rolling log `/tmp/openclaw/openclaw-<profile>-<date>.log` unless the config file sets
/// `logging.file`, its default state dir `~/.openclaw-<profile>` and port (the path and port sweeps
/// compare those as resolved), the systemd unit `openclaw gateway install` writes
/// (`openclaw-gateway-<profile>.service`), and what `openclaw --profile <profile> ...` commands reach.
/// A shared name is an error unless both set `logging.file`; then only the unit and the commands are
/// left, which matter only if the operator uses OpenClaw's own service for them: a warning.
fn shared_openclaw_profiles(profiles: &[Profile], out: &mut Vec<Diagnostic>) {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in profiles.iter().enumerate() {
        let name = p.openclaw_profile.as_deref().unwrap_or("default");
        groups.entry(name).or_default().push(i);
    }
    for (name, mut members) in groups {
        if members.len() < 2 {
            continue;
        }
        // One finding per instance past the first, naming the first: each names both files.
        members.sort_by(|&a, &b| profiles[a].name.as_str().cmp(profiles[b].name.as_str()));
        let first = &profiles[members[0]];
        // Two profiles of one instance name that both take the profile from it: the name's
        // finding says it, and renaming fixes both.
        let from_name = |p: &Profile| p.openclaw_profile_at == p.name_at;
        for &m in &members[1..] {
            let me = &profiles[m];
            if from_name(first)
                && from_name(me)
                && first.name.as_str().eq_ignore_ascii_case(me.name.as_str())
            {
                continue;
            }
            out.push(profile_finding(name, first, me));
        }
    }
}

fn profile_finding(name: &str, first: &Profile, me: &Profile) -> Diagnostic {
    let profile = me.openclaw_profile.as_deref();
    let unit = openclaw::service_unit(profile);
    let install = match profile {
        Some(p) => format!("openclaw --profile {p} gateway install"),
        None => "openclaw gateway install".to_string(),
    };
    let shared = format!(
        "OpenClaw profile {name:?} is also {}'s ({})",
        first.name, first.openclaw_profile_at
    );
    let rolling: Vec<&Profile> = [first, me]
        .into_iter()
        .filter(|p| p.log_file.origin == Origin::Default)
        .collect();
    let d = if rolling.is_empty() {
        Diagnostic::warning(
            Kind::ProfileConflict,
            me.openclaw_profile_at.clone(),
            format!(
                "{shared}: their logs are apart (each config file sets `logging.file`), but OpenClaw's own service unit for the profile, {unit}, is one for both"
            ),
        )
        .hint(format!(
            "run them under this supervisor only (no `{install}`), or give {} its own `openclaw_profile`",
            me.name
        ))
    } else {
        let log = openclaw::rolling_log_file(profile);
        let why = match rolling.as_slice() {
            [only] => format!(
                "{}'s config file {} sets no `logging.file`, so its gateway writes the profile's rolling log {}, and a profile two instances share needs a `logging.file` in each",
                only.name,
                only.config_path.value.display(),
                log.display()
            ),
            _ => format!(
                "neither config file sets `logging.file`, so both gateways write the profile's rolling log {}",
                log.display()
            ),
        };
        let files: Vec<String> = rolling
            .iter()
            .map(|p| p.config_path.value.display().to_string())
            .collect();
        Diagnostic::error(
            Kind::ProfileConflict,
            me.openclaw_profile_at.clone(),
            format!("{shared}: {why}"),
        )
        .hint(format!(
            "give {} its own `openclaw_profile`, or set `logging.file` in {} (and run them under this supervisor only: OpenClaw's own service unit for the profile, {unit} from `{install}`, is one for both)",
            me.name,
            files.join(" and ")
        ))
    };
    d.instance(me.name.as_str())
        .field("openclaw_profile")
        .other(first.name.as_str(), first.openclaw_profile_at.clone())
}

fn port_validity(profiles: &[Profile], out: &mut Vec<Diagnostic>) {
    for p in profiles {
        let fallbacks: Vec<String> = p
            .ports
            .iter()
            .filter_map(|c| {
                c.fallback
                    .as_ref()
                    .map(|why| format!("{} {} ({why})", c.describe(), c.span()))
            })
            .collect();
        let past: Vec<String> = p
            .ports
            .iter()
            .filter(|c| c.end > 65535)
            .map(|c| match &c.source {
                ClaimSource::Derived(role) => {
                    format!("{} {} ({})", c.describe(), c.span(), role.formula())
                }
                _ => format!("{} {}", c.describe(), c.span()),
            })
            .collect();
        if fallbacks.is_empty() && past.is_empty() {
            continue;
        }
        let at = port_location(p);
        let mut parts = Vec::new();
        if !fallbacks.is_empty() {
            parts.push(format!(
                "gateway port {} makes OpenClaw fall back onto the default instance's ports: {}",
                p.port.value,
                fallbacks.join(", ")
            ));
        }
        if !past.is_empty() {
            parts.push(format!(
                "gateway port {} derives ports past 65535: {}",
                p.port.value,
                past.join(", ")
            ));
        }
        let kind = if fallbacks.is_empty() {
            Kind::PortOutOfRange
        } else {
            Kind::PortFallback
        };
        out.push(
            Diagnostic::error(kind, at, parts.join("; "))
                .instance(p.name.as_str())
                .field("port")
                .hint(format!(
                    "use a gateway port of {MAX_BLOCK_BASE} or below, so G..G+110 fits"
                )),
        );
    }
}

fn port_location(p: &Profile) -> Location {
    p.ports
        .first()
        .map_or_else(|| p.name_at.clone(), |c| c.at.clone())
}

/// One port claim in the sweep.
struct Entry<'a> {
    start: u32,
    end: u32,
    inst: usize,
    claim: &'a PortClaim,
}

/// Two instances (indices into the profiles), in either order: findings are one per pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InstancePair {
    low: usize,
    high: usize,
}

impl InstancePair {
    fn of(a: usize, b: usize) -> Self {
        InstancePair {
            low: a.min(b),
            high: a.max(b),
        }
    }
}

/// The first overlap the sweep met between two instances, and how many more it met.
#[derive(Debug, Clone, Copy)]
struct PairOverlap {
    /// The entry that starts later (or sorts last): its instance is told to move.
    later: usize,
    /// The entry it ran into.
    earlier: usize,
    /// Further overlaps between the same two instances, reported as "and N more".
    more: usize,
}

fn port_overlaps(profiles: &[Profile], ctx: &Context, out: &mut Vec<Diagnostic>) {
    let mut entries: Vec<Entry<'_>> = profiles
        .iter()
        .enumerate()
        .flat_map(|(inst, p)| {
            p.ports
                .iter()
                .filter(|c| c.end <= 65535)
                .map(move |claim| Entry {
                    start: claim.start,
                    end: claim.end,
                    inst,
                    claim,
                })
        })
        .collect();
    // On equal spans a claim that only exists through a fallback sorts last, so the instance whose
    // port caused the fallback is the one told to move.
    entries.sort_by(|a, b| {
        let key = |e: &Entry<'_>| {
            (
                e.start,
                e.end,
                e.claim.fallback.is_some(),
                profiles[e.inst].name.as_str(),
            )
        };
        key(a).cmp(&key(b))
    });
    let free = FreeBlocks::new(entries.iter().map(|e| Span {
        start: e.start,
        end: e.end,
        inst: e.inst,
    }));

    // Per pair of instances: the first overlap found (the lowest port) and how many more.
    let mut pairs: HashMap<InstancePair, PairOverlap> = HashMap::new();
    let mut order: Vec<InstancePair> = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        active.retain(|&a| entries[a].end >= e.start);
        for &a in &active {
            let other = &entries[a];
            if other.inst == e.inst {
                continue;
            }
            let key = InstancePair::of(e.inst, other.inst);
            match pairs.get_mut(&key) {
                Some(found) => found.more += 1,
                None => {
                    // A new (or changed) instance that runs into one already running is the one
                    // told to move, wherever its claim starts.
                    let (later, earlier) = if ctx.is_fresh(&profiles[other.inst])
                        && !ctx.is_fresh(&profiles[e.inst])
                    {
                        (a, i)
                    } else {
                        (i, a)
                    };
                    pairs.insert(
                        key,
                        PairOverlap {
                            later,
                            earlier,
                            more: 0,
                        },
                    );
                    order.push(key);
                }
            }
        }
        active.push(i);
    }
    // One "move X to N" per instance: the lowest block above every instance it collides with.
    let mut clear_above: HashMap<usize, u32> = HashMap::new();
    for key in &order {
        let PairOverlap { later, earlier, .. } = pairs[key];
        let above = clear_above.entry(entries[later].inst).or_insert(0);
        *above = (*above).max(entries[earlier].end + 1);
    }
    let moves: HashMap<usize, Option<u32>> = clear_above
        .into_iter()
        .map(|(inst, from)| (inst, free.base_from(from, inst, &profiles[inst].ports)))
        .collect();
    for key in order {
        let PairOverlap {
            later,
            earlier,
            more,
        } = pairs[&key];
        let to = moves.get(&entries[later].inst).copied().flatten();
        out.push(port_finding(
            profiles,
            &entries[later],
            &entries[earlier],
            more,
            to,
        ));
    }
}

fn port_finding(
    profiles: &[Profile],
    e: &Entry<'_>,
    other: &Entry<'_>,
    more: usize,
    move_to: Option<u32>,
) -> Diagnostic {
    let (me, them) = (&profiles[e.inst], &profiles[other.inst]);
    let what = |c: &PortClaim| match c.source {
        ClaimSource::Derived(Role::Gateway) => "port".to_string(),
        _ => c.describe(),
    };
    // `e` may start before `other` when it is the new instance told to move.
    let relation = if e.start == other.start && e.end == other.end {
        "is also".to_string()
    } else if e.start >= other.start && e.end <= other.end {
        "lies inside".to_string()
    } else if other.start >= e.start && other.end <= e.end {
        "covers".to_string()
    } else {
        format!(
            "overlaps at {}-{}",
            e.start.max(other.start),
            other.end.min(e.end)
        )
    };
    let relation = match relation.strip_prefix("overlaps at ") {
        Some(range) => format!("overlaps, at {range},"),
        None => relation,
    };
    let mut message = format!(
        "{} {} {relation} {}'s {} {} ({})",
        what(e.claim),
        e.claim.span(),
        them.name,
        what(other.claim),
        other.claim.span(),
        other.claim.at
    );
    if more > 0 {
        message.push_str(&format!(
            " (and {more} more overlap{} between them)",
            if more == 1 { "" } else { "s" }
        ));
    }
    let hint = match &e.claim.source {
        ClaimSource::Derived(_) => match move_to {
            Some(b) => format!("move {} to {b} or above", me.name),
            None => format!(
                "move {} to a free block of {BLOCK_SPAN} ports (G..G+110)",
                me.name
            ),
        },
        ClaimSource::Config(field) => format!("change `{field}` in {}", e.claim.at.file.display()),
        ClaimSource::Reserved => format!("change {}'s reserve_ports", me.name),
    };
    Diagnostic::error(Kind::PortConflict, e.claim.at.clone(), message)
        .instance(me.name.as_str())
        .field(match &e.claim.source {
            ClaimSource::Derived(_) => "port".to_string(),
            ClaimSource::Config(f) => f.clone(),
            ClaimSource::Reserved => "reserve_ports".to_string(),
        })
        .other(them.name.as_str(), other.claim.at.clone())
        .hint(hint)
}

/// One warning per instance with claims the kernel may hand out as ephemeral ports (not an error:
/// the gateway may well bind, but at random it will not).
fn ephemeral_ports(profiles: &[Profile], eph: &Ephemeral, out: &mut Vec<Diagnostic>) {
    let mut free: Option<FreeBlocks> = None;
    for (inst, p) in profiles.iter().enumerate() {
        let hits: Vec<(&PortClaim, Vec<(u32, u32)>)> = p
            .ports
            .iter()
            .filter(|c| c.end <= 65535)
            .map(|c| (c, eph.overlap(c.start, c.end)))
            .filter(|(_, o)| !o.is_empty())
            .collect();
        let Some((first, _)) = hits.first() else {
            continue;
        };
        let mut derived: Vec<(u32, u32)> = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        let mut hints: Vec<String> = Vec::new();
        for (c, o) in &hits {
            match &c.source {
                ClaimSource::Derived(_) => derived.extend(o.iter().copied()),
                ClaimSource::Config(field) => {
                    parts.push(format!("{} {} ({})", c.describe(), c.span(), c.at));
                    hints.push(format!(
                        "change `{field}` in {} to a port outside the range",
                        c.at.file.display()
                    ));
                }
                ClaimSource::Reserved => {
                    parts.push(format!("{} {} ({})", c.describe(), c.span(), c.at));
                    hints.push(format!("move {}'s reserve_ports outside the range", p.name));
                }
            }
        }
        if !derived.is_empty() {
            derived.sort();
            let merged = merge(&derived);
            parts.insert(
                0,
                format!(
                    "port{} {} of the block of gateway port {}",
                    if merged.len() == 1 && merged[0].0 == merged[0].1 {
                        ""
                    } else {
                        "s"
                    },
                    ephemeral::spans(&merged),
                    p.port.value,
                ),
            );
            let blocks = free.get_or_insert_with(|| all_blocks(profiles));
            let below = |from: u32| {
                blocks
                    .base_from(from, inst, &p.ports)
                    .filter(|b| b + BLOCK_SPAN - 1 < eph.start)
            };
            let to = below(u32::from(openclaw::DEFAULT_GATEWAY_PORT))
                .or_else(|| below(1024))
                .or_else(|| blocks.base_from(eph.end + 1, inst, &p.ports));
            hints.insert(
                0,
                match to {
                    Some(b) => format!("move {} to {b} (outside the range)", p.name),
                    None => format!("move {} outside the range", p.name),
                },
            );
        }
        let all: Vec<(u32, u32)> = hits.iter().flat_map(|(_, o)| o.iter().copied()).collect();
        let top = all.iter().map(|o| o.1).max().unwrap_or(eph.end);
        let mut reserve = eph.reserved.clone();
        reserve.extend(merge(&{
            let mut a = all.clone();
            a.sort();
            a
        }));
        reserve.sort();
        let mut fix = hints.join(", or ");
        if top < eph.end {
            fix.push_str(&format!(
                ", or narrow the range to leave them out: sysctl -w net.ipv4.ip_local_port_range=\"{} {}\"",
                top + 1,
                eph.end
            ));
        }
        fix.push_str(&format!(
            ", or reserve the ports: sysctl -w net.ipv4.ip_local_reserved_ports={} (both in /etc/sysctl.d/ to last)",
            ephemeral::spans(&merge(&reserve))
        ));
        out.push(
            Diagnostic::warning(
                Kind::EphemeralPort,
                first.at.clone(),
                format!(
                    "{} lie in the kernel's ephemeral port range {eph} ({}): any outgoing connection on this host may take such a port first; the gateway then fails to bind at random",
                    parts.join("; "),
                    ephemeral::RANGE_FILE
                ),
            )
            .instance(p.name.as_str())
            .field("port")
            .hint(fix),
        );
    }
}

/// Sorted inclusive ranges, those that touch or overlap joined.
fn merge(sorted: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &(a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The free blocks among every claim of every instance.
fn all_blocks(profiles: &[Profile]) -> FreeBlocks {
    let mut spans: Vec<Span> = profiles
        .iter()
        .enumerate()
        .flat_map(|(inst, p)| {
            p.ports
                .iter()
                .filter(|c| c.end <= 65535)
                .map(move |c| Span {
                    start: c.start,
                    end: c.end,
                    inst,
                })
        })
        .collect();
    spans.sort_by_key(|s| (s.start, s.end));
    FreeBlocks::new(spans.into_iter())
}

/// Answers "where is the lowest gateway port, at or above F, whose whole block G..G+110 no other
/// instance claims?" for the hint of a port conflict, without walking the port space claim by claim:
/// a block is either free of every claim (found by binary search among the gaps of all claims), or
/// free of all but the instance's own claims, which can only be near one of those.
struct FreeBlocks {
    /// Claims no wider than `WIDE`, sorted by start.
    narrow: Vec<Span>,
    /// Wider claims (large `reserve_ports` ranges), checked one by one.
    wide: Vec<Span>,
    /// The gaps between all claims that hold a whole block, in order.
    gaps: Vec<Gap>,
}

/// A claim's ports and whose it is, as [`FreeBlocks`] needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
    inst: usize,
}

/// Free ports between claims, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    first: u32,
    last: u32,
}

const WIDE: u32 = 1000;

impl FreeBlocks {
    /// From every claim (of ports up to 65535), sorted by start.
    fn new(sorted: impl Iterator<Item = Span>) -> Self {
        let (mut narrow, mut wide, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
        let mut next_free = 1u32;
        for c in sorted {
            if c.start > next_free && c.start - next_free >= BLOCK_SPAN {
                gaps.push(Gap {
                    first: next_free,
                    last: c.start - 1,
                });
            }
            next_free = next_free.max(c.end + 1);
            if c.end - c.start > WIDE {
                wide.push(c);
            } else {
                narrow.push(c);
            }
        }
        if next_free <= MAX_BLOCK_BASE {
            gaps.push(Gap {
                first: next_free,
                last: 65535,
            });
        }
        FreeBlocks { narrow, wide, gaps }
    }

    /// The lowest base at or above `from` whose block holds no claim at all.
    fn free_of_all(&self, from: u32) -> Option<u32> {
        let i = self
            .gaps
            .partition_point(|g| g.last < from.saturating_add(BLOCK_SPAN - 1));
        let gap = self.gaps.get(i)?;
        Some(gap.first.max(from)).filter(|b| *b <= MAX_BLOCK_BASE)
    }

    /// The end of the furthest claim of another instance that the block at `b` would hit.
    fn blocker(&self, b: u32, me: usize) -> Option<u32> {
        let top = b + BLOCK_SPAN - 1;
        let lo = self.narrow.partition_point(|c| c.start + WIDE < b);
        let hi = self.narrow.partition_point(|c| c.start <= top);
        self.narrow[lo..hi.max(lo)]
            .iter()
            .chain(self.wide.iter().filter(|c| c.start <= top))
            .filter(|c| c.end >= b && c.inst != me)
            .map(|c| c.end)
            .max()
    }

    /// The lowest gateway port at or above `from` for instance `me`, whose block holds no claim
    /// but `me`'s own (`own`, which moving would free); `None` if none fits below 65536.
    fn base_from(&self, from: u32, me: usize, own: &[PortClaim]) -> Option<u32> {
        let mut best = self.free_of_all(from);
        for c in own.iter().filter(|c| c.end <= 65535) {
            let mut b = from.max(c.start.saturating_sub(BLOCK_SPAN - 1)).max(1);
            while b <= c.end && b <= MAX_BLOCK_BASE && best.is_none_or(|x| b < x) {
                match self.blocker(b, me) {
                    None => {
                        best = Some(b);
                        break;
                    }
                    Some(end) => b = end + 1,
                }
            }
        }
        best
    }
}

/// What a path is to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathRole {
    Config,
    State,
    Workspace,
    /// The gateway's own log: `logging.file`, or OpenClaw's rolling file named after the profile.
    LogFile,
}

impl PathRole {
    fn describe(self) -> &'static str {
        match self {
            PathRole::Config => "config file",
            PathRole::State => "state dir",
            PathRole::Workspace => "workspace",
            PathRole::LogFile => "log file",
        }
    }
    fn field(self) -> &'static str {
        match self {
            PathRole::Config => "config_path",
            PathRole::State => "state_dir",
            PathRole::Workspace => "workspace",
            PathRole::LogFile => "logging.file",
        }
    }
}

impl PathEntry<'_> {
    /// OpenClaw's rolling log, named after the profile: two of them are one file only when the
    /// profile is one, which [`shared_openclaw_profiles`] reports.
    fn rolling_log(&self) -> bool {
        self.role == PathRole::LogFile && self.written.origin == Origin::Default
    }
}

struct PathEntry<'a> {
    real: PathBuf,
    inst: usize,
    role: PathRole,
    written: &'a Sourced<PathBuf>,
}

/// A place two instances share, found by the path sweep.
struct SharedPlace<'a> {
    /// The entry that lies inside (or equals) the other.
    inner: usize,
    /// The entry around it.
    outer: usize,
    /// The two instances.
    pair: InstancePair,
    /// The contested place: findings of the same pair inside it are folded into this one.
    place: &'a Path,
    /// How many were folded in.
    more: usize,
}

fn path_overlaps(profiles: &[Profile], out: &mut Vec<Diagnostic>) {
    let mut real = RealPaths::default();
    let mut entries: Vec<PathEntry<'_>> = Vec::with_capacity(profiles.len() * 4);
    for (inst, p) in profiles.iter().enumerate() {
        let own = [
            (PathRole::Config, &p.config_path),
            (PathRole::State, &p.state_dir),
            (PathRole::Workspace, &p.workspace),
            (PathRole::LogFile, &p.log_file),
        ];
        let agents = p.agent_workspaces.iter().map(|w| (PathRole::Workspace, w));
        for (role, written) in own.into_iter().chain(agents) {
            entries.push(PathEntry {
                real: real.resolve(&written.value),
                inst,
                role,
                written,
            });
        }
    }
    entries.sort_by(|a, b| {
        (&a.real, profiles[a.inst].name.as_str(), a.role).cmp(&(
            &b.real,
            profiles[b.inst].name.as_str(),
            b.role,
        ))
    });
    // Component-wise order puts every path right after its ancestors: the stack holds the chain of
    // ancestors (and equals) of the current path. Once two instances are found to share a place,
    // what lies inside it (the default config file in a shared state dir, say) is folded into that
    // finding rather than repeated.
    let mut stack: Vec<usize> = Vec::new();
    let mut found: Vec<SharedPlace<'_>> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        while stack
            .last()
            .is_some_and(|&s| !e.real.starts_with(&entries[s].real))
        {
            stack.pop();
        }
        for &s in &stack {
            let outer = &entries[s];
            if outer.inst == e.inst || (outer.rolling_log() && e.rolling_log()) {
                continue;
            }
            let pair = InstancePair::of(e.inst, outer.inst);
            let folded = found
                .iter_mut()
                .rev()
                .find(|f| f.pair == pair && outer.real.starts_with(f.place));
            match folded {
                Some(f) => f.more += 1,
                None => found.push(SharedPlace {
                    inner: i,
                    outer: s,
                    pair,
                    place: &outer.real,
                    more: 0,
                }),
            }
        }
        stack.push(i);
    }
    for f in found {
        out.push(path_finding(
            profiles,
            &entries[f.inner],
            &entries[f.outer],
            f.more,
        ));
    }
}

fn path_finding(
    profiles: &[Profile],
    e: &PathEntry<'_>,
    outer: &PathEntry<'_>,
    more: usize,
) -> Diagnostic {
    let (me, them) = (&profiles[e.inst], &profiles[outer.inst]);
    let show = |p: &PathEntry<'_>| {
        let written = p.written.value.display().to_string();
        let mut s = if p.real != p.written.value {
            format!("{written} (= {})", p.real.display())
        } else {
            written
        };
        if p.written.origin == Origin::Default {
            s.push_str(" (OpenClaw's default)");
        }
        s
    };
    let equal = e.real == outer.real;
    let mut message = format!(
        "{} {} {} {}'s {} {} ({})",
        e.role.describe(),
        show(e),
        if equal { "is also" } else { "lies inside" },
        them.name,
        outer.role.describe(),
        show(outer),
        place_location(them, outer)
    );
    if more > 0 {
        message.push_str(&format!(
            " (and {more} more shared path{} inside it)",
            if more == 1 { "" } else { "s" }
        ));
    }
    let hint = if e.role == PathRole::LogFile {
        format!(
            "set `logging.file` in {}'s config file {} to a file of its own{}",
            me.name,
            me.config_path.value.display(),
            if equal {
                String::new()
            } else {
                format!(", outside {}'s {}", them.name, outer.role.describe())
            }
        )
    } else if equal {
        format!("give {} its own {}", me.name, e.role.describe())
    } else {
        format!(
            "move {}'s {} out of {}'s {}",
            me.name,
            e.role.describe(),
            them.name,
            outer.role.describe()
        )
    };
    Diagnostic::error(Kind::PathConflict, place_location(me, e), message)
        .instance(me.name.as_str())
        .field(e.role.field())
        .other(them.name.as_str(), place_location(them, outer))
        .hint(hint)
}

/// Where a path is decided; OpenClaw's rolling log follows from the profile name.
fn place_location(p: &Profile, e: &PathEntry<'_>) -> Location {
    if e.rolling_log() {
        return p.openclaw_profile_at.clone();
    }
    origin_location(p, e.written)
}

fn origin_location(p: &Profile, s: &Sourced<PathBuf>) -> Location {
    match &s.origin {
        Origin::Profile(at) | Origin::ConfigFile(at) => at.clone(),
        Origin::ProfileHash(_) | Origin::Default => p.name_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_warned_of_when_missing_and_when_one_serves_all() {
        let dir = tempfile::tempdir().unwrap();
        let profile = |name: &str, port: u16, extra: &str| {
            let text = format!(
                "port: {port}\nstate_dir: {}/{name}\n{extra}",
                dir.path().display()
            );
            std::fs::write(dir.path().join(format!("{name}.yaml")), text).unwrap();
        };
        profile("main", 18789, "runtime: { openclaw: 2026.9.6 }\n");
        profile("rescue", 19001, "runtime: { openclaw: 2026.9.6 }\n");
        let store = crate::runtime::Store::new(dir.path().join("store"));
        let found = runtimes(
            &crate::profile::load_with_env(dir.path(), &|_| None).profiles,
            &store,
        );
        let kinds: Vec<Kind> = found.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::RuntimeMissing,
                Kind::RuntimeMissing,
                Kind::SharedRuntime
            ]
        );
        assert!(found
            .iter()
            .all(|d| d.severity == crate::profile::Severity::Warning));
        assert_eq!(found[0].at.line, 3);
        assert_eq!(found[0].field.as_deref(), Some("runtime"));
        assert!(found[0].hint.as_deref().is_some_and(
            |h| h.starts_with("install it: openclawctl runtime install openclaw@2026.9.6")
        ));
        assert_eq!(found[2].instance.as_deref(), Some("rescue"));
        assert!(found[2]
            .message
            .ends_with("an upgrade that breaks one breaks all; give rescue its own"));

        // Both on the PATH's openclaw: said only once the store holds a runtime.
        profile("main", 18789, "");
        profile("rescue", 19001, "");
        let plan = crate::profile::load_with_env(dir.path(), &|_| None);
        assert!(runtimes(&plan.profiles, &store).is_empty());
        let r = store.dir_for("2026.9.6", "24.21.0");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(
            r.join(crate::runtime::MANIFEST),
            "{\"format\":1,\"openclaw\":\"2026.9.6\",\"node\":\"24.21.0\"}",
        )
        .unwrap();
        let found = runtimes(&plan.profiles, &store);
        assert_eq!(found.len(), 1);
        assert!(found[0]
            .message
            .contains("the `openclaw` on the daemon's PATH"));

        // One instance alone shares with nobody.
        std::fs::remove_file(dir.path().join("rescue.yaml")).unwrap();
        let plan = crate::profile::load_with_env(dir.path(), &|_| None);
        assert!(runtimes(&plan.profiles, &store).is_empty());
    }

    const ME: usize = 0;

    /// Builds the free blocks from (start, end, instance) claims, sorted as the sweep sorts them.
    fn blocks(claims: &[(u32, u32, usize)]) -> FreeBlocks {
        let mut spans: Vec<Span> = claims
            .iter()
            .map(|&(start, end, inst)| Span { start, end, inst })
            .collect();
        spans.sort_by_key(|s| (s.start, s.end));
        FreeBlocks::new(spans.into_iter())
    }

    fn own(claims: &[(u32, u32)]) -> Vec<PortClaim> {
        claims
            .iter()
            .map(|&(start, end)| PortClaim {
                start,
                end,
                source: ClaimSource::Reserved,
                at: Location::file(Path::new("me.yaml")),
                fallback: None,
            })
            .collect()
    }

    fn gaps(f: &FreeBlocks) -> Vec<(u32, u32)> {
        f.gaps.iter().map(|g| (g.first, g.last)).collect()
    }

    #[test]
    fn free_blocks_are_the_gaps_between_claims() {
        let f = blocks(&[(1000, 1110, 1), (2000, 2110, 2), (5000, 5000, 3)]);
        assert_eq!(
            gaps(&f),
            [(1, 999), (1111, 1999), (2111, 4999), (5001, 65535)]
        );
        assert_eq!(f.base_from(1, ME, &[]), Some(1));
        assert_eq!(f.base_from(900, ME, &[]), Some(1111));
        assert_eq!(f.base_from(1500, ME, &[]), Some(1500));
        // 1900..=2010 would reach 2000.
        assert_eq!(f.base_from(1900, ME, &[]), Some(2111));
        assert_eq!(f.base_from(4900, ME, &[]), Some(5001));
    }

    #[test]
    fn a_gap_one_port_short_of_a_block_is_skipped() {
        // 1100..=1209 is 110 ports: a block needs 111.
        let f = blocks(&[(1000, 1099, 1), (1210, 1300, 2)]);
        assert_eq!(gaps(&f), [(1, 999), (1301, 65535)]);
        assert_eq!(f.base_from(1000, ME, &[]), Some(1301));
    }

    #[test]
    fn a_block_that_fits_exactly_between_two_claims_is_found() {
        // 1100..=1210 is exactly 111 ports.
        let f = blocks(&[(1000, 1099, 1), (1211, 1300, 2)]);
        assert_eq!(gaps(&f), [(1, 999), (1100, 1210), (1301, 65535)]);
        assert_eq!(f.base_from(1000, ME, &[]), Some(1100));
        // From one port later the block would end on 1211.
        assert_eq!(f.base_from(1101, ME, &[]), Some(1301));
    }

    #[test]
    fn the_last_block_ends_on_65535() {
        let f = blocks(&[(1000, 1110, 1)]);
        assert_eq!(f.base_from(MAX_BLOCK_BASE, ME, &[]), Some(MAX_BLOCK_BASE));
        assert_eq!(f.base_from(MAX_BLOCK_BASE + 1, ME, &[]), None);
    }

    #[test]
    fn no_block_fits_when_claims_reach_the_top() {
        // A block above 65440 would pass 65535; below it, 65430..=65440 is in the way.
        let f = blocks(&[(65300, 65320, 1), (65430, 65440, 2)]);
        assert_eq!(f.base_from(65350, ME, &[]), None);
        // The whole space taken, by one wide claim.
        let f = blocks(&[(1, 65535, 1)]);
        assert!(gaps(&f).is_empty());
        assert_eq!(f.base_from(1, ME, &[]), None);
    }

    #[test]
    fn overlapping_claims_leave_one_gap_after_the_furthest_end() {
        // The second starts inside the first; the third lies wholly inside the second.
        let f = blocks(&[(1000, 1200, 1), (1100, 3000, 2), (1500, 1600, 3)]);
        assert_eq!(gaps(&f), [(1, 999), (3001, 65535)]);
        assert_eq!(f.base_from(1000, ME, &[]), Some(3001));
    }

    #[test]
    fn adjacent_claims_leave_no_gap_between_them() {
        let f = blocks(&[(1000, 1110, 1), (1111, 1221, 2), (1222, 1332, 3)]);
        assert_eq!(gaps(&f), [(1, 999), (1333, 65535)]);
        assert_eq!(f.base_from(1000, ME, &[]), Some(1333));
    }

    #[test]
    fn an_instances_own_claims_do_not_block_its_move() {
        // ME (1050..=1160) collides with instance 1 (1000..=1110), so it must start above 1110.
        // Free of every claim, the lowest block starts at 1161, after ME's own claim; but moving
        // frees that claim, so 1111 will do.
        let f = blocks(&[(1000, 1110, 1), (1050, 1160, ME), (1300, 1410, 1)]);
        assert_eq!(f.base_from(1111, ME, &[]), Some(1161));
        assert_eq!(f.base_from(1111, ME, &own(&[(1050, 1160)])), Some(1111));
        // For any other instance ME's claim still counts.
        assert_eq!(f.base_from(1111, 2, &own(&[(1050, 1160)])), Some(1161));
    }

    #[test]
    fn a_wide_reserved_range_blocks_every_base_inside_it() {
        // Wider than WIDE, so checked apart from the narrow claims.
        // ME's own claim lies inside instance 1's wide range: no base near it is free.
        let f = blocks(&[(1000, 5000, 1), (4990, 5000, ME), (5100, 5150, 2)]);
        assert_eq!(f.wide.len(), 1);
        assert_eq!(f.base_from(1000, ME, &own(&[(4990, 5000)])), Some(5151));
    }
}

/// The profile-name claim and the log files in the path sweep, on real temp dirs: profiles and
/// OpenClaw config files read as the daemon reads them.
#[cfg(test)]
mod claim_tests {
    use super::super::{load_with_env, Plan, Severity};
    use super::*;

    /// Writes each `(path, text)` under a temp dir (`$T` in a text is that dir) and checks `d/`.
    fn plan(files: &[(&str, &str)]) -> (tempfile::TempDir, Plan) {
        let root = tempfile::tempdir().expect("tempdir");
        let t = root.path().display().to_string();
        std::fs::create_dir_all(root.path().join("d")).expect("mkdir");
        for (path, text) in files {
            let p = root.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text.replace("$T", &t)).expect("write");
        }
        let home = root.path().join("home").display().to_string();
        let env = move |k: &str| (k == "HOME").then(|| home.clone());
        let plan = load_with_env(&root.path().join("d"), &env);
        (root, plan)
    }

    /// A profile on its own port, state dir and config file, plus `extra` YAML.
    fn profile(name: &str, port: u16, extra: &str) -> (String, String) {
        (
            format!("d/{name}.yaml"),
            format!("port: {port}\nstate_dir: $T/{name}\nconfig_path: $T/cfg/{name}.json\n{extra}"),
        )
    }

    fn config(name: &str, text: &str) -> (String, String) {
        (format!("cfg/{name}.json"), text.to_string())
    }

    fn run(files: Vec<(String, String)>) -> (tempfile::TempDir, Plan) {
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        plan(&refs)
    }

    fn of_kind(plan: &Plan, kind: Kind) -> Vec<&Diagnostic> {
        plan.report
            .diagnostics
            .iter()
            .filter(|d| d.kind == kind)
            .collect()
    }

    #[test]
    fn the_same_openclaw_profile_twice_is_an_error_naming_both_lines() {
        let (root, plan) = run(vec![
            profile("main", 20000, "openclaw_profile: bot\n"),
            profile("rescue", 20200, "openclaw_profile: bot\n"),
        ]);
        let found = of_kind(&plan, Kind::ProfileConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        let d = found[0];
        assert_eq!(d.severity, Severity::Error);
        assert_eq!(d.instance.as_deref(), Some("rescue"));
        assert_eq!((d.at.file.ends_with("d/rescue.yaml"), d.at.line), (true, 4));
        let (other, at) = d.other.as_ref().expect("the other instance");
        assert_eq!(
            (other.as_str(), at.file.ends_with("d/main.yaml"), at.line),
            ("main", true, 4)
        );
        let text = d.to_string();
        let dir = root.path().display();
        assert!(
            text.contains(&format!(
                "OpenClaw profile \"bot\" is also main's ({dir}/d/main.yaml:4)"
            )),
            "{text}"
        );
        assert!(text.contains("both gateways write the profile's rolling log /tmp/openclaw/openclaw-bot-YYYY-MM-DD.log"), "{text}");
        assert!(text.contains("openclaw-gateway-bot.service"), "{text}");
        assert!(!plan.report.ok());
        // Nothing else is shared.
        assert_eq!(plan.report.diagnostics.len(), 1, "{}", plan.report);
    }

    #[test]
    fn a_profile_defaulting_to_the_same_name_is_the_same_profile() {
        // `bot` takes its profile from its name; the other names it.
        let (_root, plan) = run(vec![
            profile("bot", 20000, ""),
            profile("ops", 20200, "openclaw_profile: bot\n"),
        ]);
        let found = of_kind(&plan, Kind::ProfileConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        assert_eq!(found[0].instance.as_deref(), Some("ops"));
        // The name comes from the file: the whole file is where it is decided.
        assert_eq!(
            found[0].other.as_ref().map(|(n, at)| (n.as_str(), at.line)),
            Some(("bot", 0))
        );
        // OpenClaw's unnamed profile, twice.
        let (_root, plan) = run(vec![
            profile("a", 20000, "openclaw_profile: default\n"),
            profile("b", 20200, "openclaw_profile: DEFAULT\n"),
        ]);
        let text = plan.report.to_string();
        assert!(
            text.contains("OpenClaw profile \"default\" is also a's"),
            "{text}"
        );
        assert!(
            text.contains("/tmp/openclaw/openclaw-YYYY-MM-DD.log"),
            "{text}"
        );
        assert!(text.contains("openclaw-gateway.service"), "{text}");
    }

    #[test]
    fn one_instance_name_twice_is_reported_as_the_name_only() {
        let (_root, plan) = run(vec![
            profile("main", 20000, ""),
            (
                "d/other.yaml".to_string(),
                "name: main\nport: 20200\nstate_dir: $T/other\nconfig_path: $T/cfg/other.json\n"
                    .to_string(),
            ),
        ]);
        assert_eq!(
            of_kind(&plan, Kind::DuplicateName).len(),
            1,
            "{}",
            plan.report
        );
        assert!(
            of_kind(&plan, Kind::ProfileConflict).is_empty(),
            "{}",
            plan.report
        );
    }

    #[test]
    fn profile_names_differing_in_case_are_two_profiles() {
        // OpenClaw on Linux: ~/.openclaw-Bot and ~/.openclaw-bot, openclaw--1bot-... and openclaw-bot-...
        let (_root, plan) = run(vec![
            profile("a", 20000, "openclaw_profile: Bot\n"),
            profile("b", 20200, "openclaw_profile: bot\n"),
        ]);
        assert!(plan.report.diagnostics.is_empty(), "{}", plan.report);
    }

    #[test]
    fn a_log_file_of_its_own_in_each_config_file_leaves_a_warning() {
        let (_root, plan) = run(vec![
            profile("main", 20000, "openclaw_profile: bot\n"),
            profile("rescue", 20200, "openclaw_profile: bot\n"),
            config("main", "{ logging: { file: '$T/logs/main.log' } }"),
            config("rescue", "{\n  logging: { file: '$T/logs/rescue.log' },\n}"),
        ]);
        assert!(plan.report.ok(), "{}", plan.report);
        let found = of_kind(&plan, Kind::ProfileConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        assert_eq!(found[0].severity, Severity::Warning);
        let text = found[0].to_string();
        assert!(text.contains("their logs are apart"), "{text}");
        assert!(text.contains("openclaw-gateway-bot.service"), "{text}");
    }

    #[test]
    fn one_log_file_is_not_enough_and_the_hint_names_the_other_config_file() {
        let (root, plan) = run(vec![
            profile("main", 20000, "openclaw_profile: bot\n"),
            profile("rescue", 20200, "openclaw_profile: bot\n"),
            config("rescue", "{ logging: { file: '$T/logs/rescue.log' } }"),
        ]);
        let found = of_kind(&plan, Kind::ProfileConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        assert_eq!(found[0].severity, Severity::Error);
        let main_cfg = root.path().join("cfg/main.json");
        let text = found[0].to_string();
        assert!(
            text.contains(&format!(
                "main's config file {} sets no `logging.file`",
                main_cfg.display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "or set `logging.file` in {} (",
                main_cfg.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn three_instances_on_one_profile_give_a_finding_each_past_the_first() {
        let (_root, plan) = run(vec![
            profile("a", 20000, "openclaw_profile: bot\n"),
            profile("b", 20200, "openclaw_profile: bot\n"),
            profile("c", 20400, "openclaw_profile: bot\n"),
        ]);
        let found: Vec<_> = of_kind(&plan, Kind::ProfileConflict)
            .iter()
            .map(|d| {
                (
                    d.instance.clone().unwrap_or_default(),
                    d.other.clone().map(|o| o.0),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("b".to_string(), Some("a".to_string())),
                ("c".to_string(), Some("a".to_string()))
            ]
        );
    }

    #[test]
    fn the_same_log_file_in_two_config_files_is_a_path_conflict_naming_both_lines() {
        let (root, plan) = run(vec![
            profile("main", 20000, ""),
            profile("rescue", 20200, ""),
            config("main", "{\n  logging: { file: '$T/logs/gw.log' },\n}"),
            config(
                "rescue",
                "{\n\n  logging: {\n    file: '$T/logs/./gw.log',\n  },\n}",
            ),
        ]);
        let found = of_kind(&plan, Kind::PathConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        let d = found[0];
        assert_eq!(d.field.as_deref(), Some("logging.file"));
        assert_eq!(
            (d.at.file.ends_with("cfg/rescue.json"), d.at.line),
            (true, 4)
        );
        let (other, at) = d.other.as_ref().expect("other");
        assert_eq!(
            (other.as_str(), at.file.ends_with("cfg/main.json"), at.line),
            ("main", true, 2)
        );
        let log = root.path().join("logs/gw.log");
        let text = d.to_string();
        assert!(
            text.contains(&format!(
                "log file {} is also main's log file {}",
                log.display(),
                log.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("set `logging.file` in rescue's config file"),
            "{text}"
        );
    }

    #[test]
    fn a_log_file_inside_another_state_dir_is_a_path_conflict() {
        let (_root, plan) = run(vec![
            profile("main", 20000, ""),
            profile("rescue", 20200, ""),
            config("rescue", "{ logging: { file: '$T/main/logs/rescue.log' } }"),
        ]);
        let found = of_kind(&plan, Kind::PathConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        let text = found[0].to_string();
        assert!(text.contains("lies inside main's state dir"), "{text}");
        assert!(text.contains(", outside main's state dir"), "{text}");
        // Inside its own state dir it is fine.
        let (_root, plan) = run(vec![
            profile("main", 20000, ""),
            config("main", "{ logging: { file: '$T/main/logs/main.log' } }"),
        ]);
        assert!(plan.report.diagnostics.is_empty(), "{}", plan.report);
    }

    #[test]
    fn a_relative_log_file_is_relative_to_the_gateways_working_dir() {
        // Node opens it against the process's cwd: the profile's working_dir.
        let (_root, plan) = run(vec![
            profile("main", 20000, "working_dir: $T/run/main\n"),
            profile("rescue", 20200, "working_dir: $T/run/rescue\n"),
            config("main", "{ logging: { file: 'gw.log' } }"),
            config("rescue", "{ logging: { file: 'gw.log' } }"),
        ]);
        assert!(plan.report.diagnostics.is_empty(), "{}", plan.report);
        let log = |i: usize| plan.profiles[i].log_file.value.clone();
        assert!(log(0).ends_with("run/main/gw.log"), "{:?}", log(0));
        let (_root, plan) = run(vec![
            profile("main", 20000, "working_dir: $T/run\n"),
            profile("rescue", 20200, "working_dir: $T/run\n"),
            config("main", "{ logging: { file: 'gw.log' } }"),
            config("rescue", "{ logging: { file: './gw.log' } }"),
        ]);
        assert_eq!(
            of_kind(&plan, Kind::PathConflict).len(),
            1,
            "{}",
            plan.report
        );
    }

    #[test]
    fn old_style_rolling_log_files_in_one_dir_are_one_file() {
        // OpenClaw rolls `openclaw-<date>.log` to today's date, whatever date is written.
        let (_root, plan) = run(vec![
            profile("main", 20000, ""),
            profile("rescue", 20200, ""),
            config(
                "main",
                "{ logging: { file: '$T/logs/openclaw-YYYY-MM-DD.log' } }",
            ),
            config(
                "rescue",
                "{ logging: { file: '$T/logs/openclaw-2026-01-31.log' } }",
            ),
        ]);
        assert_eq!(
            of_kind(&plan, Kind::PathConflict).len(),
            1,
            "{}",
            plan.report
        );
        // And one of them in /tmp/openclaw is the default profile's rolling log.
        let (_root, plan) = run(vec![
            profile("main", 20000, "openclaw_profile: default\n"),
            profile("rescue", 20200, ""),
            config(
                "rescue",
                "{ logging: { file: '/tmp/openclaw/openclaw-2026-01-31.log' } }",
            ),
        ]);
        let found = of_kind(&plan, Kind::PathConflict);
        assert_eq!(found.len(), 1, "{}", plan.report);
        let text = found[0].to_string();
        assert!(
            text.contains("/tmp/openclaw/openclaw-YYYY-MM-DD.log (OpenClaw's default)"),
            "{text}"
        );
    }

    #[test]
    fn rolling_logs_of_one_profile_are_reported_once_as_the_profile() {
        let (_root, plan) = run(vec![
            profile("main", 20000, "openclaw_profile: bot\n"),
            profile("rescue", 20200, "openclaw_profile: bot\n"),
        ]);
        assert!(
            of_kind(&plan, Kind::PathConflict).is_empty(),
            "{}",
            plan.report
        );
    }

    /// Checks `d/` of the files with `ctx` (the ephemeral range, the new instances).
    fn run_with(files: Vec<(String, String)>, ctx: &Context) -> (tempfile::TempDir, Plan) {
        let root = tempfile::tempdir().expect("tempdir");
        let t = root.path().display().to_string();
        for (path, text) in &files {
            let p = root.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text.replace("$T", &t)).expect("write");
        }
        let plan = super::super::load_with(&root.path().join("d"), &|_| None, ctx);
        (root, plan)
    }

    fn fresh(names: &[&str]) -> Context {
        Context {
            ephemeral: None,
            fresh: Some(names.iter().map(|n| n.to_string()).collect()),
        }
    }

    #[test]
    fn in_a_clash_the_new_instance_is_told_to_move_even_when_it_starts_lower() {
        // ops (new) at 18950 reaches into rescue (running) at 19001.
        let files = || vec![profile("rescue", 19001, ""), profile("ops", 18950, "")];
        let (_t, plain) = run_with(files(), &Context::default());
        let d = of_kind(&plain, Kind::PortConflict);
        assert_eq!(d.len(), 1, "{}", plain.report);
        assert_eq!(d[0].instance.as_deref(), Some("rescue"));
        assert!(
            d[0].hint
                .as_deref()
                .unwrap_or("")
                .starts_with("move rescue to"),
            "{}",
            plain.report
        );

        let (_t, marked) = run_with(files(), &fresh(&["ops"]));
        let d = of_kind(&marked, Kind::PortConflict);
        assert_eq!(d.len(), 1, "{}", marked.report);
        assert_eq!(d[0].instance.as_deref(), Some("ops"));
        assert_eq!(d[0].other.as_ref().map(|o| o.0.as_str()), Some("rescue"));
        assert!(
            d[0].message
                .starts_with("browser CDP range 18961-19060 covers rescue's port 19001"),
            "{}",
            marked.report
        );
        assert_eq!(d[0].hint.as_deref(), Some("move ops to 19112 or above"));

        // Both new: the plain rule.
        let (_t, both) = run_with(files(), &fresh(&["ops", "rescue"]));
        assert_eq!(
            of_kind(&both, Kind::PortConflict)[0].instance.as_deref(),
            Some("rescue")
        );
    }

    fn range(start: u32, end: u32, reserved: Vec<(u32, u32)>) -> Context {
        Context {
            ephemeral: Some(Ephemeral {
                start,
                end,
                reserved,
            }),
            fresh: None,
        }
    }

    #[test]
    fn a_block_in_the_ephemeral_range_is_a_warning_with_the_way_out() {
        let files = || vec![profile("main", 18789, ""), profile("rescue", 40000, "")];
        let (_t, plan) = run_with(files(), &range(32768, 60999, Vec::new()));
        assert!(plan.report.ok(), "{}", plan.report);
        let d = of_kind(&plan, Kind::EphemeralPort);
        assert_eq!(d.len(), 1, "{}", plan.report);
        assert_eq!(d[0].severity, Severity::Warning);
        assert_eq!(d[0].instance.as_deref(), Some("rescue"));
        assert!(d[0].at.file.ends_with("d/rescue.yaml") && d[0].at.line == 1);
        assert!(
            d[0].message.starts_with(
                "ports 40000-40110 of the block of gateway port 40000 lie in the kernel's ephemeral port range 32768-60999"
            ),
            "{}",
            d[0].message
        );
        assert!(d[0].message.contains("fails to bind at random"));
        let hint = d[0].hint.as_deref().unwrap_or("");
        assert!(
            hint.starts_with("move rescue to 18900 (outside the range)"),
            "{hint}"
        );
        assert!(
            hint.contains("net.ipv4.ip_local_reserved_ports=40000-40110"),
            "{hint}"
        );

        // Reserved ports are never handed out: no warning.
        let (_t, plan) = run_with(files(), &range(32768, 60999, vec![(40000, 40110)]));
        assert!(
            of_kind(&plan, Kind::EphemeralPort).is_empty(),
            "{}",
            plan.report
        );
        // A range the block does not reach: no warning; no range known: none either.
        let (_t, plan) = run_with(files(), &range(50000, 60999, Vec::new()));
        assert!(of_kind(&plan, Kind::EphemeralPort).is_empty());
        let (_t, plan) = run_with(files(), &Context::default());
        assert!(of_kind(&plan, Kind::EphemeralPort).is_empty());
    }

    #[test]
    fn a_config_file_port_in_the_range_names_its_setting() {
        let files = vec![
            profile("main", 18789, ""),
            config(
                "main",
                "{ browser: { cdpUrl: \"http://127.0.0.1:45000\" } }",
            ),
        ];
        let (_t, plan) = run_with(files, &range(32768, 60999, Vec::new()));
        let d = of_kind(&plan, Kind::EphemeralPort);
        assert_eq!(d.len(), 1, "{}", plan.report);
        assert!(d[0].message.contains("45000"), "{}", d[0].message);
        assert!(
            d[0].hint
                .as_deref()
                .unwrap_or("")
                .starts_with("change `browser.cdpUrl` in "),
            "{:?}",
            d[0].hint
        );
    }
}
