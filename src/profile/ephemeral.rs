//! The kernel's ephemeral ports: `net.ipv4.ip_local_port_range` (which also governs IPv6) minus
//! `net.ipv4.ip_local_reserved_ports`. Any outgoing connection on the host (a probe, npm, a browser)
//! may be given one of them as its local port; a gateway whose port lies there can then fail to
//! bind at random. The check warns about such claims, `ports` marks them and `openclawctl new` keeps
//! clear of them.
//!
//! Read once per check ([`Ephemeral::read`], two small procfs files); the check takes it as a value
//! so that tests give their own and never depend on the host.

use std::fmt;

/// Where the kernel's range is read and set.
pub const RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// The ports the kernel never hands out as ephemeral ones, though they lie in the range.
pub const RESERVED_FILE: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// The host's ephemeral ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ephemeral {
    /// First port of `ip_local_port_range`.
    pub start: u32,
    /// Last port, inclusive.
    pub end: u32,
    /// `ip_local_reserved_ports`, as inclusive ranges, sorted.
    pub reserved: Vec<(u32, u32)>,
}

impl Ephemeral {
    /// The range read from procfs, or `None` when it cannot be read (no procfs, another OS): then
    /// nothing is said about it. A few syscalls, no disk.
    pub fn read() -> Option<Ephemeral> {
        let range = std::fs::read_to_string(RANGE_FILE).ok()?;
        let (start, end) = parse_range(&range)?;
        let reserved = std::fs::read_to_string(RESERVED_FILE)
            .ok()
            .map(|t| parse_reserved(&t))
            .unwrap_or_default();
        Some(Ephemeral {
            start,
            end,
            reserved,
        })
    }

    /// The parts of `start..=end` the kernel may hand out: inside the range, outside the reserved
    /// ports. Empty when the claim is safe.
    pub fn overlap(&self, start: u32, end: u32) -> Vec<(u32, u32)> {
        let (lo, hi) = (start.max(self.start), end.min(self.end));
        if lo > hi {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut next = lo;
        for &(r0, r1) in &self.reserved {
            if r1 < next || r0 > hi {
                continue;
            }
            if r0 > next {
                out.push((next, r0 - 1));
            }
            next = next.max(r1.saturating_add(1));
            if next > hi {
                return out;
            }
        }
        out.push((next, hi));
        out
    }

    /// `ip_local_reserved_ports` as the sysctl writes it: `8080,9000-9100` (empty if none).
    pub fn reserved_text(&self) -> String {
        spans(&self.reserved)
    }
}

impl fmt::Display for Ephemeral {
    /// `32768-60999` (and ` less reserved 40000-40110` when some are reserved in it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)?;
        let inside: Vec<(u32, u32)> = self
            .reserved
            .iter()
            .filter(|(a, b)| *b >= self.start && *a <= self.end)
            .copied()
            .collect();
        if !inside.is_empty() {
            write!(f, " (less the reserved {})", spans(&inside))?;
        }
        Ok(())
    }
}

/// `a-b,c` for inclusive ranges.
pub fn spans(ranges: &[(u32, u32)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `ip_local_port_range`: two numbers, whitespace between (`32768\t60999\n`).
pub fn parse_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
    let (start, end) = (it.next()??, it.next()??);
    (start <= end && end <= 65535).then_some((start, end))
}

/// `ip_local_reserved_ports`: a comma-separated list of ports and ranges (`8080,9000-9100`), empty
/// when none; entries that do not parse are skipped. Sorted by start.
pub fn parse_reserved(text: &str) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = text
        .trim()
        .split(',')
        .filter_map(|e| {
            let e = e.trim();
            let (a, b) = e.split_once('-').unwrap_or((e, e));
            let (a, b) = (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?);
            (a <= b).then_some((a, b))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u32, end: u32, reserved: &str) -> Ephemeral {
        Ephemeral {
            start,
            end,
            reserved: parse_reserved(reserved),
        }
    }

    #[test]
    fn the_range_file_parses_with_a_tab_and_a_newline() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("32768"), None);
        assert_eq!(parse_range("x y"), None);
    }

    #[test]
    fn reserved_ports_parse_as_ports_and_ranges() {
        assert_eq!(parse_reserved("\n"), []);
        assert_eq!(
            parse_reserved("9000-9100,8080\n"),
            [(8080, 8080), (9000, 9100)]
        );
        assert_eq!(parse_reserved("bad,7"), [(7, 7)]);
    }

    #[test]
    fn a_claim_below_or_above_the_range_is_safe() {
        let e = range(32768, 60999, "");
        assert!(e.overlap(18789, 18899).is_empty());
        assert!(e.overlap(61000, 61110).is_empty());
        assert!(e.overlap(32657, 32767).is_empty());
    }

    #[test]
    fn a_claim_across_the_edge_overlaps_only_inside() {
        let e = range(32768, 60999, "");
        assert_eq!(e.overlap(32700, 32810), [(32768, 32810)]);
        assert_eq!(e.overlap(60990, 61100), [(60990, 60999)]);
        assert_eq!(e.overlap(40000, 40000), [(40000, 40000)]);
    }

    #[test]
    fn reserved_ports_are_not_the_kernels_to_take() {
        let e = range(32768, 60999, "40000-40110");
        assert!(e.overlap(40000, 40110).is_empty());
        assert_eq!(e.overlap(39990, 40120), [(39990, 39999), (40111, 40120)]);
        let e = range(32768, 60999, "40000-40004,40011-40110");
        assert_eq!(e.overlap(40000, 40110), [(40005, 40010)]);
        assert_eq!(
            e.to_string(),
            "32768-60999 (less the reserved 40000-40004,40011-40110)"
        );
        assert_eq!(range(32768, 60999, "8080").to_string(), "32768-60999");
    }
}
