//! `cd-worker extract`. (Being built.)

use clap::Args;

/// Arguments of `cd-worker extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Model: an HF-format directory, an HF Hub repo id, or a `.gguf` file.
    #[arg(long)]
    pub model: String,
}

/// Run the command. Returns the process exit code.
pub fn run(_args: ExtractArgs) -> anyhow::Result<i32> {
    anyhow::bail!("extract is not built yet")
}
