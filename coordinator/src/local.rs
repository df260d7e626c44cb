//! `--local-workers N`: worker processes started beside the coordinator,
//! speaking the real protocol over loopback, with a progress line.

use crate::shared::Shared;

use anyhow::Context;
use cd_proto::exit::worker as worker_exit;
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

/// Examples processed per second by the running cells, from the progress
/// their heartbeats report (a cell that moves on restarts its count).
struct Rate {
    last: std::collections::HashMap<String, u64>,
    at: Instant,
    per_second: f64,
}

impl Rate {
    fn new() -> Rate {
        Rate {
            last: Default::default(),
            at: Instant::now(),
            per_second: 0.0,
        }
    }

    /// Update from the running leases' `(task, examples done)`.
    fn update(&mut self, running: &[(String, u64)]) {
        let dt = self.at.elapsed().as_secs_f64();
        if dt < 2.0 {
            return;
        }
        let mut gained = 0u64;
        for (task, done) in running {
            let before = self.last.get(task).copied().unwrap_or(0);
            gained += done.saturating_sub(before);
        }
        let now = gained as f64 / dt;
        // Smooth: the line should not flicker with each heartbeat.
        self.per_second = if self.per_second == 0.0 {
            now
        } else {
            0.7 * self.per_second + 0.3 * now
        };
        self.last = running.iter().cloned().collect();
        self.at = Instant::now();
    }
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width) / total as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Cells remain that none of the local workers can run.
#[derive(Debug, thiserror::Error)]
#[error("{pending} cell(s) remain that no local worker can run (device kind, verified precision or memory)")]
pub struct Stuck {
    /// The cells.
    pub pending: u64,
}

/// Show progress until every task is terminal or every worker has exited:
/// a bar of finished cells, the running cells' phase and examples per
/// second, and an estimate of the time left. Returns `Ok(())` when the sweep
/// is done.
pub async fn watch(
    shared: Arc<Shared>,
    mut children: Vec<Child>,
    log_hint: &str,
) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let mut rate = Rate::new();
    loop {
        let (c, done, snapshot) = {
            let s = shared.sched.lock().expect("scheduler lock");
            (s.counts(), s.done(), s.snapshot(Instant::now()))
        };
        let running: Vec<(String, u64)> = snapshot
            .leases
            .iter()
            .map(|l| (l.task_id.clone(), l.examples_done))
            .collect();
        rate.update(&running);
        let finished = c.completed + c.failed;
        let elapsed = started.elapsed().as_secs_f64();
        // Time per finished cell so far, with the running cells' fractions.
        let partial: f64 = snapshot
            .leases
            .iter()
            .filter(|l| l.examples_total > 0)
            .map(|l| l.examples_done as f64 / l.examples_total as f64)
            .sum();
        let progressed = finished as f64 + partial;
        let eta = if progressed > 0.05 && !done {
            format!(
                ", ETA {}",
                duration(elapsed / progressed * (c.total as f64 - progressed))
            )
        } else {
            String::new()
        };
        let now_doing = snapshot
            .leases
            .first()
            .map(|l| format!(", {} {}/{}", l.phase, l.examples_done, l.examples_total))
            .unwrap_or_default();
        let speed = if rate.per_second > 0.0 {
            format!(", {:.0} examples/s", rate.per_second)
        } else {
            String::new()
        };
        let failed = if c.failed > 0 {
            format!(", {} FAILED", c.failed)
        } else {
            String::new()
        };
        let line = format!(
            "{} {finished}/{} cells{failed}, {} running{now_doing}{speed}{eta} [{}]",
            bar(finished, c.total, 24),
            c.total,
            c.leased,
            duration(elapsed),
        );
        if tty {
            eprint!("\r{line}\x1b[K");
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
        let stuck = {
            let s = shared.sched.lock().expect("scheduler lock");
            s.stuck(Instant::now()).then(|| s.counts().pending)
        };
        if let Some(pending) = stuck {
            if tty {
                eprintln!();
            }
            return Err(Stuck { pending }.into());
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
