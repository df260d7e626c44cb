//! `metrics.json` round trip, its pandas-friendly shape, and the tables built
//! from several cells.

use cd_common::datasets::PromptMode;
use cd_common::depth::DepthConfig;
use cd_common::metrics::{CellMetrics, ProbeCellInputs, SCHEMA_VERSION};
use cd_common::probe::layers::{probe_all_layers, FeatureView};
use cd_common::probe::mc::{Lens, LensScores, McConfig, ScoredItem};
use cd_common::probe::ProbeConfig;
use cd_common::spec::{example_spec, ModelRef, ModelSource, Site, TaskKind, TaskSpec};
use cd_common::tables;
use std::collections::BTreeMap;

fn spec(model: &str, size_b: f64, dataset: &str) -> TaskSpec {
    let mut s = example_spec();
    s.model = ModelRef {
        name: model.into(),
        source: ModelSource::Dir { path: "/m".into() },
        size_b,
        identity: s.model.identity.clone(),
    };
    s.dataset.name = dataset.into();
    s.site = Site::PostAttentionNorm;
    s.seed = 3;
    s
}

/// A cell whose signal grows with depth (deterministic, no RNG needed).
fn cell(model: &str, size_b: f64, dataset: &str, n_layers: usize) -> CellMetrics {
    cell_of(spec(model, size_b, dataset), n_layers)
}

fn cell_of(mut s: TaskSpec, n_layers: usize) -> CellMetrics {
    let (n, d) = (120, 3);
    let labels: Vec<u8> = (0..n).map(|i| u8::from(i % 2 == 0)).collect();
    let mut data = Vec::with_capacity(n * n_layers * d);
    for (i, &label) in labels.iter().enumerate() {
        for l in 0..n_layers {
            let jitter = ((i * 7919 + l * 31) % 97) as f32 / 97.0 - 0.5;
            let sign = if label == 1 { 1.0 } else { -1.0 };
            data.extend([sign * 0.2 * l as f32 + 2.0 * jitter, jitter * 3.0, 1.0]);
        }
    }
    let cfg =
        ProbeConfig::from_json(&serde_json::json!({"split": {"kind": "kfold", "k": 3}})).unwrap();
    let features = FeatureView {
        data: &data,
        n,
        n_layers,
        d,
        labels: &labels,
    };
    let run = probe_all_layers(&features, None, &cfg, s.seed).unwrap();
    s.probe = Some(cfg.clone());
    CellMetrics::for_probe(
        ProbeCellInputs {
            spec: &s,
            labels: &labels,
            class_names: Some(["false".into(), "true".into()]),
            n_layers,
            includes_embedding: false,
            probe: &cfg,
            depth: &DepthConfig::default(),
            versions: BTreeMap::from([(
                "cd-common".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
            timings: BTreeMap::new(),
            dataset: None,
        },
        &run,
    )
    .unwrap()
}

#[test]
fn probe_metrics_round_trip_and_flat_tables() {
    let m = cell("m", 1.0, "cities", 5);
    let text = m.to_json();
    let back = CellMetrics::from_json(&text).unwrap();
    // Wall times are sums whose last digit may not survive text; the rest must.
    let untimed = |mut c: CellMetrics| {
        c.layers.iter_mut().for_each(|r| r.fit_seconds = 0.0);
        c.fold_layers.iter_mut().for_each(|r| r.seconds = 0.0);
        c.timings.clear();
        c
    };
    assert!(
        untimed(back) == untimed(m.clone()),
        "metrics.json does not round-trip"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    for table in ["layers", "fold_layers"] {
        let rows = v[table].as_array().unwrap();
        assert!(!rows.is_empty());
        for r in rows {
            // Flat records: pandas gets one column per field.
            assert!(
                r.as_object()
                    .unwrap()
                    .values()
                    .all(|x| !x.is_object() && !x.is_array()),
                "{table}: {r}"
            );
        }
    }
    assert_eq!(v["layers"].as_array().unwrap().len(), 5);
    assert_eq!(v["fold_layers"].as_array().unwrap().len(), 15);
    assert_eq!(v["positive_class"], 1);
    assert!(m.layers[4].accuracy_mean > m.layers[0].accuracy_mean);
    assert_eq!(m.folds.iter().map(|f| f.n_test).sum::<usize>(), 120);
    let wrong = text.replacen("\"schema_version\": 2", "\"schema_version\": 99", 1);
    assert!(CellMetrics::from_json(&wrong)
        .unwrap_err()
        .to_string()
        .contains("99"));
}

#[test]
fn mc_metrics_are_long_format() {
    let item = ScoredItem {
        sums: vec![vec![-1.0, -2.0]; 3],
        n_tokens: vec![1, 2],
        correct: vec![true, false],
        best: 0,
    };
    let scores = [
        LensScores {
            lens: Lens::Faithful,
            items: vec![item.clone()],
        },
        LensScores {
            lens: Lens::Normed,
            items: vec![item],
        },
    ];
    let mut mc_spec = spec("m", 1.0, "truthfulqa_mc");
    mc_spec.kind = TaskKind::MultipleChoice;
    mc_spec.probe = None;
    mc_spec.depth = None;
    mc_spec.mc = Some(McConfig::default());
    let m = CellMetrics::for_mc(&mc_spec, &scores, true, BTreeMap::new(), BTreeMap::new()).unwrap();
    assert_eq!(m.mc_layers.len(), 2 * 2 * 3);
    assert_eq!(m.mc_chance.unwrap().chance, 0.5);
    assert_eq!(CellMetrics::from_json(&m.to_json()).unwrap(), m);
}

#[test]
fn tables_order_models_by_size() {
    let cells = vec![
        cell("big", 7.0, "cities", 6),
        cell("small", 0.5, "cities", 4),
        cell("small", 0.5, "stsa", 4),
    ];
    let rows = tables::depth_rows(&cells);
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.model.as_str(), r.dataset.as_str()))
        .collect();
    assert_eq!(
        order,
        [("small", "cities"), ("small", "stsa"), ("big", "cities")]
    );
    let mats = tables::depth_matrices(&cells);
    assert_eq!(
        mats.len(),
        3,
        "peak and both converging rules for one slice"
    );
    assert_eq!(mats[0].models, ["small", "big"]);
    assert_eq!(mats[0].datasets, ["cities", "stsa"]);
    assert!(mats[0].values[1][1].is_none(), "big has no stsa cell");
    let curves = tables::curves(&cells);
    let cities = curves.iter().find(|c| c.dataset == "cities").unwrap();
    assert_eq!(
        cities
            .series
            .iter()
            .map(|s| s.model.as_str())
            .collect::<Vec<_>>(),
        ["small", "big"]
    );
    assert_eq!(cities.series[1].x.last(), Some(&1.0));
}

#[test]
fn every_grid_axis_is_kept_apart_in_tables_and_figures() {
    // Two prompt modes × two seeds of one (model, dataset): four cells.
    let mut cells = Vec::new();
    for mode in [PromptMode::Paper, PromptMode::CdLegacy] {
        for seed in [0, 1] {
            let mut s = spec("m", 1.0, "cities");
            s.prompt_mode = mode;
            s.seed = seed;
            cells.push(cell_of(s, 4));
        }
    }
    let rows = tables::depth_rows(&cells);
    assert_eq!(rows.len(), 4);
    let keys: std::collections::HashSet<_> = rows
        .iter()
        .map(|r| (r.prompt_mode.clone(), r.seed))
        .collect();
    assert_eq!(keys.len(), 4, "one row per cell");
    let mats = tables::depth_matrices(&cells);
    assert_eq!(
        mats.len(),
        4 * 3,
        "one slice per (prompt, seed), three quantities each"
    );
    assert!(mats.iter().all(|m| m.values[0][0].is_some()));
    let labels: std::collections::HashSet<_> = mats.iter().map(|m| m.label.clone()).collect();
    assert!(labels.contains("prompt=cd-legacy seed=1"), "{labels:?}");
    let curves = tables::curves(&cells);
    assert_eq!(curves.len(), 1);
    assert_eq!(curves[0].series.len(), 4, "four curves in the figure");
    let legend: std::collections::HashSet<_> =
        curves[0].series.iter().map(|s| s.label.clone()).collect();
    assert_eq!(legend.len(), 4, "{legend:?}");
    assert!(
        curves[0].series.iter().all(|s| s.y_low.is_some()),
        "bootstrap bands"
    );
}
