//! `cd-coordinator`: serves a sweep to workers and writes its report.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the coordinator is not built yet")
}
