//! Reads a config directory: one YAML profile per instance. Each file is parsed key by key so that
//! every bad key and value of a file is reported in one run, each with its line, not just the first.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::diagnostic::{Diagnostic, Kind, Location};
use super::locate::{self, Seg};
use super::raw::RawProfile;
use crate::fsx::MAX_PROFILE_BYTES;

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
                .hint(
                    "pass the directory that holds the *.yaml profiles with --config-dir or OPENCLAW_SUPERVISOR_CONFIG_DIR",
                ),
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
        match read_profile(&file) {
            Ok(text) => match parse_profile(&file, &text) {
                Ok(raw) => files.push(ProfileFile { file, text, raw }),
                Err(mut errs) => diags.append(&mut errs),
            },
            Err(why) => diags.push(Diagnostic::error(Kind::Io, Location::file(&file), why)),
        }
    }
    DirContents {
        files,
        diagnostics: diags,
        count,
    }
}

/// Reads one profile as the daemon means it: only a regular file (a symlink to one is fine),
/// opened non-blocking (a FIFO never hangs the read), at most [`MAX_PROFILE_BYTES`], owned by root
/// or this process's user and writable by no one else (what a profile says is run, as this
/// process's user). Anything else is one error (said of the file by the caller).
pub fn read_profile(file: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Looked at before the open, so that a FIFO or a device is never opened at all; and again
    // after it, on what was opened.
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read the profile: {e}"))?;
    trusted_profile(&meta)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(file)
        .map_err(|e| format!("cannot read the profile: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read the profile: {e}"))?;
    trusted_profile(&meta)?;
    let mut bytes = Vec::new();
    f.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the profile: {e}"))?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(too_big(None));
    }
    String::from_utf8(bytes)
        .map_err(|e| format!("cannot read the profile: it is not UTF-8 text ({e})"))
}

fn too_big(size: Option<u64>) -> String {
    let size = size.map_or_else(|| "more than that".to_string(), |s| format!("{s} bytes"));
    format!("a profile is at most 1 MiB ({MAX_PROFILE_BYTES} bytes); this file is {size}: not read")
}

/// Whether a profile's file may be read: a regular file, small, ours or root's, written by no
/// one else.
fn trusted_profile(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err(format!(
            "it is {}, not a regular file: not read (a profile is a regular *.yaml file; move this out of the config dir)",
            crate::fsx::kind_of(meta)
        ));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(too_big(Some(meta.len())));
    }
    if !crate::fsx::trusted_owner(meta.uid()) {
        return Err(format!(
            "it is owned by {}, not by this process's user ({}) or root: not read, as what a profile says is run; chown it",
            crate::fsx::user_name(meta.uid()),
            crate::fsx::user_name(nix::unistd::geteuid().as_raw())
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "its mode {:04o} lets {} change it: not read, as what a profile says is run; `chmod go-w` it",
            meta.mode() & 0o7777,
            if meta.mode() & 0o002 != 0 { "every user" } else { "its group" }
        ));
    }
    Ok(())
}

/// The most errors reported of one file; past that, one line says how many more.
const MAX_ERRORS: usize = 20;

/// A file's errors: the first [`MAX_ERRORS`], and how many more. Only those shown are built (and
/// located in the text, which is a scan of it): a megabyte of bad keys costs one pass, not one
/// pass per key.
#[derive(Default)]
struct Errors {
    shown: Vec<Diagnostic>,
    more: usize,
}

impl Errors {
    fn push(&mut self, make: impl FnOnce() -> Diagnostic) {
        if self.shown.len() < MAX_ERRORS {
            self.shown.push(make());
        } else {
            self.more += 1;
        }
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
    let mut errors = Errors::default();
    collect_errors(file, text, &mapping, &[], &mut errors);
    let Errors {
        shown: mut errors,
        more,
    } = errors;
    if more > 0 {
        errors.push(
            Diagnostic::error(
                Kind::Syntax,
                Location::file(file),
                format!("and {more} more errors in this file, not shown"),
            )
            .hint("is this file a profile at all?"),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_path_to_error::deserialize(Value::Mapping(mapping))
        .map_err(|e| vec![field_error(file, text, "", &e)])
}

/// Deserializes a profile made of just one key of the mapping at `path`, for each key there. A key
/// whose value is a mapping and whose error lies deeper is searched the same way, key by key, so
/// two bad keys under `stop:` are both reported.
fn collect_errors(file: &Path, text: &str, node: &Mapping, path: &[Value], errors: &mut Errors) {
    for (key, val) in node {
        let Some(name) = key.as_str() else {
            errors.push(|| {
                Diagnostic::error(
                    Kind::UnknownKey,
                    Location::file(file),
                    format!("keys are names, not {}", type_name(key)),
                )
            });
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
            _ => errors.push(|| field_error(file, text, name, &e)),
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
    // Keys are quoted only if they look like keys: a file that is no profile (a shadow file's
    // `root:*:19000:0:::` lines are YAML keys) must not have its lines echoed.
    let shown: Vec<Seg> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) if shown_key(k).is_none() => Seg::Key("?".into()),
            other => other.clone(),
        })
        .collect();
    let field = locate::dotted(&shown);
    let msg = clip_quotes(&e.inner().to_string());
    if let Some((unknown, expected)) = parse_unknown(&msg, "unknown field") {
        let what = match shown_key(&unknown) {
            Some(k) => format!("unknown key `{k}`"),
            None => "an unknown key, not quoted as it is no key name of this format".to_string(),
        };
        let d = Diagnostic::error(Kind::UnknownKey, at, what).field(field);
        return match did_you_mean(&unknown, &expected) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d.hint(format!("known keys here: {}", expected.join(", "))),
        };
    }
    if let Some((unknown, expected)) = parse_unknown(&msg, "unknown variant") {
        let value =
            shown_key(&unknown).map_or_else(|| "the value".to_string(), |v| format!("`{v}`"));
        let d = Diagnostic::error(
            Kind::InvalidValue,
            at,
            format!("{value} is not one of {}", expected.join(", ")),
        )
        .field(field);
        return match did_you_mean(&unknown, &expected) {
            Some(s) => d.hint(format!("did you mean `{s}`?")),
            None => d,
        };
    }
    Diagnostic::error(Kind::InvalidValue, at, friendlier(&msg)).field(field)
}

/// `k` if it may be quoted in a message: a name of at most 64 letters, digits, `_`, `-`, `.`.
fn shown_key(k: &str) -> Option<&str> {
    let name_like = !k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    name_like.then_some(k)
}

/// serde quotes the values it could not take (`invalid type: string "..."`): at most 64
/// characters of each, so that a message never carries a long run of a file's text.
fn clip_quotes(msg: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::with_capacity(msg.len().min(512));
    let mut inside = String::new();
    let mut quoted = false;
    for c in msg.chars() {
        if c == '"' {
            if quoted {
                if inside.chars().count() > MAX {
                    out.extend(inside.chars().take(MAX));
                    out.push('…');
                } else {
                    out.push_str(&inside);
                }
                inside.clear();
            }
            out.push(c);
            quoted = !quoted;
        } else if quoted {
            inside.push(c);
        } else {
            out.push(c);
        }
    }
    out.extend(inside.chars().take(MAX));
    out
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

    #[test]
    fn lines_of_a_file_that_is_no_profile_are_never_quoted() {
        // A shadow file's lines end in `:`, which makes each one a YAML key.
        let text = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        let e = errors(text).join("\n");
        assert!(!e.contains("19000"), "{e}");
        assert!(e.contains("not quoted"), "{e}");
        // A value serde quotes is cut short.
        let long = "x".repeat(500);
        let e = errors(&format!("port: {long}\n")).join("\n");
        assert!(!e.contains(&"x".repeat(65)), "{e}");
        // Still: a key that looks like one is named.
        assert!(errors("prot: 1\n")[0].contains("unknown key `prot`"));
    }

    #[test]
    fn many_errors_of_one_file_are_cut_short() {
        let text: String = (0..100).map(|i| format!("k{i}: 1\n")).collect();
        let e = errors(&text);
        assert_eq!(e.len(), MAX_ERRORS + 1);
        assert!(
            e[MAX_ERRORS].contains("and 80 more errors"),
            "{}",
            e[MAX_ERRORS]
        );
    }

    #[test]
    fn only_small_regular_files_of_ours_are_read_and_a_fifo_never_hangs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(
            dir.path().join("big.yaml"),
            vec![b'#'; MAX_PROFILE_BYTES as usize + 1],
        )
        .unwrap();
        let open = dir.path().join("open.yaml");
        std::fs::write(&open, "port: 20000\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "port: 20000\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("linked.yaml")).unwrap();

        let found = read_dir(dir.path());
        let e: Vec<String> = found.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(found.count, 4);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains("big.yaml") && e[0].contains("at most 1 MiB"),
            "{}",
            e[0]
        );
        assert!(
            e[1].contains("fifo.yaml") && e[1].contains("a FIFO, not a regular file"),
            "{}",
            e[1]
        );
        assert!(
            e[2].contains("open.yaml") && e[2].contains("mode 0666"),
            "{}",
            e[2]
        );
        // A symlink to a regular file of ours is a profile.
        assert_eq!(found.files.len(), 1);
        assert!(found.files[0].file.ends_with("linked.yaml"));
    }
}
