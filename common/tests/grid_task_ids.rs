//! The task ids of the shipped grids are fixed: a task id names a cell's
//! results in every store (`<sweep>/<task id>/metrics.json`), so a change in
//! how a grid expands or how a spec is written would silently recompute, or
//! orphan, finished sweeps. The ids are compared with
//! `tests/fixtures/grid_task_ids.txt`; a deliberate change (a new axis value,
//! a spec schema bump) regenerates it with `CD_UPDATE_GOLDEN=1` and says why
//! in its commit.

use cd_common::grid::{unpinned_dataset_standins, Grid};
use std::path::Path;

const GRIDS: &[&str] = &["full.toml", "llama-analysis.toml", "quickstart.toml"];

/// `<grid> <task id>` per cell, in expansion order.
fn current() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grids");
    // The unpinned datasets' identities come from their files: stand-ins,
    // as the deployment checks use. This process runs this test alone.
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("CD_DATA_ROOT", unpinned_dataset_standins(tmp.path()));
    let mut out = String::new();
    for name in GRIDS {
        let grid = Grid::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!grid.tasks.is_empty(), "{name} expands to no cells");
        for id in grid.task_ids() {
            out.push_str(&format!("{name} {id}\n"));
        }
    }
    out
}

#[test]
fn shipped_grids_expand_to_the_recorded_task_ids() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grid_task_ids.txt");
    let now = current();
    if std::env::var_os("CD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &now).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (CD_UPDATE_GOLDEN=1 writes it)", golden.display()));
    let (want, now): (Vec<&str>, Vec<&str>) = (want.lines().collect(), now.lines().collect());
    let missing: Vec<&&str> = want.iter().filter(|l| !now.contains(l)).collect();
    let new: Vec<&&str> = now.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && new.is_empty(),
        "task ids changed: {} recorded ids gone ({:?}...), {} new ({:?}...)",
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        new.len(),
        new.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(want, now, "same ids, different expansion order");
}
