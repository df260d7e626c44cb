//! `cd-worker datasets`: list the registered datasets and show exactly what a
//! task would feed the model, prompt included, before any GPU time is spent.

use crate::data_fetch::{self, FetchOptions};
use anyhow::Result;
use cd_common::datasets::{
    self, BinaryOptions, DataRoot, DatasetKind, DatasetProvenance, McOptions, NoiseKind, PromptMode,
};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Subcommands of `cd-worker datasets`.
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// List the registered datasets.
    List,
    /// Load a dataset and print the first model inputs of each class (or the
    /// first multiple-choice items) exactly as a task would build them.
    Show(ShowArgs),
}

/// Arguments of `cd-worker datasets show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Dataset name (see `datasets list`), e.g. `cities`, `coinflip_gen/200`, `calculation/int/1-2/add`.
    pub name: String,
    /// Examples to print per class (binary) or items (multiple choice).
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Where the raw files are: a directory, an object-store URL
    /// (`s3://bucket/prefix[?endpoint=…]`, `file://…`) or an HF Hub dataset
    /// (`hf://datasets/<owner>/<name>[@revision]`). Remote files are copied to
    /// the data cache first.
    #[arg(long, env = "CD_DATA_ROOT", default_value = ".")]
    pub data_root: String,
    /// Where copies of remote files go (default: `CD_DATA_CACHE`, else
    /// `~/.cache/concept-depth/data`).
    #[arg(long)]
    pub data_cache: Option<PathBuf>,
    /// Read Hub datasets from the Hub cache only (as `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    pub offline: bool,
    /// `paper` (each dataset's own prompt) or `cd-legacy` (the released code's single prompt).
    #[arg(long, default_value = "paper")]
    pub prompt_mode: String,
    /// `none`, `prefix-aaa-bbb` or `typos:RATE`.
    #[arg(long, default_value = "none")]
    pub noise: String,
    /// Seed for noise and generated datasets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A `tokenizer.json`: print token-length statistics of all model inputs.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Print each input as a JSON string (newlines and trailing spaces visible).
    #[arg(long)]
    pub escape: bool,
}

/// Run the command. Returns the process exit code.
pub fn run(cmd: DatasetsCommand) -> Result<i32> {
    match cmd {
        DatasetsCommand::List => list(),
        DatasetsCommand::Show(args) => show(&args)?,
    }
    Ok(0)
}

fn list() {
    println!(
        "{:<14} {:<16} {:<24} {:<22} files",
        "name", "kind", "title", "classes (paper counts)"
    );
    for m in datasets::registry() {
        let kind = match m.kind {
            DatasetKind::Binary => "binary",
            DatasetKind::MultipleChoice => "multiple-choice",
        };
        let classes = m
            .classes
            .as_ref()
            .map_or_else(String::new, |c| match c.paper_counts {
                Some([a, b]) => format!("{} {a} / {} {b}", c.names[0], c.names[1]),
                None => format!("{} / {}", c.names[0], c.names[1]),
            });
        let files = match (&m.source, &m.generator) {
            (Some(s), _) => s.files[0].clone(),
            (None, Some(g)) => format!("(generated: {:?})", g.kind).to_lowercase(),
            _ => String::new(),
        };
        println!(
            "{:<14} {:<16} {:<24} {:<22} {files}",
            m.name, kind, m.title, classes
        );
    }
}

fn print_text(text: &str, escape: bool) {
    if escape {
        println!(
            "{}",
            serde_json::to_string(text).expect("strings serialize")
        );
    } else {
        println!("{text}");
    }
}

fn print_provenance(p: &DatasetProvenance) {
    for f in &p.files {
        let paper = match f.matches_paper_file {
            Some(true) => " (the paper's file)",
            Some(false) => " (DIFFERS from the paper's file)",
            None => "",
        };
        println!(
            "file: {}  sha256 {}  {} bytes{paper}",
            f.path, f.sha256, f.bytes
        );
    }
    if let Some(g) = &p.generator {
        println!("generator: {g}");
    }
    let counts: Vec<String> = p.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("counts: {}", counts.join(" "));
    if let Some(pos) = &p.positive_class {
        println!("positive class (for F1): {pos}");
    }
    let stats: Vec<String> = p.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("checks: {}", stats.join(" "));
}

fn show(args: &ShowArgs) -> Result<()> {
    let (manifest, _) = datasets::find(&args.name)?;
    let fetch = FetchOptions {
        cache_dir: args.data_cache.clone(),
        hub_cache: None,
        offline: args.offline,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let root = data_fetch::resolve(
        &DataRoot::parse(&args.data_root)?,
        &args.name,
        &fetch,
        runtime.handle(),
    )?;
    // Validate both options whatever the dataset kind, so a typo is never ignored.
    let prompt_mode = PromptMode::parse(&args.prompt_mode)?;
    let noise = NoiseKind::parse(&args.noise)?;
    let texts: Vec<String> = match manifest.kind {
        DatasetKind::Binary => {
            let opts = BinaryOptions {
                prompt_mode,
                noise,
                seed: args.seed,
                max_per_class: None,
            };
            let d = datasets::load_binary(&args.name, &root, &opts)?;
            println!(
                "dataset: {} ({})  prompt mode: {}  noise: {}  seed: {}",
                d.name, manifest.title, opts.prompt_mode, opts.noise, opts.seed
            );
            print_provenance(&d.provenance);
            let n0 = d.class_counts()[0];
            for (class, range) in [(0usize, 0..n0), (1, n0..d.len())] {
                for (k, i) in range.take(args.n).enumerate() {
                    println!(
                        "\n--- class {class} ({}) example {} [source row {}] ---",
                        d.class_names[class],
                        k + 1,
                        d.source_index[i]
                    );
                    print_text(&d.texts[i], args.escape);
                }
            }
            d.texts
        }
        DatasetKind::MultipleChoice => {
            if prompt_mode != PromptMode::Paper || noise != NoiseKind::None {
                println!("note: multiple-choice tasks use the paper's few-shot prompts without noise; --prompt-mode and --noise do not apply");
            }
            let d = datasets::load_mc(
                &args.name,
                &root,
                &McOptions {
                    seed: args.seed,
                    ..McOptions::default()
                },
            )?;
            println!(
                "dataset: {} ({})  seed: {}  chance level (MC1): {:.4}",
                d.name,
                manifest.title,
                args.seed,
                d.chance_level()
            );
            print_provenance(&d.provenance);
            for it in d.items.iter().take(args.n) {
                let mut flags = Vec::new();
                if it.leaked_demo {
                    flags.push("LEAKED-DEMO".to_string());
                }
                if it.unwinnable {
                    flags.push("UNWINNABLE".to_string());
                }
                if it.dropped_negatives > 0 {
                    flags.push(format!("dropped-negatives={}", it.dropped_negatives));
                }
                println!("\n--- item {} {} ---", it.id, flags.join(" "));
                print_text(&it.prompt, args.escape);
                for (j, c) in it.candidates.iter().enumerate() {
                    let mark = match (it.correct[j], j == it.best) {
                        (true, true) => "BEST",
                        (true, false) => "true",
                        _ => "false",
                    };
                    print!("  [{mark:>5}] ");
                    print_text(c, true);
                }
            }
            d.items
                .iter()
                .flat_map(|it| {
                    it.candidates
                        .iter()
                        .map(move |c| format!("{}{c}", it.prompt))
                })
                .collect()
        }
    };
    if let Some(path) = &args.tokenizer {
        token_stats(path, &texts)?;
    }
    Ok(())
}

/// Token counts of model inputs.
#[derive(Debug, PartialEq)]
struct TokenStats {
    n: usize,
    min: usize,
    p50: usize,
    mean: f64,
    p95: usize,
    max: usize,
    total: usize,
}

fn compute_token_stats(path: &Path, texts: &[String]) -> Result<TokenStats> {
    let tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
    anyhow::ensure!(!texts.is_empty(), "no model inputs to tokenize");
    let mut lens = Vec::with_capacity(texts.len());
    for t in texts {
        let enc = tok
            .encode(t.as_str(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
        lens.push(enc.len());
    }
    lens.sort_unstable();
    let pct = |p: f64| lens[((lens.len() - 1) as f64 * p).round() as usize];
    let total: usize = lens.iter().sum();
    Ok(TokenStats {
        n: lens.len(),
        min: lens[0],
        p50: pct(0.5),
        mean: total as f64 / lens.len() as f64,
        p95: pct(0.95),
        max: lens[lens.len() - 1],
        total,
    })
}

fn token_stats(path: &Path, texts: &[String]) -> Result<()> {
    let s = compute_token_stats(path, texts)?;
    println!(
        "\ntokens per model input ({} inputs, special tokens included): min {} p50 {} mean {:.1} p95 {} max {} total {}",
        s.n, s.min, s.p50, s.mean, s.p95, s.max, s.total
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer splitting on whitespace: token counts are word counts.
    const WORD_TOKENIZER: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null, "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn token_stats_count_tokens_per_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, WORD_TOKENIZER).unwrap();
        let texts: Vec<String> = (1..=20).map(|n| vec!["a"; n].join(" ")).collect();
        let s = compute_token_stats(&path, &texts).unwrap();
        assert_eq!(
            s,
            TokenStats {
                n: 20,
                min: 1,
                p50: 11,
                mean: 10.5,
                p95: 19,
                max: 20,
                total: 210
            }
        );
        let err = compute_token_stats(&dir.path().join("missing.json"), &texts).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }
}
