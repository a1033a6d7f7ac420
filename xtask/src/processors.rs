//! `cargo xtask processors`: builds the Wasm processors (the cargo workspaces
//! in [`WORKSPACES`], each of its own because they target wasm32-wasip2) into
//! the repository's one target directory; also their lints and host unit tests.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::{cargo, ensure_wasm_target, root};

/// The processor workspaces, relative to the repository root: the example
/// processors (and the hostile ones of the runtime's tests), and the two of
/// the crawl -> format -> recommend example.
const WORKSPACES: [&str; 2] = ["examples/processors", "examples/crawl-format-recommend/processors"];

/// Where the built processors land: `target/wasm32-wasip2/release/`.
pub fn processors_dir() -> PathBuf {
    crate::target_dir().join("wasm32-wasip2/release")
}

/// Builds every processor in release mode and returns the paths of the
/// `.wasm` components, one per member of each processor workspace.
pub fn build_processors() -> anyhow::Result<Vec<PathBuf>> {
    ensure_wasm_target()?;
    let mut paths = Vec::new();
    for workspace in WORKSPACES {
        run_in(workspace, cargo().args(["build", "--release", "--target", "wasm32-wasip2"]))?;
        let manifest = root().join(workspace).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        for member in members(&text) {
            let path = processors_dir().join(format!("{}.wasm", member.replace('-', "_")));
            if !path.is_file() {
                bail!("building the processors did not produce {}", path.display());
            }
            paths.push(path);
        }
    }
    Ok(paths)
}

/// The `members = [...]` of a workspace manifest (a plain list of strings).
fn members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("\nmembers") else { return Vec::new() };
    let rest = &manifest[start..];
    let list = &rest[rest.find('[').map_or(0, |i| i + 1)..rest.find(']').unwrap_or(rest.len())];
    list.split(',').map(|m| m.trim().trim_matches('"').to_string()).filter(|m| !m.is_empty()).collect()
}

/// The `processors` task: builds them and prints where they are.
pub fn task() -> anyhow::Result<()> {
    for path in build_processors()? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Checks the processor workspaces' formatting and lints (for wasm32-wasip2,
/// the target they are built for, and for the host, where their unit tests run).
pub fn lint_processors() -> anyhow::Result<()> {
    let host = host_triple()?;
    for workspace in WORKSPACES {
        run_in(workspace, cargo().args(["fmt", "--all", "--", "--check"]))?;
        run_in(workspace, cargo().args(["clippy", "--release", "--target", "wasm32-wasip2", "--", "-D", "warnings"]))?;
        run_in(workspace, cargo().args(["clippy", "--all-targets", "--target", &host, "--", "-D", "warnings"]))?;
    }
    Ok(())
}

/// Runs the processors' unit tests on the host: their logic is plain Rust
/// (only the SDK's imports need a Wasm host, and the tests do not call them).
pub fn test_processors() -> anyhow::Result<()> {
    let host = host_triple()?;
    for workspace in WORKSPACES {
        run_in(workspace, cargo().args(["test", "--target", &host]))?;
    }
    Ok(())
}

/// The host's target triple (the processor workspaces default to wasm32-wasip2).
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().find_map(|l| l.strip_prefix("host: ")) {
        Some(host) => Ok(host.trim().to_string()),
        None => bail!("rustc -vV did not name the host triple"),
    }
}

/// Runs cargo in `workspace` (so that its .cargo/config.toml applies) with
/// the repository's target directory.
fn run_in(workspace: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let dir = root().join(workspace);
    cmd.current_dir(&dir).env("CARGO_TARGET_DIR", crate::target_dir());
    eprintln!("xtask: running {cmd:?} in {}", dir.display());
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
