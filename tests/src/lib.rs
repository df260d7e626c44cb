//! Helpers for the end-to-end tests: locating binaries, models and shared
//! data, a real S3-compatible server, and a cluster of real processes
//! (`cd-coordinator` plus `cd-worker`s) on free loopback ports.
//!
//! Synchronisation is always by condition ([`wait_for`] polls a predicate
//! with a deadline), never by sleeping for a guessed time. Every process's
//! output goes to a log file in the cluster's temporary directory; a failing
//! `wait_for_*` prints the tails of those logs.
//!
//! Why this file is long: the end-to-end harness: binaries, models, the
//! S3-compatible server, a running cluster and its gRPC client are used
//! together by every end-to-end test.

/// The worker's exit codes, compiled from the worker's own source file so the
/// tests (and the deployment's `podFailurePolicy` checks) use the very values
/// the binary does, without linking the worker crate.
pub use cd_proto::exit::worker as worker_exit;

pub mod fixtures;

use anyhow::{anyhow, bail, Context, Result};
use cd_proto::v1::coordinator_client::CoordinatorClient;
use cd_proto::v1::SweepStatusResponse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub use cd_common::test_support::in_ci;

/// A prerequisite is missing: fail in CI, otherwise print why the test is
/// skipped and return `None`.
pub fn missing<T>(what: &str) -> Option<T> {
    if in_ci() {
        panic!("CI is set but {what}");
    }
    eprintln!("skipping: {what}");
    None
}

/// The compiled binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `cd-worker`.
    pub worker: PathBuf,
    /// `cd-coordinator`.
    pub coordinator: PathBuf,
}

/// The target directory and profile directory of this test executable
/// (`<target>/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable has no parent"))?;
    let profile = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
    } else {
        Some(deps)
    };
    profile
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot find the profile directory of {}", exe.display()))
}

/// Locate `cd-worker` and `cd-coordinator`: from `CD_BIN_DIR` when set,
/// otherwise build them with cargo into this test's own target directory
/// and profile (a no-op when they are up to date), once per test process.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    BINS.get_or_init(|| locate_bins().map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("cannot provide the binaries under test: {e}"))
}

fn locate_bins() -> Result<Bins> {
    let dir = match std::env::var_os("CD_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let profile = profile_dir()?;
            let target = profile
                .parent()
                .ok_or_else(|| anyhow!("profile dir has no parent"))?;
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(workspace_root())
                .args(["build", "--bins", "-p", "cd-worker", "-p", "cd-coordinator"])
                .env("CARGO_TARGET_DIR", target);
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd
                .status()
                .context("running cargo build for the binaries")?;
            if !status.success() {
                bail!("cargo build of cd-worker and cd-coordinator failed ({status})");
            }
            profile
        }
    };
    let bins = Bins {
        worker: dir.join("cd-worker"),
        coordinator: dir.join("cd-coordinator"),
    };
    for b in [&bins.worker, &bins.coordinator] {
        if !b.is_file() {
            bail!("{} does not exist", b.display());
        }
    }
    Ok(bins)
}

/// The shared datasets directory: `CD_SHARED_DATASETS`, else `../shared/datasets`
/// from the workspace root.
pub fn shared_datasets() -> PathBuf {
    std::env::var_os("CD_SHARED_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/datasets"))
}

/// Directory of tiny random HF checkpoints (`llama_gqa_rope3`, `qwen2_bias_tied`, ...):
/// `CD_TINY_MODELS` when set, otherwise written once per test process by
/// `scripts/fixtures/make_tiny_models.py` (needs python3 with numpy).
pub fn tiny_models() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let got = DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("CD_TINY_MODELS") {
            let d = PathBuf::from(d);
            if !d.join("llama_gqa_rope3/config.json").is_file() {
                return Err(format!(
                    "CD_TINY_MODELS={} holds no llama_gqa_rope3/config.json",
                    d.display()
                ));
            }
            return Ok(d);
        }
        let dir = std::env::temp_dir().join(format!("cd-tests-tiny-models-{}", std::process::id()));
        let out = Command::new("python3")
            .arg(workspace_root().join("scripts/fixtures/make_tiny_models.py"))
            .arg("--out")
            .arg(&dir)
            .output()
            .map_err(|e| format!("CD_TINY_MODELS is not set and python3 cannot run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "CD_TINY_MODELS is not set and make_tiny_models.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    });
    match got {
        Ok(d) => Some(d.clone()),
        Err(e) => missing(e),
    }
}

/// The SmolLM2-135M-Instruct GGUF from `CD_SMOLLM2_GGUF`.
pub fn smollm2_gguf() -> Option<PathBuf> {
    match std::env::var_os("CD_SMOLLM2_GGUF").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        Some(p) => missing(&format!("CD_SMOLLM2_GGUF={} is not a file", p.display())),
        None => missing("CD_SMOLLM2_GGUF is not set (path to SmolLM2-135M-Instruct.Q4_1.gguf)"),
    }
}

/// Environment for the processes a test starts: an error ends with its
/// message and causes, not a backtrace that would push them out of the log
/// tails a failing test prints.
pub const NO_BACKTRACES: [(&str, &str); 2] = [("RUST_BACKTRACE", "0"), ("RUST_LIB_BACKTRACE", "0")];

/// A TCP port on 127.0.0.1 that nothing listens on, for a server this test
/// starts (and may restart on the same port).
///
/// The port is drawn at random from outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): a port from that range, bound
/// and released, can be taken as the local end of any process's next outgoing
/// connection before the server it was picked for binds it, and that server
/// then fails with "address in use". Ports outside the range are only taken
/// by explicit binds. A process never hands out the same port twice.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().expect("port registry poisoned");
    let candidates = ports_outside_the_ephemeral_range();
    for _ in 0..10_000 {
        let port = match &candidates {
            Some(range) => {
                let span = u64::from(range.end() - range.start()) + 1;
                range.start() + (random_u64() % span) as u16
            }
            // No room outside the range: let the kernel pick one.
            None => TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("binding an ephemeral port")
                .port(),
        };
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 after 10000 tries");
}

/// The larger run of non-privileged ports below or above the kernel's
/// ephemeral range, or `None` when neither has 1000 ports.
fn ports_outside_the_ephemeral_range() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let mut bounds = text
        .split_whitespace()
        .filter_map(|w| w.parse::<u16>().ok());
    let (low, high) = (bounds.next()?, bounds.next()?);
    let below = 10_000..=low.saturating_sub(1);
    let above = high.saturating_add(1)..=u16::MAX;
    let len = |r: &std::ops::RangeInclusive<u16>| r.end().saturating_sub(*r.start());
    let best = if len(&below) >= len(&above) {
        below
    } else {
        above
    };
    (len(&best) >= 1000).then_some(best)
}

/// A random number from the standard library's randomly keyed hasher (seeded
/// per process, so concurrent test processes draw different ports).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Poll `check` every 50 ms until it returns `Some`, or fail after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {:?} waiting for {what}", timeout);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Send a signal (`TERM`, `STOP`, `CONT`, ...) to a process.
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "cdtestaccess";
/// Secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "cdtestsecret-0123456789";
/// Bucket the tests write to.
pub const S3_BUCKET: &str = "cd-e2e";

/// A real S3-compatible server: `s3s-fs`, storing objects as files under a
/// directory, so it can be stopped and restarted without losing data.
/// Installed with `cargo install s3s-fs@0.14.1 --features binary --locked`;
/// found through `CD_S3S_FS` (path to the binary) or `PATH`.
pub struct S3Server {
    bin: PathBuf,
    /// The directory holding the buckets.
    pub root: PathBuf,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl S3Server {
    /// The server binary, or `None` (a failure in CI) when it is not installed.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("CD_S3S_FS") {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Some(p)
            } else {
                missing(&format!("CD_S3S_FS={} is not a file", p.display()))
            };
        }
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("s3s-fs"))
                .find(|p| p.is_file())
        });
        match found {
            Some(p) => Some(p),
            None => missing(
                "s3s-fs is not installed (cargo install s3s-fs@0.14.1 --features binary --locked, or set CD_S3S_FS)",
            ),
        }
    }

    /// Start a server storing under `root` with the test bucket created.
    pub fn start(bin: PathBuf, root: &Path, log: &Path) -> Result<S3Server> {
        std::fs::create_dir_all(root.join(S3_BUCKET))?;
        let mut s = S3Server {
            bin,
            root: root.to_path_buf(),
            port: free_port(),
            log: log.to_path_buf(),
            child: None,
        };
        s.restart()?;
        Ok(s)
    }

    /// (Re)start the server on its port and wait until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&self.root)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "the S3 server to accept connections",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        )?;
        Ok(())
    }

    /// Kill the server (SIGKILL) and wait for it to be gone.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The running server's process id (to freeze it with SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The storage URL of `prefix` in the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{S3_BUCKET}/{prefix}?endpoint=http://127.0.0.1:{}&allow_http=true&path_style=true&region=us-east-1",
            self.port
        )
    }

    /// Environment a client of this server needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Local directory of a prefix's objects (s3s-fs keeps one file per key).
    pub fn dir_of(&self, prefix: &str) -> PathBuf {
        self.root.join(S3_BUCKET).join(prefix)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// How a cluster stores its results.
pub enum Storage {
    /// `file://` under the cluster's directory.
    File,
    /// A real S3-compatible server started for the cluster.
    S3(PathBuf),
}

/// Builds a [`Cluster`].
pub struct ClusterBuilder {
    grid: String,
    storage: Storage,
    token: String,
    workers: usize,
    tls: Option<TlsFiles>,
}

/// PEM files for a coordinator serving gRPC over TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The coordinator's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed it (what workers verify against).
    pub ca: PathBuf,
    /// The name in the certificate (workers' `--tls-domain`).
    pub domain: String,
}

impl ClusterBuilder {
    /// A cluster serving `grid` (TOML text; its `[storage]` URL is overridden).
    pub fn new(grid: impl Into<String>) -> Self {
        ClusterBuilder {
            grid: grid.into(),
            storage: Storage::File,
            token: "e2e-secret-token".into(),
            workers: 0,
            tls: None,
        }
    }

    /// Serve gRPC over TLS with these files; workers and the test client
    /// verify the coordinator against `tls.ca`.
    pub fn tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Store results on a real S3 server started with the cluster.
    pub fn s3(mut self, s3s_fs: PathBuf) -> Self {
        self.storage = Storage::S3(s3s_fs);
        self
    }

    /// Start this many workers with the cluster.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Start the S3 server (if any), the coordinator and the workers, and wait
    /// until the coordinator answers.
    pub fn start(self) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("cd-e2e-").tempdir()?;
        let grid_path = dir.path().join("grid.toml");
        std::fs::write(&grid_path, &self.grid)?;
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, &self.token)?;
        let (s3, store_url, results_dir) = match self.storage {
            Storage::File => {
                let d = dir.path().join("store");
                (None, format!("file://{}", d.display()), d)
            }
            Storage::S3(bin) => {
                let s = S3Server::start(bin, &dir.path().join("s3"), &dir.path().join("s3.log"))?;
                let url = s.url("results");
                let d = s.dir_of("results");
                (Some(s), url, d)
            }
        };
        let mut cluster = Cluster {
            grpc_port: free_port(),
            http_port: free_port(),
            token: self.token,
            token_path,
            grid_path,
            store_url,
            results_dir,
            s3,
            tls: self.tls,
            coordinator: None,
            coordinator_starts: 0,
            workers: BTreeMap::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            dir,
        };
        cluster.start_coordinator()?;
        for i in 0..self.workers {
            cluster.start_worker(&format!("w{i}"), &[])?;
        }
        Ok(cluster)
    }
}

/// A running worker process.
pub struct WorkerProc {
    /// The process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

/// A coordinator and its workers, as real processes, plus their storage.
pub struct Cluster {
    /// The coordinator's gRPC port (kept across restarts).
    pub grpc_port: u16,
    /// The coordinator's HTTP port.
    pub http_port: u16,
    /// The worker token.
    pub token: String,
    token_path: PathBuf,
    /// The grid file served.
    pub grid_path: PathBuf,
    /// Storage URL of the results.
    pub store_url: String,
    /// Local directory where the results' objects end up as files (both the
    /// `file://` store and s3s-fs keep one file per key).
    pub results_dir: PathBuf,
    /// The S3 server, when the cluster uses one.
    pub s3: Option<S3Server>,
    /// TLS files, when gRPC is served over TLS.
    pub tls: Option<TlsFiles>,
    coordinator: Option<Child>,
    coordinator_starts: usize,
    /// Workers by id.
    pub workers: BTreeMap<String, WorkerProc>,
    runtime: tokio::runtime::Runtime,
    /// Temporary directory holding grid, logs and local storage.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// `http://127.0.0.1:PORT` (`https://` with TLS) of the coordinator.
    pub fn coordinator_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.grpc_port)
    }

    /// A gRPC endpoint for the coordinator (verifying its certificate with TLS).
    fn endpoint(&self) -> Result<tonic::transport::Endpoint> {
        let mut ep = tonic::transport::Endpoint::from_shared(self.coordinator_url())?;
        if let Some(tls) = &self.tls {
            let ca = std::fs::read(&tls.ca)?;
            ep = ep.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name(tls.domain.clone()),
            )?;
        }
        Ok(ep)
    }

    fn storage_env(&self) -> Vec<(String, String)> {
        self.s3.as_ref().map(S3Server::env).unwrap_or_default()
    }

    /// Log file of the coordinator's n-th start (0-based).
    pub fn coordinator_log(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("coordinator-{start}.log"))
    }

    /// Start (or restart) the coordinator on its ports and wait until it answers.
    pub fn start_coordinator(&mut self) -> Result<()> {
        let log_path = self.coordinator_log(self.coordinator_starts);
        self.coordinator_starts += 1;
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(&bins().coordinator)
            .arg("--grid")
            .arg(&self.grid_path)
            .args(["--listen", &format!("127.0.0.1:{}", self.grpc_port)])
            .args(["--http-listen", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--store", &self.store_url])
            .arg("--token-file")
            .arg(&self.token_path)
            .args(self.tls.iter().flat_map(|t| {
                [
                    "--tls-cert".as_ref(),
                    t.cert.as_os_str(),
                    "--tls-key".as_ref(),
                    t.key.as_os_str(),
                ]
            }))
            .envs(self.storage_env())
            .envs(NO_BACKTRACES)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting cd-coordinator")?;
        // An exit (a bind or storage error) fails the wait at once, with its
        // message: `Some(None)` is an answer, `Some(Some(status))` an exit.
        let outcome = wait_for("the coordinator to answer", Duration::from_secs(60), || {
            if self.status().is_ok() {
                return Some(None);
            }
            child.try_wait().ok().flatten().map(Some)
        });
        self.coordinator = Some(child);
        match outcome.with_context(|| self.logs())? {
            None => Ok(()),
            Some(status) => bail!(
                "cd-coordinator exited ({status}) before answering\n{}",
                self.logs()
            ),
        }
    }

    /// Kill the coordinator with SIGKILL.
    pub fn kill_coordinator(&mut self) -> Result<()> {
        if let Some(mut c) = self.coordinator.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Start a worker with id `id`, the cluster's token and extra flags.
    pub fn start_worker(&mut self, id: &str, extra: &[&str]) -> Result<()> {
        let token = self.token.clone();
        self.start_worker_with_token(id, Some(&token), extra)
    }

    /// Start a worker without `--idle-exit`: once the sweep is done it keeps
    /// polling for a new one until it is stopped.
    pub fn start_polling_worker(&mut self, id: &str, extra: &[&str]) -> Result<()> {
        let token = self.token.clone();
        self.spawn_worker(id, Some(&token), false, extra)
    }

    /// Start a worker with an explicit token (`None`: no token at all).
    pub fn start_worker_with_token(
        &mut self,
        id: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> Result<()> {
        self.spawn_worker(id, token, true, extra)
    }

    fn spawn_worker(
        &mut self,
        id: &str,
        token: Option<&str>,
        idle_exit: bool,
        extra: &[&str],
    ) -> Result<()> {
        let log_path = self.dir.path().join(format!("worker-{id}.log"));
        let log = std::fs::File::create(&log_path)?;
        // Flags in `extra` replace the cluster's own connection settings.
        let own = |flag: &str| !extra.contains(&flag);
        let coordinator = self.coordinator_url();
        let mut cmd = Command::new(&bins().worker);
        cmd.args(["--worker-id", id, "--gpus", "cpu"])
            .args(
                own("--coordinator")
                    .then_some(["--coordinator", coordinator.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .args(idle_exit.then_some("--idle-exit"))
            .args(
                self.tls
                    .iter()
                    .filter(|_| own("--coordinator") && own("--tls-ca"))
                    .flat_map(|t| {
                        [
                            "--tls-ca".as_ref(),
                            t.ca.as_os_str(),
                            "--tls-domain".as_ref(),
                            t.domain.as_ref(),
                        ]
                    }),
            )
            .args(extra)
            .envs(self.storage_env())
            .env_remove("CD_TOKEN")
            .envs(NO_BACKTRACES)
            .env("RUST_LOG", "info,cd_worker=debug")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(t) = token {
            cmd.env("CD_TOKEN", t);
        }
        let child = cmd.spawn().context("starting cd-worker")?;
        self.workers.insert(
            id.to_string(),
            WorkerProc {
                child,
                log: log_path,
            },
        );
        Ok(())
    }

    /// The worker `id`'s process (panics if there is none).
    pub fn worker(&mut self, id: &str) -> &mut WorkerProc {
        self.workers
            .get_mut(id)
            .unwrap_or_else(|| panic!("no worker `{id}`"))
    }

    /// Kill worker `id` with SIGKILL.
    pub fn kill_worker(&mut self, id: &str) -> Result<()> {
        let w = self.worker(id);
        w.child.kill()?;
        w.child.wait()?;
        Ok(())
    }

    /// Wait until worker `id` exits and return its status.
    pub fn wait_worker_exit(&mut self, id: &str, timeout: Duration) -> Result<ExitStatus> {
        let log = self.worker(id).log.clone();
        let w = self.worker(id);
        wait_for(&format!("worker {id} to exit"), timeout, || {
            w.child.try_wait().ok().flatten()
        })
        .with_context(|| format!("worker {id} log:\n{}", tail(&log, 30)))
    }

    /// Ask the coordinator for the sweep's status.
    pub fn status(&self) -> Result<SweepStatusResponse> {
        let endpoint = self.endpoint()?;
        let token = format!("Bearer {}", self.token);
        self.runtime.block_on(async move {
            let channel = endpoint
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .connect()
                .await?;
            let mut client = CoordinatorClient::with_interceptor(channel, BearerToken(token));
            Ok::<_, anyhow::Error>(
                client
                    .sweep_status(cd_proto::v1::SweepStatusRequest {})
                    .await?
                    .into_inner(),
            )
        })
    }

    /// `GET` a path of the coordinator's HTTP port with the token; returns the
    /// status code and body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        self.http_get_with(path, Some(&self.token))
    }

    /// `GET` a path of the coordinator's HTTP port with `token` (`None`: no
    /// `Authorization` header); returns the status code and body.
    pub fn http_get_with(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.http_port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP header in the answer to GET {path}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no status code in the answer to GET {path}: {head}"))?;
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((code, body))
    }

    /// The dashboard's state (`/api/state`) as JSON.
    pub fn dashboard_state(&self) -> Result<serde_json::Value> {
        let (code, body) = self.http_get("/api/state")?;
        if code != 200 {
            bail!("/api/state answered {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Register `worker` as a hand-driven client of the coordinator.
    pub fn register_client(&self, worker: &str) -> Result<()> {
        let req = cd_proto::v1::RegisterRequest {
            worker_id: worker.into(),
            host: "test-client".into(),
            devices: vec![],
            version: "0".into(),
        };
        self.with_client(|mut c| async move {
            c.register(req).await?;
            Ok(())
        })
    }

    /// `LeaseTask` as `worker`: the lease, if a task was leased.
    pub fn lease_as(&self, worker: &str) -> Result<Option<cd_proto::v1::Lease>> {
        let req = cd_proto::v1::LeaseRequest {
            worker_id: worker.into(),
            loaded_model: String::new(),
        };
        self.with_client(|mut c| async move { Ok(c.lease_task(req).await?.into_inner().lease) })
    }

    /// `CompleteTask` as `worker` for `task_id` under `lease_id`: whether
    /// the coordinator accepted it (a refused call counts as not accepted).
    pub fn complete_as(&self, worker: &str, lease_id: &str, task_id: &str) -> Result<bool> {
        let req = cd_proto::v1::CompleteRequest {
            worker_id: worker.into(),
            lease_id: lease_id.into(),
            task_id: task_id.into(),
            metrics_key: format!("{}/tasks/{task_id}/metrics.json", fixtures::SWEEP),
            elapsed_ms: 1,
        };
        self.with_client(|mut c| async move {
            Ok(c.complete_task(req)
                .await
                .map(|r| r.into_inner().accepted)
                .unwrap_or(false))
        })
    }

    /// Run a closure with a connected, authenticated coordinator client.
    pub fn with_client<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(
            CoordinatorClient<
                tonic::service::interceptor::InterceptedService<
                    tonic::transport::Channel,
                    BearerToken,
                >,
            >,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let endpoint = self.endpoint()?;
        let auth = BearerToken(format!("Bearer {}", self.token));
        self.runtime.block_on(async move {
            let channel = endpoint.connect().await?;
            f(CoordinatorClient::with_interceptor(channel, auth)).await
        })
    }

    /// Wait until the sweep status satisfies `pred`; on timeout, the error
    /// carries the last status and the logs' tails.
    pub fn wait_for_status(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&SweepStatusResponse) -> bool,
    ) -> Result<SweepStatusResponse> {
        let mut last = None;
        let got = wait_for(what, timeout, || {
            let s = self.status().ok()?;
            let ok = pred(&s);
            last = Some(s.clone());
            ok.then_some(s)
        });
        got.with_context(|| format!("last status: {last:?}\n{}", self.logs()))
    }

    /// Wait until every task is terminal (completed or failed).
    pub fn wait_for_sweep_done(&self, timeout: Duration) -> Result<SweepStatusResponse> {
        self.wait_for_status("the sweep to finish", timeout, |s| {
            s.total > 0 && s.completed + s.failed == s.total
        })
    }

    /// Wait until a line of `log` contains `needle`.
    pub fn wait_for_log(&self, log: &Path, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("`{needle}` in {}", log.display()), timeout, || {
            std::fs::read_to_string(log)
                .ok()
                .filter(|t| t.contains(needle))
                .map(|_| ())
        })
        .with_context(|| self.logs())
    }

    /// Tails of every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for p in entries
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            out.push_str(&format!("---- {} ----\n{}\n", p.display(), tail(p, 25)));
        }
        out
    }

    /// Every stored `metrics.json` of `sweep`: task id → file bytes.
    pub fn metrics_files(&self, sweep: &str) -> BTreeMap<String, Vec<u8>> {
        self.task_files(sweep, "metrics.json")
    }

    /// Every stored `<file>` of the sweep's tasks: task id → bytes.
    pub fn task_files(&self, sweep: &str, file: &str) -> BTreeMap<String, Vec<u8>> {
        let tasks = self.results_dir.join(sweep).join("tasks");
        let mut out = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(&tasks) {
            for e in rd.flatten() {
                if let Ok(bytes) = std::fs::read(e.path().join(file)) {
                    out.insert(e.file_name().to_string_lossy().into_owned(), bytes);
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in self.workers.values_mut() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        let _ = self.kill_coordinator();
        if std::thread::panicking() || std::env::var_os("CD_E2E_KEEP").is_some() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Decode an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Interceptor adding the bearer token.
#[derive(Clone)]
pub struct BearerToken(String);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert("authorization", self.0.parse().expect("ascii token"));
        Ok(req)
    }
}

/// Task ids of a grid file, as the coordinator expands it.
pub fn grid_task_ids(grid_path: &Path) -> Result<Vec<String>> {
    let grid = cd_common::grid::Grid::load(grid_path).map_err(|e| anyhow!("{e}"))?;
    Ok(grid.task_ids().into_iter().map(|t| t.0).collect())
}

pub use cd_common::grid::unpinned_dataset_standins;
