//! The sweep's report, rebuilt from the store alone: every completed cell's
//! `metrics.json` becomes rows of the concept-depth tables (CSV, Markdown,
//! JSON), per-dataset SVG figures of accuracy against relative depth, the
//! multiple-choice tables and figures, and an `index.html` linking them.
//!
//! Written to `<sweep>/report/` in the store, and optionally to a local
//! directory. Which rows, columns and series exist is decided by
//! `cd_common::tables`; this module only renders them.

mod figures;
mod index;
#[cfg(feature = "png")]
pub mod png;
pub mod svg;

use figures::{mc_figures, probe_figures, FigureKind};
use index::{index_html, with_warnings, Shown};

use cd_common::metrics::CellMetrics;
use cd_common::spec::TaskId;
use cd_common::storage::{layout, Store, StoreError};
use cd_common::tables::{self, DepthRow, Matrix, McRow};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

/// What a report run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Cells of the current grid read.
    pub cells: usize,
    /// Cells of the sweep that the current grid does not hold (listed apart).
    pub other_cells: usize,
    /// `metrics.json` files that did not parse (named in the log and in index.html).
    pub unreadable: Vec<String>,
    /// Files written, relative to the report directory.
    pub files: Vec<String>,
    /// The figures as data (`{"curves": …, "mc": …}`), for the dashboard.
    #[serde(skip)]
    pub figures_json: String,
}

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local output file could not be written.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A figure could not be rasterised.
    #[cfg(feature = "png")]
    #[error(transparent)]
    Png(#[from] png::PngError),
}

/// Read every completed cell of a sweep.
pub(crate) async fn read_cells(
    store: &Store,
    sweep: &str,
) -> Result<(Vec<CellMetrics>, Vec<String>), StoreError> {
    let mut ids: Vec<_> = store.list_completed(sweep).await?.into_iter().collect();
    ids.sort();
    let results: Vec<(String, Option<bytes::Bytes>)> = futures::stream::iter(ids)
        .map(|id| async move {
            let rel = layout::metrics(sweep, &id);
            let bytes = store.get_bytes(&rel).await?;
            Ok::<_, StoreError>((rel, bytes))
        })
        .buffered(16)
        .try_collect()
        .await?;
    let mut cells = Vec::new();
    let mut unreadable = Vec::new();
    for (rel, bytes) in results {
        let Some(bytes) = bytes else { continue };
        match std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| CellMetrics::from_json(t).map_err(|e| e.to_string()))
        {
            Ok(c) => cells.push(c),
            Err(e) => {
                tracing::warn!(key = %rel, error = %e, "metrics.json not readable, left out of the report");
                unreadable.push(rel);
            }
        }
    }
    Ok((cells, unreadable))
}

/// Regenerate the report of `sweep` into the store (and `out`, if given).
///
/// Cells of the grid last served (`<sweep>/state/grid.json`, or every cell
/// when none was recorded) make the tables and figures; other cells of the
/// sweep are listed apart (`other_cells.csv`), never mixed in.
///
/// `warnings` are shown at the top of `index.html`: what the live sweep
/// knows and the stored results cannot say (cells no worker can run).
pub async fn write(
    store: &Store,
    sweep: &str,
    out: Option<&Path>,
    warnings: &[String],
) -> Result<Summary, ReportError> {
    let (all, unreadable) = read_cells(store, sweep).await?;
    let grid = store.get_grid_ids(sweep).await?;
    let (cells, others) = split_by_grid(all, grid.as_ref());
    let mut files = render(sweep, &cells, &others, &unreadable);
    if !warnings.is_empty() {
        if let Some((_, html)) = files.iter_mut().find(|(n, _)| n == "index.html") {
            *html = with_warnings(html, warnings);
        }
    }
    let figures_json = figures_json(&cells);
    let mut files: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(name, text)| (name, text.into_bytes()))
        .collect();
    files.extend(png_copies(&files)?);
    for (name, body) in &files {
        store
            .put_bytes(&layout::report_file(sweep, name), body.clone().into())
            .await?;
        if let Some(dir) = out {
            let path = dir.join(name);
            let io = |source| ReportError::Io {
                path: path.display().to_string(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, body).map_err(io)?;
        }
    }
    Ok(Summary {
        cells: cells.len(),
        other_cells: others.len(),
        unreadable,
        files: files.into_iter().map(|(n, _)| n).collect(),
        figures_json,
    })
}

/// A PNG beside every figure's SVG (builds with the `png` feature, the
/// default).
#[cfg(feature = "png")]
fn png_copies(files: &[(String, Vec<u8>)]) -> Result<Vec<(String, Vec<u8>)>, ReportError> {
    let mut out = Vec::new();
    for (name, body) in files {
        if let Some(stem) = name.strip_suffix(".svg") {
            let svg = String::from_utf8_lossy(body);
            out.push((format!("{stem}.png"), png::render(name, &svg)?));
        }
    }
    Ok(out)
}

/// No PNGs in builds without the `png` feature (`index.html` then links
/// none).
#[cfg(not(feature = "png"))]
fn png_copies(_: &[(String, Vec<u8>)]) -> Result<Vec<(String, Vec<u8>)>, ReportError> {
    Ok(Vec::new())
}

/// The figures' data as the dashboard reads it.
pub(crate) fn figures_json(cells: &[CellMetrics]) -> String {
    serde_json::json!({
        "curves": tables::curves(cells),
        "mc": tables::mc_curves(cells),
    })
    .to_string()
}

/// Cells of the grid, and the others.
pub(crate) fn split_by_grid(
    cells: Vec<CellMetrics>,
    grid: Option<&HashSet<TaskId>>,
) -> (Vec<CellMetrics>, Vec<CellMetrics>) {
    match grid {
        Some(ids) => cells
            .into_iter()
            .partition(|c| ids.contains(&TaskId(c.task_id.clone()))),
        None => (cells, Vec::new()),
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Like [`opt`], but a missing value reads as a dash in Markdown tables.
fn opt_or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map_or("–".to_string(), |v| v.to_string())
}

/// Rows as CSV with a header, through the `csv` crate (quoting, missing
/// values as empty fields).
fn to_csv<T: Serialize>(rows: &[T]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).expect("rows serialize to CSV");
    }
    String::from_utf8(w.into_inner().expect("in-memory writer")).expect("CSV is UTF-8")
}

fn cell_axes_md(r: &DepthRow) -> String {
    format!(
        "{} | {} | {} | {} | {} | {} | {}",
        r.model, r.dataset, r.precision, r.noise, r.prompt_mode, r.seed, r.split
    )
}

fn matrix_md(m: &Matrix) -> String {
    let title = match m.quantity.as_str() {
        "peak_accuracy" => "Peak accuracy (%)",
        "converging_fraction_paper" => "Converging depth, paper rule (% of layers)",
        "converging_fraction_plateau" => "Converging depth, plateau rule (% of layers)",
        other => other,
    };
    let slice = if m.label.is_empty() {
        format!("precision {}, noise {}", m.slice.precision, m.slice.noise)
    } else {
        m.label.clone()
    };
    let mut s = format!("### {title}: {slice}\n\n| model |");
    for d in &m.datasets {
        let _ = write!(s, " {d} |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(m.datasets.len()));
    s.push('\n');
    for (model, row) in m.models.iter().zip(&m.values) {
        let _ = write!(s, "| {model} |");
        for v in row {
            match v {
                Some(v) => {
                    let _ = write!(s, " {:.1} |", v * 100.0);
                }
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

fn depth_md(rows: &[DepthRow], matrices: &[Matrix]) -> String {
    let mut s = String::from("# Concept depth\n\nModels ordered by size. Depth fractions are of the captured layers. Both converging rules are shown: `paper` reproduces the paper's published converging layers, `plateau` is the first layer of the run that ends at the peak within the tolerance (docs/probes.md).\n\n");
    for m in matrices {
        s.push_str(&matrix_md(m));
    }
    s.push_str("## All cells\n\n| model | dataset | precision | noise | prompt | seed | split | layers | peak acc [95% CI] | peak layer | converging (paper) | converging (plateau) | jumping layer |\n|---|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let ci = match (r.peak_accuracy_low, r.peak_accuracy_high) {
            (Some(lo), Some(hi)) => format!(" [{lo:.3}, {hi:.3}]"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.3}{ci} | {} | {} ({:.3}) | {} ({:.3}) | {} |",
            cell_axes_md(r),
            r.n_layers,
            r.peak_accuracy,
            r.peak_layer,
            r.converging_layer_paper,
            r.converging_fraction_paper,
            r.converging_layer_plateau,
            r.converging_fraction_plateau,
            opt_or_dash(r.jumping_layer),
        );
    }
    s
}

fn mc_md(rows: &[McRow]) -> String {
    let mut s = String::from("# Multiple choice (logit lens)\n\n| model | dataset | precision | score | lens | len-norm | peak MC1 | peak layer | last MC1 | last MC2 | last MC3 | chance MC1 |\n|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {} |",
            r.model,
            r.dataset,
            r.precision,
            r.score_dtype,
            r.lens,
            r.length_normalised,
            r.peak_mc1,
            r.peak_layer,
            r.last_mc1,
            r.last_mc2,
            r.last_mc3,
            opt_or_dash(r.chance_mc1.map(|c| format!("{c:.3}")))
        );
    }
    s
}

/// Render every report file as (relative name, contents).
pub fn render(
    sweep: &str,
    cells: &[CellMetrics],
    others: &[CellMetrics],
    unreadable: &[String],
) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    let rows = tables::depth_rows(cells);
    let matrices = tables::depth_matrices(cells);
    let mut figures = Vec::new();
    if !rows.is_empty() {
        files.push(("depth.csv".into(), to_csv(&rows)));
        files.push(("depth.md".into(), depth_md(&rows, &matrices)));
        let json = serde_json::json!({ "rows": rows, "matrices": matrices });
        files.push((
            "depth.json".into(),
            serde_json::to_string_pretty(&json).expect("rows serialize"),
        ));
    }
    figures.extend(probe_figures(cells, &matrices));
    let mc = tables::mc_rows(cells);
    if !mc.is_empty() {
        files.push(("mc.csv".into(), to_csv(&mc)));
        files.push(("mc.md".into(), mc_md(&mc)));
        files.push((
            "mc.json".into(),
            serde_json::to_string_pretty(&mc).expect("rows serialize"),
        ));
        figures.extend(mc_figures(cells));
    }
    // Every figure as SVG, with its data as CSV beside it.
    let mut shown = Vec::new();
    for f in &figures {
        let (svg_text, csv_text) = match &f.kind {
            FigureKind::Line(c) => (c.render(), c.csv()),
            FigureKind::Heatmap(h) => (h.render(), h.csv()),
        };
        files.push((format!("{}.svg", f.name), svg_text));
        files.push((format!("{}.csv", f.name), csv_text));
        shown.push(Shown {
            svg: format!("{}.svg", f.name),
            csv: format!("{}.csv", f.name),
            png: cfg!(feature = "png").then(|| format!("{}.png", f.name)),
            title: f.title().to_string(),
            section: f.section.clone(),
        });
    }
    let other_rows = tables::depth_rows(others);
    if !others.is_empty() {
        files.push(("other_cells.csv".into(), to_csv(&other_rows)));
    }
    files.push((
        "index.html".into(),
        index_html(sweep, cells.len(), others.len(), &files, &shown, unreadable),
    ));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_warnings_appear_escaped_at_the_top_of_the_index() {
        let html = index_html("s", 0, 0, &[], &[], &[]);
        let warned = with_warnings(&html, &["2 cells of <70B> wait".to_string()]);
        let at = warned
            .find("&lt;70B&gt;")
            .expect("the warning is shown, escaped");
        assert!(
            at < warned.find("id=\"tables\"").unwrap(),
            "above the tables"
        );
    }

    #[test]
    fn index_html_escapes_everything_it_interpolates() {
        let evil = "<script>alert(1)</script>\"'&";
        let html = index_html(
            evil,
            1,
            0,
            &[(format!("{evil}.csv"), String::new())],
            &[Shown {
                svg: format!("figures/{evil}.svg"),
                csv: format!("figures/{evil}.csv"),
                png: Some(format!("figures/{evil}.png")),
                title: evil.to_string(),
                section: evil.to_string(),
            }],
            &[format!("tasks/x/metrics.json: {evil}")],
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("\"'"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    }

    #[test]
    fn csv_quotes_and_leaves_missing_values_empty() {
        #[derive(Serialize)]
        struct Row {
            model: String,
            layer: Option<usize>,
            acc: f64,
        }
        let csv = to_csv(&[Row {
            model: "m, \"x\"".into(),
            layer: None,
            acc: 0.5,
        }]);
        assert_eq!(csv, "model,layer,acc\n\"m, \"\"x\"\"\",,0.5\n");
    }
}
