//! Reads a config directory: one YAML profile per instance. Each file is parsed key by key so that
//! every bad key and value of a file is reported in one run, each with its line, not just the first.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::diagnostic::{Diagnostic, Kind, Location};
use super::locate::{self, Seg};
use super::raw::RawProfile;

/// One profile file, parsed.
#[derive(Debug, Clone)]
pub struct ProfileFile {
    /// The file, as found in the config dir (dir joined with the file name).
    pub file: PathBuf,
    /// Its text, kept to locate fields for later diagnostics.
    pub text: String,
    /// What it says.
    pub raw: RawProfile,
}

impl ProfileFile {
    /// Where the key at `path` is written in this file; the whole file if it is not written.
    pub fn locate(&self, path: &[&str]) -> Location {
        Location::at(
            &self.file,
            locate::locate_yaml(&self.text, &locate::keys(path)),
        )
    }

    /// Where the `i`th element of the list at `path` is written.
    pub fn locate_index(&self, path: &[&str], i: usize) -> Location {
        let mut segs = locate::keys(path);
        segs.push(Seg::Index(i));
        Location::at(&self.file, locate::locate_yaml(&self.text, &segs))
    }
}

/// Whether a directory entry is a profile: `*.yaml` or `*.yml`, not hidden (editors' and
/// tools' dotfiles are never profiles).
pub fn is_profile_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml"))
}

/// What [`read_dir`] found.
#[derive(Debug, Default)]
pub struct DirContents {
    /// The profiles that parsed, in file-name order.
    pub files: Vec<ProfileFile>,
    /// What is wrong with the others, or with the directory.
    pub diagnostics: Vec<Diagnostic>,
    /// How many profile files the directory holds, parsed or not.
    pub count: usize,
}

/// Reads every profile in `dir`, in file-name order. Files that fail to parse are left out of the
/// result and explained in the diagnostics.
pub fn read_dir(dir: &Path) -> DirContents {
    let mut diags = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    Kind::Io,
                    Location::file(dir),
                    format!("cannot read the config directory: {e}"),
                )
                .hint("pass the directory that holds the *.yaml profiles with --config-dir"),
            );
            return DirContents {
                diagnostics: diags,
                ..DirContents::default()
            };
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_profile_file(p) && !p.is_dir())
        .collect();
    paths.sort();
    let count = paths.len();
    let mut files = Vec::new();
    for file in paths {
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse_profile(&file, &text) {
                Ok(raw) => files.push(ProfileFile { file, text, raw }),
                Err(mut errs) => diags.append(&mut errs),
            },
            Err(e) => diags.push(Diagnostic::error(
                Kind::Io,
                Location::file(&file),
                format!("cannot read the profile: {e}"),
            )),
        }
    }
    DirContents {
        files,
        diagnostics: diags,
        count,
    }
}

/// Parses one profile's text, reporting every bad key and value at once.
pub fn parse_profile(file: &Path, text: &str) -> Result<RawProfile, Vec<Diagnostic>> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| {
        let at = Location::at(
            file,
            e.location().map(|l| locate::Pos {
                line: l.line(),
                column: l.column(),
            }),
        );
        vec![Diagnostic::error(
            Kind::Syntax,
            at,
            format!("not valid YAML: {e}"),
        )]
    })?;
    let mapping = match value {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        other => {
            return Err(vec![Diagnostic::error(
                Kind::Syntax,
                Location::file(file),
                format!(
                    "a profile is a YAML mapping of keys (name, port, state_dir, ...), not {}",
                    type_name(&other)
                ),
            )])
        }
    };

    // Each key is checked on its own so one bad key does not hide the next.
    let mut errors = Vec::new();
    collect_errors(file, text, &mapping, &[], &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_path_to_error::deserialize(Value::Mapping(mapping))
        .map_err(|e| vec![field_error(file, text, "", &e)])
}

/// Deserializes a profile made of just one key of the mapping at `path`, for each key there. A key
/// whose value is a mapping and whose error lies deeper is searched the same way, key by key, so
/// two bad keys under `stop:` are both reported.
fn collect_errors(
    file: &Path,
    text: &str,
    node: &Mapping,
    path: &[Value],
    errors: &mut Vec<Diagnostic>,
) {
    for (key, val) in node {
        let Some(name) = key.as_str() else {
            errors.push(Diagnostic::error(
                Kind::UnknownKey,
                Location::file(file),
                format!("keys are names, not {}", type_name(key)),
            ));
            continue;
        };
        let mut doc = Mapping::new();
        doc.insert(key.clone(), val.clone());
        for outer in path.iter().rev() {
            let mut m = Mapping::new();
            m.insert(outer.clone(), Value::Mapping(doc));
            doc = m;
        }
        let Err(e) = serde_path_to_error::deserialize::<_, RawProfile>(Value::Mapping(doc)) else {
            continue;
        };
        match val {
            Value::Mapping(inner)
                if !inner.is_empty() && e.path().iter().count() > path.len() + 1 =>
            {
                let mut deeper = path.to_vec();
                deeper.push(key.clone());
                collect_errors(file, text, inner, &deeper, errors);
            }
            _ => errors.push(field_error(file, text, name, &e)),
        }
    }
}

fn field_error(
    file: &Path,
    text: &str,
    top: &str,
    e: &serde_path_to_error::Error<serde_yaml::Error>,
) -> Diagnostic {
    let mut path: Vec<Seg> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            _ => None,
        })
        .collect();
    if path.is_empty() && !top.is_empty() {
        path.push(Seg::Key(top.to_string()));
    }
    let at = Location::at(file, locate::locate_yaml(text, &path));
    let field = locate::dotted(&path);
    let msg = e.inner().to_string();
    if let Some((unknown, expected)) = parse_unknown(&msg, "unknown field") {
        let d = Diagnostic::error(Kind::UnknownKey, at, format!("unknown key `{unknown}`"))
            .field(field);
        return match did_you_mean(&unknown, &expected) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d.hint(format!("known keys here: {}", expected.join(", "))),
        };
    }
    if let Some((unknown, expected)) = parse_unknown(&msg, "unknown variant") {
        let d = Diagnostic::error(
            Kind::InvalidValue,
            at,
            format!("`{unknown}` is not one of {}", expected.join(", ")),
        )
        .field(field);
        return match did_you_mean(&unknown, &expected) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d,
        };
    }
    Diagnostic::error(Kind::InvalidValue, at, friendlier(&msg)).field(field)
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn parse_unknown(msg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix(prefix)?;
    let mut quoted = rest.split('`').skip(1).step_by(2).map(str::to_string);
    let unknown = quoted.next()?;
    Some((unknown, quoted.collect()))
}

/// The known name closest to `unknown`, if one is close enough to be a typo of it.
pub fn did_you_mean(unknown: &str, known: &[String]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// serde's type errors name Rust types; say what the profile expects instead.
fn friendlier(msg: &str) -> String {
    msg.replace("expected i64", "expected a whole number")
        .replace("expected u32", "expected a whole number")
        .replace("expected i32", "expected a whole number")
        .replace("expected a boolean", "expected true or false")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse_profile(Path::new("d/p.yaml"), text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_with_its_line() {
        let e = errors("name: main\nprot: 18789\nrestart:\n  backof:\n    initial: 1s\nstop:\n  timeout: soon\n");
        assert_eq!(
            e,
            vec![
                "error: d/p.yaml:2: prot: unknown key `prot`; did you mean `port`?",
                "error: d/p.yaml:4: restart.backof: unknown key `backof`; did you mean `backoff`?",
                "error: d/p.yaml:7: stop.timeout: \"soon\" is not a duration; write it like 500ms, 30s, 5m or 1h",
            ]
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = errors(
            "port: 70000\nreserve_ports: [19500, \"20-10\"]\nrestart:\n  policy: on_failure\n",
        );
        assert_eq!(
            e[0],
            "error: d/p.yaml:1: port: port 70000 is outside 1..65535"
        );
        assert!(
            e[1].starts_with(
                "error: d/p.yaml:2: reserve_ports[1]: \"20-10\" is not a port or a range"
            ),
            "{}",
            e[1]
        );
        assert_eq!(
            e[2],
            "error: d/p.yaml:4: restart.policy: `on_failure` is not one of always, on-failure, never; did you mean `on-failure`?"
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = errors("name: main\nport: [1\nstate_dir: x\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("error: d/p.yaml:3: not valid YAML"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn an_empty_file_is_a_profile_of_defaults() {
        let raw = parse_profile(Path::new("d/bot.yaml"), "# nothing yet\n").unwrap();
        assert!(raw.name.is_none() && raw.port.is_none());
    }

    #[test]
    fn only_visible_yaml_files_are_profiles() {
        for (name, is) in [
            ("main.yaml", true),
            ("rescue.yml", true),
            ("README.md", false),
            (".main.yaml", false),
            ("main.yaml.bak", false),
            ("main.yaml~", false),
        ] {
            assert_eq!(is_profile_file(Path::new(name)), is, "{name}");
        }
    }
}
