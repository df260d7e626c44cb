//! `cd-worker extract` as a user runs it: the real binary, real files, exit
//! codes, and the output read back by numpy's safetensors loader.

mod engine_support;

use cd_worker::engine::cpu::isa::Isa;
use engine_support::{in_ci, python, tiny_model};
use std::path::Path;
use std::process::{Command, Output};

fn extract(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cd-worker"));
    cmd.arg("extract").args(args).env_remove("HF_HUB_OFFLINE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Nothing but the inputs in `dir`: no output, no temporary file.
fn assert_no_output(dir: &Path, out: &Path) {
    assert!(
        !out.exists(),
        "{} must not exist after a failure",
        out.display()
    );
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("features") && !name.ends_with(".tmp"),
            "left behind: {name}"
        );
    }
}

#[test]
fn bad_input_exits_2_with_file_line_and_field() {
    let Some(model) = tiny_model("llama_gqa_rope3") else {
        return;
    };
    let model = model.display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let out_s = out.display().to_string();
    let cases: &[(&str, &str, &[&str])] = &[
        ("empty.jsonl", "\n\n", &["empty.jsonl", "no records"]),
        (
            "badjson.jsonl",
            "{\"text\": \"ok\", \"label\": 1}\n{\"text\": oops}\n",
            &["badjson.jsonl:2", "not valid JSON"],
        ),
        (
            "nofield.jsonl",
            "{\"text\": \"ok\", \"label\": 1}\n{\"body\": \"x\"}\n",
            &["nofield.jsonl:2", "field `text`", "missing"],
        ),
        (
            "notstring.jsonl",
            "{\"text\": 5}\n",
            &["notstring.jsonl:1", "field `text`", "expected a string"],
        ),
        (
            "badlabel.jsonl",
            "{\"text\": \"a\", \"label\": \"pos\"}\n",
            &["badlabel.jsonl:1", "field `label`", "integer"],
        ),
    ];
    for (name, content, needles) in cases {
        let input = tmp.path().join(name);
        write(&input, content);
        let o = extract(
            &[
                "--model",
                &model,
                "--input",
                &input.display().to_string(),
                "--out",
                &out_s,
                "--label-field",
                "label",
            ],
            &[],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{name}: expected `{n}` in: {err}");
        }
        assert_no_output(tmp.path(), &out);
    }
}

#[test]
fn model_errors_exit_3_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    write(&input, "{\"text\": \"hello\"}\n");
    let out = tmp.path().join("out.safetensors");
    // A directory that is not a model.
    let empty_model = tmp.path().join("not-a-model");
    std::fs::create_dir(&empty_model).unwrap();
    let o = extract(
        &[
            "--model",
            &empty_model.display().to_string(),
            "--input",
            &input.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("config.json"), "{err}");
    assert_no_output(tmp.path(), &out);
    // A GGUF path that does not exist.
    let o = extract(
        &[
            "--model",
            "/nonexistent/m.gguf",
            "--input",
            &input.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("m.gguf"));
    assert_no_output(tmp.path(), &out);
}

/// Whether `python` can import numpy and safetensors; in CI it must.
fn python_with_safetensors() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import numpy, safetensors.numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || !in_ci(),
        "CI: `{}` lacks numpy/safetensors (pip install numpy safetensors)",
        python()
    );
    if !ok {
        eprintln!(
            "skipping the numpy read-back: {} lacks numpy/safetensors",
            python()
        );
    }
    ok
}

#[test]
fn writes_features_numpy_can_read() {
    let Some(model) = tiny_model("gemma3") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    write(
        &input,
        "{\"text\": \"the capital of france is paris .\", \"label\": 1}\n\n\
         {\"text\": \"rome is a city in spain\", \"label\": 0}\n\
         {\"text\": \"yes\", \"label\": true}\n",
    );
    for (dtype, site, layers) in [("f32", "residual", 7), ("f16", "post_attention_norm", 6)] {
        let out = tmp.path().join(format!("feats-{dtype}.safetensors"));
        let o = extract(
            &[
                "--model",
                &model.display().to_string(),
                "--input",
                &input.display().to_string(),
                "--out",
                &out.display().to_string(),
                "--label-field",
                "label",
                "--site",
                site,
                "--pooling",
                "mean",
                "--batch-size",
                "2",
                "--dtype",
                dtype,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("tokens/s"), "{}", stderr(&o));
        if !python_with_safetensors() {
            continue;
        }
        let script = format!(
            r#"
import json, sys
from safetensors import safe_open
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
with safe_open(sys.argv[1], "np") as f:
    meta = f.metadata()
assert t["features"].shape == (3, {layers}, 64), t["features"].shape
assert str(t["features"].dtype) == "{np}", t["features"].dtype
assert t["labels"].tolist() == [1, 0, 1], t["labels"]
assert str(t["token_counts"].dtype) == "int64"
assert t["token_counts"].tolist() == [8, 7, 2], t["token_counts"]
assert meta["site"] == "{site}" and meta["pooling"] == "mean" and meta["precision"] == "32", meta
assert meta["num_layers"] == "{layers}" and meta["dtype"] == "{dtype}" and len(meta["input_sha256"]) == 64, meta
print("ok")
"#,
            np = if dtype == "f32" { "float32" } else { "float16" }
        );
        let py = Command::new(python())
            .args(["-c", &script])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            py.status.success(),
            "numpy read-back failed: {}",
            String::from_utf8_lossy(&py.stderr)
        );
    }
}

#[test]
fn hf_hub_offline_env_is_honoured() {
    let Some(model) = tiny_model("qwen2_bias_tied") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let snap = cache.join("models--tiny-org--qwen/snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("models--tiny-org--qwen/refs")).unwrap();
    std::fs::write(cache.join("models--tiny-org--qwen/refs/main"), "abc123").unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(model.join(f), snap.join(f)).unwrap();
    }
    let input = tmp.path().join("in.jsonl");
    write(&input, "{\"text\": \"hello world\"}\n");
    let out = tmp.path().join("o.safetensors");
    let args = [
        "--model",
        "tiny-org/qwen",
        "--input",
        &input.display().to_string(),
        "--out",
        &out.display().to_string(),
    ];
    // HF_HOME/hub is where the cache lives when no --cache-dir is given.
    let o = extract(
        &args,
        &[
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HOME", &tmp.path().display().to_string()),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.exists());
    // Offline and absent: a model error naming the repo, not a network attempt.
    let args_absent = [
        "--model",
        "tiny-org/absent",
        "--input",
        &input.display().to_string(),
        "--out",
        &tmp.path().join("p.safetensors").display().to_string(),
    ];
    let o = extract(
        &args_absent,
        &[
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HOME", &tmp.path().display().to_string()),
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tiny-org/absent") && stderr(&o).contains("offline"),
        "{}",
        stderr(&o)
    );
}

/// Peak resident memory of every child process this test process has waited for.
fn children_peak_rss_bytes() -> u64 {
    // SAFETY: `usage` is a valid out-pointer for getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage.ru_maxrss as u64 * 1024 // Linux reports KiB
}

#[test]
fn smollm2_extraction_holds_one_copy_of_the_weights() {
    let Some(gguf) = engine_support::smollm2_path() else {
        return;
    };
    // What the f32 weights take: every tensor of the file, 4 bytes an element.
    let mut file = std::fs::File::open(&gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let weights: u64 = content
        .tensor_infos
        .values()
        .map(|i| i.shape.elem_count() as u64 * 4)
        .sum();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("texts.jsonl");
    let texts: String = (0..16)
        .map(|i| format!("{{\"text\": \"text number {i} about a coin that was flipped {i} times\", \"label\": {}}}\n", i % 2))
        .collect();
    write(&input, &texts);
    let out = tmp.path().join("out.safetensors");
    let o = extract(
        &[
            "--model",
            &gguf.display().to_string(),
            "--input",
            &input.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--batch-size",
            "8",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let peak = children_peak_rss_bytes();
    // Beyond the weights: the binary, the tokenizer, the runtime and one
    // batch of activations (a few MiB here). A second copy of the projection
    // weights (the mapping, or the f32 original beside the packed one) would
    // add about 400 MiB.
    let allowance = 192u64 << 20;
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    eprintln!(
        "peak RSS {:.0} MiB = f32 weights {:.0} MiB + {:.0} MiB",
        mib(peak),
        mib(weights),
        mib(peak.saturating_sub(weights))
    );
    assert!(
        peak <= weights + allowance,
        "peak RSS {:.0} MiB exceeds the f32 weights ({:.0} MiB) + {:.0} MiB",
        mib(peak),
        mib(weights),
        mib(allowance)
    );
}

/// The `features` tensor of an output file, as f32 values.
fn read_features(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("features").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Features from the engine's CPU kernels (texts packed end to end without
/// padding, the last block computing only the pooled tokens, the engine's
/// attention and norms) against candle's generic operations on right-padded
/// batches (`CD_CPU_KERNELS=0`), for every tiny architecture (GQA, biases,
/// `1 + w` norms, q/k norms, sliding windows) and every instruction set this
/// CPU runs (`CD_CPU_ISA`): equal within f32 rounding; and the best set
/// under another blocking (`CD_CPU_K_CHUNK`, `CD_CPU_ROW_BLOCK_KIB`):
/// equal bit for bit.
#[test]
fn cpu_kernels_match_candles_generic_padded_path() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("texts.jsonl");
    let texts = [
        "a",
        "The quick brown fox jumps over the lazy dog, twice, and then once more.",
        "Probing where concepts become readable.",
        "one two three four five six seven eight nine ten eleven twelve thirteen",
        "short text",
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"text\": {t:?}, \"label\": {}}}", i % 2))
        .collect();
    write(&input, &(lines.join("\n") + "\n"));
    let names = [
        "llama_gqa_rope3",
        "llama_sharded_tied",
        "mistral_sliding",
        "qwen2_bias_tied",
        "gemma",
        "gemma3",
    ];
    for name in names {
        let Some(model) = tiny_model(name) else {
            return;
        };
        let model = model.to_str().unwrap();
        for (site, pooling) in [("residual", "last"), ("post_attention_norm", "mean")] {
            // candle's generic operations first (the reference), then the
            // engine's kernels for every instruction set this CPU runs.
            let mut settings = vec![vec![("CD_CPU_KERNELS", "0")]];
            for isa in [Isa::Generic, Isa::Avx2, Isa::Avx512] {
                if isa <= Isa::detected() {
                    settings.push(vec![("CD_CPU_KERNELS", "1"), ("CD_CPU_ISA", isa.name())]);
                }
            }
            // The best set again under the smallest blocking (chunks of 4
            // steps along k, one unit of rows per block): the same bits.
            let best = settings.len() - 1;
            let mut blocked = settings[best].clone();
            blocked.extend([("CD_CPU_K_CHUNK", "4"), ("CD_CPU_ROW_BLOCK_KIB", "1")]);
            settings.push(blocked);
            let mut runs = Vec::new();
            for (i, env) in settings.iter().enumerate() {
                let out = tmp.path().join(format!("features-{i}.safetensors"));
                let o = extract(
                    &[
                        "--model",
                        model,
                        "--input",
                        input.to_str().unwrap(),
                        "--site",
                        site,
                        "--pooling",
                        pooling,
                        "--batch-size",
                        "3",
                        "--out",
                        out.to_str().unwrap(),
                    ],
                    env,
                );
                assert!(o.status.success(), "{name} {env:?}: {}", stderr(&o));
                runs.push(read_features(&out));
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&runs[best]),
                bits(&runs[best + 1]),
                "{name} {site} {pooling}: a blocking changed the features"
            );
            let generic = &runs[0];
            let scale = generic.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (ours, env) in runs.iter().zip(&settings).skip(1) {
                assert_eq!(ours.len(), generic.len());
                let worst = ours
                    .iter()
                    .zip(generic)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    worst <= 1e-5 * scale,
                    "{name} {site} {pooling} {env:?}: worst difference {worst:e} against max {scale:e}"
                );
            }
        }
    }
}

/// `CD_CPU_ISA` naming an unknown set, or one this CPU lacks, stops the
/// worker with a configuration error (exit 2) that names the variable,
/// before it reads anything, as does a malformed blocking variable
/// (`CD_CPU_K_CHUNK`, `CD_CPU_ROW_BLOCK_KIB`); a set it has runs.
#[test]
fn an_instruction_set_the_cpu_cannot_run_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never.safetensors");
    let args = [
        "extract",
        "--model",
        "/nonexistent/model",
        "--input",
        "/nonexistent/texts.jsonl",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = |value: &str| {
        Command::new(env!("CARGO_BIN_EXE_cd-worker"))
            .args(args)
            .env("CD_CPU_ISA", value)
            .output()
            .unwrap()
    };
    let o = run("sse9");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "CD_CPU_ISA=\"sse9\" is not one of auto, amx, avx512bf16, avx512, avx2, generic"
        ),
        "{}",
        stderr(&o)
    );
    if Isa::detected() < Isa::Avx512 {
        let o = run("avx512");
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("it supports at most"), "{}", stderr(&o));
    }
    // A blocking variable that is not a valid value stops it the same way.
    for (var, value, expected) in [
        (
            "CD_CPU_K_CHUNK",
            "250",
            "CD_CPU_K_CHUNK=\"250\": expected `off` or a positive multiple of 4",
        ),
        (
            "CD_CPU_ROW_BLOCK_KIB",
            "4M",
            "CD_CPU_ROW_BLOCK_KIB=\"4M\": expected a positive whole number of KiB",
        ),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_cd-worker"))
            .args(args)
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(expected), "{}", stderr(&o));
    }
    // A set the CPU has gets past the check to the next error: the input.
    let o = run("generic");
    assert!(stderr(&o).contains("cannot read input"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("CD_CPU_ISA"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// `cd-bench matmul --blockings` times each blocking on each shape and
/// prints one row per shape: a GFLOP/s column per blocking and a ratio to
/// the first per other blocking (it also checks their bits agree); a
/// malformed blocking is refused with the reason.
#[test]
fn cd_bench_compares_blockings_side_by_side() {
    if Isa::detected() < Isa::Avx2 {
        eprintln!("skipped: no packed kernel on this CPU");
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_cd-bench"))
        .args([
            "matmul",
            "--shapes",
            "50,40,300;7,17,901",
            "--seconds",
            "0.06",
            "--rounds",
            "2",
        ])
        .args([
            "--blockings",
            "default;k_chunk=8;row_block_kib=1,k_chunk=off",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "m",
            "n",
            "k",
            "default GFLOP/s",
            "k_chunk=8 GFLOP/s",
            "row_block_kib=1 GFLOP/s",
            "k_chunk=8 / default",
            "row_block_kib=1 / default"
        ],
        "{table}"
    );
    assert_eq!(rows.len(), 4, "{table}");
    for (row, shape) in rows[2..]
        .iter()
        .zip([["50", "40", "300"], ["7", "17", "901"]])
    {
        assert_eq!(row[..3], shape, "{table}");
        for v in &row[3..] {
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("`{v}` in {table}"));
            assert!(v > 0.0 && v.is_finite(), "{table}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_cd-bench"))
        .args([
            "matmul",
            "--shapes",
            "8,8,8",
            "--blockings",
            "default;kc=256",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("`kc=256` in `kc=256`: expected row_block_kib=N or k_chunk=N|off"),
        "{}",
        stderr(&bad)
    );
}

/// The commands a `--help` page lists under `Commands:`.
fn listed_commands(bin: &str) -> Vec<String> {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help: {}", out.status);
    let help = String::from_utf8(out.stdout).unwrap();
    help.split("Commands:")
        .nth(1)
        .unwrap_or_else(|| panic!("{bin} --help has no Commands section:\n{help}"))
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_worker_lists_only_user_commands_and_benchmarks_live_in_cd_bench() {
    assert_eq!(
        listed_commands(env!("CARGO_BIN_EXE_cd-worker")),
        ["extract", "probe", "datasets", "cell", "help"]
    );
    let old = Command::new(env!("CARGO_BIN_EXE_cd-worker"))
        .arg("bench-random")
        .output()
        .unwrap();
    assert_eq!(
        old.status.code(),
        Some(2),
        "a benchmark subcommand must not parse"
    );
    assert_eq!(
        listed_commands(env!("CARGO_BIN_EXE_cd-bench")),
        ["random", "matmul", "help"]
    );
    // The benchmark binary runs: the device check on a tiny random model.
    let check = Command::new(env!("CARGO_BIN_EXE_cd-bench"))
        .args(["random", "--check", "--config", "tiny", "--gpus", "cpu"])
        .args(["--precision", "16", "--seq", "24", "--batch", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "cd-bench random --check: {}\n{}",
        check.status,
        String::from_utf8_lossy(&check.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["mode"], "check");
    assert_eq!(result["layers"].as_array().unwrap().len(), 5);
    assert!(result["worst_cos"].as_f64().unwrap() > 0.999, "{result}");
}
