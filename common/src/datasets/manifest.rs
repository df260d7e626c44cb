//! Dataset manifests: the TOML files in the project's `datasets/` folder,
//! embedded in the binary so every build carries the exact definitions it runs.
//!
//! Each field is documented here and, with an example, in `docs/datasets.md`.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The raw TOML of every registered dataset, in registry order.
const MANIFEST_SOURCES: &[(&str, &str)] = &[
    (
        "strategyqa.toml",
        include_str!("../../../datasets/strategyqa.toml"),
    ),
    (
        "coinflip.toml",
        include_str!("../../../datasets/coinflip.toml"),
    ),
    ("cities.toml", include_str!("../../../datasets/cities.toml")),
    (
        "common_claim.toml",
        include_str!("../../../datasets/common_claim.toml"),
    ),
    (
        "counterfact.toml",
        include_str!("../../../datasets/counterfact.toml"),
    ),
    (
        "hateeval.toml",
        include_str!("../../../datasets/hateeval.toml"),
    ),
    ("stsa.toml", include_str!("../../../datasets/stsa.toml")),
    ("imdb.toml", include_str!("../../../datasets/imdb.toml")),
    (
        "sarcasm.toml",
        include_str!("../../../datasets/sarcasm.toml"),
    ),
    (
        "coinflip_gen.toml",
        include_str!("../../../datasets/coinflip_gen.toml"),
    ),
    (
        "cities_gen.toml",
        include_str!("../../../datasets/cities_gen.toml"),
    ),
    (
        "mps_cal.toml",
        include_str!("../../../datasets/mps_cal.toml"),
    ),
    (
        "xmps_cal_zh.toml",
        include_str!("../../../datasets/xmps_cal_zh.toml"),
    ),
    (
        "xmps_cal_fr.toml",
        include_str!("../../../datasets/xmps_cal_fr.toml"),
    ),
    (
        "xmps_cal_es.toml",
        include_str!("../../../datasets/xmps_cal_es.toml"),
    ),
    (
        "xmps_cal_th.toml",
        include_str!("../../../datasets/xmps_cal_th.toml"),
    ),
    ("lama.toml", include_str!("../../../datasets/lama.toml")),
    (
        "truthfulqa_mc.toml",
        include_str!("../../../datasets/truthfulqa_mc.toml"),
    ),
    ("reclor.toml", include_str!("../../../datasets/reclor.toml")),
    (
        "calculation.toml",
        include_str!("../../../datasets/calculation.toml"),
    ),
];

/// Which kind of task a dataset feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// Two classes of texts for per-layer linear probes (Concept Depth).
    Binary,
    /// Prompts with candidate continuations for logit-lens scoring.
    MultipleChoice,
}

impl DatasetKind {
    /// The kind as messages name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            DatasetKind::Binary => "binary",
            DatasetKind::MultipleChoice => "multiple-choice",
        }
    }
}

/// One dataset definition (a `datasets/*.toml` file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetManifest {
    /// Registry name used by grids and task specs (e.g. `cities`).
    pub name: String,
    /// Display name as the papers write it (e.g. `CommonClaim`).
    pub title: String,
    /// Other accepted names, e.g. the Concept Depth code's own (`common`, `STSA`).
    #[serde(default)]
    pub aliases: Vec<String>,
    pub kind: DatasetKind,
    /// One or two sentences on what the data is.
    pub description: String,
    /// Where the raw file comes from; absent for generated datasets.
    #[serde(default)]
    pub source: Option<SourceSpec>,
    /// Parameters of a built-in generator; absent for file-backed datasets.
    #[serde(default)]
    pub generator: Option<GeneratorSpec>,
    /// Binary datasets: which rows become class 0 and class 1.
    #[serde(default)]
    pub classes: Option<ClassesSpec>,
    /// Binary datasets: how the model input is assembled.
    #[serde(default)]
    pub prompt: Option<PromptSpec>,
    /// Multiple-choice datasets: few-shot prefix and item layout.
    #[serde(default)]
    pub mc: Option<McSpec>,
}

/// The raw file of a dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Candidate paths relative to the data root; the first that exists is read.
    /// Several are listed so a root may be the papers' own folder layout or a flat one.
    /// The last path component may hold `*` (binary datasets only): every
    /// matching file is read, in name order, as one source (Hub shards).
    pub files: Vec<String>,
    pub format: SourceFormat,
    /// Column / field holding the sample text.
    #[serde(default)]
    pub text_field: Option<String>,
    /// Column / field holding the label.
    #[serde(default)]
    pub label_field: Option<String>,
    /// Column whose value ties rows about the same subject (for group-aware splits).
    #[serde(default)]
    pub group_field: Option<String>,
    /// SHA-256 of the file the paper shipped; a different file is loaded but the
    /// mismatch is recorded in the provenance.
    #[serde(default)]
    pub expected_sha256: Option<String>,
    /// HF Hub dataset repository the data can be fetched from (documentation and
    /// for the worker's resolver).
    #[serde(default)]
    pub hub_repo: Option<String>,
}

/// How a raw file is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// Comma-separated with a header line (RFC 4180 quoting).
    Csv,
    /// Tab-separated with a header line (double-quote quoting, as pandas reads it).
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// `.jsonl`/`.json` as JSON Lines, `.csv` as CSV, `.tsv` as TSV, chosen by the file found.
    ByExtension,
    /// A JSON object with an `examples` array of objects.
    JsonExamples,
    /// The BIG-bench StrategyQA task file (`examples[].input/target/target_scores`).
    BigbenchStrategyqa,
    /// Plain text lines `<label> <sentence>` (the `stsa.binary.*` files).
    LabelSpaceText,
    /// A Parquet table with the text and label columns (the HF Hub layout);
    /// pages uncompressed or snappy-compressed.
    Parquet,
    /// JSON Lines `{question, truth_answer[], error[]}` (MPS-Cal, xMPS-Cal).
    Gsm8kMc,
    /// TSV `Prompt, Ans, Candidate Ans, Subject` (mLAMA subset).
    MlamaTsv,
    /// The TruthfulQA generation CSV.
    TruthfulqaCsv,
    /// A JSON array of ReClor items `{context, question, answers[4], label}`.
    ReclorJson,
}

/// A built-in generator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    pub kind: GeneratorKind,
    /// Coinflip: number of items; Cities: number of cities (0: the whole
    /// table); Calculation: items per (number kind, digits, op) cell.
    pub items: usize,
    /// Calculation: wrong answers per item.
    #[serde(default)]
    pub wrong_answers: Option<usize>,
}

/// Which generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorKind {
    /// Coin-flip parity questions in the shipped file's wording.
    Coinflip,
    /// Cities-style true/false statements from the built-in city table.
    Cities,
    /// Arithmetic multiple choice.
    Calculation,
}

/// The class rule of a binary dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesSpec {
    /// Names of class 0 and class 1. Class 0 is what the Concept Depth code
    /// lists first (label 0 in its probe).
    pub names: [String; 2],
    /// Raw label values that map to class 0 and to class 1.
    pub values: [Vec<String>; 2],
    /// Raw label values that are skipped (e.g. CommonClaim's `Neither`). Any
    /// other value is an error naming the file and line.
    #[serde(default)]
    pub drop_values: Vec<String>,
    /// Keep only the first N rows of each class, in file order.
    #[serde(default)]
    pub caps: Option<[usize; 2]>,
    /// The class F1 treats as positive (the Concept Depth code: class 1).
    pub positive: usize,
    /// Per-class counts the paper used (checked by the tests, shown by `datasets list`).
    #[serde(default)]
    pub paper_counts: Option<[usize; 2]>,
}

pub use super::prompt::PromptSpec;

/// How multiple-choice prompts are assembled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McSpec {
    /// Text before the demonstrations.
    pub header: String,
    /// One demonstration: `{question}`, `{answer}` and optionally `{context}`.
    pub demo_layout: String,
    /// The test item: `{question}` and optionally `{context}`.
    pub item_layout: String,
    /// Prepended to every candidate continuation.
    pub continuation_prefix: String,
    /// How candidate answers are normalised before use.
    pub answer_transform: AnswerTransform,
    /// The few-shot demonstrations, in order.
    #[serde(default)]
    pub demos: Vec<Demo>,
}

/// One few-shot demonstration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demo {
    #[serde(default)]
    pub context: Option<String>,
    pub question: String,
    pub answer: String,
}

/// Candidate normalisation of the multiple-choice code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerTransform {
    /// Used as is.
    None,
    /// Newlines become spaces and `####` becomes `The answer is`.
    Gsm8kMath,
    /// Stripped, with a `.` appended when it does not end in one.
    ClosePeriod,
}

impl DatasetManifest {
    /// Whether `name` names this dataset (its name or one of its aliases).
    pub(crate) fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }

    /// Check the cross-field rules serde cannot express.
    fn validate(&self) -> Result<(), String> {
        match self.kind {
            DatasetKind::Binary => {
                let classes = self
                    .classes
                    .as_ref()
                    .ok_or("binary dataset needs [classes]")?;
                if classes.positive > 1 {
                    return Err("classes.positive must be 0 or 1".into());
                }
                let prompt = self
                    .prompt
                    .as_ref()
                    .ok_or("binary dataset needs [prompt]")?;
                prompt.check()?;
            }
            DatasetKind::MultipleChoice => {
                if self.mc.is_none() {
                    return Err("multiple-choice dataset needs [mc]".into());
                }
            }
        }
        if let Some(source) = &self.source {
            let pattern = source.files.iter().find(|f| f.contains('*'));
            if let Some(p) = pattern {
                if self.kind != DatasetKind::Binary {
                    return Err(format!(
                        "source.files: `{p}`: wildcards are for binary datasets"
                    ));
                }
                if p.rsplit_once('/').is_some_and(|(dir, _)| dir.contains('*')) {
                    return Err(format!("source.files: `{p}`: `*` only in the file name"));
                }
            }
        }
        if self.source.is_none() == self.generator.is_none() {
            return Err("exactly one of [source] and [generator] is required".into());
        }
        Ok(())
    }
}

impl DatasetManifest {
    /// Whether examples carry a group id (for group-aware splits): datasets
    /// with a `group_field`, and generated Cities (the city).
    pub(crate) fn has_groups(&self) -> bool {
        self.source
            .as_ref()
            .is_some_and(|s| s.group_field.is_some())
            || self
                .generator
                .as_ref()
                .is_some_and(|g| g.kind == GeneratorKind::Cities)
    }
}

/// Every registered dataset, parsed once from the embedded manifests.
pub fn registry() -> &'static [DatasetManifest] {
    static REGISTRY: OnceLock<Vec<DatasetManifest>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        MANIFEST_SOURCES
            .iter()
            .map(|(file, text)| {
                // The manifests are compiled in; a bad one is a build defect that
                // the registry test catches, so failing loudly here is right.
                let manifest: DatasetManifest = toml::from_str(text)
                    .unwrap_or_else(|e| panic!("datasets/{file} is invalid: {e}"));
                if let Err(e) = manifest.validate() {
                    panic!("datasets/{file} is invalid: {e}");
                }
                manifest
            })
            .collect()
    })
}

/// Parse a manifest from TOML text (for user-supplied manifests and tests).
pub fn parse_manifest(text: &str) -> Result<DatasetManifest, String> {
    let manifest: DatasetManifest = toml::from_str(text).map_err(|e| e.to_string())?;
    manifest.validate()?;
    Ok(manifest)
}
