//! Datasets, prompts and noise: every dataset of both research codebases,
//! loaded from the user's raw files exactly as the papers built their inputs.
//!
//! Definitions live in the project's `datasets/*.toml` manifests (embedded at
//! build time, see [`registry`]); this module reads raw files under a
//! [`DataRoot`], applies the class rule, caps, noise and prompt
//! ([`load_binary`]) or builds multiple-choice items ([`load_mc`]); splits
//! belong to the probe (`crate::probe::split`). `docs/datasets.md` documents
//! every dataset, the manifest fields and the noise kinds.

mod binary;
mod error;
pub mod generate;
pub mod manifest;
mod multiple_choice;
pub mod noise;
pub mod prompt;
mod root;
mod source;

pub use binary::{BinaryDataset, BinaryOptions};
pub use error::DatasetError;
pub use manifest::{registry, DatasetKind, DatasetManifest};
pub use multiple_choice::{McDataset, McOptions, McQuestion};
pub use noise::NoiseKind;
pub use prompt::PromptMode;
pub use root::DataRoot;
pub use source::{find_source_files, Candidate, FileProvenance};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What was loaded and how, for a result's `metrics.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetProvenance {
    /// Registry name.
    pub dataset: String,
    /// The raw file(s) read, with their SHA-256.
    pub files: Vec<FileProvenance>,
    /// For generated datasets: the generator and its parameters.
    pub generator: Option<String>,
    /// Examples per class name (binary) or `items`/`candidates` (multiple choice).
    pub counts: BTreeMap<String, usize>,
    /// Name of the class F1 treats as positive (binary only).
    pub positive_class: Option<String>,
    /// `paper` or `cd-legacy` (binary only).
    pub prompt_mode: Option<String>,
    /// Canonical noise name.
    pub noise: String,
    pub seed: u64,
    /// Checks made while loading: duplicates, conflicting duplicates, empty
    /// texts, rows dropped by the class rule, leaked demonstrations, ...
    pub stats: BTreeMap<String, usize>,
}

/// Find a dataset by name or alias. A name may carry a parameter after a `/`
/// (`coinflip_gen/2000`, `calculation/int/1-2/add`).
pub fn find(name: &str) -> Result<(&'static DatasetManifest, Option<&str>), DatasetError> {
    let (base, param) = match name.split_once('/') {
        Some((b, p)) => (b, Some(p)),
        None => (name, None),
    };
    registry()
        .iter()
        .find(|m| m.answers_to(base))
        .map(|m| (m, param))
        .ok_or_else(|| DatasetError::UnknownDataset {
            name: name.to_string(),
            known: registry()
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Check a dataset name as a grid writes it, parameter included, without
/// reading any file: its manifest and canonical name (`coinflip_gen/2000`).
pub(crate) fn check_name(name: &str) -> Result<(&'static DatasetManifest, String), DatasetError> {
    let (manifest, param) = find(name)?;
    match (manifest.kind, &manifest.generator) {
        (DatasetKind::Binary, _) => {
            binary::generated_items(manifest, param)?;
        }
        (DatasetKind::MultipleChoice, Some(_)) => {
            multiple_choice::calculation_filter(manifest, param)?;
        }
        (DatasetKind::MultipleChoice, None) => {
            if let Some(p) = param {
                return Err(DatasetError::BadOption {
                    what: "dataset name",
                    value: format!("{}/{p}", manifest.name),
                    expected: format!("`{}` (it takes no parameter)", manifest.name),
                });
            }
        }
    }
    let canonical = match param {
        Some(p) => format!("{}/{p}", manifest.name),
        None => manifest.name.clone(),
    };
    Ok((manifest, canonical))
}

/// Load a binary probing dataset: final model inputs, labels and provenance.
/// Nothing is returned unless every row parsed and both classes are present.
pub fn load_binary(
    name: &str,
    data_root: &DataRoot,
    opts: &BinaryOptions,
) -> Result<BinaryDataset, DatasetError> {
    let (m, param) = find(name)?;
    load_binary_of(m, param, data_root, opts)
}

/// [`load_binary`] for a manifest already found (a resolved task's).
pub fn load_binary_of(
    m: &DatasetManifest,
    param: Option<&str>,
    data_root: &DataRoot,
    opts: &BinaryOptions,
) -> Result<BinaryDataset, DatasetError> {
    expect_kind(m, DatasetKind::Binary)?;
    binary::load(m, param, data_root, opts)
}

/// Load a multiple-choice dataset: prompts, candidates and the correct set.
pub fn load_mc(
    name: &str,
    data_root: &DataRoot,
    opts: &McOptions,
) -> Result<McDataset, DatasetError> {
    let (m, param) = find(name)?;
    load_mc_of(m, param, data_root, opts)
}

/// [`load_mc`] for a manifest already found (a resolved task's).
pub fn load_mc_of(
    m: &DatasetManifest,
    param: Option<&str>,
    data_root: &DataRoot,
    opts: &McOptions,
) -> Result<McDataset, DatasetError> {
    expect_kind(m, DatasetKind::MultipleChoice)?;
    multiple_choice::load(m, param, data_root, opts)
}

/// Refuse a manifest of another kind than the loader reads.
fn expect_kind(m: &DatasetManifest, wanted: DatasetKind) -> Result<(), DatasetError> {
    if m.kind == wanted {
        return Ok(());
    }
    Err(DatasetError::WrongKind {
        dataset: m.name.clone(),
        actual: m.kind.as_str(),
        wanted: wanted.as_str(),
    })
}
