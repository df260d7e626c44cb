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
use cd_common::probe::mc::McLayer;
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

/// MC1, MC2 and MC3 against relative depth: one figure per (dataset,
/// precision, noise, lens, normalisation, score), one curve per model.
fn mc_figures(cells: &[CellMetrics]) -> Vec<Figure> {
    let mut figures: Vec<Figure> = Vec::new();
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
            let chance = c.mc_chance.as_ref();
            for (score, pick, chance_of) in [
                (
                    "MC1",
                    (|l: &McLayer| l.mc1) as fn(&McLayer) -> f64,
                    chance.map(|ch| ch.chance_mc1),
                ),
                ("MC2", |l: &McLayer| l.mc2, None),
                ("MC3", |l: &McLayer| l.mc3, None),
            ] {
                let name = format!(
                    "figures/mc_{}__p{}__{}__{}{}__{}",
                    slug(&c.spec.dataset.name),
                    slug(c.spec.precision.as_str()),
                    slug(&c.spec.noise.name()),
                    lens,
                    norm_tag,
                    score.to_lowercase()
                );
                let title = format!(
                    "{} {score} ({} lens{}), precision {}, noise {}",
                    c.spec.dataset.name,
                    lens,
                    if norm { ", length-normalised" } else { "" },
                    c.spec.precision,
                    c.spec.noise
                );
                let line = svg::Line::plain(
                    c.spec.model.name.clone(),
                    layers
                        .iter()
                        .map(|l| depth_fraction(l.layer, c.n_layers, c.includes_embedding))
                        .collect(),
                    layers.iter().map(|l| pick(l)).collect(),
                );
                match figures.iter_mut().find(|f| f.name == name) {
                    Some(Figure {
                        kind: FigureKind::Line(chart),
                        ..
                    }) => chart.lines.push(line),
                    _ => figures.push(Figure {
                        name,
                        section: format!("Multiple choice: {}", c.spec.dataset.name),
                        kind: FigureKind::Line(svg::Chart {
                            title,
                            x_label: "relative depth".into(),
                            y_label: score.into(),
                            lines: vec![line],
                            reference: chance_of.map(|v| (v, "chance".to_string())),
                        }),
                    }),
                }
            }
        }
    }
    figures
}

/// A figure of the report: its file name (without extension), the index
/// section it belongs to, and what it draws.
struct Figure {
    name: String,
    section: String,
    kind: FigureKind,
}

enum FigureKind {
    Line(svg::Chart),
    Heatmap(svg::Heatmap),
}

impl Figure {
    fn title(&self) -> &str {
        match &self.kind {
            FigureKind::Line(c) => &c.title,
            FigureKind::Heatmap(h) => &h.title,
        }
    }
}

/// Probe figures: per (dataset, precision, noise), accuracy, F1 and AUC
/// against relative depth (one curve per model and other varying axis, the
/// bootstrap interval or ±std as a band, the converging layer marked, the
/// majority baseline dashed); per slice of the other axes, heatmaps of the
/// converging depth under both rules and of the peak accuracy.
fn probe_figures(cells: &[CellMetrics], matrices: &[Matrix]) -> Vec<Figure> {
    let by_id: std::collections::HashMap<&str, &CellMetrics> =
        cells.iter().map(|c| (c.task_id.as_str(), c)).collect();
    let mut figures = Vec::new();
    for set in tables::curves(cells) {
        let plateau = set.rule == "plateau";
        let baseline = {
            let all: Vec<f64> = set
                .series
                .iter()
                .flat_map(|s| s.baseline.iter().copied())
                .collect();
            (!all.is_empty()).then(|| all.iter().sum::<f64>() / all.len() as f64)
        };
        for (metric, y_label) in [
            ("accuracy", "probe test accuracy"),
            ("f1", "probe test F1"),
            ("auc", "probe test ROC AUC"),
        ] {
            let mut lines = Vec::new();
            for s in &set.series {
                let Some(cell) = by_id.get(s.task_id.as_str()) else {
                    continue;
                };
                let marker = Some(if plateau {
                    s.converging_plateau
                } else {
                    s.converging_paper
                })
                .and_then(|layer| cell.layers.iter().position(|r| r.layer == layer));
                let (y, y_std, interval): (Vec<f64>, Vec<f64>, _) = match metric {
                    "accuracy" => (
                        s.y.clone(),
                        s.y_std.clone(),
                        s.y_low.clone().zip(s.y_high.clone()),
                    ),
                    "f1" => (
                        cell.layers.iter().map(|r| r.f1_mean).collect(),
                        cell.layers.iter().map(|r| r.f1_std).collect(),
                        None,
                    ),
                    _ => {
                        let Some(auc) = cell
                            .layers
                            .iter()
                            .map(|r| r.auc_mean)
                            .collect::<Option<Vec<f64>>>()
                        else {
                            continue;
                        };
                        let std = cell
                            .layers
                            .iter()
                            .map(|r| r.auc_std.unwrap_or(0.0))
                            .collect();
                        (auc, std, None)
                    }
                };
                lines.push(svg::Line {
                    label: s.label.clone(),
                    x: s.x.clone(),
                    y,
                    y_std,
                    y_interval: interval,
                    marker,
                });
            }
            if lines.is_empty() {
                continue;
            }
            let reference = match metric {
                "accuracy" => baseline.map(|b| (b, "majority baseline".to_string())),
                "auc" => Some((0.5, "chance".to_string())),
                _ => None,
            };
            figures.push(Figure {
                name: format!(
                    "figures/{}__p{}__{}__{metric}",
                    slug(&set.dataset),
                    slug(&set.precision),
                    slug(&set.noise)
                ),
                section: set.dataset.clone(),
                kind: FigureKind::Line(svg::Chart {
                    title: format!(
                        "{}: {metric}, precision {}, noise {}",
                        set.dataset, set.precision, set.noise
                    ),
                    x_label: "relative depth (layer / layers)".into(),
                    y_label: y_label.into(),
                    lines,
                    reference,
                }),
            });
        }
    }
    for m in matrices {
        let (what, caption) = match m.quantity.as_str() {
            "converging_fraction_paper" => ("converging depth (paper rule)", "layer / layers"),
            "converging_fraction_plateau" => ("converging depth (plateau rule)", "layer / layers"),
            _ => ("peak accuracy", "accuracy"),
        };
        let slice = if m.label.is_empty() {
            String::new()
        } else {
            format!(", {}", m.label)
        };
        figures.push(Figure {
            name: format!("figures/table_{}{}", m.quantity, slug(&slice)),
            section: "Model × dataset tables".into(),
            kind: FigureKind::Heatmap(svg::Heatmap {
                title: format!("{what}{slice}"),
                value_label: caption.into(),
                rows: m.models.clone(),
                columns: m.datasets.clone(),
                values: m.values.clone(),
            }),
        });
    }
    figures
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

/// `index.html` with a warning box under its header.
fn with_warnings(html: &str, warnings: &[String]) -> String {
    let mut b = String::from(
        "<div class=\"warn\" style=\"background:#fff4e5;border:1px solid #f0b46a;padding:10px 16px;margin:14px 0\"><strong>Attention</strong><ul>",
    );
    for w in warnings {
        let _ = write!(b, "<li>{}</li>", svg::esc(w));
    }
    b.push_str("</ul></div>\n");
    html.replacen("<main>\n", &format!("<main>\n{b}"), 1)
}

/// A figure as the index shows it.
struct Shown {
    svg: String,
    csv: String,
    title: String,
    section: String,
}

/// The report's front page: tables, then one section per dataset with its
/// figures side by side (small multiples over precision and noise), the
/// model × dataset heatmaps and the multiple-choice curves. Self-contained
/// (inline style, relative links), so it works from `file://` and from the
/// store alike.
fn index_html(
    sweep: &str,
    cells: usize,
    others: usize,
    files: &[(String, String)],
    figures: &[Shown],
    unreadable: &[String],
) -> String {
    // Everything interpolated comes from metrics.json files, grid names and
    // model names: escaped, never markup.
    let esc = svg::esc;
    let sweep = esc(sweep);
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{sweep}: concept-depth report</title>\n\
<style>body{{font-family:Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}} header{{background:#1f3b57;color:white;padding:16px 28px}} \
header h1{{margin:0;font-size:22px}} main{{padding:8px 28px 40px}} nav a{{margin-right:14px}} section{{margin-top:26px}} h2{{border-bottom:1px solid #ddd;padding-bottom:4px}} \
.grid{{display:flex;flex-wrap:wrap;gap:14px}} figure{{margin:0;background:white;border:1px solid #e2e2e2;border-radius:6px;padding:8px}} \
figure img{{max-width:560px;display:block}} figcaption{{font-size:13px;margin-top:4px}} figcaption a{{margin-left:8px;font-size:12px}} ul.tables li{{margin:3px 0}}</style></head><body>\n\
<header><h1>concept-depth report: sweep {sweep}</h1><div>{cells} completed cells</div></header><main>\n"
    );
    let mut sections: Vec<&str> = Vec::new();
    for f in figures {
        if !sections.contains(&f.section.as_str()) {
            sections.push(&f.section);
        }
    }
    s.push_str("<nav><a href=\"#tables\">Tables</a>");
    for (i, sec) in sections.iter().enumerate() {
        let _ = write!(s, "<a href=\"#s{i}\">{}</a>", esc(sec));
    }
    s.push_str("</nav>\n<section id=\"tables\"><h2>Tables</h2><ul class=\"tables\">\n");
    for (name, _) in files
        .iter()
        .filter(|(n, _)| !n.starts_with("figures/") && n != "index.html")
    {
        let name = esc(name);
        let _ = writeln!(s, "<li><a href=\"{name}\">{name}</a></li>");
    }
    s.push_str("</ul>\n");
    if others > 0 {
        let _ = writeln!(s, "<p>{others} completed cells of this sweep are not in the grid last served; they are listed in <a href=\"other_cells.csv\">other_cells.csv</a> and left out of every table and figure.</p>");
    }
    if !unreadable.is_empty() {
        s.push_str("<h3>Unreadable results</h3><ul>\n");
        for u in unreadable {
            let _ = writeln!(s, "<li>{}</li>", esc(u));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</section>\n");
    for (i, sec) in sections.iter().enumerate() {
        let _ = writeln!(
            s,
            "<section id=\"s{i}\"><h2>{}</h2><div class=\"grid\">",
            esc(sec)
        );
        for f in figures.iter().filter(|f| f.section == *sec) {
            let (svg_name, csv_name, title) = (esc(&f.svg), esc(&f.csv), esc(&f.title));
            let _ = writeln!(s, "<figure><a href=\"{svg_name}\"><img src=\"{svg_name}\" alt=\"{title}\"></a><figcaption>{title}<a href=\"{csv_name}\">data (CSV)</a></figcaption></figure>");
        }
        s.push_str("</div></section>\n");
    }
    s.push_str("</main></body></html>\n");
    s
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
