//! The sweep's report, rebuilt from the store alone: every completed cell's
//! `metrics.json` becomes rows of the concept-depth tables (CSV, Markdown,
//! JSON), per-dataset SVG figures of accuracy against relative depth, the
//! multiple-choice tables and figures, and an `index.html` linking them.
//!
//! Written to `<sweep>/report/` in the store, and optionally to a local
//! directory. Which rows, columns and series exist is decided by
//! `cd_common::tables`; this module only renders them.

pub mod svg;

use cd_common::depth::depth_fraction;
use cd_common::metrics::CellMetrics;
use cd_common::spec::TaskId;
use cd_common::storage::{Store, StoreError};
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
}

/// Read every completed cell of a sweep.
pub async fn read_cells(
    store: &Store,
    sweep: &str,
) -> Result<(Vec<CellMetrics>, Vec<String>), StoreError> {
    let mut ids: Vec<_> = store.list_completed(sweep).await?.into_iter().collect();
    ids.sort();
    let results: Vec<(String, Option<bytes::Bytes>)> = futures::stream::iter(ids)
        .map(|id| async move {
            let rel = Store::metrics_rel(sweep, &id);
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
pub async fn write(store: &Store, sweep: &str, out: Option<&Path>) -> Result<Summary, ReportError> {
    let (all, unreadable) = read_cells(store, sweep).await?;
    let grid = store.get_grid_ids(sweep).await?;
    let (cells, others) = split_by_grid(all, grid.as_ref());
    let files = render(sweep, &cells, &others, &unreadable);
    let figures_json = figures_json(&cells);
    for (name, body) in &files {
        store
            .put_bytes(
                &format!("{sweep}/report/{name}"),
                body.clone().into_bytes().into(),
            )
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

/// The figures' data as the dashboard reads it.
pub fn figures_json(cells: &[CellMetrics]) -> String {
    serde_json::json!({
        "curves": tables::curves(cells),
        "mc": tables::mc_curves(cells),
    })
    .to_string()
}

/// Cells of the grid, and the others.
pub fn split_by_grid(
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

/// MC1 against relative depth: one figure per (dataset, precision, noise, lens, normalisation).
fn mc_figures(cells: &[CellMetrics]) -> Vec<(String, String, svg::Chart)> {
    let mut charts: Vec<(String, String, svg::Chart)> = Vec::new();
    let mut mc: Vec<&CellMetrics> = cells.iter().filter(|c| !c.mc_layers.is_empty()).collect();
    mc.sort_by(|a, b| {
        a.spec
            .model
            .size_b
            .total_cmp(&b.spec.model.size_b)
            .then_with(|| a.spec.model.name.cmp(&b.spec.model.name))
    });
    for c in mc {
        for (lens, norm) in tables::mc_variants(c) {
            let layers = tables::mc_variant(c, &lens, norm);
            let norm_tag = if norm { "-lennorm" } else { "" };
            let name = format!(
                "figures/mc_{}__p{}__{}__{}{}.svg",
                slug(&c.spec.dataset.name),
                slug(c.spec.precision.as_str()),
                slug(&c.spec.noise.name()),
                lens,
                norm_tag
            );
            let title = format!(
                "{} MC1 ({} lens{}), precision {}, noise {}",
                c.spec.dataset.name,
                lens,
                if norm { ", length-normalised" } else { "" },
                c.spec.precision,
                c.spec.noise
            );
            let line = svg::Line {
                label: c.spec.model.name.clone(),
                x: layers
                    .iter()
                    .map(|l| depth_fraction(l.layer, c.n_layers, c.includes_embedding))
                    .collect(),
                y: layers.iter().map(|l| l.mc1).collect(),
                y_std: vec![0.0; layers.len()],
            };
            match charts.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, _, chart)) => chart.lines.push(line),
                None => charts.push((
                    name,
                    title.clone(),
                    svg::Chart {
                        title,
                        x_label: "relative depth".into(),
                        y_label: "MC1".into(),
                        lines: vec![line],
                        reference: c.mc_chance.map(|ch| (ch.chance_mc1, "chance".to_string())),
                    },
                )),
            }
        }
    }
    charts
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
    let mut figures: Vec<(String, String)> = Vec::new();
    if !rows.is_empty() {
        files.push(("depth.csv".into(), to_csv(&rows)));
        files.push(("depth.md".into(), depth_md(&rows, &matrices)));
        let json = serde_json::json!({ "rows": rows, "matrices": matrices });
        files.push((
            "depth.json".into(),
            serde_json::to_string_pretty(&json).expect("rows serialize"),
        ));
    }
    for set in tables::curves(cells) {
        let name = format!(
            "figures/{}__p{}__{}.svg",
            slug(&set.dataset),
            slug(&set.precision),
            slug(&set.noise)
        );
        let title = format!(
            "{}: precision {}, noise {}",
            set.dataset, set.precision, set.noise
        );
        let chart = svg::Chart {
            title: title.clone(),
            x_label: "relative depth (layer / layers)".into(),
            y_label: "probe test accuracy".into(),
            lines: set
                .series
                .into_iter()
                .map(|s| svg::Line {
                    label: s.label,
                    x: s.x,
                    y: s.y,
                    y_std: s.y_std,
                })
                .collect(),
            reference: None,
        };
        files.push((name.clone(), chart.render()));
        figures.push((name, title));
    }
    let mc = tables::mc_rows(cells);
    if !mc.is_empty() {
        files.push(("mc.csv".into(), to_csv(&mc)));
        files.push(("mc.md".into(), mc_md(&mc)));
        files.push((
            "mc.json".into(),
            serde_json::to_string_pretty(&mc).expect("rows serialize"),
        ));
        for (name, title, chart) in mc_figures(cells) {
            files.push((name.clone(), chart.render()));
            figures.push((name, title));
        }
    }
    let other_rows = tables::depth_rows(others);
    if !others.is_empty() {
        files.push(("other_cells.csv".into(), to_csv(&other_rows)));
    }
    files.push((
        "index.html".into(),
        index_html(
            sweep,
            cells.len(),
            others.len(),
            &files,
            &figures,
            unreadable,
        ),
    ));
    files
}

fn index_html(
    sweep: &str,
    cells: usize,
    others: usize,
    files: &[(String, String)],
    figures: &[(String, String)],
    unreadable: &[String],
) -> String {
    // Everything interpolated comes from metrics.json files, grid names and
    // model names: escaped, never markup.
    let esc = svg::esc;
    let sweep = esc(sweep);
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{sweep}: concept-depth report</title>\n<style>body{{font-family:sans-serif;max-width:1500px;margin:2em auto}} figure{{display:inline-block;margin:8px}} img{{width:720px}}</style></head><body>\n<h1>Sweep {sweep}</h1>\n<p>{cells} completed cells.</p>\n<h2>Tables</h2><ul>\n"
    );
    for (name, _) in files.iter().filter(|(n, _)| !n.starts_with("figures/")) {
        let name = esc(name);
        let _ = writeln!(s, "<li><a href=\"{name}\">{name}</a></li>");
    }
    s.push_str("</ul>\n");
    if others > 0 {
        let _ = writeln!(s, "<h2>Other cells</h2><p>{others} completed cells of this sweep are not in the grid last served; they are listed in <a href=\"other_cells.csv\">other_cells.csv</a> and left out of every table and figure.</p>");
    }
    if !unreadable.is_empty() {
        s.push_str("<h2>Unreadable results</h2><ul>\n");
        for u in unreadable {
            let _ = writeln!(s, "<li>{}</li>", esc(u));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Figures</h2>\n");
    for (name, title) in figures {
        let (name, title) = (esc(name), esc(title));
        let _ = writeln!(s, "<figure><a href=\"{name}\"><img src=\"{name}\" alt=\"{title}\"></a><figcaption>{title}</figcaption></figure>");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_html_escapes_everything_it_interpolates() {
        let evil = "<script>alert(1)</script>\"'&";
        let html = index_html(
            evil,
            1,
            0,
            &[(format!("{evil}.csv"), String::new())],
            &[(format!("figures/{evil}.svg"), evil.to_string())],
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
