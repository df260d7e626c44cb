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
use cd_common::storage::{Store, StoreError};
use cd_common::tables::{self, DepthRow, Matrix};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// What a report run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Cells read.
    pub cells: usize,
    /// `metrics.json` files that did not parse (named in the log and in index.html).
    pub unreadable: Vec<String>,
    /// Files written, relative to the report directory.
    pub files: Vec<String>,
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

/// One row of the multiple-choice table.
#[derive(Debug, Clone, Serialize)]
pub struct McRow {
    /// Model display name.
    pub model: String,
    /// Parameters in billions.
    pub size_b: f64,
    /// Dataset.
    pub dataset: String,
    /// Precision.
    pub precision: String,
    /// Noise kind.
    pub noise: String,
    /// `faithful` or `normed`.
    pub lens: String,
    /// Whether scores were length-normalised.
    pub length_normalised: bool,
    /// Best MC1 over layers.
    pub peak_mc1: f64,
    /// Its layer.
    pub peak_layer: usize,
    /// MC1 at the last layer.
    pub last_mc1: f64,
    /// MC3 at the last layer.
    pub last_mc3: f64,
    /// Chance MC1 of the task.
    pub chance_mc1: Option<f64>,
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
pub async fn write(store: &Store, sweep: &str, out: Option<&Path>) -> Result<Summary, ReportError> {
    let (cells, unreadable) = read_cells(store, sweep).await?;
    let files = render(sweep, &cells, &unreadable);
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
        unreadable,
        files: files.into_iter().map(|(n, _)| n).collect(),
    })
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

fn opt(v: Option<impl std::fmt::Display>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Like [`opt`], but a missing value reads as a dash in Markdown tables.
fn opt_or_dash(v: Option<impl std::fmt::Display>) -> String {
    v.map_or("–".to_string(), |v| v.to_string())
}

/// A cell's identity columns (`model,size_b,dataset,precision,noise`), shared by
/// the depth and multiple-choice CSVs so both name a cell the same way.
fn csv_cell(model: &str, size_b: f64, dataset: &str, precision: &str, noise: &str) -> String {
    format!(
        "{},{size_b},{},{precision},{}",
        csv_field(model),
        csv_field(dataset),
        csv_field(noise)
    )
}

/// The same identity columns for the Markdown tables, which omit the size.
fn md_cell(model: &str, dataset: &str, precision: &str, noise: &str) -> String {
    format!("{model} | {dataset} | {precision} | {noise}")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const DEPTH_HEADER: &str = "model,size_b,dataset,precision,noise,n_layers,peak_accuracy,peak_layer,peak_fraction,converging_layer,converging_fraction,converging_layer_paper,converging_fraction_paper,jumping_layer,jumping_fraction";

fn depth_csv(rows: &[DepthRow]) -> String {
    let mut s = format!("{DEPTH_HEADER}\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.4},{},{:.4},{},{:.4},{},{},{},{}",
            csv_cell(&r.model, r.size_b, &r.dataset, &r.precision, &r.noise),
            r.n_layers,
            r.peak_accuracy,
            r.peak_layer,
            r.peak_fraction,
            r.converging_layer,
            r.converging_fraction,
            opt(r.converging_layer_paper),
            opt(r.converging_fraction_paper.map(|f| format!("{f:.4}"))),
            opt(r.jumping_layer),
            opt(r.jumping_fraction.map(|f| format!("{f:.4}"))),
        );
    }
    s
}

fn matrix_md(m: &Matrix) -> String {
    let title = match m.quantity.as_str() {
        "peak_accuracy" => "Peak accuracy (%)",
        "converging_fraction" => "Converging depth (% of layers)",
        other => other,
    };
    let mut s = format!(
        "### {title}: precision {}, noise {}\n\n| model |",
        m.precision, m.noise
    );
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
    let mut s = String::from("# Concept depth\n\nModels ordered by size. Depth fractions are of the captured layers (see docs/probes.md for the rules).\n\n");
    for m in matrices {
        s.push_str(&matrix_md(m));
    }
    s.push_str("## All cells\n\n| model | dataset | precision | noise | layers | peak acc | peak layer | converging layer | converging frac | jumping layer | jumping frac |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} | {} | {:.3} | {} | {} |",
            md_cell(&r.model, &r.dataset, &r.precision, &r.noise),
            r.n_layers,
            r.peak_accuracy,
            r.peak_layer,
            r.converging_layer,
            r.converging_fraction,
            opt_or_dash(r.jumping_layer),
            opt_or_dash(r.jumping_fraction.map(|f| format!("{f:.3}"))),
        );
    }
    s
}

fn mc_rows(cells: &[CellMetrics]) -> Vec<McRow> {
    let mut rows = Vec::new();
    for c in cells.iter().filter(|c| !c.mc_layers.is_empty()) {
        let mut variants: Vec<(String, bool)> = Vec::new();
        for l in &c.mc_layers {
            let v = (l.lens.as_str().to_string(), l.length_normalised);
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        for (lens, norm) in variants {
            let layers: Vec<_> = c
                .mc_layers
                .iter()
                .filter(|l| l.lens.as_str() == lens && l.length_normalised == norm)
                .collect();
            let peak = layers
                .iter()
                .max_by(|a, b| a.mc1.total_cmp(&b.mc1).then(b.layer.cmp(&a.layer)));
            let last = layers.iter().max_by_key(|l| l.layer);
            let (Some(peak), Some(last)) = (peak, last) else {
                continue;
            };
            rows.push(McRow {
                model: c.spec.model.name.clone(),
                size_b: c.spec.model.size_b,
                dataset: c.spec.dataset.clone(),
                precision: c.spec.precision.as_str().to_string(),
                noise: c.spec.noise.clone(),
                lens,
                length_normalised: norm,
                peak_mc1: peak.mc1,
                peak_layer: peak.layer,
                last_mc1: last.mc1,
                last_mc3: last.mc3,
                chance_mc1: c.mc_chance.map(|ch| ch.chance_mc1),
            });
        }
    }
    rows.sort_by(|a, b| {
        (
            &a.dataset,
            &a.precision,
            &a.noise,
            &a.lens,
            a.length_normalised,
        )
            .cmp(&(
                &b.dataset,
                &b.precision,
                &b.noise,
                &b.lens,
                b.length_normalised,
            ))
            .then(a.size_b.total_cmp(&b.size_b))
            .then_with(|| a.model.cmp(&b.model))
    });
    rows
}

fn mc_csv(rows: &[McRow]) -> String {
    let mut s = String::from(
        "model,size_b,dataset,precision,noise,lens,length_normalised,peak_mc1,peak_layer,last_mc1,last_mc3,chance_mc1\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{:.4},{},{:.4},{:.4},{}",
            csv_cell(&r.model, r.size_b, &r.dataset, &r.precision, &r.noise),
            r.lens,
            r.length_normalised,
            r.peak_mc1,
            r.peak_layer,
            r.last_mc1,
            r.last_mc3,
            opt(r.chance_mc1.map(|c| format!("{c:.4}"))),
        );
    }
    s
}

fn mc_md(rows: &[McRow]) -> String {
    let mut s = String::from("# Multiple choice (logit lens)\n\n| model | dataset | precision | noise | lens | len-norm | peak MC1 | peak layer | last MC1 | last MC3 | chance MC1 |\n|---|---|---|---|---|---|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {} |",
            md_cell(&r.model, &r.dataset, &r.precision, &r.noise),
            r.lens,
            r.length_normalised,
            r.peak_mc1,
            r.peak_layer,
            r.last_mc1,
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
        let mut variants: Vec<(String, bool)> = Vec::new();
        for l in &c.mc_layers {
            let v = (l.lens.as_str().to_string(), l.length_normalised);
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        for (lens, norm) in variants {
            let mut layers: Vec<_> = c
                .mc_layers
                .iter()
                .filter(|l| l.lens.as_str() == lens && l.length_normalised == norm)
                .collect();
            layers.sort_by_key(|l| l.layer);
            let norm_tag = if norm { "-lennorm" } else { "" };
            let name = format!(
                "figures/mc_{}__p{}__{}__{}{}.svg",
                slug(&c.spec.dataset),
                slug(c.spec.precision.as_str()),
                slug(&c.spec.noise),
                lens,
                norm_tag
            );
            let title = format!(
                "{} MC1 ({} lens{}), precision {}, noise {}",
                c.spec.dataset,
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
pub fn render(sweep: &str, cells: &[CellMetrics], unreadable: &[String]) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    let rows = tables::depth_rows(cells);
    let matrices = tables::depth_matrices(cells);
    let mut figures: Vec<(String, String)> = Vec::new();
    if !rows.is_empty() {
        files.push(("depth.csv".into(), depth_csv(&rows)));
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
                    label: s.model,
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
    let mc = mc_rows(cells);
    if !mc.is_empty() {
        files.push(("mc.csv".into(), mc_csv(&mc)));
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
    files.push((
        "index.html".into(),
        index_html(sweep, cells.len(), &files, &figures, unreadable),
    ));
    files
}

fn index_html(
    sweep: &str,
    cells: usize,
    files: &[(String, String)],
    figures: &[(String, String)],
    unreadable: &[String],
) -> String {
    let mut s = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{sweep}: concept-depth report</title>\n<style>body{{font-family:sans-serif;max-width:1500px;margin:2em auto}} figure{{display:inline-block;margin:8px}} img{{width:720px}}</style></head><body>\n<h1>Sweep {sweep}</h1>\n<p>{cells} completed cells.</p>\n<h2>Tables</h2><ul>\n"
    );
    for (name, _) in files.iter().filter(|(n, _)| !n.starts_with("figures/")) {
        let _ = writeln!(s, "<li><a href=\"{name}\">{name}</a></li>");
    }
    s.push_str("</ul>\n");
    if !unreadable.is_empty() {
        s.push_str("<h2>Unreadable results</h2><ul>\n");
        for u in unreadable {
            let _ = writeln!(s, "<li>{u}</li>");
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Figures</h2>\n");
    for (name, title) in figures {
        let _ = writeln!(s, "<figure><a href=\"{name}\"><img src=\"{name}\" alt=\"{title}\"></a><figcaption>{title}</figcaption></figure>");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins the row layouts the CSV and Markdown tables share (identity columns,
    // quoting, number formats, empty and dashed missing values).
    #[test]
    fn table_rows_keep_their_layout() {
        let depth = DepthRow {
            model: "m, \"x\"".into(),
            size_b: 0.5,
            dataset: "cities".into(),
            precision: "16".into(),
            noise: "none".into(),
            n_layers: 30,
            peak_accuracy: 0.91234,
            peak_layer: 12,
            peak_fraction: 0.4,
            converging_layer: 10,
            converging_fraction: 0.33333,
            converging_layer_paper: None,
            converging_fraction_paper: Some(0.25),
            jumping_layer: Some(3),
            jumping_fraction: None,
        };
        let csv = depth_csv(std::slice::from_ref(&depth));
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            r#""m, ""x""",0.5,cities,16,none,30,0.9123,12,0.4000,10,0.3333,,0.2500,3,"#
        );
        let md = depth_md(&[depth], &[]);
        assert!(
            md.contains(
                "\n| m, \"x\" | cities | 16 | none | 30 | 0.912 | 12 | 10 | 0.333 | 3 | – |\n"
            ),
            "{md}"
        );

        let mc = McRow {
            model: "m".into(),
            size_b: 0.5,
            dataset: "tqa".into(),
            precision: "32".into(),
            noise: "none".into(),
            lens: "normed".into(),
            length_normalised: true,
            peak_mc1: 0.61234,
            peak_layer: 7,
            last_mc1: 0.5,
            last_mc3: 0.45678,
            chance_mc1: None,
        };
        let csv = mc_csv(std::slice::from_ref(&mc));
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "m,0.5,tqa,32,none,normed,true,0.6123,7,0.5000,0.4568,"
        );
        let md = mc_md(&[mc]);
        assert_eq!(
            md.lines().last().unwrap(),
            "| m | tqa | 32 | none | normed | true | 0.612 | 7 | 0.500 | 0.457 | – |"
        );
    }
}
