//! The Concept Depth datasets against the shipped files: class counts from
//! SOURCES.md, the exact model input of the first example of each class, and
//! every input's hash against an independent pandas reference
//! (`datasets/reference/expected_inputs.py`, output committed beside it).

use cd_common::datasets::{load_binary, BinaryOptions, DataRoot, NoiseKind, PromptMode};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn shared_root() -> PathBuf {
    match std::env::var("CD_SHARED_DATASETS") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
    }
}

fn root() -> DataRoot {
    let r = shared_root();
    assert!(
        r.join("cd").is_dir(),
        "shared datasets not found at {} (set CD_SHARED_DATASETS)",
        r.display()
    );
    DataRoot::Local(r)
}

fn load(name: &str, mode: PromptMode) -> cd_common::datasets::BinaryDataset {
    let opts = BinaryOptions {
        prompt_mode: mode,
        ..BinaryOptions::default()
    };
    load_binary(name, &root(), &opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn first_of_each(d: &cd_common::datasets::BinaryDataset) -> (&str, &str) {
    let n0 = d.class_counts()[0];
    (&d.texts[0], &d.texts[n0])
}

const SQA: &str = "Judge the question is true or false?\nQ: Will Queen Elizabeth be buried in the Pantheon?\nLet us think step by step. The stem of the sentence is Queen Elizabeth, burial, pantheon. Inference: First, the Pantheon is a church, so it is possible that she could be buried there. Second, Queen Elizabeth II is still alive, so she has not been buried yet. Third, even if she were to be buried in the Pantheon, it is unlikely that we would know about it ahead of time, so it is hard to say for sure.\npred_ans: no";
const COIN: &str = "According to the flipping process above, determine if a coin remains heads up after it is either flipped or left unflipped by individuals. Therefore, the answer (Yes or No) is?";
const LEGACY: &str = "According to the sentence, judge the emotion is Positive or Negative.";

#[test]
fn class_counts_match_sources_md() {
    // (name, class 0, class 1) as SOURCES.md's "used by CD" column states them.
    for (name, c0, c1) in [
        ("strategyqa", 1071, 1219),
        ("coinflip", 253, 247),
        ("cities", 748, 748),
        ("common_claim", 3000, 3000),
        ("counterfact", 2000, 2000),
        ("hateeval", 3000, 3000),
        ("stsa", 3310, 3610),
    ] {
        let d = load(name, PromptMode::Paper);
        assert_eq!(d.class_counts(), [c0, c1], "{name}");
        assert_eq!(d.texts.len(), c0 + c1);
        let p = &d.provenance;
        assert_eq!(p.files.len(), 1);
        assert_eq!(
            p.files[0].matches_paper_file,
            Some(true),
            "{name}: the shipped file's sha256"
        );
        assert_eq!(p.counts.values().sum::<usize>(), c0 + c1);
        assert_eq!(p.positive_class.as_deref(), Some(d.class_names[1].as_str()));
    }
}

#[test]
fn stats_report_duplicates_and_drops() {
    let sqa = load("strategyqa", PromptMode::Paper);
    assert_eq!(
        sqa.provenance.stats["duplicates"], 1,
        "one duplicated StrategyQA question (SOURCES.md)"
    );
    let stsa = load("stsa", PromptMode::Paper);
    assert_eq!(
        stsa.provenance.stats["duplicates"], 9,
        "9 duplicated STSA sentences (SOURCES.md)"
    );
    let cc = load("common_claim", PromptMode::Paper);
    assert_eq!(
        cc.provenance.stats["dropped_by_label"], 3616,
        "Neither rows"
    );
    assert_eq!(cc.provenance.stats["available_class0"], 12063);
    assert_eq!(cc.provenance.stats["available_class1"], 4321);
    // CD's CommonClaim cut-offs: the 3000th True is file row 4024, the 3000th False row 13870.
    let n0 = cc.class_counts()[0];
    assert_eq!(cc.source_index[n0 - 1], 4024);
    assert_eq!(*cc.source_index.last().unwrap(), 13870);
}

#[test]
fn first_inputs_paper_mode_character_for_character() {
    let cases: [(&str, String, String); 7] = [
        (
            "strategyqa",
            format!("{SQA}Is it common to see frost during some college commencements? College commencement ceremonies often happen during the months of December, May, and sometimes June.  Frost isn't uncommon to see during the month of December, as it is the winter. Let us think step by step..."),
            format!("{SQA}Hydrogen's atomic number squared exceeds number of Spice Girls? Hydrogen is the first element and has an atomic number of one. To square a number, you multiply it by itself. The Spice Girls has five members. Let us think step by step..."),
        ),
        (
            "coinflip",
            format!("A coin is heads up. Whitney flips the coin. Erika does not flip the coin. Tj does not flip the coin. Benito flips the coin. Is the coin still heads up? Note that \"flip\" here means \"reverse\". {COIN}"),
            format!("A coin is heads up. Lucky does not flip the coin. Mireya flips the coin. Jj flips the coin. Kc flips the coin. Is the coin still heads up? Note that \"flip\" here means \"reverse\". {COIN}"),
        ),
        (
            "cities",
            "Judge the statement is True or False. The city of Krasnodar is in Russia.".into(),
            "Judge the statement is True or False. The city of Krasnodar is in South Africa.".into(),
        ),
        (
            "common_claim",
            "Judge the statement is True or False. In olden times, lemons were used as an insecticide.".into(),
            "Judge the statement is True or False. Bedbugs are one of the few animals known to be capable of surviving in space.".into(),
        ),
        (
            "counterfact",
            "Judge the statement is true or false. The mother tongue of Danielle Darrieux is French.".into(),
            "Judge the statement is true or false. The mother tongue of Danielle Darrieux is English.".into(),
        ),
        (
            "hateeval",
            "Hurray, saving us $$$ in so many ways @potus @realDonaldTrump #LockThemUp #BuildTheWall #EndDACA #BoycottNFL #BoycottNike According to the comment, tell whether they present hate speech or not.".into(),
            "NY Times: 'Nearly All White' States Pose 'an Array of Problems' for Immigrants https://t.co/ACZKLhdMV9 https://t.co/CJAlSXCzR6 According to the comment, tell whether they present hate speech or not.".into(),
        ),
        (
            "stsa",
            "apparently reassembled from the cutting-room floor of any given daytime soap . The sentence above is a movie review and reflects the writer's overall intention for this review. According to the sentence, judge whether the emotion is Positive or Negative.".into(),
            "a stirring , funny and finally transporting re-imagining of beauty and the beast and 1930s horror films The sentence above is a movie review and reflects the writer's overall intention for this review. According to the sentence, judge whether the emotion is Positive or Negative.".into(),
        ),
    ];
    for (name, c0, c1) in cases {
        let d = load(name, PromptMode::Paper);
        let (a, b) = first_of_each(&d);
        assert_eq!(a, c0, "{name} class 0");
        assert_eq!(b, c1, "{name} class 1");
    }
}

#[test]
fn first_inputs_cd_legacy_mode_keep_layout_and_cot() {
    let d = load("strategyqa", PromptMode::CdLegacy);
    assert_eq!(
        d.texts[0],
        format!("{LEGACY}Is it common to see frost during some college commencements? College commencement ceremonies often happen during the months of December, May, and sometimes June.  Frost isn't uncommon to see during the month of December, as it is the winter. Let us think step by step...")
    );
    let d = load("cities", PromptMode::CdLegacy);
    assert_eq!(
        d.texts[0],
        format!("{LEGACY} The city of Krasnodar is in Russia.")
    );
    let d = load("stsa", PromptMode::CdLegacy);
    assert_eq!(d.texts[0], format!("apparently reassembled from the cutting-room floor of any given daytime soap . {LEGACY}"));
}

#[test]
fn every_input_matches_the_pandas_reference() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/reference/expected_inputs.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let reference = reference.as_object().unwrap();
    assert_eq!(reference.len(), 14);
    for (key, exp) in reference {
        let (name, mode) = key.split_once('/').unwrap();
        let d = load(name, PromptMode::parse(mode).unwrap());
        let counts: Vec<usize> = exp["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(d.class_counts().to_vec(), counts, "{key}");
        let (a, b) = first_of_each(&d);
        assert_eq!(a, exp["first_class0"].as_str().unwrap(), "{key}");
        assert_eq!(b, exp["first_class1"].as_str().unwrap(), "{key}");
        let sha = hex::encode(Sha256::digest(d.texts.join("\n").as_bytes()));
        assert_eq!(
            sha,
            exp["sha256"].as_str().unwrap(),
            "{key}: some model input differs from the reference"
        );
    }
}

#[test]
fn prefix_noise_glues_aaa_or_bbb_onto_the_sample_before_the_prompt() {
    let clean = load("stsa", PromptMode::Paper);
    let opts = BinaryOptions {
        noise: NoiseKind::PrefixAaaBbb,
        seed: 42,
        ..BinaryOptions::default()
    };
    let noisy = load_binary("stsa", &root(), &opts).unwrap();
    let again = load_binary("stsa", &root(), &opts).unwrap();
    assert_eq!(noisy.texts, again.texts, "seeded: identical on reload");
    let mut aaa = 0;
    for (n, c) in noisy.texts.iter().zip(&clean.texts) {
        let rest = n
            .strip_prefix("aaa")
            .or_else(|| n.strip_prefix("bbb"))
            .expect("prefix");
        assert_eq!(rest, c);
        aaa += usize::from(n.starts_with("aaa"));
    }
    let share = aaa as f64 / noisy.texts.len() as f64;
    assert!((0.45..0.55).contains(&share), "aaa share {share}");
    assert_eq!(noisy.samples, clean.samples, "samples stay the raw text");
    assert_eq!(noisy.provenance.noise, "prefix-aaa-bbb");
    assert_eq!(noisy.provenance.seed, 42);

    // Prompt-first datasets: the prefix goes onto the sample, after the prompt.
    let opts = BinaryOptions {
        noise: NoiseKind::PrefixAaaBbb,
        seed: 1,
        ..BinaryOptions::default()
    };
    let cities = load_binary("cities", &root(), &opts).unwrap();
    assert!(cities.texts.iter().all(|t| t
        .starts_with("Judge the statement is True or False. aaaThe city")
        || t.starts_with("Judge the statement is True or False. bbbThe city")));
}

#[test]
fn noise_of_an_example_does_not_depend_on_caps() {
    let full = BinaryOptions {
        noise: NoiseKind::Typos { rate: 0.1 },
        seed: 3,
        ..BinaryOptions::default()
    };
    let capped = BinaryOptions {
        max_per_class: Some(10),
        ..full.clone()
    };
    let a = load_binary("counterfact", &root(), &full).unwrap();
    let b = load_binary("counterfact", &root(), &capped).unwrap();
    assert_eq!(&a.texts[..10], &b.texts[..10]);
    assert_ne!(
        a.texts[..10],
        load("counterfact", PromptMode::Paper).texts[..10]
    );
}

#[test]
fn cities_and_counterfact_carry_pair_groups() {
    let d = load("cities", PromptMode::Paper);
    let groups = d.groups.as_ref().expect("cities has groups");
    let n_groups = groups.iter().max().unwrap() + 1;
    assert_eq!(n_groups, 748, "each city once true and once false");
    let d = load("counterfact", PromptMode::Paper);
    assert!(d.groups.is_some());
    assert!(load("stsa", PromptMode::Paper).groups.is_none());
}

#[test]
fn aliases_of_the_paper_code_resolve() {
    for alias in ["StrategyQA", "common", "STSA"] {
        assert!(cd_common::datasets::find(alias).is_ok(), "{alias}");
    }
}
