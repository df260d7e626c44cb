//! The command line of `cd-coordinator`.
//!
//! Deployment manifests are written against these exact flags: keep them stable.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Serves a sweep to pulling workers over gRPC and writes its report.
#[derive(Debug, Parser)]
#[command(
    name = "cd-coordinator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands besides serving (the default).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Regenerate a sweep's report (tables, figures, index.html) from the store alone.
    Report(ReportArgs),
    /// Check a grid and print its task count; exit status 2 when invalid.
    Validate(ValidateArgs),
}

/// Flags of the serving mode: `cd-coordinator --grid FILE ...`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Grid TOML describing the sweep.
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, default_value = "0.0.0.0:50051", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// HTTP listen address: /healthz, /readyz, the dashboard (/), /status, /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub http_listen: SocketAddr,
    /// Storage URL (file://, s3://, memory://); overrides the grid's `storage.url`.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// File holding the bearer token workers must present (else env CD_TOKEN).
    /// It also opens the dashboard, `/status` and `/metrics`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding a second, read-only token for the dashboard, `/status`
    /// and `/metrics` (else env CD_DASHBOARD_TOKEN); it cannot lease or
    /// change anything.
    #[arg(long, value_name = "FILE")]
    pub dashboard_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the gRPC port; enables TLS together
    /// with --tls-key (a cert-manager Secret's `tls.crt`).
    #[arg(long, env = "CD_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM; a cert-manager Secret's `tls.key`).
    #[arg(long, env = "CD_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Start N `cd-worker` processes beside the coordinator and exit when the sweep is done.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub local_workers: usize,
    /// The worker binary for --local-workers (default: `cd-worker` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
    /// Do not check that metrics.json exists before accepting a completion (load benchmarks only).
    #[arg(long, hide = true)]
    pub no_verify_completion: bool,
}

/// Flags of `cd-coordinator report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Storage URL holding the sweep.
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Sweep name.
    #[arg(long, value_name = "NAME")]
    pub sweep: String,
    /// Also write the report into this local directory (it is always written to the store).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Flags of `cd-coordinator validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Grid TOML to check.
    #[arg(long, value_name = "FILE")]
    pub grid: PathBuf,
}
