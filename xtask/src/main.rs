//! Build automation for Eddy (the xtask pattern): `cargo xtask <task>`.
//!
//! * `demo`: build and run the main job on an embedded single-node Eddy.
//! * `test`: install what the tests need, check formatting and lints, build
//!   the `eddy` binary and run every test in the workspace.
//! * `processors`: build the Wasm processors (examples/processors/ and
//!   examples/crawl-format-recommend/processors/) and print the paths of the
//!   .wasm files.
//! * `bench`: run `eddy bench produce/consume` against a fresh release broker.
//! * `bench-cluster [--records N] [--failovers K]`: a single broker's acks=1
//!   throughput against a three-broker cluster's (RF=3, acks=all), and the
//!   failover time after a leader is killed (see `cluster_bench.rs`).
//! * `bench-peers [--records N]`: the same produce and consume workloads against
//!   Eddy and NATS JetStream (installed if missing), one after the other on
//!   127.0.0.1, with the Eddy/NATS ratios (see `peers.rs` for the caveat on
//!   NATS's unsynced acks).
//!
//! Every task sets up what it needs itself (the wasm32-wasip2 target, Debian
//! packages), so a fresh machine needs only cargo.

mod bench;
mod cluster_bench;
mod peers;
mod processors;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "demo" => demo(rest),
        "test" => test(rest),
        "processors" => processors::task(),
        "bench" => bench::bench(rest),
        "bench-peers" => peers::run(rest),
        "bench-cluster" => cluster_bench::run_bench(rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <demo | test [--no-lint] [-- nextest args] | processors | bench | bench-cluster [--records N] [--failovers K] | bench-peers [--records N]>"
            );
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown task '{other}'; try `cargo xtask help`")),
    };
    if let Err(e) = result {
        eprintln!("xtask {task}: error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root if relative), else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Runs a command in the workspace root, failing if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.current_dir(root()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// `cargo` as invoked by the user (respects $CARGO).
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Adds the wasm32-wasip2 target when it is missing (processors are built for it).
pub fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (needed to add the wasm32-wasip2 target)")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
        return Ok(());
    }
    eprintln!("xtask: adding the wasm32-wasip2 target");
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
}

fn demo(args: &[String]) -> anyhow::Result<()> {
    processors::build_processors()?;
    run(cargo().args(["build", "--release", "-p", "eddy-broker", "-p", "eddy-examples"]))?;
    run(Command::new(target_dir().join("release/demo"))
        .args(args)
        .env("EDDY_PROCESSORS_DIR", processors::processors_dir()))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    let passthrough: Vec<&String> = args.iter().skip_while(|a| *a != "--").skip(1).collect();
    // The runtime's tests load the example processors from EDDY_PROCESSORS_DIR.
    processors::build_processors()?;
    if lint {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
        processors::lint_processors()?;
    }
    // The processors' logic has unit tests of its own, run on the host.
    processors::test_processors()?;
    // The end-to-end tests start the real `eddy` binary.
    run(cargo().args(["build", "-p", "eddy-broker", "--bin", "eddy"]))?;
    let eddy = target_dir().join("debug/eddy");
    let nextest = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = cargo();
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    cmd.args(passthrough).env("EDDY_BIN", eddy).env("EDDY_PROCESSORS_DIR", processors::processors_dir());
    run(&mut cmd)
}
