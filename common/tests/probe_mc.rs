//! Multiple-choice metrics (MC1, MC3, ties, chance) from per-layer scores,
//! and the `metrics.json` round trip of both task kinds.

use cd_common::probe::mc::{chance, item_mc, mc_layers, Lens, McItem, McScores};

fn item(layers: Vec<Vec<f32>>, n_tokens: Vec<usize>, correct: Vec<bool>) -> McItem {
    McItem {
        sums: layers,
        n_tokens,
        correct,
    }
}

#[test]
fn mc1_mc3_and_ties() {
    // Two true (first two) and two false.
    assert_eq!(
        item_mc(&[-1.0, -3.0, -2.0, -4.0], &[true, true, false, false]),
        (1.0, 0.5, false)
    );
    assert_eq!(
        item_mc(&[-1.0, -0.5, -2.0, -0.1], &[true, true, false, false]),
        (0.0, 0.0, false)
    );
    // A tie between the best true and the best false is an MC1 failure, and flagged.
    assert_eq!(
        item_mc(&[-1.0, -2.0, -1.0], &[true, false, false]),
        (0.0, 0.0, true)
    );
}

#[test]
fn per_layer_rows_for_sums_and_length_normalised_scores() {
    // Layer 0: the true answer has the best sum; layer 1: its sum loses but
    // per token it wins (it is long).
    let items = vec![
        item(
            vec![vec![-2.0, -3.0], vec![-6.0, -4.0]],
            vec![3, 1],
            vec![true, false],
        ),
        item(
            vec![vec![-1.0, -2.0, -3.0], vec![-1.0, -2.0, -3.0]],
            vec![1, 1, 1],
            vec![false, true, false],
        ),
    ];
    let rows = mc_layers(&McScores {
        lens: Lens::Normed,
        items: items.clone(),
    })
    .unwrap();
    assert_eq!(rows.len(), 4);
    let get = |norm: bool, layer: usize| {
        rows.iter()
            .find(|r| r.length_normalised == norm && r.layer == layer)
            .unwrap()
    };
    assert_eq!((get(false, 0).mc1, get(false, 1).mc1), (0.5, 0.0));
    assert_eq!((get(true, 0).mc1, get(true, 1).mc1), (0.5, 0.5));
    assert!(rows
        .iter()
        .all(|r| r.lens == Lens::Normed && r.n_items == 2));
    let c = chance(&items);
    assert!((c.chance - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
    assert!((c.chance_mc1 - c.chance).abs() < 1e-12);
}

#[test]
fn malformed_scores_are_refused() {
    let bad = |it: McItem| {
        mc_layers(&McScores {
            lens: Lens::Faithful,
            items: vec![it],
        })
        .unwrap_err()
        .to_string()
    };
    assert!(bad(item(vec![vec![-1.0, -2.0]], vec![1, 1], vec![true, true])).contains("one false"));
    assert!(bad(item(vec![vec![-1.0]], vec![1, 1], vec![true, false])).contains("candidates"));
    assert!(bad(item(
        vec![vec![-1.0, f32::NAN]],
        vec![1, 1],
        vec![true, false]
    ))
    .contains("finite"));
    assert!(
        bad(item(vec![vec![-1.0, -2.0]], vec![0, 1], vec![true, false])).contains("token counts")
    );
}
