//! The `sklearn` split against scikit-learn itself: test and training indices
//! written by `train_test_split` (`scripts/fixtures/make_split_fixtures.py`,
//! committed as `tests/fixtures/sklearn_splits.json`) for many sizes, test
//! sizes and seeds, and the raw MT19937 stream of numpy's legacy seeding.

use cd_common::probe::split::{
    make_folds, sklearn_train_test, test_fold, LegacyRandomState, SplitConfig,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sklearn_splits.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn raw_stream_matches_numpy_legacy_seeding() {
    let f = fixture();
    let streams = f["randomstate_raw"].as_object().unwrap();
    assert!(streams.len() >= 5);
    for (seed, want) in streams {
        let mut rs = LegacyRandomState::new(seed.parse().unwrap());
        let got: Vec<u64> = (0..10).map(|_| u64::from(rs.next_u32())).collect();
        let want: Vec<u64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn train_test_split_is_bit_identical_to_scikit_learn() {
    let f = fixture();
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "{} cases", cases.len());
    for case in cases {
        let n = case["n"].as_u64().unwrap() as usize;
        let test_size = case["test_size"].as_f64().unwrap();
        let rs = case["random_state"].as_u64().unwrap() as u32;
        let what = format!("n={n} test_size={test_size} random_state={rs}");
        let (test, train) = sklearn_train_test(n, test_size, rs).unwrap();
        assert_eq!(test, indices(&case["test"]), "test side, {what}");
        assert_eq!(train, indices(&case["train"]), "training side, {what}");
        // Through the probe's split: the same sets, sorted, recorded as test_fold.
        let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        let cfg = SplitConfig::Sklearn {
            test_size,
            random_state: Some(rs),
        };
        let folds = make_folds(&labels, None, &cfg, 0).unwrap();
        let mut want_test = test.clone();
        want_test.sort_unstable();
        assert_eq!(folds[0].test, want_test, "{what}");
        let tf = test_fold(&folds, n);
        assert_eq!(tf.iter().filter(|&&f| f == 0).count(), test.len());
    }
}

#[test]
fn the_paper_split_of_cities_uses_its_rows_in_class_order() {
    // 748 + 748 rows, class 0 first: the Concept Depth probe's X for Cities.
    let (test, train) = sklearn_train_test(1496, 0.4, 42).unwrap();
    assert_eq!((test.len(), train.len()), (599, 897));
    let f = fixture();
    let case = f["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["n"] == 1496 && c["random_state"] == 42 && c["test_size"] == 0.4)
        .expect("the fixture covers the Cities split");
    assert_eq!(test, indices(&case["test"]));
}
