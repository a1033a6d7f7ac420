//! Harness for end-to-end tests: starts the real `eddy` binary on 127.0.0.1 with
//! a temporary data directory, connects SDK clients to it, and kills or
//! restarts it.
//!
//! The binary is `$EDDY_BIN` (set by `cargo xtask test`), else `eddy` next to
//! the test executable's target directory.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use eddy_sdk::{Client, ClientConfig};

/// Path of the `eddy` binary under test.
pub fn eddy_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EDDY_BIN") {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/eddy
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    profile_dir.join("eddy")
}

/// Directory of the example processor modules: `$EDDY_PROCESSORS_DIR` (set by
/// `cargo xtask test`), else `target/wasm32-wasip2/release` (built by
/// `cargo xtask processors`).
pub fn processors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDDY_PROCESSORS_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).expect("target dir");
    target.join("wasm32-wasip2/release")
}

/// The path of one example processor module; panics with a hint if it was not built.
pub fn processor_wasm(name: &str) -> PathBuf {
    let path = processors_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask processors` (cargo xtask test does)", path.display());
    path
}

/// Runs the `eddy` CLI (no broker options) with `stdin` as input.
pub fn eddy(args: &[&str], stdin: &[u8]) -> anyhow::Result<std::process::Output> {
    use std::io::Write;
    let mut child = Command::new(eddy_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// The end of a bounded wait: tests poll until a condition holds and fail
/// with a description of what they waited for once the deadline has passed.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Self { at: Instant::now() + limit, limit }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Fails with "timed out after LIMIT waiting for WHAT" once the deadline has passed.
    pub fn check(&self, what: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.passed() {
            bail!("timed out after {:?} waiting for {}", self.limit, what());
        }
        Ok(())
    }
}

/// A broker process owned by a test. Killed when dropped.
pub struct BrokerProcess {
    child: Option<Child>,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    addr: SocketAddr,
    extra_args: Vec<String>,
}

impl BrokerProcess {
    /// Starts a broker on a free port with a new temporary data directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a broker in `dir` listening on `addr` (a fixed port), with
    /// extra `eddy broker` arguments; waits until it writes its address file
    /// (it may not be ready to serve yet if it is one of several brokers).
    pub fn start_in(dir: PathBuf, addr: SocketAddr, extra_args: &[String]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut broker = Self { child: None, dir, _tempdir: None, addr, extra_args: extra_args.to_vec() };
        broker.spawn()?;
        Ok(broker)
    }

    /// Like [`start`](Self::start) with extra `eddy broker` arguments.
    pub fn start_with(extra_args: &[&str]) -> anyhow::Result<Self> {
        let tempdir = tempfile::Builder::new().prefix("eddy-test-").tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let mut broker = Self {
            child: None,
            dir,
            _tempdir: Some(tempdir),
            addr: "127.0.0.1:0".parse()?,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let addr_file = self.dir.join("broker.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log"))?;
        let bin = eddy_bin();
        let child = Command::new(&bin)
            .args(["broker", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen", &self.addr.to_string()])
            .args(&self.extra_args)
            .env("EDDY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (build it with `cargo build -p eddy-broker`)", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if let Ok(addr) = text.trim().parse() {
                    self.addr = addr;
                    return Ok(());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("broker exited with {status} during start; log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("broker did not start within 30 s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA file clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// A client configuration for this broker.
    /// (As the broker's superuser `admin`, whose password file is in the
    /// data directory.)
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.addr.to_string()).ca_file(self.ca()).with_local_credentials()
    }

    /// A connected client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_config()).await?)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the broker with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("broker is not running") };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("broker did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same address and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Whether the process is running (not killed or reaped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the process.
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else { bail!("broker is not running") };
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        if rc != 0 {
            bail!("kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs the `eddy` CLI against this broker with `stdin` as input.
    pub fn cli(&self, args: &[&str], stdin: &[u8]) -> anyhow::Result<std::process::Output> {
        let addr = self.addr.to_string();
        let ca = self.ca();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--broker", &addr, "--ca", ca.to_str().expect("UTF-8 temp path")]);
        eddy(&all, stdin)
    }

    /// Runs the `eddy` CLI against this broker with no input and returns its
    /// stdout; fails with its stderr if it exits non-zero.
    pub fn cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(args, b"")?;
        if !out.status.success() {
            bail!("`eddy {}` failed with {}: {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Starts a standalone processor worker (`eddy runtime`) against this
    /// broker, with worker id `worker_id`, members' session timeout
    /// `session_timeout_ms` and its own module cache in the data directory.
    pub fn spawn_runtime(&self, worker_id: &str, session_timeout_ms: u64) -> anyhow::Result<CliProcess> {
        let cache = self.dir.join(format!("wasm-cache-{worker_id}"));
        let timeout = session_timeout_ms.to_string();
        let cache = cache.to_str().context("UTF-8 temp path")?;
        self.spawn_cli(&["runtime", "--worker-id", worker_id, "--session-timeout-ms", &timeout, "--cache-dir", cache])
    }

    /// The broker's exit status if it has exited (None while it runs).
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("broker was already killed or reaped"),
        }
    }

    /// Starts a long-running `eddy` CLI process against this broker (e.g.
    /// `consume --group`), with stdin closed and stdout read line by line.
    /// `EDDY_LOG` defaults to `info` so that its stderr tells what it did.
    pub fn spawn_cli(&self, args: &[&str]) -> anyhow::Result<CliProcess> {
        let mut command = Command::new(eddy_bin());
        command.args(args).args(["--broker", &self.addr.to_string(), "--ca"]).arg(self.ca());
        if std::env::var_os("EDDY_LOG").is_none() {
            command.env("EDDY_LOG", "info");
        }
        CliProcess::spawn(command)
    }
}

/// A CLI process owned by a test: stdout arrives line by line without
/// blocking the test, stderr is kept for failure messages. Killed (SIGKILL)
/// when dropped.
pub struct CliProcess {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl CliProcess {
    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", eddy_bin().display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Self { child: Some(child), lines, stderr, readers: vec![stdout_reader, stderr_reader] })
    }

    /// The process id (None once it was killed or reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stdout lines printed since the last call, without waiting.
    pub fn read_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The next stdout line, waiting at most `timeout`; None on timeout or
    /// when stdout is closed.
    pub fn read_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("process was already killed or reaped"),
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status (then
    /// SIGKILL and an error). Output printed before the exit stays readable.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("process is not running") };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                // The pipes are closed: let the readers drain what is left.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("process did not exit within {timeout:?} of SIGTERM; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Free UDP ports on 127.0.0.1, reserved by binding and releasing them (a
/// broker of a cluster must know every other broker's port before it starts).
pub fn free_udp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets: Vec<std::net::UdpSocket> =
        (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// A cluster of `eddy broker` processes on 127.0.0.1 sharing one cluster CA,
/// each with its own temporary data directory. Killed when dropped.
pub struct ClusterProcess {
    brokers: Vec<BrokerProcess>,
    ca: PathBuf,
    _tempdir: tempfile::TempDir,
}

impl ClusterProcess {
    /// Starts `n` brokers (ids 1..=n) with `extra_args` for each, and waits
    /// until the metadata quorum has a controller and every broker serves.
    pub async fn start(n: usize, extra_args: &[&str]) -> anyhow::Result<Self> {
        let tempdir = tempfile::Builder::new().prefix("eddy-cluster-").tempdir()?;
        let ca_dir = tempdir.path().join("ca");
        let out = eddy(&["ca", "create", "--out", ca_dir.to_str().context("UTF-8 temp path")?], b"")?;
        if !out.status.success() {
            bail!("eddy ca create failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // One superuser password for the whole cluster, next to the CA
        // directory, where clients of the harness (and the CLI) find it.
        let password_file = tempdir.path().join("admin.password");
        std::fs::write(&password_file, "cluster-test-password\n")?;
        let ports = free_udp_ports(n)?;
        let peers: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect();
        let peers = peers.join(",");
        let mut brokers = Vec::with_capacity(n);
        for (i, port) in ports.iter().enumerate() {
            let id = (i + 1).to_string();
            let mut args: Vec<String> = vec![
                "--id".into(),
                id,
                "--peers".into(),
                peers.clone(),
                "--tls-ca-cert".into(),
                ca_dir.join("ca.pem").to_string_lossy().into_owned(),
                "--tls-ca-key".into(),
                ca_dir.join("ca.key").to_string_lossy().into_owned(),
                "--admin-password-file".into(),
                password_file.to_string_lossy().into_owned(),
            ];
            args.extend(extra_args.iter().map(|s| s.to_string()));
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            brokers.push(BrokerProcess::start_in(tempdir.path().join(format!("broker-{}", i + 1)), addr, &args)?);
        }
        let cluster = Self { brokers, ca: ca_dir.join("ca.pem"), _tempdir: tempdir };
        cluster.wait_for_controller(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Broker `id` (1-based).
    pub fn broker(&self, id: u32) -> &BrokerProcess {
        &self.brokers[id as usize - 1]
    }

    /// Broker `id` (1-based), to kill, pause or restart it.
    pub fn broker_mut(&mut self, id: u32) -> &mut BrokerProcess {
        &mut self.brokers[id as usize - 1]
    }

    /// The broker ids.
    pub fn ids(&self) -> Vec<u32> {
        (1..=self.brokers.len() as u32).collect()
    }

    /// Every broker's address, comma-separated (a client's bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.brokers.iter().map(|b| b.addr().to_string()).collect::<Vec<_>>().join(",")
    }

    /// The cluster CA file clients trust.
    pub fn ca(&self) -> PathBuf {
        self.ca.clone()
    }

    /// A client configuration bootstrapping from every broker.
    /// (As the superuser `admin`: every broker was given the password file
    /// next to the CA directory.)
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.bootstrap()).ca_file(self.ca()).with_local_credentials()
    }

    /// A connected client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(self.client_config()).await?)
    }

    /// Waits until some broker reports a controller.
    pub async fn wait_for_controller(&self, limit: Duration) -> anyhow::Result<u32> {
        let deadline = Deadline::after(limit);
        loop {
            for b in self.brokers.iter().filter(|b| b.is_running()) {
                let config = ClientConfig::new(b.addr().to_string()).ca_file(self.ca()).with_local_credentials();
                let Ok(client) = Client::connect(config).await else {
                    continue;
                };
                let req = eddy_protocol::messages::MetadataRequest { topics: Some(vec![]) };
                if let Ok(resp) = client.request(&req).await {
                    if resp.controller != 0 {
                        return Ok(resp.controller);
                    }
                }
            }
            deadline.check(|| "a controller to be elected".into())?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every broker's log so far, for failure messages.
    pub fn logs(&self) -> String {
        self.brokers
            .iter()
            .enumerate()
            .map(|(i, b)| format!("===== broker {} =====\n{}", i + 1, b.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the `eddy` CLI against the cluster with `stdin` as input.
    pub fn cli(&self, args: &[&str], stdin: &[u8]) -> anyhow::Result<std::process::Output> {
        let bootstrap = self.bootstrap();
        let ca = self.ca();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--broker", &bootstrap, "--ca", ca.to_str().expect("UTF-8 temp path")]);
        eddy(&all, stdin)
    }
}
