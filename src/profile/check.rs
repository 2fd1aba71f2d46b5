//! The disjointness check: proves, over all instances at once, that no two share a config file, a state
//! dir, a workspace or a port, and that no derived port falls back onto OpenClaw's defaults.
//!
//! Both sweeps sort once and walk once (sort-and-sweep), so a check costs O(n log n + findings) rather
//! than comparing every pair: paths are sorted component-wise, which puts every path right after its
//! ancestors; port claims are sorted by their first port, so only claims still open can overlap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::diagnostic::{Diagnostic, Kind, Location};
use super::openclaw::Role;
use super::openclaw::{BLOCK_SPAN, MAX_BLOCK_BASE};
use super::paths::RealPaths;
use super::resolve::{ClaimSource, Origin, PortClaim, Profile, Sourced};

/// Every finding about the set of profiles, unsorted.
pub fn check(profiles: &[Profile]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicate_names(profiles, &mut out);
    port_validity(profiles, &mut out);
    port_overlaps(profiles, &mut out);
    path_overlaps(profiles, &mut out);
    out
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

fn port_overlaps(profiles: &[Profile], out: &mut Vec<Diagnostic>) {
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
    let free = FreeBlocks::new(&entries);

    // Per pair of instances: the first overlap found (the lowest port) and how many more.
    let mut pairs: HashMap<(usize, usize), (usize, usize, usize)> = HashMap::new();
    let mut order: Vec<(usize, usize)> = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        active.retain(|&a| entries[a].end >= e.start);
        for &a in &active {
            let other = &entries[a];
            if other.inst == e.inst {
                continue;
            }
            let key = (e.inst.min(other.inst), e.inst.max(other.inst));
            match pairs.get_mut(&key) {
                Some(found) => found.2 += 1,
                None => {
                    pairs.insert(key, (i, a, 0));
                    order.push(key);
                }
            }
        }
        active.push(i);
    }
    // One "move X to N" per instance: the lowest block above every instance it collides with.
    let mut clear_above: HashMap<usize, u32> = HashMap::new();
    for key in &order {
        let (i, a, _) = pairs[key];
        let above = clear_above.entry(entries[i].inst).or_insert(0);
        *above = (*above).max(entries[a].end + 1);
    }
    let moves: HashMap<usize, Option<u32>> = clear_above
        .into_iter()
        .map(|(inst, from)| (inst, free.base_from(from, inst, &profiles[inst].ports)))
        .collect();
    for key in order {
        let (i, a, more) = pairs[&key];
        let to = moves.get(&entries[i].inst).copied().flatten();
        out.push(port_finding(profiles, &entries[i], &entries[a], more, to));
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
    let relation = if e.start == other.start && e.end == other.end {
        "is also".to_string()
    } else if e.start == e.end || (e.end <= other.end && e.start >= other.start) {
        "lies inside".to_string()
    } else if other.start == other.end || other.end <= e.end && other.start == e.start {
        "covers".to_string()
    } else {
        format!("overlaps at {}-{}", e.start, other.end.min(e.end))
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

/// Answers "where is the lowest gateway port, at or above F, whose whole block G..G+110 no other
/// instance claims?" for the hint of a port conflict, without walking the port space claim by claim:
/// a block is either free of every claim (found by binary search among the gaps of all claims), or
/// free of all but the instance's own claims, which can only be near one of those.
struct FreeBlocks {
    /// Claims no wider than `WIDE`, sorted by start: (start, end, instance).
    narrow: Vec<(u32, u32, usize)>,
    /// Wider claims (large `reserve_ports` ranges), checked one by one.
    wide: Vec<(u32, u32, usize)>,
    /// The gaps between all claims that hold a whole block: (first free port, last free port).
    gaps: Vec<(u32, u32)>,
}

const WIDE: u32 = 1000;

impl FreeBlocks {
    fn new(sorted: &[Entry<'_>]) -> Self {
        let (wide, narrow): (Vec<_>, Vec<_>) = sorted
            .iter()
            .map(|e| (e.start, e.end, e.inst))
            .partition(|c| c.1 - c.0 > WIDE);
        let mut gaps = Vec::new();
        let mut next_free = 1u32;
        for e in sorted {
            if e.start > next_free && e.start - next_free >= BLOCK_SPAN {
                gaps.push((next_free, e.start - 1));
            }
            next_free = next_free.max(e.end + 1);
        }
        if next_free <= MAX_BLOCK_BASE {
            gaps.push((next_free, 65535));
        }
        FreeBlocks { narrow, wide, gaps }
    }

    /// The lowest base at or above `from` whose block holds no claim at all.
    fn free_of_all(&self, from: u32) -> Option<u32> {
        let i = self
            .gaps
            .partition_point(|&(_, last)| last < from.saturating_add(BLOCK_SPAN - 1));
        let &(first, _) = self.gaps.get(i)?;
        Some(first.max(from)).filter(|b| *b <= MAX_BLOCK_BASE)
    }

    /// The end of the furthest claim of another instance that the block at `b` would hit.
    fn blocker(&self, b: u32, me: usize) -> Option<u32> {
        let top = b + BLOCK_SPAN - 1;
        let lo = self.narrow.partition_point(|c| c.0 + WIDE < b);
        let hi = self.narrow.partition_point(|c| c.0 <= top);
        self.narrow[lo..hi.max(lo)]
            .iter()
            .chain(self.wide.iter().filter(|c| c.0 <= top))
            .filter(|c| c.1 >= b && c.2 != me)
            .map(|c| c.1)
            .max()
    }

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
}

impl PathRole {
    fn describe(self) -> &'static str {
        match self {
            PathRole::Config => "config file",
            PathRole::State => "state dir",
            PathRole::Workspace => "workspace",
        }
    }
    fn field(self) -> &'static str {
        match self {
            PathRole::Config => "config_path",
            PathRole::State => "state_dir",
            PathRole::Workspace => "workspace",
        }
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
    /// The two instances, lower index first.
    pair: (usize, usize),
    /// The contested place: findings of the same pair inside it are folded into this one.
    place: &'a Path,
    /// How many were folded in.
    more: usize,
}

fn path_overlaps(profiles: &[Profile], out: &mut Vec<Diagnostic>) {
    let mut real = RealPaths::default();
    let mut entries: Vec<PathEntry<'_>> = Vec::with_capacity(profiles.len() * 3);
    for (inst, p) in profiles.iter().enumerate() {
        let own = [
            (PathRole::Config, &p.config_path),
            (PathRole::State, &p.state_dir),
            (PathRole::Workspace, &p.workspace),
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
            if outer.inst == e.inst {
                continue;
            }
            let pair = (e.inst.min(outer.inst), e.inst.max(outer.inst));
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
        origin_location(them, outer.written)
    );
    if more > 0 {
        message.push_str(&format!(
            " (and {more} more shared path{} inside it)",
            if more == 1 { "" } else { "s" }
        ));
    }
    let hint = if equal {
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
    Diagnostic::error(Kind::PathConflict, origin_location(me, e.written), message)
        .instance(me.name.as_str())
        .field(e.role.field())
        .other(them.name.as_str(), origin_location(them, outer.written))
        .hint(hint)
}

fn origin_location(p: &Profile, s: &Sourced<PathBuf>) -> Location {
    match &s.origin {
        Origin::Profile(at) | Origin::ConfigFile(at) => at.clone(),
        Origin::ProfileHash(_) | Origin::Default => p.name_at.clone(),
    }
}
