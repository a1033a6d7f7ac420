//! `cargo xtask bench-cluster [--records N] [--failovers K]`: replication's
//! cost and failover time, on this one machine, in one run.
//!
//! 1. A fresh single release broker: `eddy bench produce --acks 1` (1 KiB
//!    records, 4 partitions) — the baseline.
//! 2. A fresh three-broker cluster (one cluster CA, `--peers`): the same
//!    workload with replication factor 3, min-insync 2 and acks=all, flat out,
//!    then at a fixed rate of half the baseline for a latency figure.
//! 3. K times: `eddy bench failover` kills partition 0's leader with SIGKILL
//!    and times the first acks=all produce acknowledged by the new leader;
//!    the killed broker is restarted and the run waits until every replica is
//!    in sync again before the next.
//!
//! Every server is held by a guard that stops it when dropped; every wait is
//! bounded. Prints one JSON object per step, then a summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::bench::{eddy_bench, output_within, start_broker, Guard, BENCH_LIMIT};
use crate::{cargo, run};

const DEFAULT_RECORDS: u64 = 500_000;
const DEFAULT_FAILOVERS: u32 = 3;
/// Longest wait for a cluster to elect a controller or get its replicas in sync.
const CLUSTER_WAIT: Duration = Duration::from_secs(90);

fn eddy() -> PathBuf {
    crate::target_dir().join("release/eddy")
}

/// One broker of the cluster: its process guard, id, data dir and address.
struct Member {
    guard: Option<Guard>,
    id: u32,
    dir: PathBuf,
    addr: String,
}

struct Cluster {
    members: Vec<Member>,
    peers: String,
    ca_dir: PathBuf,
}

impl Cluster {
    fn bootstrap(&self) -> String {
        self.members.iter().map(|m| m.addr.clone()).collect::<Vec<_>>().join(",")
    }

    fn ca(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(m.dir.join("broker.log"))?;
        let child = Command::new(eddy())
            .args(["broker", "--no-runtime", "--id", &m.id.to_string(), "--listen", &m.addr, "--peers", &self.peers])
            .arg("--data-dir")
            .arg(&m.dir)
            .arg("--tls-ca-cert")
            .arg(self.ca_dir.join("ca.pem"))
            .arg("--tls-ca-key")
            .arg(self.ca_dir.join("ca.key"))
            // Next to the CA directory, where `eddy bench` finds it.
            .arg("--admin-password-file")
            .arg(self.ca_dir.parent().expect("the CA lives in the run directory").join("admin.password"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a cluster broker")?;
        m.guard = Some(Guard(child));
        Ok(())
    }

    fn start(root: &Path) -> anyhow::Result<Self> {
        let ca_dir = root.join("ca");
        let status =
            Command::new(eddy()).args(["ca", "create", "--out"]).arg(&ca_dir).stdout(Stdio::null()).status()?;
        if !status.success() {
            bail!("eddy ca create failed");
        }
        std::fs::write(root.join("admin.password"), "bench-cluster-password\n")?;
        let sockets: Vec<std::net::UdpSocket> =
            (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
        let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
        drop(sockets);
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| Member {
                guard: None,
                id: i as u32 + 1,
                dir: root.join(format!("broker-{}", i + 1)),
                addr: format!("127.0.0.1:{p}"),
            })
            .collect();
        for m in &members {
            std::fs::create_dir_all(&m.dir)?;
        }
        let peers = members.iter().map(|m| format!("{}@{}", m.id, m.addr)).collect::<Vec<_>>().join(",");
        let mut cluster = Self { members, peers, ca_dir };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        cluster.wait(|c| c.cli_json(&["topic", "list", "--json"]).is_ok(), "a controller")?;
        Ok(cluster)
    }

    fn cli_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut cmd = Command::new(eddy());
        cmd.args(args).args(["--broker", &self.bootstrap(), "--ca"]).arg(self.ca()).stderr(Stdio::null());
        let out = output_within(&mut cmd, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!("eddy {args:?} failed");
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn wait(&self, ok: impl Fn(&Self) -> bool, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + CLUSTER_WAIT;
        while !ok(self) {
            if Instant::now() > deadline {
                bail!("timed out after {CLUSTER_WAIT:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn in_sync(&self, topic: &str) -> bool {
        self.cli_json(&["topic", "describe", topic, "--json"]).is_ok_and(|t| {
            t["partitions"].as_array().is_some_and(|ps| {
                ps.iter().all(|p| p["leader"].as_u64() != Some(0) && p["isr"].as_array().map(Vec::len) == Some(3))
            })
        })
    }

    fn pids(&self) -> String {
        self.members
            .iter()
            .filter_map(|m| m.guard.as_ref().map(|g| format!("{}={}", m.id, g.0.id())))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn arg(args: &[String], name: &str, default: u64) -> anyhow::Result<u64> {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).with_context(|| format!("{name} needs a value"))?.parse().context(name.to_string()),
        None => Ok(default),
    }
}

/// Runs the cluster benchmark.
pub fn run_bench(args: &[String]) -> anyhow::Result<()> {
    let records = arg(args, "--records", DEFAULT_RECORDS)?;
    let failovers = arg(args, "--failovers", u64::from(DEFAULT_FAILOVERS))?;
    run(cargo().args(["build", "--release", "-p", "eddy-broker", "--bin", "eddy"]))?;
    let records_arg = records.to_string();

    let single_dir = tempfile::tempdir()?;
    let baseline = {
        let (_broker, addr) = start_broker(single_dir.path())?;
        let ca = single_dir.path().join("tls/ca.pem");
        eddy_bench(&addr, &ca, &["produce", "--records", &records_arg, "--partitions", "4", "--acks", "1"])?
    };
    println!("{}", json!({"step": "single broker, acks=1", "result": baseline}));

    let root = tempfile::tempdir()?;
    let mut cluster = Cluster::start(root.path())?;
    let replicated_args = [
        "produce",
        "--records",
        &records_arg,
        "--partitions",
        "4",
        "--acks",
        "all",
        "--replication",
        "3",
        "--min-insync-replicas",
        "2",
    ];
    let mut flat: Vec<&str> = replicated_args.to_vec();
    flat.extend(["--topic", "replicated"]);
    let replicated = eddy_bench(&cluster.bootstrap(), &cluster.ca(), &flat)?;
    println!("{}", json!({"step": "3 brokers, RF=3, acks=all", "result": replicated}));
    let half = (baseline["records_per_sec"].as_f64().unwrap_or(100_000.0) / 2.0) as u64;
    let half_arg = half.to_string();
    let mut paced: Vec<&str> = replicated_args.to_vec();
    paced.extend(["--topic", "replicated-paced", "--rate", &half_arg]);
    let paced = eddy_bench(&cluster.bootstrap(), &cluster.ca(), &paced)?;
    println!("{}", json!({"step": format!("3 brokers, RF=3, acks=all, {half} records/s"), "result": paced}));

    let mut times = Vec::new();
    for round in 0..failovers {
        let mut cmd = Command::new(eddy());
        cmd.args(["bench", "failover", "--json", "--pids", &cluster.pids(), "--broker", &cluster.bootstrap(), "--ca"])
            .arg(cluster.ca())
            .stderr(Stdio::inherit());
        let out = output_within(&mut cmd, BENCH_LIMIT)?;
        if !out.status.success() {
            bail!("eddy bench failover failed in round {round}");
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let result: Value = serde_json::from_str(text.lines().last().unwrap_or_default())?;
        println!("{}", json!({"step": format!("failover {}", round + 1), "result": result}));
        times.push(result["failover_ms"].as_f64().unwrap_or(f64::NAN));
        // Restart the killed broker and wait for every replica to be in sync.
        let killed = result["killed"].as_u64().context("killed broker id")? as usize - 1;
        if let Some(mut guard) = cluster.members[killed].guard.take() {
            let _ = guard.0.wait();
        }
        cluster.spawn(killed)?;
        cluster.wait(|c| c.in_sync("failover"), "the killed broker to rejoin the ISR")?;
    }
    let ratio = replicated["mb_per_sec"].as_f64().unwrap_or(0.0) / baseline["mb_per_sec"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({"summary": {
            "single_acks1_mb_per_sec": baseline["mb_per_sec"], "replicated_acks_all_mb_per_sec": replicated["mb_per_sec"],
            "ratio": ratio, "replicated_p99_ms_flat_out": replicated["latency_ms"]["p99"],
            "replicated_p99_ms_at_half_rate": paced["latency_ms"]["p99"], "failover_ms": times,
        }})
    );
    Ok(())
}
