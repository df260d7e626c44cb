//! Multiple-choice metrics (MC1 against the best answer, MC2, MC3, ties,
//! chance) from per-layer scores, as the original evaluation code defines them.

use cd_common::probe::mc::{chance, item_mc, mc_layers, ItemScore, Lens, LensScores, ScoredItem};

/// An item whose best answer is its first true candidate.
fn item(layers: Vec<Vec<f32>>, n_tokens: Vec<usize>, correct: Vec<bool>) -> ScoredItem {
    let best = correct.iter().position(|&c| c).unwrap_or(0);
    ScoredItem {
        sums: layers,
        n_tokens,
        correct,
        best,
    }
}

fn mc1_mc3_tie(s: ItemScore) -> (f64, f64, bool) {
    (s.mc1, s.mc3, s.tie)
}

#[test]
fn mc1_mc3_and_ties() {
    // Two true (first two, the first is best) and two false.
    let truth = [true, true, false, false];
    assert_eq!(
        mc1_mc3_tie(item_mc(&[-1.0, -3.0, -2.0, -4.0], &truth, 0)),
        (1.0, 0.5, false)
    );
    assert_eq!(
        mc1_mc3_tie(item_mc(&[-1.0, -0.5, -2.0, -0.1], &truth, 0)),
        (0.0, 0.0, false)
    );
    // A tie between the best answer and the best false is an MC1 failure, and flagged.
    assert_eq!(
        mc1_mc3_tie(item_mc(&[-1.0, -2.0, -1.0], &[true, false, false], 0)),
        (0.0, 0.0, true)
    );
}

#[test]
fn mc1_compares_the_best_answer_not_any_true_one() {
    // The second true answer (not the best) beats every false one; the best
    // does not: MC1 is 0, though a "max of T" rule would say 1. MC3 counts it.
    let s = item_mc(&[-3.0, -1.0, -2.0], &[true, true, false], 0);
    assert_eq!((s.mc1, s.mc3), (0.0, 0.5));
    // The same scores with the second answer as best: MC1 is 1.
    assert_eq!(
        item_mc(&[-3.0, -1.0, -2.0], &[true, true, false], 1).mc1,
        1.0
    );
}

#[test]
fn mc2_is_the_normalised_mass_of_the_true_answers() {
    // exp(-1) / (exp(-1) + exp(-2) + exp(-3)), computed by hand.
    let s = item_mc(&[-1.0, -2.0, -3.0], &[true, false, false], 0);
    let want = (-1f64).exp() / ((-1f64).exp() + (-2f64).exp() + (-3f64).exp());
    assert!((s.mc2 - want).abs() < 1e-15);
    // Scores so low that exp underflows to 0: the original halves them until
    // the mass is not 0 (true and false separately), which here leaves
    // exp(-450) against exp(-451) (each side halved once).
    let s = item_mc(&[-900.0, -902.0], &[true, false], 0);
    let want = (-450f64).exp() / ((-450f64).exp() + (-451f64).exp());
    assert!((s.mc2 - want).abs() < 1e-12, "{}", s.mc2);
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
    let rows = mc_layers(&LensScores {
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
    assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r.mc2)));
    assert!(rows
        .iter()
        .all(|r| r.lens == Lens::Normed && r.n_items == 2));
    let c = chance(&items);
    assert!((c.chance - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
    // The best answer above every false one: 1/2 for the first item (one
    // false), 1/3 for the second (two false).
    assert!((c.chance_mc1 - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
}

#[test]
fn malformed_scores_are_refused() {
    let bad = |it: ScoredItem| {
        mc_layers(&LensScores {
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
    let mut wrong_best = item(vec![vec![-1.0, -2.0]], vec![1, 1], vec![true, false]);
    wrong_best.best = 1;
    assert!(bad(wrong_best).contains("best answer"));
}
