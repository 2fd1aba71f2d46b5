//! Finds the line and column of a key or value in a YAML or JSON5 text.
//!
//! Neither serde_yaml nor json5 hands out spans, but both stamp the position of the value being read on
//! an error raised while reading it. So to locate `restart.backoff.initial` we deserialize the text once
//! more with a seed that walks that path and fails on purpose when it reaches the last key: the error
//! carries the key's position. This costs one extra parse per lookup, which is cheap for profile-sized
//! files and happens only where a diagnostic or an origin needs a line.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders a path as users write it: `restart.backoff.initial`, `reserve_ports[2]`.
pub fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Builds a path of keys.
pub fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key((*k).to_string())).collect()
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

const MARK: &str = "\u{1}openclaw-supervisor-located\u{1}";

/// Where `path` is in a YAML text: the key's position for a key, the element's for an index.
pub fn locate_yaml(text: &str, path: &[Seg]) -> Option<Pos> {
    if path.is_empty() {
        return None;
    }
    let de = serde_yaml::Deserializer::from_str(text);
    match (Walk { path }).deserialize(de) {
        Err(e) if e.to_string().contains(MARK) => e.location().map(|l| Pos {
            line: l.line(),
            column: l.column(),
        }),
        _ => None,
    }
}

/// Where `path` is in a JSON5 text.
pub fn locate_json5(text: &str, path: &[Seg]) -> Option<Pos> {
    if path.is_empty() {
        return None;
    }
    let mut de = json5::Deserializer::from_str(text);
    match (Walk { path }).deserialize(&mut de) {
        Err(e) if e.to_string().contains(MARK) => e.position().map(|p| Pos {
            line: p.line + 1,
            column: p.column + 1,
        }),
        _ => None,
    }
}

struct Walk<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => d.deserialize_any(Arrive),
            Some((seg, rest)) => d.deserialize_any(Descend { seg, rest }),
        }
    }
}

/// Fails on whatever it is given, so the error carries that value's position.
struct Arrive;

impl<'de> Visitor<'de> for Arrive {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARK))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARK))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARK))
    }
}

/// Reads a mapping key as text; when it is the wanted last key, fails so the key's position is taken.
struct Key<'a> {
    wanted: &'a str,
    fail_on_match: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == self.wanted && self.fail_on_match {
            return Err(E::custom(MARK));
        }
        Ok(v == self.wanted)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

struct Descend<'p> {
    seg: &'p Seg,
    rest: &'p [Seg],
}

impl<'de> Visitor<'de> for Descend<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Seg::Key(wanted) = self.seg else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let seed = || Key {
            wanted,
            fail_on_match: self.rest.is_empty(),
        };
        while let Some(found) = map.next_key_seed(seed())? {
            if found {
                return map.next_value_seed(Walk { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Seg::Index(wanted) = self.seg else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            if i == *wanted {
                return seq.next_element_seed(Walk { path: self.rest }).map(|_| ());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "# a profile\nname: main\nport: 18789\nrestart:\n  policy: always\n  backoff:\n    initial: 1s\n    max: 60s\nreserve_ports: [19500, \"19600-19610\"]\ncommand:\n  - openclaw\n  - gateway\n";

    #[test]
    fn yaml_keys_are_found_at_their_lines() {
        let at = |p: &[&str]| locate_yaml(YAML, &keys(p)).map(|p| (p.line, p.column));
        assert_eq!(at(&["name"]), Some((2, 1)));
        assert_eq!(at(&["port"]), Some((3, 1)));
        assert_eq!(at(&["restart", "policy"]), Some((5, 3)));
        assert_eq!(at(&["restart", "backoff", "max"]), Some((8, 5)));
        assert_eq!(at(&["restart", "nope"]), None);
        assert_eq!(at(&["nope"]), None);
    }

    #[test]
    fn yaml_sequence_elements_are_found() {
        let p = vec![Seg::Key("command".into()), Seg::Index(1)];
        assert_eq!(locate_yaml(YAML, &p).map(|p| p.line), Some(12));
        let p = vec![Seg::Key("reserve_ports".into()), Seg::Index(1)];
        assert_eq!(
            locate_yaml(YAML, &p).map(|p| (p.line, p.column)),
            Some((9, 24))
        );
        let p = vec![Seg::Key("command".into()), Seg::Index(5)];
        assert_eq!(locate_yaml(YAML, &p), None);
    }

    #[test]
    fn json5_keys_are_found_at_their_lines() {
        let text = "{\n  // comment\n  gateway: { port: 18789 },\n  browser: {\n    profiles: {\n      work: { cdpPort: 18805 },\n    },\n  },\n}\n";
        let at = |p: &[&str]| locate_json5(text, &keys(p)).map(|p| p.line);
        assert_eq!(at(&["gateway", "port"]), Some(3));
        assert_eq!(at(&["browser", "profiles", "work", "cdpPort"]), Some(6));
        assert_eq!(at(&["browser", "cdpUrl"]), None);
    }

    #[test]
    fn paths_render_dotted() {
        let p = vec![Seg::Key("reserve_ports".into()), Seg::Index(2)];
        assert_eq!(dotted(&p), "reserve_ports[2]");
        assert_eq!(dotted(&keys(&["restart", "backoff"])), "restart.backoff");
    }
}
