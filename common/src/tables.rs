//! The papers' tables and curves from a set of cell results, as plain data.
//!
//! Rendering (CSV, Markdown, SVG, HTML) belongs to the coordinator; this
//! module decides what the rows, columns and series are. Every axis a grid
//! can vary besides model and dataset ([`Axes`]: precision, noise, prompt
//! mode, seed, site, pooling, split, multiple-choice score dtype) is a column
//! of every row and part of every matrix's and figure's key, so no cell is
//! ever silently dropped or drawn on top of another. Models are ordered by
//! size (`size_b`, then name), datasets by first appearance.
//!
//! Why this file is long: every table and curve of both papers is built from
//! the same per-cell rows and shares their keying by grid axes; split apart,
//! each table would re-derive the rows.

use crate::depth::RuleName;
use crate::metrics::CellMetrics;
use crate::probe::mc::McLayer;
use serde::{Deserialize, Serialize};

/// The axes of a cell besides model and dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Axes {
    /// Precision name (`32`, `16`, `8`, …).
    pub precision: String,
    /// Noise kind.
    pub noise: String,
    /// Prompt mode.
    pub prompt_mode: String,
    /// Task seed.
    pub seed: u64,
    /// Capture site.
    pub site: String,
    /// Token pooling.
    pub pooling: String,
    /// Split label (probe cells; empty for multiple choice).
    pub split: String,
    /// Score arithmetic (multiple-choice cells; empty for probes).
    pub score_dtype: String,
}

impl Axes {
    /// The axes of a cell.
    pub fn of(c: &CellMetrics) -> Axes {
        let s = &c.spec;
        Axes {
            precision: s.precision.as_str().to_string(),
            noise: s.noise.name(),
            prompt_mode: s.prompt_mode.as_str().to_string(),
            seed: s.seed,
            site: s.site.as_str().to_string(),
            pooling: s.pooling.as_str().to_string(),
            split: s
                .probe
                .as_ref()
                .map(|p| p.split.label())
                .unwrap_or_default(),
            score_dtype: s
                .mc
                .as_ref()
                .map(|m| m.score_dtype.as_str().to_string())
                .unwrap_or_default(),
        }
    }

    fn values(&self) -> [(&'static str, String); 8] {
        [
            ("precision", self.precision.clone()),
            ("noise", self.noise.clone()),
            ("prompt", self.prompt_mode.clone()),
            ("seed", self.seed.to_string()),
            ("site", self.site.clone()),
            ("pooling", self.pooling.clone()),
            ("split", self.split.clone()),
            ("score", self.score_dtype.clone()),
        ]
    }

    /// `name=value` of the axes in `varying`, space separated (e.g.
    /// `prompt=paper seed=1`); empty when none varies.
    pub fn label(&self, varying: &[&str]) -> String {
        self.values()
            .into_iter()
            .filter(|(n, _)| varying.contains(n))
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Names of the axes whose value differs between at least two of `axes`.
pub(crate) fn varying_axes<'a>(axes: impl IntoIterator<Item = &'a Axes>) -> Vec<&'static str> {
    let all: Vec<[(&'static str, String); 8]> = axes.into_iter().map(Axes::values).collect();
    let Some(first) = all.first() else {
        return Vec::new();
    };
    (0..first.len())
        .filter(|&i| all.iter().any(|a| a[i].1 != first[i].1))
        .map(|i| first[i].0)
        .collect()
}

/// One row of the long concept-depth table: a cell's depth results under
/// both converging rules, with every axis as a column (flat, for CSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthRow {
    /// The cell's id.
    pub task_id: String,
    /// Model display name.
    pub model: String,
    /// Model size in billions of parameters.
    pub size_b: f64,
    /// Dataset name.
    pub dataset: String,
    /// Precision.
    pub precision: String,
    /// Noise kind.
    pub noise: String,
    /// Prompt mode.
    pub prompt_mode: String,
    /// Task seed.
    pub seed: u64,
    /// Capture site.
    pub site: String,
    /// Token pooling.
    pub pooling: String,
    /// Split label.
    pub split: String,
    /// Captured layers.
    pub n_layers: usize,
    /// Examples probed.
    pub n_examples: usize,
    /// Peak accuracy.
    pub peak_accuracy: f64,
    /// Bootstrap interval of the peak accuracy (low).
    pub peak_accuracy_low: Option<f64>,
    /// Bootstrap interval of the peak accuracy (high).
    pub peak_accuracy_high: Option<f64>,
    /// Peak layer index.
    pub peak_layer: usize,
    /// Peak layer as fraction of depth.
    pub peak_fraction: f64,
    /// Majority-class baseline accuracy (test side).
    pub baseline: f64,
    /// The rule the `converging_*` columns follow (`paper` or `plateau`).
    pub rule: String,
    /// Converging layer index under `rule`.
    pub converging_layer: usize,
    /// Converging layer as fraction of depth under `rule`.
    pub converging_fraction: f64,
    /// Converging layer index under the `paper` rule.
    pub converging_layer_paper: usize,
    /// Converging fraction under the `paper` rule.
    pub converging_fraction_paper: f64,
    /// Bootstrap interval of the paper-rule converging layer (low).
    pub converging_layer_paper_low: Option<f64>,
    /// Bootstrap interval of the paper-rule converging layer (high).
    pub converging_layer_paper_high: Option<f64>,
    /// Converging layer index under the `plateau` rule.
    pub converging_layer_plateau: usize,
    /// Converging fraction under the `plateau` rule.
    pub converging_fraction_plateau: f64,
    /// Bootstrap interval of the plateau-rule converging layer (low).
    pub converging_layer_plateau_low: Option<f64>,
    /// Bootstrap interval of the plateau-rule converging layer (high).
    pub converging_layer_plateau_high: Option<f64>,
    /// Jumping layer index, if any.
    pub jumping_layer: Option<usize>,
    /// Jumping layer as fraction of depth, if any.
    pub jumping_fraction: Option<f64>,
}

impl DepthRow {
    /// The row's axes besides model and dataset.
    pub fn axes(&self) -> Axes {
        Axes {
            precision: self.precision.clone(),
            noise: self.noise.clone(),
            prompt_mode: self.prompt_mode.clone(),
            seed: self.seed,
            site: self.site.clone(),
            pooling: self.pooling.clone(),
            split: self.split.clone(),
            score_dtype: String::new(),
        }
    }
}

/// A model × dataset matrix of one quantity for one slice (every other axis fixed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// What the values are: `peak_accuracy`, `converging_fraction_paper`
    /// or `converging_fraction_plateau`.
    pub quantity: String,
    /// The slice.
    pub slice: Axes,
    /// The slice's varying axes as `name=value` (empty when the store holds one slice).
    pub label: String,
    /// Row labels: models ordered by size.
    pub models: Vec<String>,
    /// Column labels: datasets.
    pub datasets: Vec<String>,
    /// `values[model][dataset]`, `None` where the cell is missing.
    pub values: Vec<Vec<Option<f64>>>,
}

/// One curve: a model's accuracy against relative depth in one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The cell's id.
    pub task_id: String,
    /// Model display name.
    pub model: String,
    /// Model size (billions).
    pub size_b: f64,
    /// The cell's axes.
    pub axes: Axes,
    /// Legend label: the model and the axes that vary within the figure.
    pub label: String,
    /// Relative depth of each point.
    pub x: Vec<f64>,
    /// Mean test accuracy of each point.
    pub y: Vec<f64>,
    /// Std over folds of each point.
    pub y_std: Vec<f64>,
    /// Bootstrap band (low) of each point, when bootstrapped.
    pub y_low: Option<Vec<f64>>,
    /// Bootstrap band (high) of each point, when bootstrapped.
    pub y_high: Option<Vec<f64>>,
    /// Majority-class baseline of each point.
    pub baseline: Vec<f64>,
    /// Peak layer index.
    pub peak: usize,
    /// Converging layer index, paper rule.
    pub converging_paper: usize,
    /// Converging layer index, plateau rule.
    pub converging_plateau: usize,
}

/// Every curve of one dataset at one (precision, noise): one series per
/// model and per value of any other axis that varies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSet {
    /// Dataset name.
    pub dataset: String,
    /// Precision of the figure.
    pub precision: String,
    /// Noise kind of the figure.
    pub noise: String,
    /// The rule tables lead with (marks on the curves).
    pub rule: String,
    /// One series per cell, models by size.
    pub series: Vec<Series>,
}

fn model_order(cells: &[&CellMetrics]) -> Vec<(String, f64)> {
    let mut models: Vec<(String, f64)> = Vec::new();
    for c in cells {
        if !models.iter().any(|(m, _)| *m == c.spec.model.name) {
            models.push((c.spec.model.name.clone(), c.spec.model.size_b));
        }
    }
    models.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    models
}

fn position(models: &[(String, f64)], m: &str) -> usize {
    models
        .iter()
        .position(|(n, _)| n == m)
        .unwrap_or(usize::MAX)
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

fn probe_cells(cells: &[CellMetrics]) -> Vec<&CellMetrics> {
    cells.iter().filter(|c| c.depth.is_some()).collect()
}

/// Long table of depth results of every probe cell, ordered by axes, model
/// size, then dataset.
pub fn depth_rows(cells: &[CellMetrics]) -> Vec<DepthRow> {
    let probe = probe_cells(cells);
    let models = model_order(&probe);
    let datasets = first_seen(probe.iter().map(|c| c.spec.dataset.name.as_str()));
    let mut rows: Vec<DepthRow> = probe
        .iter()
        .map(|c| {
            let d = c.depth.as_ref().expect("filtered");
            let b = c.bootstrap.as_ref();
            let axes = Axes::of(c);
            let baseline = c
                .layers
                .get(d.peak.layer)
                .map_or(f64::NAN, |l| l.baseline_mean);
            DepthRow {
                task_id: c.task_id.clone(),
                model: c.spec.model.name.clone(),
                size_b: c.spec.model.size_b,
                dataset: c.spec.dataset.name.clone(),
                precision: axes.precision,
                noise: axes.noise,
                prompt_mode: axes.prompt_mode,
                seed: axes.seed,
                site: axes.site,
                pooling: axes.pooling,
                split: axes.split,
                n_layers: c.n_layers,
                n_examples: c.n_examples,
                peak_accuracy: d.peak.accuracy,
                peak_accuracy_low: b.map(|b| b.peak_accuracy.low),
                peak_accuracy_high: b.map(|b| b.peak_accuracy.high),
                peak_layer: d.peak.layer,
                peak_fraction: d.peak.fraction,
                baseline,
                rule: d.config.rule.as_str().to_string(),
                converging_layer: d.converging().layer,
                converging_fraction: d.converging().fraction,
                converging_layer_paper: d.converging_by(RuleName::Paper).layer,
                converging_fraction_paper: d.converging_by(RuleName::Paper).fraction,
                converging_layer_paper_low: b.map(|b| b.converging_layer_paper.low),
                converging_layer_paper_high: b.map(|b| b.converging_layer_paper.high),
                converging_layer_plateau: d.converging_by(RuleName::Plateau).layer,
                converging_fraction_plateau: d.converging_by(RuleName::Plateau).fraction,
                converging_layer_plateau_low: b.map(|b| b.converging_layer_plateau.low),
                converging_layer_plateau_high: b.map(|b| b.converging_layer_plateau.high),
                jumping_layer: d.jumping.map(|j| j.layer),
                jumping_fraction: d.jumping.map(|j| j.fraction),
            }
        })
        .collect();
    let dataset_pos = |s: &str| datasets.iter().position(|x| x == s).unwrap_or(usize::MAX);
    rows.sort_by(|a, b| {
        a.axes()
            .cmp(&b.axes())
            .then(position(&models, &a.model).cmp(&position(&models, &b.model)))
            .then(dataset_pos(&a.dataset).cmp(&dataset_pos(&b.dataset)))
    });
    rows
}

/// The paper's tables: for every slice (all axes but model and dataset
/// fixed), model × dataset matrices of peak accuracy and of the converging
/// fraction under each rule.
pub fn depth_matrices(cells: &[CellMetrics]) -> Vec<Matrix> {
    let rows = depth_rows(cells);
    let probe = probe_cells(cells);
    let models: Vec<String> = model_order(&probe).into_iter().map(|m| m.0).collect();
    let datasets = first_seen(probe.iter().map(|c| c.spec.dataset.name.as_str()));
    let mut slices: Vec<Axes> = Vec::new();
    for r in &rows {
        let a = r.axes();
        if !slices.contains(&a) {
            slices.push(a);
        }
    }
    let varying = varying_axes(&slices);
    let mut out = Vec::new();
    for slice in &slices {
        for quantity in [
            "peak_accuracy",
            "converging_fraction_paper",
            "converging_fraction_plateau",
        ] {
            let values = models
                .iter()
                .map(|m| {
                    datasets
                        .iter()
                        .map(|d| {
                            rows.iter()
                                .find(|r| &r.model == m && &r.dataset == d && r.axes() == *slice)
                                .map(|r| match quantity {
                                    "peak_accuracy" => r.peak_accuracy,
                                    "converging_fraction_paper" => r.converging_fraction_paper,
                                    _ => r.converging_fraction_plateau,
                                })
                        })
                        .collect()
                })
                .collect();
            out.push(Matrix {
                quantity: quantity.to_string(),
                slice: slice.clone(),
                label: slice.label(&varying),
                models: models.clone(),
                datasets: datasets.clone(),
                values,
            });
        }
    }
    out
}

/// A curve of a figure: labelled and ordered by [`label_and_order`].
trait Curve {
    fn model(&self) -> &str;
    fn axes(&self) -> &Axes;
    fn set_label(&mut self, label: String);
}

impl Curve for Series {
    fn model(&self) -> &str {
        &self.model
    }
    fn axes(&self) -> &Axes {
        &self.axes
    }
    fn set_label(&mut self, label: String) {
        self.label = label;
    }
}

impl Curve for McSeries {
    fn model(&self) -> &str {
        &self.model
    }
    fn axes(&self) -> &Axes {
        &self.axes
    }
    fn set_label(&mut self, label: String) {
        self.label = label;
    }
}

/// Label each curve of a figure by its model plus whichever axes vary among
/// the curves, and order them by model size, then by axes.
fn label_and_order<S: Curve>(series: &mut [S], models: &[(String, f64)]) {
    let varying = varying_axes(series.iter().map(|s| s.axes()));
    for s in series.iter_mut() {
        let extra = s.axes().label(&varying);
        let label = if extra.is_empty() {
            s.model().to_string()
        } else {
            format!("{} {extra}", s.model())
        };
        s.set_label(label);
    }
    series.sort_by(|a, b| {
        position(models, a.model())
            .cmp(&position(models, b.model()))
            .then_with(|| a.axes().cmp(b.axes()))
    });
}

/// Per-dataset accuracy curves against relative depth: one set per
/// (dataset, precision, noise), one series per cell in it.
pub fn curves(cells: &[CellMetrics]) -> Vec<CurveSet> {
    let probe: Vec<&CellMetrics> = probe_cells(cells)
        .into_iter()
        .filter(|c| !c.layers.is_empty())
        .collect();
    let models = model_order(&probe);
    let mut sets: Vec<CurveSet> = Vec::new();
    for c in &probe {
        let axes = Axes::of(c);
        let d = c.depth.as_ref().expect("probe cells have depth");
        let key = (
            c.spec.dataset.name.clone(),
            axes.precision.clone(),
            axes.noise.clone(),
        );
        let at = match sets
            .iter()
            .position(|s| (&s.dataset, &s.precision, &s.noise) == (&key.0, &key.1, &key.2))
        {
            Some(i) => i,
            None => {
                sets.push(CurveSet {
                    dataset: key.0,
                    precision: key.1,
                    noise: key.2,
                    rule: d.config.rule.as_str().to_string(),
                    series: Vec::new(),
                });
                sets.len() - 1
            }
        };
        let band = |pick: fn(&crate::metrics::LayerRow) -> Option<f64>| {
            c.layers.iter().map(pick).collect::<Option<Vec<f64>>>()
        };
        sets[at].series.push(Series {
            task_id: c.task_id.clone(),
            model: c.spec.model.name.clone(),
            size_b: c.spec.model.size_b,
            axes,
            label: String::new(),
            x: c.layers.iter().map(|r| r.depth_fraction).collect(),
            y: c.layers.iter().map(|r| r.accuracy_mean).collect(),
            y_std: c.layers.iter().map(|r| r.accuracy_std).collect(),
            y_low: band(|r| r.accuracy_ci_low),
            y_high: band(|r| r.accuracy_ci_high),
            baseline: c.layers.iter().map(|r| r.baseline_mean).collect(),
            peak: d.peak.layer,
            converging_paper: d.converging_by(RuleName::Paper).layer,
            converging_plateau: d.converging_by(RuleName::Plateau).layer,
        });
    }
    for set in sets.iter_mut() {
        label_and_order(&mut set.series, &models);
    }
    sets
}

/// One row of the multiple-choice table: a cell's score variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McRow {
    /// The cell's id.
    pub task_id: String,
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
    /// Prompt mode.
    pub prompt_mode: String,
    /// Task seed.
    pub seed: u64,
    /// Score arithmetic (`f32` or `bf16`).
    pub score_dtype: String,
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
    /// MC2 at the last layer.
    pub last_mc2: f64,
    /// MC3 at the last layer.
    pub last_mc3: f64,
    /// Chance MC1 of the task.
    pub chance_mc1: Option<f64>,
}

/// The layers of one score variant of a cell, in layer order.
pub fn mc_variant<'c>(c: &'c CellMetrics, lens: &str, normalised: bool) -> Vec<&'c McLayer> {
    let mut layers: Vec<&McLayer> = c
        .mc_layers
        .iter()
        .filter(|l| l.lens.as_str() == lens && l.length_normalised == normalised)
        .collect();
    layers.sort_by_key(|l| l.layer);
    layers
}

/// The score variants (lens, length-normalised) of a cell, in first-seen order.
pub fn mc_variants(c: &CellMetrics) -> Vec<(String, bool)> {
    let mut variants: Vec<(String, bool)> = Vec::new();
    for l in &c.mc_layers {
        let v = (l.lens.as_str().to_string(), l.length_normalised);
        if !variants.contains(&v) {
            variants.push(v);
        }
    }
    variants
}

/// Every multiple-choice cell's variants, ordered by dataset, axes, variant, model size.
pub fn mc_rows(cells: &[CellMetrics]) -> Vec<McRow> {
    let mut rows = Vec::new();
    for c in cells.iter().filter(|c| !c.mc_layers.is_empty()) {
        let axes = Axes::of(c);
        for (lens, norm) in mc_variants(c) {
            let layers = mc_variant(c, &lens, norm);
            let peak = layers
                .iter()
                .max_by(|a, b| a.mc1.total_cmp(&b.mc1).then(b.layer.cmp(&a.layer)));
            let (Some(peak), Some(last)) = (peak, layers.last()) else {
                continue;
            };
            rows.push(McRow {
                task_id: c.task_id.clone(),
                model: c.spec.model.name.clone(),
                size_b: c.spec.model.size_b,
                dataset: c.spec.dataset.name.clone(),
                precision: axes.precision.clone(),
                noise: axes.noise.clone(),
                prompt_mode: axes.prompt_mode.clone(),
                seed: axes.seed,
                score_dtype: axes.score_dtype.clone(),
                lens,
                length_normalised: norm,
                peak_mc1: peak.mc1,
                peak_layer: peak.layer,
                last_mc1: last.mc1,
                last_mc2: last.mc2,
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
            &a.prompt_mode,
            a.seed,
            &a.score_dtype,
            &a.lens,
            a.length_normalised,
        )
            .cmp(&(
                &b.dataset,
                &b.precision,
                &b.noise,
                &b.prompt_mode,
                b.seed,
                &b.score_dtype,
                &b.lens,
                b.length_normalised,
            ))
            .then(a.size_b.total_cmp(&b.size_b))
            .then_with(|| a.model.cmp(&b.model))
    });
    rows
}

/// One model's multiple-choice curves in one cell and score variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McSeries {
    /// The cell's id.
    pub task_id: String,
    /// Model display name.
    pub model: String,
    /// Model size (billions).
    pub size_b: f64,
    /// The cell's axes.
    pub axes: Axes,
    /// Legend label: the model and the axes that vary within the figure.
    pub label: String,
    /// Relative depth of each layer.
    pub x: Vec<f64>,
    /// MC1 per layer.
    pub mc1: Vec<f64>,
    /// MC2 per layer.
    pub mc2: Vec<f64>,
    /// MC3 per layer.
    pub mc3: Vec<f64>,
}

/// Every multiple-choice curve of one dataset, precision and score variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McCurveSet {
    /// Dataset name.
    pub dataset: String,
    /// Precision.
    pub precision: String,
    /// `faithful` or `normed`.
    pub lens: String,
    /// Whether scores were length-normalised.
    pub length_normalised: bool,
    /// MC1 of a random ranking (the first cell's).
    pub chance: Option<f64>,
    /// One series per cell, models by size.
    pub series: Vec<McSeries>,
}

/// Multiple-choice curves against relative depth: one set per (dataset,
/// precision, lens, normalisation), one series per cell.
pub fn mc_curves(cells: &[CellMetrics]) -> Vec<McCurveSet> {
    let mc: Vec<&CellMetrics> = cells.iter().filter(|c| !c.mc_layers.is_empty()).collect();
    let models = model_order(&mc);
    let mut sets: Vec<McCurveSet> = Vec::new();
    for c in &mc {
        let axes = Axes::of(c);
        for (lens, norm) in mc_variants(c) {
            let layers = mc_variant(c, &lens, norm);
            let at = match sets.iter().position(|s| {
                s.dataset == c.spec.dataset.name
                    && s.precision == axes.precision
                    && s.lens == lens
                    && s.length_normalised == norm
            }) {
                Some(i) => i,
                None => {
                    sets.push(McCurveSet {
                        dataset: c.spec.dataset.name.clone(),
                        precision: axes.precision.clone(),
                        lens: lens.clone(),
                        length_normalised: norm,
                        chance: c.mc_chance.map(|ch| ch.chance_mc1),
                        series: Vec::new(),
                    });
                    sets.len() - 1
                }
            };
            sets[at].series.push(McSeries {
                task_id: c.task_id.clone(),
                model: c.spec.model.name.clone(),
                size_b: c.spec.model.size_b,
                axes: axes.clone(),
                label: String::new(),
                x: layers
                    .iter()
                    .map(|l| {
                        crate::depth::depth_fraction(l.layer, c.n_layers, c.includes_embedding)
                    })
                    .collect(),
                mc1: layers.iter().map(|l| l.mc1).collect(),
                mc2: layers.iter().map(|l| l.mc2).collect(),
                mc3: layers.iter().map(|l| l.mc3).collect(),
            });
        }
    }
    for set in sets.iter_mut() {
        label_and_order(&mut set.series, &models);
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes(prompt: &str, seed: u64) -> Axes {
        Axes {
            precision: "32".into(),
            noise: "none".into(),
            prompt_mode: prompt.into(),
            seed,
            site: "residual".into(),
            pooling: "last".into(),
            split: "kfold(5)".into(),
            score_dtype: String::new(),
        }
    }

    #[test]
    fn only_axes_that_vary_are_named() {
        let all = [axes("paper", 0), axes("cd-legacy", 0), axes("paper", 1)];
        let varying = varying_axes(&all);
        assert_eq!(varying, ["prompt", "seed"]);
        assert_eq!(all[1].label(&varying), "prompt=cd-legacy seed=0");
        assert!(varying_axes(&all[..1]).is_empty());
    }
}
