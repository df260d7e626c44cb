//! `cd-worker datasets`. (Being built.)

use clap::Subcommand;

/// Subcommands of `cd-worker datasets`.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// List the registered datasets.
    List,
}

/// Run the command. Returns the process exit code.
pub fn run(_cmd: DatasetsCommand) -> anyhow::Result<i32> {
    anyhow::bail!("datasets is not built yet")
}
