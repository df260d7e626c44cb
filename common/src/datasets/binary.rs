//! Binary probing datasets: the class rule, per-class caps, noise and prompt.

use super::generate;
use super::manifest::{DatasetManifest, GeneratorKind};
use super::noise::NoiseKind;
use super::prompt::{self, PromptMode};
use super::source::{self, FileProvenance, RawRow};
use super::{DataRoot, DatasetError, DatasetProvenance};
use std::collections::{BTreeMap, HashMap};

/// How a binary dataset is turned into model inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryOptions {
    pub prompt_mode: PromptMode,
    pub noise: NoiseKind,
    /// Seeds the noise (per example) and generated datasets.
    pub seed: u64,
    /// Keep at most this many examples per class (after the manifest's caps,
    /// still in file order); for quick runs.
    pub max_per_class: Option<usize>,
}

impl Default for BinaryOptions {
    fn default() -> Self {
        BinaryOptions {
            prompt_mode: PromptMode::Paper,
            noise: NoiseKind::None,
            seed: 0,
            max_per_class: None,
        }
    }
}

impl BinaryOptions {
    /// Build from a task spec's strings (`prompt_mode`, `noise`) and seed.
    pub fn from_spec(prompt_mode: &str, noise: &str, seed: u64) -> Result<Self, DatasetError> {
        Ok(BinaryOptions {
            prompt_mode: PromptMode::parse(prompt_mode)?,
            noise: NoiseKind::parse(noise)?,
            seed,
            max_per_class: None,
        })
    }
}

/// A loaded binary dataset. Examples are ordered class 0 first, then class 1,
/// each in file order (the order the paper's probe script builds its matrix).
#[derive(Debug, Clone)]
pub struct BinaryDataset {
    /// Registry name.
    pub name: String,
    /// Final model inputs, prompt included.
    pub texts: Vec<String>,
    /// The sample texts before noise and prompt.
    pub samples: Vec<String>,
    /// 0 or 1 per example.
    pub labels: Vec<u8>,
    /// Group id per example (examples about the same subject share one), for
    /// datasets with a `group_field`; ids are dense, in order of first appearance.
    pub groups: Option<Vec<usize>>,
    /// 0-based index of each example in its source file.
    pub source_index: Vec<usize>,
    /// Names of class 0 and class 1.
    pub class_names: [String; 2],
    /// The class F1 treats as positive.
    pub positive_class: usize,
    pub provenance: DatasetProvenance,
}

impl BinaryDataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples (never true for a loaded dataset).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Examples per class.
    pub fn class_counts(&self) -> [usize; 2] {
        let ones = self.labels.iter().filter(|&&l| l == 1).count();
        [self.labels.len() - ones, ones]
    }
}

/// Load a binary dataset with `manifest` (already resolved by name).
pub(crate) fn load(
    manifest: &DatasetManifest,
    param: Option<&str>,
    root: &DataRoot,
    opts: &BinaryOptions,
) -> Result<BinaryDataset, DatasetError> {
    let classes = manifest
        .classes
        .as_ref()
        .expect("validated: binary has classes");
    let prompt_spec = manifest
        .prompt
        .as_ref()
        .expect("validated: binary has a prompt");
    // Which file each row came from (messages name it); generated rows: the dataset.
    let mut row_files: Vec<(usize, std::path::PathBuf)> =
        vec![(0, std::path::PathBuf::from(&manifest.name))];
    let (rows, files, generator) = match (&manifest.source, &manifest.generator) {
        (Some(spec), _) => {
            if param.is_some() {
                return Err(bad_param(manifest, param));
            }
            let mut rows = Vec::new();
            let mut provenance = Vec::new();
            row_files.clear();
            // Shards are one source: row indices (which seed the noise) run on.
            for file in source::open(&manifest.name, root.local_dir()?, spec)? {
                let offset = rows.len();
                row_files.push((offset, file.path.clone()));
                rows.extend(source::read_rows(&file, spec)?.into_iter().map(|mut r| {
                    r.index += offset;
                    r
                }));
                provenance.push(file.provenance);
            }
            (rows, provenance, None)
        }
        (None, Some(generator)) if generator.kind == GeneratorKind::Cities => {
            let n = generated_items(manifest, param)?;
            let rows = generate::cities_items(Some(n), opts.seed)
                .into_iter()
                .enumerate()
                .map(|(index, it)| RawRow {
                    index,
                    location: format!("statement {index}"),
                    text: it.statement,
                    label: it.label.to_string(),
                    group: Some(it.city.to_string()),
                })
                .collect();
            (
                rows,
                Vec::<FileProvenance>::new(),
                Some(format!("cities n={n} seed={}", opts.seed)),
            )
        }
        (None, Some(_)) => {
            let n = generated_items(manifest, param)?;
            let items = generate::coinflip_items(n, opts.seed);
            let rows = items
                .into_iter()
                .enumerate()
                .map(|(index, it)| RawRow {
                    index,
                    location: format!("item {index}"),
                    text: it.question,
                    label: it.answer.to_string(),
                    group: None,
                })
                .collect();
            (
                rows,
                Vec::<FileProvenance>::new(),
                Some(format!("coinflip n={n} seed={}", opts.seed)),
            )
        }
        (None, None) => unreachable!("validated: source or generator"),
    };

    // Class rule and caps, all rows checked before anything is kept.
    let mut per_class: [Vec<&RawRow>; 2] = [Vec::new(), Vec::new()];
    let mut dropped = 0usize;
    for (i, row) in rows.iter().enumerate() {
        let class = classes
            .values
            .iter()
            .position(|vals| vals.iter().any(|v| v == &row.label));
        match class {
            Some(c) => per_class[c].push(row),
            None if classes.drop_values.iter().any(|v| v == &row.label) => dropped += 1,
            None => {
                let mut allowed: Vec<&str> = classes
                    .values
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                allowed.extend(classes.drop_values.iter().map(String::as_str));
                let err_path = row_files
                    .iter()
                    .rev()
                    .find(|(start, _)| *start <= i)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_default();
                return Err(DatasetError::parse(
                    &err_path,
                    &row.location,
                    manifest
                        .source
                        .as_ref()
                        .and_then(|s| s.label_field.as_deref())
                        .unwrap_or("label"),
                    &format!("one of {}", allowed.join(", ")),
                    &row.label,
                ));
            }
        }
    }
    let available = [per_class[0].len(), per_class[1].len()];
    for (c, rows) in per_class.iter_mut().enumerate() {
        let mut cap = classes.caps.map_or(usize::MAX, |caps| caps[c]);
        if let Some(m) = opts.max_per_class {
            cap = cap.min(m);
        }
        rows.truncate(cap);
    }
    for (c, rows) in per_class.iter().enumerate() {
        if rows.is_empty() {
            return Err(DatasetError::OneClass {
                dataset: manifest.name.clone(),
                class: c,
                class_name: classes.names[c].clone(),
            });
        }
    }

    let mut out = BinaryDataset {
        name: manifest.name.clone(),
        texts: Vec::new(),
        samples: Vec::new(),
        labels: Vec::new(),
        groups: manifest.has_groups().then(Vec::new),
        source_index: Vec::new(),
        class_names: classes.names.clone(),
        positive_class: classes.positive,
        provenance: DatasetProvenance::default(),
    };
    let mut group_ids: HashMap<&str, usize> = HashMap::new();
    for (c, rows) in per_class.iter().enumerate() {
        for row in rows {
            let noisy = opts.noise.apply(&row.text, opts.seed, row.index);
            out.texts
                .push(prompt::render(prompt_spec, opts.prompt_mode, &noisy));
            out.samples.push(row.text.clone());
            out.labels.push(c as u8);
            out.source_index.push(row.index);
            if let (Some(groups), Some(g)) = (out.groups.as_mut(), row.group.as_deref()) {
                let next = group_ids.len();
                groups.push(*group_ids.entry(g).or_insert(next));
            }
        }
    }

    let stats = quality_stats(&out.samples, &out.labels, dropped, available);
    out.provenance = DatasetProvenance {
        dataset: manifest.name.clone(),
        files,
        generator,
        counts: classes
            .names
            .iter()
            .cloned()
            .zip(out.class_counts())
            .collect(),
        positive_class: Some(classes.names[classes.positive].clone()),
        prompt_mode: Some(opts.prompt_mode.as_str().to_string()),
        noise: opts.noise.name(),
        seed: opts.seed,
        stats,
    };
    Ok(out)
}

/// Most items a generated binary dataset may be asked for.
pub(crate) const MAX_GENERATED_ITEMS: usize = 1_000_000;

/// The number of items a generated dataset's name asks for (`coinflip_gen/N`),
/// or the manifest's default; refuses a parameter on a file-backed dataset.
pub(crate) fn generated_items(
    manifest: &DatasetManifest,
    param: Option<&str>,
) -> Result<usize, DatasetError> {
    let Some(generator) = &manifest.generator else {
        return match param {
            Some(_) => Err(bad_param(manifest, param)),
            None => Ok(0),
        };
    };
    // Cities draws from its table; the coin flips are unbounded but for memory.
    let (most, what) = match generator.kind {
        GeneratorKind::Cities => (generate::city_table().len(), "number of cities"),
        _ => (MAX_GENERATED_ITEMS, "number of generated items"),
    };
    let n = match param {
        Some(p) => p.parse::<usize>().map_err(|_| bad_param(manifest, param))?,
        None if generator.items == 0 => most,
        None => generator.items,
    };
    if !(2..=most).contains(&n) {
        return Err(DatasetError::BadOption {
            what,
            value: format!("{}/{p}", manifest.name, p = param.unwrap_or("")),
            expected: format!("between 2 and {most}"),
        });
    }
    Ok(n)
}

fn bad_param(manifest: &DatasetManifest, param: Option<&str>) -> DatasetError {
    DatasetError::BadOption {
        what: "dataset name",
        value: format!("{}/{}", manifest.name, param.unwrap_or("")),
        expected: if manifest.generator.is_some() {
            format!(
                "`{}` or `{}/<number of items>`",
                manifest.name, manifest.name
            )
        } else {
            format!("`{}` (it takes no parameter)", manifest.name)
        },
    }
}

/// Duplicates, conflicting duplicates, empty texts and rows dropped by the class rule.
fn quality_stats(
    samples: &[String],
    labels: &[u8],
    dropped: usize,
    available: [usize; 2],
) -> BTreeMap<String, usize> {
    let mut seen: HashMap<&str, u8> = HashMap::new();
    let (mut duplicates, mut conflicting) = (0, 0);
    for (s, &l) in samples.iter().zip(labels) {
        match seen.get(s.as_str()) {
            Some(&prev) => {
                duplicates += 1;
                if prev != l {
                    conflicting += 1;
                }
            }
            None => {
                seen.insert(s, l);
            }
        }
    }
    let empty = samples.iter().filter(|s| s.trim().is_empty()).count();
    BTreeMap::from([
        ("duplicates".to_string(), duplicates),
        ("conflicting_duplicates".to_string(), conflicting),
        ("empty_texts".to_string(), empty),
        ("dropped_by_label".to_string(), dropped),
        ("available_class0".to_string(), available[0]),
        ("available_class1".to_string(), available[1]),
    ])
}
