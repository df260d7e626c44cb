//! User-supplied files (IMDb, Sarcasm) on files the test writes itself, and
//! the refusals: malformed files, one class, unknown names, remote roots.

use cd_common::datasets::{
    load_binary, BinaryOptions, DataRoot, DatasetError, NoiseKind, PromptMode,
};
use std::path::Path;

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn opts() -> BinaryOptions {
    BinaryOptions::default()
}

const SARCASM_PROMPT: &str = "Task: Detect sarcasm, help me identify whether this sentence is sarcastic.\nFirst, we need to understand what sarcasm is. Sarcasm is a form of verbal irony, \nwhere the intended meaning of the words is the opposite of the literal meaning. \nIn other words, the speaker is saying one thing but meaning the opposite. ";
const SARCASM_COT: &str = "Think carefully according to the sentence. Is there any sarcasm in this sentence? Please answer Yes or No.";

#[test]
fn sarcasm_jsonl_first_3000_per_class_and_glued_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for i in 0..3100 {
        s.push_str(&format!(
            "{{\"article_link\": \"https://x/{i}\", \"headline\": \"headline {i}\", \"is_sarcastic\": {}}}\n",
            i % 2
        ));
    }
    write(dir.path(), "sarcasm.json", &s);
    let root = DataRoot::Local(dir.path().to_path_buf());
    // 1550 of each: no cap reached.
    let d = load_binary("sarcasm", &root, &opts()).unwrap();
    assert_eq!(d.class_counts(), [1550, 1550]);
    assert_eq!(
        d.class_names,
        ["sarcastic".to_string(), "not_sarcastic".to_string()]
    );
    assert_eq!(
        d.texts[0],
        format!("{SARCASM_PROMPT}headline 1 {SARCASM_COT}")
    );
    assert_eq!(
        d.texts[1550],
        format!("{SARCASM_PROMPT}headline 0 {SARCASM_COT}")
    );
    let legacy = load_binary(
        "sarcasm",
        &root,
        &BinaryOptions {
            prompt_mode: PromptMode::CdLegacy,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(
        legacy.texts[0],
        format!("According to the sentence, judge the emotion is Positive or Negative.headline 1 {SARCASM_COT}")
    );
    // The cap: 7000 rows give 3500 per class, of which the first 3000 are kept.
    let mut s = String::new();
    for i in 0..7000 {
        s.push_str(&format!(
            "{{\"headline\": \"h{i}\", \"is_sarcastic\": {}}}\n",
            i % 2
        ));
    }
    write(dir.path(), "sarcasm.json", &s);
    let d = load_binary("sarcasm", &root, &opts()).unwrap();
    assert_eq!(d.class_counts(), [3000, 3000]);
    assert!(d.texts[2999].contains("h5999 "), "file order kept");
}

const IMDB_PROMPT: &str =
    "According to the movie review, judge whether it is Positive or Negative.";

#[test]
fn imdb_from_jsonl_and_csv_exports() {
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::Local(dir.path().to_path_buf());
    let mut jsonl = String::new();
    for i in 0..2400 {
        let label = usize::from(i >= 1200); // the HF test split is sorted by label
        jsonl.push_str(&serde_json::json!({"text": format!("Review {i}.<br /><br />\"Quoted\", yes."), "label": label}).to_string());
        jsonl.push('\n');
    }
    write(dir.path(), "imdb_test.jsonl", &jsonl);
    let d = load_binary("imdb", &root, &opts()).unwrap();
    assert_eq!(d.class_counts(), [1000, 1000]);
    assert_eq!(
        d.texts[0],
        format!("Review 0.<br /><br />\"Quoted\", yes. {IMDB_PROMPT}")
    );
    assert_eq!(
        d.texts[1000],
        format!("Review 1200.<br /><br />\"Quoted\", yes. {IMDB_PROMPT}")
    );
    assert_eq!(d.provenance.files[0].path, "imdb_test.jsonl");
    assert_eq!(d.provenance.files[0].matches_paper_file, None);

    std::fs::remove_file(dir.path().join("imdb_test.jsonl")).unwrap();
    let mut csv = String::from("text,label\n");
    csv.push_str("\"Multi-line\nreview, with \"\"quotes\"\"\",0\n");
    csv.push_str("Great film,1\n");
    write(dir.path(), "imdb/test.csv", &csv);
    let d = load_binary("imdb", &root, &opts()).unwrap();
    assert_eq!(
        d.texts,
        [
            format!("Multi-line\nreview, with \"quotes\" {IMDB_PROMPT}"),
            format!("Great film {IMDB_PROMPT}"),
        ]
    );
}

#[test]
fn missing_user_file_says_where_it_looked_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_binary("imdb", &DataRoot::Local(dir.path().to_path_buf()), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DatasetError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("imdb_test.jsonl") && msg.contains("stanfordnlp/imdb"),
        "{msg}"
    );
}

fn expect_parse(err: DatasetError, file: &str, line: &str, field: &str) {
    let msg = err.to_string();
    match err {
        DatasetError::Parse {
            file: f,
            line: l,
            field: fl,
            ..
        } => {
            assert!(f.ends_with(file), "{msg}");
            assert_eq!(l, line, "{msg}");
            assert_eq!(fl, field, "{msg}");
        }
        other => panic!("expected a parse error, got {other}"),
    }
}

#[test]
fn malformed_files_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::Local(dir.path().to_path_buf());
    // A label outside the class rule on line 4.
    write(
        dir.path(),
        "cities.csv",
        "statement,label,city,country,correct_country\nA.,1,X,Y,Y\nB.,0,X,Z,Y\nC.,maybe,Q,Y,Y\n",
    );
    expect_parse(
        load_binary("cities", &root, &opts()).unwrap_err(),
        "cities.csv",
        "line 4",
        "label",
    );
    // A missing column.
    write(dir.path(), "cities.csv", "statement,truth,city\nA.,1,X\n");
    expect_parse(
        load_binary("cities", &root, &opts()).unwrap_err(),
        "cities.csv",
        "line 1",
        "label",
    );
    // A short record.
    write(
        dir.path(),
        "cities.csv",
        "statement,label,city,country,correct_country\nA.,1,X,Y,Y\nB.,0\n",
    );
    expect_parse(
        load_binary("cities", &root, &opts()).unwrap_err(),
        "cities.csv",
        "line 3",
        "(record)",
    );
    // JSON Lines: broken JSON on line 2, then a missing field on line 3.
    write(
        dir.path(),
        "sarcasm.json",
        "{\"headline\": \"a\", \"is_sarcastic\": 1}\n{\"headline\": \n",
    );
    expect_parse(
        load_binary("sarcasm", &root, &opts()).unwrap_err(),
        "sarcasm.json",
        "line 2",
        "(record)",
    );
    write(dir.path(), "sarcasm.json", "{\"headline\": \"a\", \"is_sarcastic\": 1}\n{\"headline\": \"b\", \"is_sarcastic\": 0}\n{\"is_sarcastic\": 0}\n");
    expect_parse(
        load_binary("sarcasm", &root, &opts()).unwrap_err(),
        "sarcasm.json",
        "line 3",
        "headline",
    );
    // STSA lines without a sentence, and with a non-integer label.
    write(
        dir.path(),
        "stsa.binary.train",
        "1 good film\n0 bad film\n1\n",
    );
    expect_parse(
        load_binary("stsa", &root, &opts()).unwrap_err(),
        "stsa.binary.train",
        "line 3",
        "sentence",
    );
    write(dir.path(), "stsa.binary.train", "1 good film\nx bad film\n");
    expect_parse(
        load_binary("stsa", &root, &opts()).unwrap_err(),
        "stsa.binary.train",
        "line 2",
        "label",
    );
    // StrategyQA: an example without a verdict.
    write(
        dir.path(),
        "StrategyQA_task.json",
        r#"{"examples": [{"input": "Q?", "target": "Yes. x", "target_scores": {"Yes": 1, "No": 0}}, {"input": "R?", "target": "x", "target_scores": {"Yes": 0, "No": 0}}]}"#,
    );
    expect_parse(
        load_binary("strategyqa", &root, &opts()).unwrap_err(),
        "StrategyQA_task.json",
        "examples[1]",
        "target_scores",
    );
    // Invalid UTF-8 on line 2.
    std::fs::write(
        dir.path().join("hateeval.tsv"),
        b"id\ttext\tHS\tTR\tAG\n1\tbad \xff byte\t1\t0\t0\n",
    )
    .unwrap();
    expect_parse(
        load_binary("hateeval", &root, &opts()).unwrap_err(),
        "hateeval.tsv",
        "line 2",
        "(file)",
    );
}

#[test]
fn one_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "hateeval.tsv",
        "id\ttext\tHS\tTR\tAG\n1\thate\t1\t0\t0\n2\tmore\t1\t1\t0\n",
    );
    let err = load_binary(
        "hateeval",
        &DataRoot::Local(dir.path().to_path_buf()),
        &opts(),
    )
    .unwrap_err();
    assert!(
        matches!(err, DatasetError::OneClass { class: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not_hate"), "{err}");
}

#[test]
fn names_modes_noise_and_roots_are_checked() {
    let root = DataRoot::Local("/nonexistent".into());
    let err = load_binary("no_such_dataset", &root, &opts()).unwrap_err();
    assert!(
        err.to_string().contains("cities"),
        "lists the known datasets: {err}"
    );
    assert!(matches!(
        load_binary("mps_cal", &root, &opts()),
        Err(DatasetError::WrongKind { .. })
    ));
    assert!(matches!(
        load_binary("cities/3", &root, &opts()),
        Err(DatasetError::BadOption { .. })
    ));
    let err = PromptMode::parse("legacy").unwrap_err().to_string();
    assert!(err.contains("cd-legacy"), "{err}");
    assert!(NoiseKind::parse("noise")
        .unwrap_err()
        .to_string()
        .contains("prefix-aaa-bbb"));
    assert!(BinaryOptions::from_spec("paper", "typos:0.05", 3).is_ok());

    assert_eq!(
        DataRoot::parse("data/raw").unwrap(),
        DataRoot::Local("data/raw".into())
    );
    assert_eq!(
        DataRoot::parse("file:///srv/data").unwrap(),
        DataRoot::Local("/srv/data".into())
    );
    let hub = DataRoot::parse("hf://datasets/stanfordnlp/imdb@main").unwrap();
    assert_eq!(
        hub,
        DataRoot::HfHub {
            repo: "stanfordnlp/imdb".into(),
            revision: Some("main".into())
        }
    );
    assert_eq!(hub.to_string(), "hf://datasets/stanfordnlp/imdb@main");
    assert!(DataRoot::parse("hf://datasets/imdb").is_err());
    let s3 = DataRoot::parse("s3://bucket/cd").unwrap();
    assert!(matches!(s3, DataRoot::ObjectStore(_)));
    let err = load_binary("cities", &s3, &opts()).unwrap_err();
    assert!(matches!(err, DatasetError::RemoteRoot { .. }), "{err}");
}

#[test]
fn every_manifest_in_the_folder_is_registered_and_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    let mut names: Vec<String> = cd_common::datasets::registry()
        .iter()
        .map(|m| format!("{}.toml", m.name))
        .collect();
    names.sort();
    assert_eq!(
        files, names,
        "each datasets/*.toml is embedded, named after its file"
    );
    for f in &files {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        cd_common::datasets::manifest::parse_manifest(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let bad = "name = \"x\"\ntitle = \"x\"\nkind = \"binary\"\ndescription = \"x\"\nsurprise = 1\n";
    assert!(cd_common::datasets::manifest::parse_manifest(bad)
        .unwrap_err()
        .contains("surprise"));
}
