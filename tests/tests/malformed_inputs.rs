//! The malformed-input battery: generated broken model files (GGUF,
//! safetensors, `config.json`, `tokenizer.json`, shard indexes), texts
//! (JSONL), dataset files and grids, each run against the real binaries.
//!
//! Every case must end in a clear error: the documented exit code, a message
//! naming the file (and the field where there is one), no panic, no abort,
//! no hang, and no output file left behind. `docs/reliability.md` records
//! the count of cases.

use cd_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Exit code of `cd-worker extract` for a model it cannot load.
const MODEL_ERROR: i32 = 3;
/// Exit code of `cd-worker extract` for unusable input or flags.
const INPUT_ERROR: i32 = 2;
/// No case may take longer than this (a hang is a failure).
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// One broken input and what must be said about it.
struct Case {
    name: String,
    code: i32,
    /// Strings the error output must contain (file, field).
    says: Vec<String>,
}

/// Run `cmd` with a deadline; returns (exit code, stderr+stdout).
fn run_bounded(mut cmd: Command) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(st) => (st.code(), text),
        None => (None, format!("HUNG for {CASE_TIMEOUT:?}\n{text}")),
    }
}

/// Check one outcome against its case; returns a failure description.
fn judge(case: &Case, code: Option<i32>, text: &str, leftover: Option<&Path>) -> Option<String> {
    let mut wrong = Vec::new();
    if code != Some(case.code) {
        wrong.push(format!("exit {code:?}, expected {}", case.code));
    }
    for s in &case.says {
        if !text.contains(s.as_str()) {
            wrong.push(format!("does not say `{s}`"));
        }
    }
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "SIGSEGV",
        "core dumped",
        "HUNG",
    ] {
        if text.contains(bad) {
            wrong.push(format!("output shows `{bad}`"));
        }
    }
    if let Some(p) = leftover.filter(|p| p.exists()) {
        wrong.push(format!("left {} behind", p.display()));
    }
    (!wrong.is_empty()).then(|| format!("{}: {}\n{}", case.name, wrong.join("; "), text))
}

/// Three short texts to extract.
fn texts(dir: &Path) -> PathBuf {
    let p = dir.join("texts.jsonl");
    std::fs::write(
        &p,
        "{\"text\": \"The sky is blue.\", \"label\": 1}\n{\"text\": \"Grass is red.\", \"label\": 0}\n",
    )
    .unwrap();
    p
}

/// `cd-worker extract` of `model` on `input`; judged against `case`.
fn extract(case: &Case, model: &Path, input: &Path, extra: &[&str]) -> Option<String> {
    let out = input.with_file_name(format!("{}.safetensors", case.name));
    let mut cmd = Command::new(&bins().worker);
    cmd.arg("extract")
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(&out)
        .args(extra);
    let (code, text) = run_bounded(cmd);
    judge(case, code, &text, Some(&out))
}

fn case(name: &str, code: i32, says: &[&str]) -> Case {
    Case {
        name: name.into(),
        code,
        says: says.iter().map(|s| s.to_string()).collect(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Copy of a tiny model directory with `config.json` edited by `edit`.
fn with_config(src: &Path, dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let d = dir.join(name);
    copy_dir(src, &d);
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    d
}

#[test]
fn broken_hf_model_directories_are_refused_with_file_and_field() {
    let Some(models) = tiny_models() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = texts(dir.path());
    let llama = models.join("llama_gqa_rope3");
    let mut failures = Vec::new();
    let mut n = 0;
    let mut check = |c: Case, model: PathBuf| {
        n += 1;
        failures.extend(extract(&c, &model, &input, &[]));
    };
    // Absurd or impossible config values.
    for (field, value, says) in [
        (
            "num_hidden_layers",
            serde_json::json!(1e15),
            "num_hidden_layers",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "num_hidden_layers",
        ),
        (
            "num_attention_heads",
            serde_json::json!(0),
            "num_attention_heads",
        ),
        (
            "num_key_value_heads",
            serde_json::json!(3),
            "num_key_value_heads",
        ),
        ("hidden_size", serde_json::json!(0), "hidden_size"),
        ("hidden_size", serde_json::json!(65), "hidden_size"),
        ("vocab_size", serde_json::json!(0), "vocab_size"),
        (
            "intermediate_size",
            serde_json::json!(-4),
            "intermediate_size",
        ),
        ("rms_norm_eps", serde_json::json!("small"), "rms_norm_eps"),
        (
            "max_position_embeddings",
            serde_json::json!(1e300),
            "max_position_embeddings",
        ),
    ] {
        let name = format!("config-{field}-{value}");
        let m = with_config(&llama, dir.path(), &name, |c| c[field] = value.clone());
        check(case(&name, MODEL_ERROR, &["config.json", says]), m);
    }
    // config.json that is not JSON, or absent.
    let m = with_config(&llama, dir.path(), "config-not-json", |_| {});
    std::fs::write(m.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    check(case("config-not-json", MODEL_ERROR, &["config.json"]), m);
    let m = with_config(&llama, dir.path(), "config-missing", |_| {});
    std::fs::remove_file(m.join("config.json")).unwrap();
    check(case("config-missing", MODEL_ERROR, &["config.json"]), m);
    // Weights: truncated, a header that claims more than the file holds,
    // garbage, absent.
    let weights = std::fs::read(llama.join("model.safetensors")).unwrap();
    for (name, bytes) in [
        ("weights-truncated", weights[..weights.len() / 2].to_vec()),
        ("weights-huge-header", {
            let mut w = weights.clone();
            w[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            w
        }),
        ("weights-garbage", b"not a safetensors file at all".to_vec()),
        ("weights-empty", Vec::new()),
    ] {
        let m = with_config(&llama, dir.path(), name, |_| {});
        std::fs::write(m.join("model.safetensors"), bytes).unwrap();
        check(case(name, MODEL_ERROR, &["model.safetensors"]), m);
    }
    let m = with_config(&llama, dir.path(), "weights-missing", |_| {});
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    check(case("weights-missing", MODEL_ERROR, &["safetensors"]), m);
    // A tokenizer that is not one.
    let m = with_config(&llama, dir.path(), "tokenizer-garbage", |_| {});
    std::fs::write(m.join("tokenizer.json"), "{\"model\": 7}").unwrap();
    check(
        case("tokenizer-garbage", MODEL_ERROR, &["tokenizer.json"]),
        m,
    );
    // Shard indexes pointing outside the model directory or at nothing.
    let sharded = models.join("llama_sharded_tied");
    for (name, shard, says) in [
        ("index-escapes-dir", "../../../../etc/passwd", "outside"),
        ("index-absolute", "/etc/passwd", "outside"),
        (
            "index-missing-shard",
            "model-00009-of-00009.safetensors",
            "model-00009-of-00009",
        ),
    ] {
        let m = dir.path().join(name);
        copy_dir(&sharded, &m);
        let p = m.join("model.safetensors.index.json");
        let mut idx: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let first = idx["weight_map"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        idx["weight_map"][&first] = Value::String(shard.into());
        std::fs::write(&p, idx.to_string()).unwrap();
        check(
            case(name, MODEL_ERROR, &["model.safetensors.index.json", says]),
            m,
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases were not refused cleanly:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(n >= 21, "the battery shrank: {n} cases");
}

/// Offsets of a GGUF file's metadata values, by key.
fn gguf_value_offsets(bytes: &[u8]) -> Vec<(String, u32, usize)> {
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..4], b"GGUF");
    let n_kv = u64_at(16);
    let mut o = 24;
    let mut out = Vec::new();
    fn skip(bytes: &[u8], ty: u32, o: usize) -> usize {
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
        match ty {
            0 | 1 | 7 => o + 1,
            2 | 3 => o + 2,
            4..=6 => o + 4,
            10..=12 => o + 8,
            8 => o + 8 + u64_at(o),
            9 => {
                let inner = u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
                let n = u64_at(o + 4);
                let mut p = o + 12;
                for _ in 0..n {
                    p = skip(bytes, inner, p);
                }
                p
            }
            _ => panic!("unknown GGUF type {ty}"),
        }
    }
    for _ in 0..n_kv {
        let len = u64_at(o);
        let key = String::from_utf8(bytes[o + 8..o + 8 + len].to_vec()).unwrap();
        let ty = u32_at(o + 8 + len);
        let value = o + 8 + len + 4;
        out.push((key, ty, value));
        o = skip(bytes, ty, value);
    }
    out
}

#[test]
fn broken_gguf_files_are_refused_with_file_and_field() {
    let (Some(gguf), Some(_)) = (smollm2_gguf(), tiny_models()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = texts(dir.path());
    let original = std::fs::read(&gguf).unwrap();
    let kv = gguf_value_offsets(&original);
    let at = |key: &str| {
        kv.iter()
            .find(|(k, _, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in the GGUF"))
            .clone()
    };
    let mut cases: Vec<(Case, Vec<u8>)> = Vec::new();
    let with_u32 = |key: &str, v: u32| {
        let (_, ty, o) = at(key);
        assert_eq!(ty, 4, "{key} is a u32");
        let mut b = original.clone();
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    for (key, v) in [
        ("llama.attention.head_count", 0),
        ("llama.attention.head_count_kv", 0),
        ("llama.attention.head_count_kv", 7),
        ("llama.embedding_length", 0),
        ("llama.block_count", u32::MAX),
        ("llama.block_count", 0),
        ("llama.vocab_size", 0),
        ("llama.rope.dimension_count", 0),
    ] {
        cases.push((
            case(
                &format!("gguf-{key}-{v}"),
                MODEL_ERROR,
                &["model.gguf", key],
            ),
            with_u32(key, v),
        ));
    }
    // `general.alignment` = 0: the key `general.file_type` has the same
    // length and type, so it is renamed in place.
    {
        let (_, _, o) = at("general.file_type");
        let mut b = original.clone();
        let key_at = o - 4 - "general.file_type".len();
        b[key_at..key_at + 17].copy_from_slice(b"general.alignment");
        b[o..o + 4].copy_from_slice(&0u32.to_le_bytes());
        cases.push((
            case(
                "gguf-alignment-0",
                MODEL_ERROR,
                &["model.gguf", "general.alignment"],
            ),
            b,
        ));
    }
    // An array or string length far beyond the file.
    {
        let (_, _, o) = at("tokenizer.ggml.tokens");
        let mut b = original.clone();
        b[o + 4..o + 12].copy_from_slice(&(1u64 << 61).to_le_bytes());
        cases.push((
            case(
                "gguf-huge-array",
                MODEL_ERROR,
                &["model.gguf", "tokenizer.ggml.tokens"],
            ),
            b,
        ));
        let (_, _, o) = at("general.name");
        let mut b = original.clone();
        b[o..o + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        cases.push((case("gguf-huge-string", MODEL_ERROR, &["model.gguf"]), b));
    }
    // Counts in the header beyond the file.
    for (name, offset) in [("gguf-huge-tensor-count", 8), ("gguf-huge-kv-count", 16)] {
        let mut b = original.clone();
        b[offset..offset + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        cases.push((case(name, MODEL_ERROR, &["model.gguf"]), b));
    }
    cases.push((
        case("gguf-truncated", MODEL_ERROR, &["model.gguf"]),
        original[..original.len() / 3].to_vec(),
    ));
    cases.push((
        case("gguf-header-only", MODEL_ERROR, &["model.gguf"]),
        original[..64].to_vec(),
    ));
    cases.push((case("gguf-bad-magic", MODEL_ERROR, &["model.gguf"]), {
        let mut b = original.clone();
        b[..4].copy_from_slice(b"GGUX");
        b
    }));
    cases.push((case("gguf-empty", MODEL_ERROR, &["model.gguf"]), Vec::new()));
    let n = cases.len();
    let mut failures = Vec::new();
    for (c, bytes) in cases {
        let d = dir.path().join(&c.name);
        std::fs::create_dir_all(&d).unwrap();
        let model = d.join("model.gguf");
        std::fs::write(&model, bytes).unwrap();
        failures.extend(extract(&c, &model, &input, &[]));
        std::fs::remove_file(&model).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases were not refused cleanly:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(n >= 17, "the battery shrank: {n} cases");
}

#[test]
fn broken_texts_are_refused_with_line_and_field() {
    let Some(models) = tiny_models() else { return };
    let dir = tempfile::tempdir().unwrap();
    let llama = models.join("llama_gqa_rope3");
    let ok = "{\"text\": \"fine\", \"label\": 1}\n";
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "jsonl-bad-json",
            format!("{ok}{ok}{{\"text\": \"x\"\n").into(),
            vec!["texts.jsonl:3"],
        ),
        (
            "jsonl-no-text",
            format!("{ok}{{\"body\": \"x\"}}\n").into(),
            vec!["texts.jsonl:2", "text"],
        ),
        (
            "jsonl-text-not-string",
            "{\"text\": 5}\n".into(),
            vec!["texts.jsonl:1", "text"],
        ),
        ("jsonl-empty", Vec::new(), vec![]),
        (
            "jsonl-empty-text",
            format!("{ok}{{\"text\": \"\"}}\n").into(),
            vec!["texts.jsonl:2"],
        ),
        (
            "jsonl-label-not-int",
            format!("{ok}{{\"text\": \"x\", \"label\": \"yes\"}}\n").into(),
            vec!["texts.jsonl:2", "label"],
        ),
        (
            "jsonl-not-utf8",
            b"{\"text\": \"\xff\xfe\"}\n".to_vec(),
            vec!["not UTF-8"],
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, body, says) in cases {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let input = d.join("texts.jsonl");
        std::fs::write(&input, body).unwrap();
        let mut says: Vec<&str> = says;
        says.push("texts.jsonl");
        let c = case(name, INPUT_ERROR, &says);
        failures.extend(extract(&c, &llama, &input, &["--label-field", "label"]));
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases were not refused cleanly:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn broken_grids_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"version = 1
sweep = "s"
data_root = "/data"
[storage]
url = "file:///tmp/unused"
[[models]]
name = "m"
size_b = 0.1
source = { kind = "dir", path = "/models/m" }
[axes]
datasets = ["coinflip_gen/10"]
precisions = ["32"]
"#;
    let cases: Vec<(&str, String, &str)> = vec![
        ("grid-not-toml", "version = \n".into(), "version"),
        ("grid-unknown-field", good.replace("sweep = \"s\"", "sweep = \"s\"\nsweeep = 1"), "sweeep"),
        ("grid-version", good.replace("version = 1", "version = 99"), "version"),
        ("grid-empty-models", good.replace("[[models]]\nname = \"m\"\nsize_b = 0.1\nsource = { kind = \"dir\", path = \"/models/m\" }\n", ""), "models"),
        ("grid-bad-precision", good.replace("[\"32\"]", "[\"31\"]"), "precisions"),
        ("grid-bad-dataset", good.replace("coinflip_gen/10", "no_such_set"), "datasets"),
        ("grid-sweep-name", good.replace("sweep = \"s\"", "sweep = \"../up\""), "sweep"),
        ("grid-size-negative", good.replace("size_b = 0.1", "size_b = -1.0"), "size_b"),
        ("grid-source-kind", good.replace("kind = \"dir\"", "kind = \"ftp\""), "kind"),
        ("grid-empty", String::new(), "version"),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, text, field) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(&bins().coordinator);
        cmd.arg("validate").arg("--grid").arg(&path);
        let (code, out) = run_bounded(cmd);
        let c = case(name, cd_proto::exit::coordinator::CONFIG, &[field, name]);
        failures.extend(judge(&c, code, &out, None));
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases were not refused cleanly:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn broken_dataset_files_are_refused_with_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let header = "statement,label,city,country,correct_country\n";
    let good = "The city of Paris is in France.,1,Paris,France,France\n";
    let cases: Vec<(&str, &str, String, Vec<&str>)> = vec![
        (
            "cities-bad-label",
            "cities.csv",
            format!("{header}{good}The city of X is in Y.,7,X,Y,Y\n"),
            vec!["cities.csv", "3", "label"],
        ),
        (
            "cities-missing-column",
            "cities.csv",
            "statement,city\nThe city of X is in Y.,X\n".into(),
            vec!["cities.csv", "label"],
        ),
        (
            "cities-ragged-row",
            "cities.csv",
            format!("{header}{good}only one field\n"),
            vec!["cities.csv", "3"],
        ),
        (
            "cities-empty",
            "cities.csv",
            String::new(),
            vec!["cities.csv"],
        ),
        (
            "cities-not-utf8",
            "cities.csv",
            format!("{header}The city of \u{fffd} is in Y.,1,X,Y,Y\n").replace('\u{fffd}', "\u{0}"),
            vec!["cities.csv"],
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, file, body, says) in cases {
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        let mut bytes = body.into_bytes();
        if name.ends_with("not-utf8") {
            for b in bytes.iter_mut().filter(|b| **b == 0) {
                *b = 0xff;
            }
        }
        std::fs::write(root.join(file), bytes).unwrap();
        let mut cmd = Command::new(&bins().worker);
        cmd.args(["datasets", "show", "cities", "--data-root"])
            .arg(&root);
        let (code, out) = run_bounded(cmd);
        let c = case(name, INPUT_ERROR, &says);
        failures.extend(judge(&c, code, &out, None));
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases were not refused cleanly:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
