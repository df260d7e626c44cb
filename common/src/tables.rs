//! The papers' tables and curves from a set of cell results, as plain data.
//!
//! Rendering (CSV, Markdown, SVG) belongs to the coordinator; this module only
//! decides what the rows, columns and series are. Models are ordered by size
//! (`size_b`, then name), datasets by first appearance unless an order is given.

use crate::metrics::CellMetrics;
use serde::{Deserialize, Serialize};

/// One row of the long concept-depth table: a cell's depth results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthRow {
    /// Model display name.
    pub model: String,
    /// Model size in billions of parameters.
    pub size_b: f64,
    /// Dataset name.
    pub dataset: String,
    /// Precision name (`32`, `16`, `8`, …).
    pub precision: String,
    /// Noise kind.
    pub noise: String,
    /// Captured layers.
    pub n_layers: usize,
    /// Peak accuracy.
    pub peak_accuracy: f64,
    /// Peak layer index.
    pub peak_layer: usize,
    /// Peak layer as fraction of depth.
    pub peak_fraction: f64,
    /// Converging layer index (default rule).
    pub converging_layer: usize,
    /// Converging layer as fraction of depth (default rule).
    pub converging_fraction: f64,
    /// Converging layer index under the paper-reproducing rule.
    pub converging_layer_paper: Option<usize>,
    /// Converging fraction under the paper-reproducing rule.
    pub converging_fraction_paper: Option<f64>,
    /// Jumping layer index, if any.
    pub jumping_layer: Option<usize>,
    /// Jumping layer as fraction of depth, if any.
    pub jumping_fraction: Option<f64>,
}

/// A model × dataset matrix of one quantity for one (precision, noise) slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// What the values are (e.g. `peak_accuracy`).
    pub quantity: String,
    /// Precision of the slice.
    pub precision: String,
    /// Noise kind of the slice.
    pub noise: String,
    /// Row labels: models ordered by size.
    pub models: Vec<String>,
    /// Column labels: datasets.
    pub datasets: Vec<String>,
    /// `values[model][dataset]`, `None` where the cell is missing.
    pub values: Vec<Vec<Option<f64>>>,
}

/// One model's curve on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Model display name.
    pub model: String,
    /// Model size (billions).
    pub size_b: f64,
    /// Relative depth of each point.
    pub x: Vec<f64>,
    /// Mean test accuracy of each point.
    pub y: Vec<f64>,
    /// Std over folds of each point (an error band).
    pub y_std: Vec<f64>,
}

/// All models' curves on one dataset for one (precision, noise) slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSet {
    /// Dataset name.
    pub dataset: String,
    /// Precision of the slice.
    pub precision: String,
    /// Noise kind of the slice.
    pub noise: String,
    /// One series per model, ordered by size.
    pub series: Vec<Series>,
}

fn by_size(cells: &[&CellMetrics]) -> Vec<(String, f64)> {
    let mut models: Vec<(String, f64)> = Vec::new();
    for c in cells {
        if !models.iter().any(|(m, _)| *m == c.spec.model.name) {
            models.push((c.spec.model.name.clone(), c.spec.model.size_b));
        }
    }
    models.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    models
}

fn first_seen<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in items {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

/// Long table of depth results of every probe cell, ordered by precision,
/// noise, model size, then dataset.
pub fn depth_rows(cells: &[CellMetrics]) -> Vec<DepthRow> {
    let probe: Vec<&CellMetrics> = cells.iter().filter(|c| c.depth.is_some()).collect();
    let models = by_size(&probe);
    let datasets = first_seen(probe.iter().map(|c| c.spec.dataset.as_str()));
    let mut rows: Vec<DepthRow> = probe
        .iter()
        .map(|c| {
            let d = c.depth.as_ref().expect("filtered");
            let p = c.depth_paper.as_ref();
            DepthRow {
                model: c.spec.model.name.clone(),
                size_b: c.spec.model.size_b,
                dataset: c.spec.dataset.clone(),
                precision: c.spec.precision.as_str().to_string(),
                noise: c.spec.noise.clone(),
                n_layers: c.n_layers,
                peak_accuracy: d.peak.accuracy,
                peak_layer: d.peak.layer,
                peak_fraction: d.peak.fraction,
                converging_layer: d.converging.layer,
                converging_fraction: d.converging.fraction,
                converging_layer_paper: p.map(|p| p.converging.layer),
                converging_fraction_paper: p.map(|p| p.converging.fraction),
                jumping_layer: d.jumping.map(|j| j.layer),
                jumping_fraction: d.jumping.map(|j| j.fraction),
            }
        })
        .collect();
    let pos = |v: &[String], s: &str| v.iter().position(|x| x == s).unwrap_or(usize::MAX);
    let model_pos = |m: &str| {
        models
            .iter()
            .position(|(n, _)| n == m)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by(|a, b| {
        (
            a.precision.as_str(),
            a.noise.as_str(),
            model_pos(&a.model),
            pos(&datasets, &a.dataset),
        )
            .cmp(&(
                b.precision.as_str(),
                b.noise.as_str(),
                model_pos(&b.model),
                pos(&datasets, &b.dataset),
            ))
    });
    rows
}

/// The paper's tables: for every (precision, noise) slice, a model × dataset
/// matrix of peak accuracy and one of converging fraction (default rule).
pub fn depth_matrices(cells: &[CellMetrics]) -> Vec<Matrix> {
    let rows = depth_rows(cells);
    let probe: Vec<&CellMetrics> = cells.iter().filter(|c| c.depth.is_some()).collect();
    let models: Vec<String> = by_size(&probe).into_iter().map(|m| m.0).collect();
    let datasets = first_seen(probe.iter().map(|c| c.spec.dataset.as_str()));
    let slices = first_seen(rows.iter().map(|r| r.precision.as_str()))
        .into_iter()
        .flat_map(|p| {
            first_seen(
                rows.iter()
                    .filter(|r| r.precision == p)
                    .map(|r| r.noise.as_str()),
            )
            .into_iter()
            .map(move |n| (p.clone(), n))
        })
        .collect::<Vec<_>>();
    let mut out = Vec::new();
    for (precision, noise) in slices {
        for quantity in ["peak_accuracy", "converging_fraction"] {
            let values = models
                .iter()
                .map(|m| {
                    datasets
                        .iter()
                        .map(|d| {
                            rows.iter()
                                .find(|r| {
                                    &r.model == m
                                        && &r.dataset == d
                                        && r.precision == precision
                                        && r.noise == noise
                                })
                                .map(|r| {
                                    if quantity == "peak_accuracy" {
                                        r.peak_accuracy
                                    } else {
                                        r.converging_fraction
                                    }
                                })
                        })
                        .collect()
                })
                .collect();
            out.push(Matrix {
                quantity: quantity.to_string(),
                precision: precision.clone(),
                noise: noise.clone(),
                models: models.clone(),
                datasets: datasets.clone(),
                values,
            });
        }
    }
    out
}

/// Per-dataset accuracy curves against relative depth, one series per model.
pub fn curves(cells: &[CellMetrics]) -> Vec<CurveSet> {
    let probe: Vec<&CellMetrics> = cells.iter().filter(|c| !c.layers.is_empty()).collect();
    let models = by_size(&probe);
    let mut sets: Vec<CurveSet> = Vec::new();
    for c in &probe {
        let key = (
            c.spec.dataset.clone(),
            c.spec.precision.as_str().to_string(),
            c.spec.noise.clone(),
        );
        let at = match sets
            .iter()
            .position(|s| (s.dataset.clone(), s.precision.clone(), s.noise.clone()) == key)
        {
            Some(i) => i,
            None => {
                sets.push(CurveSet {
                    dataset: key.0,
                    precision: key.1,
                    noise: key.2,
                    series: Vec::new(),
                });
                sets.len() - 1
            }
        };
        sets[at].series.push(Series {
            model: c.spec.model.name.clone(),
            size_b: c.spec.model.size_b,
            x: c.layers.iter().map(|r| r.depth_fraction).collect(),
            y: c.layers.iter().map(|r| r.accuracy_mean).collect(),
            y_std: c.layers.iter().map(|r| r.accuracy_std).collect(),
        });
    }
    let model_pos = |m: &str| {
        models
            .iter()
            .position(|(n, _)| n == m)
            .unwrap_or(usize::MAX)
    };
    for s in sets.iter_mut() {
        s.series.sort_by_key(|a| model_pos(&a.model));
    }
    sets
}
