//! `cd-coordinator`: serves a sweep to workers and writes its report.

use anyhow::Context;
use cd_common::grid::Grid;
use cd_common::storage::{layout, Store};
use cd_coordinator::cli::{Cli, Command, ReportArgs, ServeArgs};
use cd_coordinator::server::{self, ServerConfig};
use cd_coordinator::{local, report};
use clap::Parser;
use std::path::Path;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A panic anywhere ends the process instead of leaving a poisoned lock
    // behind a healthy-looking /healthz: Kubernetes restarts it and it
    // resumes from the store.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(cd_proto::exit::coordinator::PANIC);
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Some(Command::Validate(args)) => validate(&args.grid),
        Some(Command::Report(args)) => runtime()?.block_on(report_cmd(args)),
        None => runtime()?.block_on(serve(cli.serve)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn load_grid(path: &Path) -> Grid {
    match Grid::load(path) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(cd_proto::exit::coordinator::CONFIG);
        }
    }
}

fn validate(path: &Path) -> anyhow::Result<()> {
    let grid = load_grid(path);
    let probe = grid
        .tasks
        .iter()
        .filter(|t| t.kind == cd_common::spec::TaskKind::Probe)
        .count();
    let models: std::collections::BTreeSet<&str> =
        grid.tasks.iter().map(|t| t.model.name.as_str()).collect();
    println!(
        "{}: valid; sweep {} has {} tasks ({} probe, {} multiple-choice) over {} models; store {}",
        path.display(),
        grid.sweep,
        grid.tasks.len(),
        probe,
        grid.tasks.len() - probe,
        models.len(),
        grid.storage_url
    );
    Ok(())
}

async fn report_cmd(args: ReportArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.store)?;
    let summary = report::write(&store, &args.sweep, args.out.as_deref(), &[]).await?;
    println!(
        "report of sweep {}: {} cells, {} files",
        args.sweep,
        summary.cells,
        summary.files.len()
    );
    println!("  in the store under {}/", layout::report(&args.sweep));
    if let Some(out) = &args.out {
        println!("  and in {}", out.join("index.html").display());
    }
    if !summary.unreadable.is_empty() {
        println!(
            "  {} unreadable metrics.json left out (listed in index.html)",
            summary.unreadable.len()
        );
    }
    Ok(())
}

fn read_token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    if let Some(f) = &args.token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading --token-file {}", f.display()))?;
        let t = t.trim().to_string();
        anyhow::ensure!(!t.is_empty(), "--token-file {} is empty", f.display());
        return Ok(Some(t));
    }
    Ok(std::env::var("CD_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let Some(grid_path) = args.grid.clone() else {
        anyhow::bail!("--grid FILE is required (or use a subcommand: report, validate)");
    };
    let grid = load_grid(&grid_path);
    let token = match read_token(&args)? {
        Some(t) => t,
        // Local workers are our own children: a fresh random token keeps the port closed to others.
        None if args.local_workers > 0 => format!("{:032x}", rand::random::<u128>()),
        None => anyhow::bail!(
            "no token: pass --token-file FILE or set CD_TOKEN (workers must present it)"
        ),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some((
            std::fs::read(c).with_context(|| format!("reading --tls-cert {}", c.display()))?,
            std::fs::read(k).with_context(|| format!("reading --tls-key {}", k.display()))?,
        )),
        _ => None,
    };
    let worker_bin = if args.local_workers > 0 {
        anyhow::ensure!(
            tls.is_none(),
            "--local-workers talks plain gRPC on loopback: drop --tls-cert/--tls-key"
        );
        Some(local::worker_binary(args.worker_bin.as_deref())?)
    } else {
        None
    };
    let store_url = args
        .store
        .clone()
        .unwrap_or_else(|| grid.storage_url.clone());
    let sweep = grid.sweep.clone();
    let dashboard_token = match &args.dashboard_token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading --dashboard-token-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("CD_DASHBOARD_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    let mut cfg = ServerConfig::for_grid(grid, &token);
    cfg.dashboard_token = dashboard_token;
    cfg.store_url = store_url.clone();
    cfg.listen = args.listen;
    cfg.http_listen = args.http_listen;
    cfg.tls = tls;
    cfg.verify_completion = !args.no_verify_completion;
    if args.local_workers > 0 {
        cfg.report_every = Duration::from_secs(5);
    }
    let running = server::start(cfg).await?;

    if let Some(bin) = worker_bin {
        let log_dir = store_url
            .strip_prefix("file://")
            .map(|d| Path::new(d).join(&sweep).join("logs"));
        let hint = log_dir
            .as_ref()
            .map_or("the worker output above".to_string(), |d| {
                d.display().to_string()
            });
        let children = local::spawn_workers(
            &bin,
            args.local_workers,
            running.grpc_addr,
            &token,
            log_dir.as_deref(),
        )?;
        eprintln!(
            "sweep {sweep}: {} local worker(s), store {}",
            args.local_workers,
            cd_coordinator::shared::redacted_url(&store_url)
        );
        eprintln!(
            "dashboard: http://{}/login?token={token}",
            running.http_addr
        );
        let outcome = tokio::select! {
            r = local::watch(running.shared.clone(), children, &hint) => r,
            _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted; finished cells are kept, rerun to resume")),
        };
        let (counts, unplaceable) = {
            let s = running.shared.sched.lock().expect("scheduler lock");
            (s.counts(), s.unplaceable(std::time::Instant::now()))
        };
        running.shutdown().await?;
        if let Err(e) = outcome {
            if let Some(stuck) = e.downcast_ref::<local::Stuck>() {
                eprintln!("error: {stuck}");
                for (model, precision, pending) in &unplaceable {
                    eprintln!("  {pending} cell(s) of {model} at precision {precision}: no worker here can run them");
                }
                std::process::exit(cd_proto::exit::coordinator::STUCK);
            }
            return Err(e);
        }
        println!(
            "sweep {sweep} done: {} completed, {} failed",
            counts.completed, counts.failed
        );
        match store_url.strip_prefix("file://") {
            Some(dir) => {
                let report = Path::new(dir).join(&sweep).join("report");
                println!("tables:  {}", report.join("depth.md").display());
                println!(
                    "         {} (and .json)",
                    report.join("depth.csv").display()
                );
                println!("figures: {}", report.join("figures").display());
                println!("open:    {}", report.join("index.html").display());
            }
            None => println!("report: {store_url} under {}/", layout::report(&sweep)),
        }
        if counts.failed > 0 {
            println!("failed cells and their errors: {}", hint);
        }
        return Ok(());
    }
    shutdown_signal().await;
    tracing::info!("shutdown requested: no new leases, persisting");
    running.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
