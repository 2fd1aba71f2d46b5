//! Shared helpers of the integration tests: temp config dirs and the real binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp directory with a `supervisor.d/` and a `home/` that stands in for HOME.
pub struct Scene {
    pub root: tempfile::TempDir,
}

impl Scene {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("supervisor.d")).unwrap();
        std::fs::create_dir_all(root.path().join("home")).unwrap();
        Scene { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn dir(&self) -> PathBuf {
        self.path("supervisor.d")
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// Writes `text` to `rel` (relative to the scene root), creating parents.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes a profile into `supervisor.d/`.
    pub fn profile(&self, file: &str, text: &str) -> PathBuf {
        self.write(&format!("supervisor.d/{file}"), text)
    }

    /// Runs a binary of this package with HOME set to the scene's home and the scene as cwd.
    pub fn run(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(bin_path(bin))
            .args(args)
            .current_dir(self.root.path())
            .env("HOME", self.home())
            .env_remove("OPENCLAW_SUPERVISOR_CONFIG_DIR")
            .output()
            .expect("run binary")
    }

    /// `openclawctl check --config-dir supervisor.d`, from the scene root.
    pub fn check(&self) -> Output {
        self.run("openclawctl", &["check", "--config-dir", "supervisor.d"])
    }
}

pub fn bin_path(bin: &str) -> PathBuf {
    match bin {
        "openclawctl" => PathBuf::from(env!("CARGO_BIN_EXE_openclawctl")),
        "openclaw-supervisord" => PathBuf::from(env!("CARGO_BIN_EXE_openclaw-supervisord")),
        other => panic!("unknown binary {other}"),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository root (for the shipped `supervisor.d/` and `examples/`).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
