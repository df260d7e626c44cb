//! `--local-workers N`: worker processes started beside the coordinator,
//! speaking the real protocol over loopback, with a progress line.

use crate::shared::Shared;

/// The worker's exit codes, from the worker's own source (it has no
/// dependencies), so the coordinator reads them as the worker means them.
#[path = "../../worker/src/agent/exit.rs"]
#[allow(dead_code)]
mod worker_exit;
use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The worker binary: `explicit`, else `cd-worker` next to this executable.
pub fn worker_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "--worker-bin {} is not a file", p.display());
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let bin = me.with_file_name(format!("cd-worker{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.is_file(),
        "no cd-worker next to {} (build it with `cargo build -p cd-worker`, or pass --worker-bin)",
        me.display()
    );
    Ok(bin)
}

/// Start `n` workers against the coordinator at `grpc`; their logs go to
/// `log_dir/worker-<i>.log` when given, else to this process's stderr.
pub fn spawn_workers(
    bin: &Path,
    n: usize,
    grpc: SocketAddr,
    token: &str,
    log_dir: Option<&Path>,
) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let mut cmd = Command::new(bin);
        cmd.arg("--coordinator")
            .arg(format!("http://{grpc}"))
            .args(["--gpus", "cpu", "--idle-exit", "--worker-id"])
            .arg(format!("local-{i}"))
            .env("CD_TOKEN", token)
            .env_remove("CD_TOKEN_FILE")
            .kill_on_drop(true);
        if let Some(dir) = log_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("worker-{i}.log"));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
    }
    Ok(children)
}

/// Show progress until every task is terminal or every worker has exited.
/// Returns `Ok(())` when the sweep is done.
pub async fn watch(
    shared: Arc<Shared>,
    mut children: Vec<Child>,
    log_hint: &str,
) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now() - Duration::from_secs(60);
    loop {
        let (c, done) = {
            let s = shared.sched.lock().expect("scheduler lock");
            (s.counts(), s.done())
        };
        let finished = c.completed + c.failed;
        let line = format!(
            "[{:>5}s] {finished}/{} cells done ({} completed, {} failed), {} running, {} pending",
            started.elapsed().as_secs(),
            c.total,
            c.completed,
            c.failed,
            c.leased,
            c.pending
        );
        if tty {
            eprint!("\r{line}   ");
            let _ = std::io::stderr().flush();
        } else if last_line.elapsed() >= Duration::from_secs(10) || done {
            eprintln!("{line}");
            last_line = Instant::now();
        }
        if done {
            if tty {
                eprintln!();
            }
            return Ok(());
        }
        let mut alive = 0;
        for child in children.iter_mut() {
            match child.try_wait() {
                Ok(None) => alive += 1,
                Ok(Some(status)) if status.code() == Some(worker_exit::SIGNALLED) => {
                    tracing::info!(%status, "a local worker stopped on a signal");
                }
                Ok(Some(status)) if !status.success() => {
                    tracing::warn!(%status, "a local worker exited with an error");
                }
                _ => {}
            }
        }
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        if alive == 0 {
            if tty {
                eprintln!();
            }
            anyhow::bail!(
                "every local worker exited with {} cells unfinished; see {log_hint}",
                c.pending + c.leased
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
