//! Diagnostics: what the loader and the disjointness check say about a profile set, each naming the
//! instance, the file and line, the field, and what to do. A [`Report`] collects every diagnostic of
//! one run so an operator sees all problems at once, sorted, not one per attempt.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a file. A line of 0 means "the whole file".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file, as the user named it (the config dir joined with the file name).
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
}

impl Location {
    /// The whole of `file`.
    pub fn file(file: &Path) -> Self {
        Location {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
        }
    }

    /// A line (and column) of `file`; `None` stands for the whole file.
    pub fn at(file: &Path, pos: Option<super::locate::Pos>) -> Self {
        match pos {
            Some(p) => Location {
                file: file.to_path_buf(),
                line: p.line,
                column: p.column,
            },
            None => Location::file(file),
        }
    }
}

impl fmt::Display for Location {
    /// `file:line`, the form editors and terminals turn into links. Columns are left to the
    /// structured form: a line is what a person looks for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The profile set must not be started until this is fixed.
    Error,
    /// Worth knowing; does not stop a start.
    Warning,
}

/// What kind of problem a diagnostic reports; stable names for tools (`Kind::as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The config directory or a file in it could not be read.
    Io,
    /// The YAML or JSON5 text does not parse.
    Syntax,
    /// A key the format does not know.
    UnknownKey,
    /// A value of the wrong type or out of its range.
    InvalidValue,
    /// A `${VAR}` names a variable that is not set.
    UnsetVariable,
    /// Two profiles define the same instance name.
    DuplicateName,
    /// Two instances share a path, or one's path lies inside the other's.
    PathConflict,
    /// Two instances claim a common port.
    PortConflict,
    /// Two instances run under one OpenClaw profile name, which OpenClaw keys its own files and
    /// service unit by.
    ProfileConflict,
    /// A port outside 1..65535.
    PortOutOfRange,
    /// A derived port falls back onto OpenClaw's default instance's ports.
    PortFallback,
    /// Values that disagree without breaking anything.
    Inconsistent,
    /// A claimed port lies in the kernel's ephemeral range (a warning).
    EphemeralPort,
    /// A profile's `runtime` is not installed in the runtime store (a warning: the daemon starts,
    /// so that `openclawctl runtime install` can install it).
    RuntimeMissing,
    /// Every instance runs on one runtime, so one upgrade can break them all (a warning).
    SharedRuntime,
}

impl Kind {
    /// The stable, machine-readable name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Io => "io",
            Kind::Syntax => "syntax",
            Kind::UnknownKey => "unknown-key",
            Kind::InvalidValue => "invalid-value",
            Kind::UnsetVariable => "unset-variable",
            Kind::DuplicateName => "duplicate-name",
            Kind::PathConflict => "path-conflict",
            Kind::PortConflict => "port-conflict",
            Kind::ProfileConflict => "profile-conflict",
            Kind::PortOutOfRange => "port-out-of-range",
            Kind::PortFallback => "port-fallback",
            Kind::Inconsistent => "inconsistent",
            Kind::EphemeralPort => "ephemeral-port",
            Kind::RuntimeMissing => "runtime-missing",
            Kind::SharedRuntime => "shared-runtime",
        }
    }
}

/// One problem in a profile set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of problem.
    pub kind: Kind,
    /// The instance concerned, when the file got far enough to name one.
    pub instance: Option<String>,
    /// Where the problem is.
    pub at: Location,
    /// The field concerned, dotted (`restart.backoff.initial`, `gateway.port`).
    pub field: Option<String>,
    /// What is wrong. For a conflict it names the other instance and where it claims the resource.
    pub message: String,
    /// The other instance of a conflict, and where it claims the contested resource.
    pub other: Option<(String, Location)>,
    /// What to do.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error about `at`.
    pub fn error(kind: Kind, at: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            kind,
            instance: None,
            at,
            field: None,
            message: message.into(),
            other: None,
            hint: None,
        }
    }

    /// A warning about `at`.
    pub fn warning(kind: Kind, at: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(kind, at, message)
        }
    }

    /// Names the instance concerned.
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Names the field concerned.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Says what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Names the other instance of a conflict.
    pub fn other(mut self, name: impl Into<String>, at: Location) -> Self {
        self.other = Some((name.into(), at));
        self
    }

    fn sort_key(&self) -> (&Location, Severity, &Option<String>, &str) {
        (&self.at, self.severity, &self.instance, &self.message)
    }
}

impl fmt::Display for Diagnostic {
    /// `error: rescue (supervisor.d/rescue.yaml:2): <field>: <message>; <hint>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.instance {
            Some(name) => write!(f, "{severity}: {name} ({}): ", self.at)?,
            None => write!(f, "{severity}: {}: ", self.at)?,
        }
        // A conflict's message names both resources already; elsewhere the field leads.
        if let (Some(field), None) = (&self.field, &self.other) {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// Every diagnostic of one run over a config directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The diagnostics, sorted by file, line, severity and instance once [`Report::sort`] ran.
    pub diagnostics: Vec<Diagnostic>,
    /// How many profile files were read.
    pub profiles: usize,
}

impl Report {
    /// Adds one diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    /// Puts the diagnostics in the order they are shown: by file, line, severity, instance.
    pub fn sort(&mut self) {
        self.diagnostics
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.diagnostics.dedup();
    }

    /// How many errors.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// How many warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// True when nothing stops a start.
    pub fn ok(&self) -> bool {
        self.errors() == 0
    }

    /// The closing line of a report: `check passed: ...` or `check failed: ...`.
    pub fn summary(&self, dir: &Path) -> String {
        let plural = |n: usize, what: &str| {
            if n == 1 {
                format!("1 {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        let profiles = plural(self.profiles, "profile");
        let warnings = match self.warnings() {
            0 => String::new(),
            n => format!(", {}", plural(n, "warning")),
        };
        if self.ok() {
            format!(
                "check passed: {profiles} in {}, no conflicts{warnings}",
                dir.display()
            )
        } else {
            format!(
                "check failed: {} in {profiles} in {}{warnings}",
                plural(self.errors(), "error"),
                dir.display()
            )
        }
    }
}

impl fmt::Display for Report {
    /// One diagnostic a line, in order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
