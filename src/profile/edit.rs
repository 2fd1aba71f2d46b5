//! Writing an upgrade's runtime choice back into a profile (`openclawctl upgrade NAME --write`)
//! as a text edit, so that the file keeps its comments, its order and its layout: the top-level
//! `runtime:` key is changed where it is (flow form `runtime: { openclaw: V }`, or block form with
//! `openclaw:`/`node:` on lines of their own), or one line is appended. The result is parsed again
//! and refused unless it loads and says the same as before but for `runtime`. The file is replaced
//! atomically, keeping its mode and owner, and a symlink at its name is never followed.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::runtime::Spec;

/// The flow form of `spec`: `{ openclaw: 2026.9.6, node: 24.21.0 }`.
fn flow(spec: &Spec) -> String {
    match &spec.node {
        Some(n) => format!("{{ openclaw: {}, node: {n} }}", spec.openclaw),
        None => format!("{{ openclaw: {} }}", spec.openclaw),
    }
}

/// Whether `line` is the top-level key `key:` (at column 0); returns what follows the colon.
fn top_key<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?;
    let rest = rest.trim_start_matches([' ', '\t']);
    rest.strip_prefix(':')
}

/// Splits what follows a key into its value and its comment (` # ...`, kept as written).
fn split_comment(rest: &str) -> (&str, &str) {
    let b = rest.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'#' && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') {
            return (&rest[..i], &rest[i..]);
        }
    }
    (rest, "")
}

/// The text of `text` with its top-level `runtime` set to `spec`, everything else as it was. The
/// text is not checked here (see [`set_runtime`]).
pub fn edit_runtime(text: &str, spec: &Spec) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(at) = lines.iter().position(|l| top_key(l, "runtime").is_some()) else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("runtime: {}\n", flow(spec)));
        return Ok(out);
    };
    let key_line = lines[at];
    let eol = if key_line.ends_with('\n') { "\n" } else { "" };
    let rest = top_key(key_line.trim_end_matches('\n'), "runtime").unwrap_or("");
    let (value, comment) = split_comment(rest);
    let mut out: String = lines[..at].concat();
    if value.trim().is_empty() {
        // Block form: the indented lines below hold `openclaw:` and perhaps `node:`; each value
        // is replaced on its own line, comments and blank lines stay.
        let mut end = at + 1;
        while end < lines.len() {
            let l = lines[end];
            let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
            if !blank && !l.starts_with([' ', '\t']) {
                break;
            }
            end += 1;
        }
        // Blank lines and comments after the block belong to what follows.
        while end > at + 1 && {
            let l = lines[end - 1];
            l.trim().is_empty() || l.trim_start().starts_with('#')
        } {
            end -= 1;
        }
        out.push_str(key_line);
        let mut indent = None;
        let mut seen_openclaw = false;
        let mut seen_node = false;
        for l in &lines[at + 1..end] {
            let body = l.trim_end_matches('\n');
            let trimmed = body.trim_start();
            let pad = &body[..body.len() - trimmed.len()];
            let nl = if l.ends_with('\n') { "\n" } else { "" };
            if let Some(r) = top_key(trimmed, "openclaw") {
                indent.get_or_insert_with(|| pad.to_string());
                let (_, c) = split_comment(r);
                out.push_str(&format!(
                    "{pad}openclaw: {}{}{nl}",
                    spec.openclaw,
                    spaced(c)
                ));
                seen_openclaw = true;
            } else if let Some(r) = top_key(trimmed, "node") {
                let (_, c) = split_comment(r);
                seen_node = true;
                // No Node asked for: the line goes (its comment with it).
                if let Some(n) = &spec.node {
                    out.push_str(&format!("{pad}node: {n}{}{nl}", spaced(c)));
                }
            } else if trimmed.is_empty() || trimmed.starts_with('#') {
                out.push_str(l);
            } else {
                return Err(format!(
                    "`runtime` has a key this edit does not know: `{}`",
                    trimmed
                ));
            }
        }
        if !seen_openclaw {
            return Err("`runtime` in block form has no `openclaw:` line".into());
        }
        if let (Some(n), false) = (&spec.node, seen_node) {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            let pad = indent.unwrap_or_else(|| "  ".into());
            out.push_str(&format!("{pad}node: {n}\n"));
        }
        out.push_str(&lines[end..].concat());
        return Ok(out);
    }
    // Flow form (or a scalar): the value runs until its braces close, perhaps over lines.
    let mut depth: i32 = 0;
    let mut end = at;
    let mut tail = String::new();
    let mut done = false;
    for (i, l) in lines.iter().enumerate().skip(at) {
        let part = if i == at { value } else { l };
        let (part, c) = if i == at {
            (part, comment)
        } else {
            split_comment(part)
        };
        for ch in part.chars() {
            match ch {
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
        }
        end = i;
        if depth <= 0 {
            tail = c.trim_end_matches('\n').to_string();
            done = true;
            break;
        }
    }
    if !done {
        return Err("`runtime`'s braces do not close".into());
    }
    let eol = if end == at {
        eol
    } else if lines[end].ends_with('\n') {
        "\n"
    } else {
        ""
    };
    out.push_str(&format!("runtime: {}{}{eol}", flow(spec), spaced(&tail)));
    out.push_str(&lines[end + 1..].concat());
    Ok(out)
}

/// A comment as it follows a value: with one space before it.
fn spaced(comment: &str) -> String {
    let c = comment.trim();
    if c.is_empty() {
        String::new()
    } else {
        format!(" {c}")
    }
}

/// Writes `spec` as the `runtime` of the profile `file`, by [`edit_runtime`]: refused if the file
/// is not a regular file (a symlink is not followed), if the result would not load, or if it
/// would say anything else than before but the runtime. Returns the new text.
pub fn set_runtime(file: &Path, spec: &Spec) -> Result<String, String> {
    let shown = file.display();
    let meta = std::fs::symlink_metadata(file).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{shown} is a {}, not a regular file: not writing through it",
            crate::fsx::kind_of(&meta)
        ));
    }
    let text = crate::fsx::read_regular(file, crate::fsx::MAX_PROFILE_BYTES)
        .map_err(|e| format!("{shown}: {e}"))?;
    let new = edit_runtime(&text, spec).map_err(|e| format!("{shown}: {e}; edit it by hand"))?;
    check_same(file, &text, &new, spec)?;
    write_atomically(file, &meta, &new).map_err(|e| format!("{shown}: cannot write it: {e}"))?;
    Ok(new)
}

/// Refuses `new` unless it parses, its runtime is `spec`, and the rest says what `old` said.
pub fn check_same(file: &Path, old: &str, new: &str, spec: &Spec) -> Result<(), String> {
    let shown = file.display();
    let errors = |d: Vec<crate::profile::Diagnostic>| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let before = super::load::parse_profile(file, old)
        .map_err(|d| format!("{shown} does not load as it is: {}", errors(d)))?;
    let after = super::load::parse_profile(file, new).map_err(|d| {
        format!(
            "{shown}: the edited profile would not load ({}); not written",
            errors(d)
        )
    })?;
    let said = after.runtime.as_ref().map(|r| Spec {
        openclaw: r.openclaw.0.clone(),
        node: r.node.as_ref().map(|n| n.0.clone()),
    });
    if said.as_ref() != Some(spec) {
        return Err(format!(
            "{shown}: the edited profile would say runtime {said:?}, not {spec}; not written"
        ));
    }
    let rest = |mut r: super::raw::RawProfile| {
        r.runtime = None;
        format!("{r:?}")
    };
    if rest(before) != rest(after) {
        return Err(format!(
            "{shown}: the edit would change more than `runtime`; not written"
        ));
    }
    Ok(())
}

/// Replaces `file` with `text`: a new temp file in the same directory (never a link followed),
/// with the file's mode and owner, synced, renamed over it, the directory synced.
fn write_atomically(file: &Path, meta: &std::fs::Metadata, text: &str) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.upgrade.tmp"));
    let written = (|| {
        let mut f = crate::fsx::create_new(&tmp, meta.mode() & 0o7777)?;
        f.write_all(text.as_bytes())?;
        if let Err(e) = std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid())) {
            // Only root may give a file away; a file of the daemon's own user keeps its owner.
            if (meta.uid(), meta.gid())
                != (
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                )
            {
                return Err(e);
            }
        }
        std::fs::set_permissions(
            &tmp,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Spec {
        Spec::parse(s).unwrap()
    }

    fn edited(text: &str, to: &str) -> String {
        let s = spec(to);
        let new = edit_runtime(text, &s).unwrap();
        check_same(Path::new("main.yaml"), text, &new, &s).unwrap();
        new
    }

    const V: &str = "openclaw@2026.9.6+node@24.21.0";

    #[test]
    fn a_profile_without_runtime_gains_a_line() {
        let text = "# main\nport: 18789 # the gateway\n\n# keep\nautostart: true";
        assert_eq!(
            edited(text, V),
            "# main\nport: 18789 # the gateway\n\n# keep\nautostart: true\nruntime: { openclaw: 2026.9.6, node: 24.21.0 }\n"
        );
    }

    #[test]
    fn a_flow_runtime_is_replaced_where_it_is_with_its_comment() {
        let text = "port: 18789\nruntime: {openclaw: 2026.9.5}   # pinned\nautostart: true\n";
        assert_eq!(
            edited(text, V),
            "port: 18789\nruntime: { openclaw: 2026.9.6, node: 24.21.0 } # pinned\nautostart: true\n"
        );
        let multi =
            "runtime: {\n  openclaw: 2026.9.5,\n  node: 24.3.0 } # two lines\nport: 18789\n";
        assert_eq!(
            edited(multi, "2026.9.7"),
            "runtime: { openclaw: 2026.9.7 } # two lines\nport: 18789\n"
        );
    }

    #[test]
    fn a_block_runtime_keeps_its_lines_and_comments() {
        let text = "port: 18789\nruntime:   # which release\n    # the gateway\n    openclaw: 2026.9.5  # old\n\n# after\nautostart: false\n";
        assert_eq!(
            edited(text, V),
            "port: 18789\nruntime:   # which release\n    # the gateway\n    openclaw: 2026.9.6 # old\n    node: 24.21.0\n\n# after\nautostart: false\n"
        );
        let with_node = "runtime:\n  node: 24.3.0 # old node\n  openclaw: 2026.9.5\n";
        assert_eq!(
            edited(with_node, V),
            "runtime:\n  node: 24.21.0 # old node\n  openclaw: 2026.9.6\n"
        );
        assert_eq!(
            edited(with_node, "2026.9.6"),
            "runtime:\n  openclaw: 2026.9.6\n"
        );
    }

    #[test]
    fn the_last_line_without_a_newline_stays_without_one() {
        assert_eq!(
            edited("port: 18789\nruntime: { openclaw: 2026.9.5 }", "2026.9.6"),
            "port: 18789\nruntime: { openclaw: 2026.9.6 }"
        );
        assert_eq!(
            edited("runtime:\n  openclaw: 2026.9.5", "2026.9.6"),
            "runtime:\n  openclaw: 2026.9.6"
        );
        // A quoted key is not edited in place: appending would make a duplicate, which is refused.
        let quoted = "\"runtime\": { openclaw: 2026.9.5 }\n";
        let s = spec("2026.9.6");
        let new = edit_runtime(quoted, &s).unwrap();
        assert!(check_same(Path::new("m.yaml"), quoted, &new, &s).is_err());
    }

    #[test]
    fn a_key_named_like_runtime_deeper_down_is_not_it() {
        let text = "env:\n  runtime: x\nport: 18789\n";
        assert_eq!(
            edited(text, "2026.9.6"),
            "env:\n  runtime: x\nport: 18789\nruntime: { openclaw: 2026.9.6 }\n"
        );
    }

    #[test]
    fn what_would_not_load_or_says_more_is_refused() {
        let s = spec("2026.9.6");
        // An unknown key under runtime: the edit refuses to guess.
        assert!(edit_runtime("runtime:\n  openclaw: 1.0.0\n  color: red\n", &s).is_err());
        // Unclosed braces.
        assert!(edit_runtime("runtime: { openclaw: 1.0.0\n", &s).is_err());
        // A broken file is refused as it is.
        let bad = "port: [\n";
        let new = edit_runtime(bad, &s).unwrap();
        assert!(check_same(Path::new("m.yaml"), bad, &new, &s).is_err());
        // An edit that says more than the runtime is refused.
        let e = check_same(
            Path::new("m.yaml"),
            "port: 18789\n",
            "port: 18790\nruntime: { openclaw: 2026.9.6 }\n",
            &s,
        )
        .unwrap_err();
        assert!(e.contains("more than `runtime`"), "{e}");
    }

    #[test]
    fn the_file_is_replaced_keeping_its_mode_and_not_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("main.yaml");
        std::fs::write(&file, "# mine\nport: 18789\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        set_runtime(&file, &spec(V)).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("# mine\nport: 18789\nruntime: "), "{text}");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = set_runtime(&link, &spec("2026.9.7")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(std::fs::read_to_string(&file).unwrap().contains("2026.9.6"));
    }
}
