//! Writing extracted features as one safetensors file per run.
//!
//! Layout (readable with `safetensors.numpy.load_file` or torch):
//! - `features`: `[N, L, d]`, f32 or f16: one pooled vector per text per captured layer;
//! - `token_counts`: `[N]` i64: real (non-pad) tokens the model saw for each text;
//! - `labels`: `[N]` i64, only when the input had labels;
//! - `test_fold`: `[N]` i32, only for probed cells: the fold whose test side
//!   holds each example, −1 when it only trains (fold `f` trains on
//!   `test_fold != f`), so anyone can refit on exactly the probe's folds;
//! - `groups`: `[N]` i64, only for datasets with a group field (e.g. the city
//!   of a Cities statement), for group-aware refits;
//! - `__metadata__`: string pairs naming model, site, pooling, precision, dtype,
//!   the project's version, layer count, hidden size and the input's sha256.
//!
//! The file is written to a temporary file in the destination directory and
//! renamed into place, so a reader never sees a partial file and a failed run
//! leaves nothing behind.

use ndarray::ArrayView3;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Element type of the stored `features` tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputDtype {
    /// 32-bit float: exact copy of the engine's output.
    F32,
    /// 16-bit IEEE float: half the size, about 3 significant digits.
    F16,
}

impl OutputDtype {
    /// The name used on the command line and in metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            OutputDtype::F32 => "f32",
            OutputDtype::F16 => "f16",
        }
    }
}

impl std::str::FromStr for OutputDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "float32" => Ok(OutputDtype::F32),
            "f16" | "float16" => Ok(OutputDtype::F16),
            other => Err(format!(
                "unknown output dtype `{other}`: expected f32 or f16"
            )),
        }
    }
}

/// Descriptive metadata stored in the file's `__metadata__`.
#[derive(Debug, Clone, Default)]
pub struct OutputMetadata {
    /// The model as the user named it (directory, hub id or GGUF path).
    pub model: String,
    /// Capture site name (`residual`, `post_attention_norm`).
    pub site: String,
    /// Pooling name (`last`, `mean`).
    pub pooling: String,
    /// Precision name (`32`, `16`, `16-f16`, `8`).
    pub precision: String,
    /// SHA-256 (hex) of the input texts file, when there was one.
    pub input_sha256: Option<String>,
    /// Anything else worth recording (e.g. `input`, `text_field`).
    pub extra: BTreeMap<String, String>,
}

/// What goes into one output file.
#[derive(Debug, Clone, Copy)]
pub struct FeatureFile<'a> {
    /// `[N, L, d]` pooled features.
    pub features: ArrayView3<'a, f32>,
    /// Real tokens per text, length N.
    pub token_counts: &'a [usize],
    /// Integer labels, length N, if any.
    pub labels: Option<&'a [i64]>,
    /// Split assignment, length N, when the features were probed.
    pub test_fold: Option<&'a [i32]>,
    /// Group id per example, length N, when the dataset has groups.
    pub groups: Option<&'a [i64]>,
    /// Element type to store the features in.
    pub dtype: OutputDtype,
    /// Descriptive metadata.
    pub metadata: &'a OutputMetadata,
}

/// Failure to write a features file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The arrays disagree in length.
    #[error("cannot write {path}: {what}")]
    Shape { path: PathBuf, what: String },
    /// The destination directory cannot hold a file.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One tensor to write: safetensors dtype name, shape and little-endian bytes.
struct Blob<'a> {
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

/// Serialise in the safetensors format with a deterministic header (tensors
/// and metadata keys sorted), so the same features always give the same bytes.
fn write_safetensors(
    w: &mut impl Write,
    blobs: &[(String, Blob<'_>)],
    metadata: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    let mut sorted: Vec<&(String, Blob<'_>)> = blobs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).expect("strings serialize"),
    );
    let mut offset = 0usize;
    for (name, b) in &sorted {
        let end = offset + b.bytes.len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": b.dtype, "shape": b.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    // serde_json's map keeps keys sorted (no `preserve_order`), so this is canonical.
    let mut text = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json serializes");
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(&text)?;
    for (_, b) in &sorted {
        w.write_all(&b.bytes)?;
    }
    w.flush()
}

/// The little-endian bytes of `values`, borrowed where the machine is
/// little-endian (features can be gigabytes; copying them would double the peak).
fn f32_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: f32 has no padding or invalid bit patterns, u8 has alignment 1,
        // and the byte length is exactly that of the f32 slice it borrows.
        Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        })
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

fn f16_bytes(values: impl Iterator<Item = f32>, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len * 2);
    for v in values {
        out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
    out
}

fn i64_bytes(values: impl Iterator<Item = i64>, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len * 8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The `__metadata__` map written with the features.
pub(crate) fn metadata_map(file: &FeatureFile<'_>) -> BTreeMap<String, String> {
    let (n, l, d) = file.features.dim();
    let m = file.metadata;
    let mut map = m.extra.clone();
    map.insert("format".into(), "concept-depth-features/1".into());
    map.insert("model".into(), m.model.clone());
    map.insert("site".into(), m.site.clone());
    map.insert("pooling".into(), m.pooling.clone());
    map.insert("precision".into(), m.precision.clone());
    map.insert("dtype".into(), file.dtype.as_str().into());
    map.insert("num_texts".into(), n.to_string());
    map.insert("num_layers".into(), l.to_string());
    map.insert("hidden_size".into(), d.to_string());
    map.insert("has_labels".into(), file.labels.is_some().to_string());
    map.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(sha) = &m.input_sha256 {
        map.insert("input_sha256".into(), sha.clone());
    }
    map
}

/// Per-item candidate scores of a multiple-choice cell, for
/// `mc_scores.safetensors`: candidates of all items laid end to end.
#[derive(Debug, Clone)]
pub(crate) struct McScoresFile<'a> {
    /// Lens of each `sums` plane (e.g. `faithful`, `normed`).
    pub lenses: &'a [&'a str],
    /// `[lens][layer][candidate]` summed log-probabilities.
    pub sums: &'a [Vec<Vec<f32>>],
    /// Tokens scored per candidate.
    pub n_tokens: &'a [usize],
    /// Item index of each candidate.
    pub item: &'a [usize],
    /// Whether each candidate is a true answer.
    pub is_true: &'a [bool],
    /// Whether each candidate is its item's best answer.
    pub is_best: &'a [bool],
    /// Recorded in `__metadata__` (task id, dataset, score dtype, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Write per-item candidate scores (`sums` `[lenses, layers, candidates]`
/// f32, `n_tokens`/`item` i64, `is_true`/`is_best` u8, one entry per
/// candidate) atomically, as [`write_features`] does.
pub(crate) fn write_mc_scores(path: &Path, file: &McScoresFile<'_>) -> Result<(), OutputError> {
    let c = file.item.len();
    let shape_err = |what: String| OutputError::Shape {
        path: path.to_path_buf(),
        what,
    };
    let layers = file.sums.first().map_or(0, Vec::len);
    if file.sums.len() != file.lenses.len()
        || file.sums.iter().flatten().any(|l| l.len() != c)
        || file.sums.iter().any(|s| s.len() != layers)
        || [file.n_tokens.len(), file.is_true.len(), file.is_best.len()] != [c, c, c]
    {
        return Err(shape_err(format!(
            "per-candidate arrays disagree ({c} candidates, {} lenses)",
            file.lenses.len()
        )));
    }
    let sums: Vec<f32> = file.sums.iter().flatten().flatten().copied().collect();
    let flags = |v: &[bool]| Cow::Owned(v.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>());
    let blobs: Vec<(String, Blob<'_>)> = vec![
        (
            "sums".into(),
            Blob {
                dtype: "F32",
                shape: vec![file.lenses.len(), layers, c],
                bytes: Cow::Owned(f32_bytes(&sums).into_owned()),
            },
        ),
        (
            "n_tokens".into(),
            Blob {
                dtype: "I64",
                shape: vec![c],
                bytes: Cow::Owned(i64_bytes(file.n_tokens.iter().map(|&v| v as i64), c)),
            },
        ),
        (
            "item".into(),
            Blob {
                dtype: "I64",
                shape: vec![c],
                bytes: Cow::Owned(i64_bytes(file.item.iter().map(|&v| v as i64), c)),
            },
        ),
        (
            "is_true".into(),
            Blob {
                dtype: "U8",
                shape: vec![c],
                bytes: flags(file.is_true),
            },
        ),
        (
            "is_best".into(),
            Blob {
                dtype: "U8",
                shape: vec![c],
                bytes: flags(file.is_best),
            },
        ),
    ];
    let mut metadata = file.metadata.clone();
    metadata.insert("format".into(), "concept-depth-mc-scores/1".into());
    metadata.insert("lenses".into(), file.lenses.join(","));
    metadata.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    write_atomically(path, &blobs, &metadata)
}

/// Write `file` to `path` atomically: a temporary file in the same directory,
/// flushed and synced, then renamed over `path`. On any error nothing is left
/// at `path` (an older file there is kept untouched) and the temporary file is
/// removed.
pub fn write_features(path: &Path, file: &FeatureFile<'_>) -> Result<(), OutputError> {
    let (n, l, d) = file.features.dim();
    let shape_err = |what: String| OutputError::Shape {
        path: path.to_path_buf(),
        what,
    };
    if file.token_counts.len() != n {
        return Err(shape_err(format!(
            "{} token counts for {n} texts",
            file.token_counts.len()
        )));
    }
    if let Some(labels) = file.labels {
        if labels.len() != n {
            return Err(shape_err(format!("{} labels for {n} texts", labels.len())));
        }
    }
    if let Some(folds) = file.test_fold {
        if folds.len() != n {
            return Err(shape_err(format!(
                "{} split entries for {n} texts",
                folds.len()
            )));
        }
    }
    let contiguous;
    let features: Cow<'_, [u8]> = match file.dtype {
        OutputDtype::F32 => match file.features.as_slice() {
            Some(s) => f32_bytes(s),
            None => {
                contiguous = file.features.iter().copied().collect::<Vec<_>>();
                f32_bytes(&contiguous)
            }
        },
        OutputDtype::F16 => Cow::Owned(f16_bytes(file.features.iter().copied(), n * l * d)),
    };
    let mut blobs: Vec<(String, Blob<'_>)> = vec![
        (
            "features".into(),
            Blob {
                dtype: match file.dtype {
                    OutputDtype::F32 => "F32",
                    OutputDtype::F16 => "F16",
                },
                shape: vec![n, l, d],
                bytes: features,
            },
        ),
        (
            "token_counts".into(),
            Blob {
                dtype: "I64",
                shape: vec![n],
                bytes: Cow::Owned(i64_bytes(file.token_counts.iter().map(|&c| c as i64), n)),
            },
        ),
    ];
    if let Some(folds) = file.test_fold {
        blobs.push((
            "test_fold".into(),
            Blob {
                dtype: "I32",
                shape: vec![n],
                bytes: Cow::Owned(folds.iter().flat_map(|f| f.to_le_bytes()).collect()),
            },
        ));
    }
    if let Some(groups) = file.groups {
        blobs.push((
            "groups".into(),
            Blob {
                dtype: "I64",
                shape: vec![n],
                bytes: Cow::Owned(i64_bytes(groups.iter().copied(), n)),
            },
        ));
    }
    if let Some(labels) = file.labels {
        blobs.push((
            "labels".into(),
            Blob {
                dtype: "I64",
                shape: vec![n],
                bytes: Cow::Owned(i64_bytes(labels.iter().copied(), n)),
            },
        ));
    }
    write_atomically(path, &blobs, &metadata_map(file))
}

/// Write tensors to a temporary file beside `path`, sync, then rename over it.
fn write_atomically(
    path: &Path,
    blobs: &[(String, Blob<'_>)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), OutputError> {
    let io_err = |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".features-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err)?;
    {
        // Streams the tensors into the temporary file (no second in-memory copy).
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write_safetensors(&mut w, blobs, metadata).map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    // `persist` renames within the directory: atomic on POSIX filesystems.
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn meta() -> OutputMetadata {
        OutputMetadata {
            model: "m".into(),
            site: "residual".into(),
            pooling: "last".into(),
            precision: "32".into(),
            input_sha256: Some("ab".into()),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_through_the_safetensors_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let a = Array3::from_shape_fn((3, 2, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32 + 0.5);
        let m = meta();
        let file = FeatureFile {
            features: a.view(),
            token_counts: &[5, 6, 7],
            labels: Some(&[1, 0, 1]),
            test_fold: Some(&[0, -1, 0]),
            groups: None,
            dtype: OutputDtype::F32,
            metadata: &m,
        };
        write_features(&path, &file).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        write_features(&path, &file).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "same features, same bytes"
        );
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f = st.tensor("features").unwrap();
        assert_eq!(f.shape(), &[3, 2, 4]);
        let vals: Vec<f32> = f
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, a.iter().copied().collect::<Vec<_>>());
        let folds = st.tensor("test_fold").unwrap();
        assert_eq!(folds.dtype(), safetensors::Dtype::I32);
        let folds: Vec<i32> = folds
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(folds, [0, -1, 0]);
        let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let md = md.metadata().clone().unwrap();
        assert_eq!(md["num_layers"], "2");
        assert_eq!(md["version"], env!("CARGO_PKG_VERSION"));
        let only_file: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(only_file.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn mismatched_lengths_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        let a = Array3::<f32>::zeros((2, 1, 1));
        let m = meta();
        let file = FeatureFile {
            features: a.view(),
            token_counts: &[1],
            labels: None,
            test_fold: None,
            groups: None,
            dtype: OutputDtype::F16,
            metadata: &m,
        };
        let err = write_features(&path, &file).unwrap_err().to_string();
        assert!(err.contains("1 token counts for 2 texts"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
