//! `cargo xtask processors`: builds the example processors (the Wasm components
//! in examples/processors/, a cargo workspace of their own) for wasm32-wasip2,
//! into the repository's one target directory.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::{cargo, ensure_wasm_target, root};

/// Where the built processors land: `target/wasm32-wasip2/release/`.
pub fn processors_dir() -> PathBuf {
    crate::target_dir().join("wasm32-wasip2/release")
}

/// Builds every example processor in release mode and returns the paths of the
/// `.wasm` components, one per member of the processors workspace.
pub fn build_processors() -> anyhow::Result<Vec<PathBuf>> {
    ensure_wasm_target()?;
    let manifest = root().join("examples/processors/Cargo.toml");
    run_in_processors(cargo().args(["build", "--release", "--target", "wasm32-wasip2"]))?;
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let mut paths = Vec::new();
    for member in members(&text) {
        let path = processors_dir().join(format!("{}.wasm", member.replace('-', "_")));
        if !path.is_file() {
            bail!("building the processors did not produce {}", path.display());
        }
        paths.push(path);
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

/// Checks the processors workspace's formatting and lints (for wasm32-wasip2,
/// the target it is built for).
pub fn lint_processors() -> anyhow::Result<()> {
    run_in_processors(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_in_processors(cargo().args(["clippy", "--release", "--target", "wasm32-wasip2", "--", "-D", "warnings"]))
}

/// Runs cargo in examples/processors (so that its .cargo/config.toml applies)
/// with the repository's target directory.
fn run_in_processors(cmd: &mut Command) -> anyhow::Result<()> {
    let dir = root().join("examples/processors");
    cmd.current_dir(&dir).env("CARGO_TARGET_DIR", crate::target_dir());
    eprintln!("xtask: running {cmd:?} in {}", dir.display());
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
