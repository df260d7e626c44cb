//! The report's figures: probe curves against relative depth (accuracy, F1,
//! AUC) with bands, converging markers and baselines; heatmaps of the model ×
//! dataset tables; multiple-choice curves. Built from `cd_common::tables`,
//! drawn by `svg`.

use super::{slug, svg};
use cd_common::depth::depth_fraction;
use cd_common::metrics::CellMetrics;
use cd_common::probe::mc::McLayer;
use cd_common::tables::{self, Matrix};

/// MC1, MC2 and MC3 against relative depth: one figure per (dataset,
/// precision, noise, lens, normalisation, score), one curve per model.
pub(super) fn mc_figures(cells: &[CellMetrics]) -> Vec<Figure> {
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
pub(super) struct Figure {
    pub(super) name: String,
    pub(super) section: String,
    pub(super) kind: FigureKind,
}

pub(super) enum FigureKind {
    Line(svg::Chart),
    Heatmap(svg::Heatmap),
}

impl Figure {
    pub(super) fn title(&self) -> &str {
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
pub(super) fn probe_figures(cells: &[CellMetrics], matrices: &[Matrix]) -> Vec<Figure> {
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
