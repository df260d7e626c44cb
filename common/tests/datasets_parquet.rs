//! IMDb in the HF Hub's layout (sharded Parquet, `text` string + `label`
//! int64, as `datasets` writes it) on files the test writes itself with the
//! parquet crate's low-level writer, and the wildcard rule for shard names.

use cd_common::datasets::{
    find_source_files, load_binary, BinaryOptions, Candidate, DataRoot, DatasetError,
};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

const IMDB_PROMPT: &str =
    "According to the movie review, judge whether it is Positive or Negative.";

/// Write `(text, label)` rows as the Hub stores IMDb: optional string and
/// optional int64 columns, snappy pages, `rows_per_group` rows per row group.
/// A `None` label is written as a null.
fn write_parquet(path: &Path, rows: &[(String, Option<i64>)], rows_per_group: usize) {
    let schema = Arc::new(
        parse_message_type(
            "message schema { optional binary text (STRING); optional int64 label; }",
        )
        .unwrap(),
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for group in rows.chunks(rows_per_group) {
        let mut rg = writer.next_row_group().unwrap();
        let texts: Vec<ByteArray> = group
            .iter()
            .map(|(t, _)| ByteArray::from(t.as_str()))
            .collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&texts, Some(&vec![1; group.len()]), None)
            .unwrap();
        col.close().unwrap();
        let labels: Vec<i64> = group.iter().filter_map(|(_, l)| *l).collect();
        let defs: Vec<i16> = group.iter().map(|(_, l)| i16::from(l.is_some())).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&labels, Some(&defs), None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

/// The IMDb test split in miniature: sorted by label, `n` reviews per label.
fn imdb_rows(n: usize) -> Vec<(String, Option<i64>)> {
    (0..2 * n)
        .map(|i| {
            (
                format!("Review {i}.<br /><br />\"Quoted\", yes."),
                Some(i64::from(i >= n)),
            )
        })
        .collect()
}

#[test]
fn imdb_from_hub_parquet_shards_keeps_split_order_and_caps() {
    let dir = tempfile::tempdir().unwrap();
    let rows = imdb_rows(1200);
    // Two shards split mid-class, written in reverse so name order, not
    // creation order, must decide; the train split beside it is ignored.
    let shard = |k: usize| {
        dir.path()
            .join(format!("plain_text/test-0000{k}-of-00002.parquet"))
    };
    write_parquet(&shard(1), &rows[1500..], 300);
    write_parquet(&shard(0), &rows[..1500], 500);
    write_parquet(
        &dir.path().join("plain_text/train-00000-of-00001.parquet"),
        &[("train review".to_string(), Some(1))],
        10,
    );
    let root = DataRoot::Local(dir.path().to_path_buf());
    let d = load_binary("imdb", &root, &BinaryOptions::default()).unwrap();
    assert_eq!(d.class_counts(), [1000, 1000]);
    assert_eq!(
        d.texts[0],
        format!("Review 0.<br /><br />\"Quoted\", yes. {IMDB_PROMPT}")
    );
    assert_eq!(
        d.texts[1000],
        format!("Review 1200.<br /><br />\"Quoted\", yes. {IMDB_PROMPT}")
    );
    // Row indices run on across shards (they seed the noise).
    assert_eq!(d.source_index[1999], 2199);
    assert_eq!(d.texts[1999], format!("{} {IMDB_PROMPT}", rows[2199].0));
    let files: Vec<&str> = d.provenance.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        files,
        [
            "plain_text/test-00000-of-00002.parquet",
            "plain_text/test-00001-of-00002.parquet"
        ]
    );
    assert!(d.provenance.files.iter().all(|f| f.sha256.len() == 64));

    // A user export earlier in the candidate list wins over the Hub layout.
    std::fs::write(
        dir.path().join("imdb_test.jsonl"),
        "{\"text\": \"export\", \"label\": 0}\n{\"text\": \"export 2\", \"label\": 1}\n",
    )
    .unwrap();
    let d = load_binary("imdb", &root, &BinaryOptions::default()).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d.provenance.files[0].path, "imdb_test.jsonl");
}

#[test]
fn parquet_problems_name_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = DataRoot::Local(dir.path().to_path_buf());
    let path = dir.path().join("imdb_test.parquet");
    let expect = |err: DatasetError, line: &str, field: &str| {
        let msg = err.to_string();
        match err {
            DatasetError::Parse {
                file,
                line: l,
                field: f,
                ..
            } => {
                assert!(file.ends_with("imdb_test.parquet"), "{msg}");
                assert_eq!((l.as_str(), f.as_str()), (line, field), "{msg}");
            }
            other => panic!("expected a parse error, got {other}"),
        }
    };
    // A null label in row 3 (0-based), inside the second row group.
    let mut rows = imdb_rows(3);
    rows[3].1 = None;
    write_parquet(&path, &rows, 2);
    expect(
        load_binary("imdb", &root, &BinaryOptions::default()).unwrap_err(),
        "row[3]",
        "label",
    );
    // A label outside the class rule.
    let mut rows = imdb_rows(3);
    rows[4].1 = Some(7);
    write_parquet(&path, &rows, 10);
    expect(
        load_binary("imdb", &root, &BinaryOptions::default()).unwrap_err(),
        "row[4]",
        "label",
    );
    // Not a Parquet file at all.
    std::fs::write(&path, "text,label\nx,0\n").unwrap();
    expect(
        load_binary("imdb", &root, &BinaryOptions::default()).unwrap_err(),
        "(footer)",
        "(file)",
    );
}

#[test]
fn wildcards_select_shards_in_name_order() {
    let c = Candidate::parse("plain_text/test-*.parquet");
    assert!(c.is_pattern());
    assert!(c.matches("plain_text/test-00000-of-00001.parquet"));
    assert!(c.matches("plain_text/test-.parquet"));
    assert!(!c.matches("plain_text/train-00000-of-00001.parquet"));
    assert!(!c.matches("plain_text/test-0.parquet.lock"));
    assert!(!c.matches("other/plain_text/test-0.parquet"));
    assert!(!c.matches("test-0.parquet"));
    let listing: Vec<String> = [
        "plain_text/test-00001-of-00002.parquet",
        "README.md",
        "plain_text/test-00000-of-00002.parquet",
        "plain_text/unsupervised-00000-of-00001.parquet",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        c.select(&listing),
        [
            "plain_text/test-00000-of-00002.parquet",
            "plain_text/test-00001-of-00002.parquet"
        ]
    );
    let flat = Candidate::parse("a*b*c");
    assert_eq!(flat.dir, "");
    assert!(flat.matches("abc") && flat.matches("aXbYc") && !flat.matches("acb"));
    assert!(!Candidate::parse("sarcasm.json").is_pattern());

    // The local rule the loaders apply: first candidate present wins.
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = ["x.csv", "d/p-*.parquet", "y.csv"]
        .map(String::from)
        .to_vec();
    assert_eq!(find_source_files(dir.path(), &files).unwrap(), None);
    std::fs::write(dir.path().join("y.csv"), "").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/p-2.parquet"), "").unwrap();
    std::fs::write(dir.path().join("d/p-1.parquet"), "").unwrap();
    assert_eq!(
        find_source_files(dir.path(), &files).unwrap(),
        Some(vec![
            "d/p-1.parquet".to_string(),
            "d/p-2.parquet".to_string()
        ])
    );
}

#[test]
fn imdb_sample_written_by_pyarrow_reads_as_its_json_twin() {
    // datasets/reference/imdb_hub: written by make_sample.py with pyarrow (the
    // Hub's writer), with the rows beside it as JSON.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/reference/imdb_hub");
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let d = load_binary("imdb", &DataRoot::Local(dir), &BinaryOptions::default()).unwrap();
    assert_eq!(d.len(), expected.len());
    for (i, row) in expected.iter().enumerate() {
        assert_eq!(d.samples[i], row["text"].as_str().unwrap(), "row {i}");
        assert_eq!(
            i64::from(d.labels[i]),
            row["label"].as_i64().unwrap(),
            "row {i}"
        );
        assert_eq!(d.texts[i], format!("{} {IMDB_PROMPT}", d.samples[i]));
    }
    assert_eq!(d.provenance.stats["empty_texts"], 1);
    assert_eq!(
        d.provenance.files[0].path,
        "plain_text/test-00000-of-00001.parquet"
    );
}
