//! `cargo xtask bench` and `cargo xtask bench-peers`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{cargo, run};

/// A child process that is stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM for a clean shutdown, then make sure.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a release `eddy broker` on 127.0.0.1 with its data in `dir`; returns it and its address.
/// Its CA certificate is `dir/tls/ca.pem`.
pub(crate) fn start_broker(dir: &std::path::Path) -> anyhow::Result<(Guard, String)> {
    let eddy = crate::target_dir().join("release/eddy");
    let addr_file = dir.join("broker.addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = Command::new(&eddy)
        .args(["broker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", eddy.display()))?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            return Ok((guard, addr.trim().to_string()));
        }
        if Instant::now() > deadline {
            bail!("broker did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `eddy bench <args> --json` against `addr` (at most [`BENCH_LIMIT`]) and parses its summary.
pub(crate) fn eddy_bench(addr: &str, ca: &std::path::Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut cmd = Command::new(crate::target_dir().join("release/eddy"));
    cmd.arg("bench").args(args).args(["--json", "--broker", addr, "--ca"]).arg(ca).stderr(Stdio::inherit());
    let out = output_within(&mut cmd, BENCH_LIMIT).context("running eddy bench")?;
    if !out.status.success() {
        bail!("eddy bench {args:?} failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parsing bench output {line:?}"))
}

/// Longest run of one bench command.
pub(crate) const BENCH_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs `cmd` with its stdout captured (stdin closed), killing it if it takes longer than `limit`.
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<std::process::Output> {
    use std::io::Read;
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {} s; killed it", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = reader.join().map_err(|_| anyhow::anyhow!("reading the output of {cmd:?}"))?;
    Ok(std::process::Output { status, stdout, stderr: Vec::new() })
}

/// The standard Eddy workloads against a fresh release broker; prints the JSON summaries.
pub fn bench(_args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "-p", "eddy-broker", "--bin", "eddy"]))?;
    let dir = tempfile::tempdir()?;
    let (_broker, addr) = start_broker(dir.path())?;
    let ca = dir.path().join("tls/ca.pem");
    let produce = eddy_bench(&addr, &ca, &["produce", "--records", "1000000", "--partitions", "4"])?;
    println!("{produce}");
    let consume = eddy_bench(&addr, &ca, &["consume"])?;
    println!("{consume}");
    Ok(())
}
