//! Locating and reading raw files: each reader turns a file into rows of
//! (index, line, text, label, group) without interpreting the labels.
//!
//! Why this file is long: one reader per raw layout (CSV, JSON lines, JSON,
//! Parquet, StrategyQA's and the label-space text files), each short, all
//! sharing the same row and error types.

use super::manifest::{SourceFormat, SourceSpec};
use super::DatasetError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file a dataset was read from, for provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FileProvenance {
    /// Path relative to the data root, as listed in the manifest.
    pub path: String,
    /// SHA-256 of the bytes read.
    pub sha256: String,
    pub bytes: u64,
    /// Whether the bytes are the file the paper shipped (`None`: no reference).
    pub matches_paper_file: Option<bool>,
}

/// A file found under the root, read whole (the largest is tens of MB) so it
/// can be hashed and parsed from the same bytes.
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub bytes: bytes::Bytes,
    pub provenance: FileProvenance,
}

/// One row of a binary dataset before the class rule is applied.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    /// 0-based record index in the file (seeds the noise); for a sharded
    /// source, the index across the shards in name order.
    pub index: usize,
    /// Where the row is, for messages (`line 12`, `examples[3]`).
    pub location: String,
    pub text: String,
    pub label: String,
    pub group: Option<String>,
}

/// One entry of a manifest's `source.files`: a `/`-separated path relative to
/// the data root whose last component may hold `*` wildcards, as in the HF
/// Hub's sharded layout (`plain_text/test-*.parquet`). A wildcard entry stands
/// for every matching file, read in name order as one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The directory part (`""` at the root), without a trailing `/`.
    pub dir: &'a str,
    /// The file name, possibly with `*`.
    pub name: &'a str,
}

impl<'a> Candidate<'a> {
    /// Split a `source.files` entry.
    pub fn parse(entry: &'a str) -> Candidate<'a> {
        match entry.rsplit_once('/') {
            Some((dir, name)) => Candidate { dir, name },
            None => Candidate {
                dir: "",
                name: entry,
            },
        }
    }

    /// Whether the entry is a wildcard pattern rather than one path.
    pub fn is_pattern(&self) -> bool {
        self.name.contains('*')
    }

    /// The entry as written.
    pub fn path(&self) -> String {
        if self.dir.is_empty() {
            self.name.to_string()
        } else {
            format!("{}/{}", self.dir, self.name)
        }
    }

    /// Whether a root-relative, `/`-separated path is selected by this entry.
    pub fn matches(&self, rel: &str) -> bool {
        let (dir, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", rel),
        };
        dir == self.dir && wildcard_match(self.name, name)
    }

    /// The paths among `available` this entry selects, sorted (shard order).
    pub fn select(&self, available: &[String]) -> Vec<String> {
        let mut hits: Vec<String> = available
            .iter()
            .filter(|p| self.matches(p))
            .cloned()
            .collect();
        hits.sort();
        hits.dedup();
        hits
    }
}

/// `*` matches any run of characters (none included); everything else literally.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The files of the first entry of `files` (a manifest's `source.files`)
/// present under a local root: one path, or every match of a wildcard entry in
/// name order. `None` when no entry is present. This is the rule the loaders
/// apply, so a fetcher that copies these files feeds them exactly what they read.
pub fn find_source_files(
    root: &Path,
    files: &[String],
) -> Result<Option<Vec<String>>, DatasetError> {
    for entry in files {
        let c = Candidate::parse(entry);
        if !c.is_pattern() {
            if root.join(entry).is_file() {
                return Ok(Some(vec![entry.clone()]));
            }
            continue;
        }
        let dir = root.join(c.dir);
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(_) => continue,
        };
        let mut names = Vec::new();
        for item in listing {
            let item = item.map_err(|source| DatasetError::Io {
                path: dir.clone(),
                source,
            })?;
            if item.path().is_file() {
                if let Some(name) = item.file_name().to_str() {
                    names.push(Candidate { dir: c.dir, name }.path());
                }
            }
        }
        let hits = c.select(&names);
        if !hits.is_empty() {
            return Ok(Some(hits));
        }
    }
    Ok(None)
}

/// Find and read the files of the first candidate present under `root`.
pub(crate) fn open(
    dataset: &str,
    root: &Path,
    spec: &SourceSpec,
) -> Result<Vec<SourceFile>, DatasetError> {
    let Some(found) = find_source_files(root, &spec.files)? else {
        let hint = match &spec.hub_repo {
            Some(repo) => format!(
                "Use a data root that holds them, or fetch them from the HF dataset `{repo}` \
                 (data root hf://datasets/{repo}, see docs/datasets.md)."
            ),
            None => "Point the data root at the directory holding the file.".to_string(),
        };
        return Err(DatasetError::NotFound {
            dataset: dataset.to_string(),
            root: root.to_path_buf(),
            tried: spec.files.join(", "),
            hint,
        });
    };
    found.iter().map(|rel| read_one(root, rel, spec)).collect()
}

fn read_one(root: &Path, rel: &str, spec: &SourceSpec) -> Result<SourceFile, DatasetError> {
    let path = root.join(rel);
    let bytes = std::fs::read(&path).map_err(|source| DatasetError::Io {
        path: path.clone(),
        source,
    })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let matches_paper_file = spec
        .expected_sha256
        .as_ref()
        .map(|e| e.eq_ignore_ascii_case(&sha256));
    let provenance = FileProvenance {
        path: rel.to_string(),
        sha256,
        bytes: bytes.len() as u64,
        matches_paper_file,
    };
    Ok(SourceFile {
        path,
        bytes: bytes.into(),
        provenance,
    })
}

/// The file as UTF-8, or an error naming the line of the first bad byte.
pub(crate) fn text(file: &SourceFile) -> Result<&str, DatasetError> {
    std::str::from_utf8(&file.bytes).map_err(|e| {
        let line = file.bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        DatasetError::parse(
            &file.path,
            format!("line {line}"),
            "(file)",
            "UTF-8 text",
            "invalid UTF-8 bytes",
        )
    })
}

/// Read the rows of a binary dataset.
pub(crate) fn read_rows(file: &SourceFile, spec: &SourceSpec) -> Result<Vec<RawRow>, DatasetError> {
    let format = match spec.format {
        SourceFormat::ByExtension => by_extension(&file.path)?,
        f => f,
    };
    match format {
        SourceFormat::Csv => read_delimited(file, spec, b','),
        SourceFormat::Tsv => read_delimited(file, spec, b'\t'),
        SourceFormat::Jsonl => read_jsonl(file, spec),
        SourceFormat::JsonExamples => read_json_examples(file, spec),
        SourceFormat::BigbenchStrategyqa => read_strategyqa(file),
        SourceFormat::LabelSpaceText => read_label_space_text(file),
        SourceFormat::Parquet => read_parquet(file, spec),
        other => Err(DatasetError::parse(
            &file.path,
            "-",
            "format",
            "a binary-dataset format",
            format!("{other:?}"),
        )),
    }
}

fn by_extension(path: &Path) -> Result<SourceFormat, DatasetError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => Ok(SourceFormat::Jsonl),
        "csv" => Ok(SourceFormat::Csv),
        "tsv" => Ok(SourceFormat::Tsv),
        "parquet" => Ok(SourceFormat::Parquet),
        other => Err(DatasetError::parse(
            path,
            "-",
            "(file name)",
            "a .jsonl, .json, .csv, .tsv or .parquet file",
            other,
        )),
    }
}

fn field<'a>(spec: &'a SourceSpec, which: &'a str) -> &'a str {
    let f = match which {
        "text" => &spec.text_field,
        "label" => &spec.label_field,
        _ => &spec.group_field,
    };
    f.as_deref().unwrap_or(which)
}

/// CSV/TSV with a header line. Quoting follows RFC 4180 with `"`; text after a
/// closing quote is kept, which is also what pandas (the papers' reader) does.
pub(crate) fn read_delimited(
    file: &SourceFile,
    spec: &SourceSpec,
    delim: u8,
) -> Result<Vec<RawRow>, DatasetError> {
    let content = text(file)?;
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(true)
        .from_reader(content.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| DatasetError::parse(&file.path, "line 1", "(header)", "a header line", e))?
        .clone();
    let col = |name: &str| -> Result<usize, DatasetError> {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            DatasetError::parse(
                &file.path,
                "line 1",
                name,
                &format!("a column named `{name}` in the header"),
                headers.iter().collect::<Vec<_>>().join(","),
            )
        })
    };
    let text_col = col(field(spec, "text"))?;
    let label_col = col(field(spec, "label"))?;
    let group_col = spec.group_field.as_deref().map(col).transpose()?;
    let mut rows = Vec::new();
    for (index, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            DatasetError::parse(
                &file.path,
                format!("line {line}"),
                "(record)",
                &format!("{} fields", headers.len()),
                e,
            )
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let get = |c: usize, name: &str| -> Result<String, DatasetError> {
            rec.get(c).map(str::to_string).ok_or_else(|| {
                DatasetError::parse(
                    &file.path,
                    format!("line {line}"),
                    name,
                    "a value",
                    "a missing field",
                )
            })
        };
        rows.push(RawRow {
            index,
            location: format!("line {line}"),
            text: get(text_col, field(spec, "text"))?,
            label: get(label_col, field(spec, "label"))?,
            group: group_col
                .map(|c| get(c, field(spec, "group")))
                .transpose()?,
        });
    }
    Ok(rows)
}

/// A JSON scalar label as text: strings as is, numbers and booleans as written.
fn label_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn row_from_object(
    file: &SourceFile,
    spec: &SourceSpec,
    obj: &serde_json::Value,
    index: usize,
    location: String,
) -> Result<RawRow, DatasetError> {
    let tf = field(spec, "text");
    let lf = field(spec, "label");
    let text = str_field(file, &location, obj, tf)?;
    let label = obj.get(lf).and_then(label_text).ok_or_else(|| {
        DatasetError::parse(
            &file.path,
            &location,
            lf,
            "a string, number or boolean",
            obj.get(lf).map_or("nothing".into(), |v| v.to_string()),
        )
    })?;
    let group =
        match spec.group_field.as_deref() {
            Some(g) => Some(obj.get(g).and_then(label_text).ok_or_else(|| {
                DatasetError::parse(&file.path, &location, g, "a scalar", "nothing")
            })?),
            None => None,
        };
    Ok(RawRow {
        index,
        location,
        text,
        label,
        group,
    })
}

fn read_jsonl(file: &SourceFile, spec: &SourceSpec) -> Result<Vec<RawRow>, DatasetError> {
    let content = text(file)?;
    let mut rows = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            DatasetError::parse(&file.path, &location, "(record)", "a JSON object", e)
        })?;
        let index = rows.len();
        rows.push(row_from_object(file, spec, &v, index, location)?);
    }
    Ok(rows)
}

/// The file as one JSON document; a syntax error names its line and column.
pub(crate) fn parse_json(file: &SourceFile) -> Result<serde_json::Value, DatasetError> {
    serde_json::from_str(text(file)?).map_err(|e| {
        DatasetError::parse(
            &file.path,
            format!("line {} column {}", e.line(), e.column()),
            "(document)",
            "valid JSON",
            e,
        )
    })
}

/// The string field `key` of the JSON object `obj` found at `loc` in `file`;
/// anything else is an error naming the location, the key and what was there.
pub(crate) fn str_field(
    file: &SourceFile,
    loc: &str,
    obj: &serde_json::Value,
    key: &str,
) -> Result<String, DatasetError> {
    obj.get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            DatasetError::parse(
                &file.path,
                loc,
                key,
                "a string",
                obj.get(key).map_or("nothing".into(), |v| v.to_string()),
            )
        })
}

fn examples(
    file: &SourceFile,
    doc: &serde_json::Value,
) -> Result<Vec<serde_json::Value>, DatasetError> {
    doc.get("examples")
        .and_then(|e| e.as_array())
        .cloned()
        .ok_or_else(|| {
            DatasetError::parse(
                &file.path,
                "(top level)",
                "examples",
                "an array of objects",
                "nothing",
            )
        })
}

fn read_json_examples(file: &SourceFile, spec: &SourceSpec) -> Result<Vec<RawRow>, DatasetError> {
    let doc = parse_json(file)?;
    examples(file, &doc)?
        .iter()
        .enumerate()
        .map(|(i, ex)| row_from_object(file, spec, ex, i, format!("examples[{i}]")))
        .collect()
}

/// StrategyQA: the sample is `input + " " + target`, where the target's leading
/// `Yes.`/`No.` verdict is cut and the remainder trimmed; the label is whichever
/// of `target_scores.Yes` / `.No` is 1 (Yes checked first).
fn read_strategyqa(file: &SourceFile) -> Result<Vec<RawRow>, DatasetError> {
    let doc = parse_json(file)?;
    let mut rows = Vec::new();
    for (i, ex) in examples(file, &doc)?.iter().enumerate() {
        let loc = format!("examples[{i}]");
        let input = str_field(file, &loc, ex, "input")?;
        let target = str_field(file, &loc, ex, "target")?;
        let score = |k: &str| {
            ex.get("target_scores")
                .and_then(|t| t.get(k))
                .and_then(|v| v.as_i64())
        };
        let label = if score("Yes") == Some(1) {
            "Yes"
        } else if score("No") == Some(1) {
            "No"
        } else {
            return Err(DatasetError::parse(
                &file.path,
                &loc,
                "target_scores",
                "Yes or No scored 1",
                ex.get("target_scores")
                    .map_or("nothing".into(), |v| v.to_string()),
            ));
        };
        let explanation = if let Some(rest) = target.strip_prefix("Yes.") {
            rest.trim()
        } else if let Some(rest) = target.strip_prefix("No.") {
            rest.trim()
        } else {
            target.as_str()
        };
        rows.push(RawRow {
            index: i,
            location: loc.clone(),
            text: format!("{input} {explanation}"),
            label: label.to_string(),
            group: None,
        });
    }
    Ok(rows)
}

/// `<label> <sentence>` lines; each line is trimmed first, as the paper's reader does.
fn read_label_space_text(file: &SourceFile) -> Result<Vec<RawRow>, DatasetError> {
    let content = text(file)?;
    let mut rows = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let location = format!("line {}", i + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((label, sentence)) = line.split_once(' ') else {
            return Err(DatasetError::parse(
                &file.path,
                &location,
                "sentence",
                "`<label> <sentence>`",
                line,
            ));
        };
        if label.parse::<i64>().is_err() {
            return Err(DatasetError::parse(
                &file.path,
                &location,
                "label",
                "an integer label",
                label,
            ));
        }
        let index = rows.len();
        rows.push(RawRow {
            index,
            location,
            text: sentence.to_string(),
            label: label.to_string(),
            group: None,
        });
    }
    Ok(rows)
}

/// A Parquet table (the HF Hub's layout, e.g. IMDb's `text`/`label`), read
/// through the record API so no Arrow is needed. Only the text, label and
/// group columns are decoded; rows are `row[i]`, 0-based, in file order.
fn read_parquet(file: &SourceFile, spec: &SourceSpec) -> Result<Vec<RawRow>, DatasetError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::schema::types::Type;
    use std::sync::Arc;

    let reader = SerializedFileReader::new(file.bytes.clone())
        .map_err(|e| DatasetError::parse(&file.path, "(footer)", "(file)", "a Parquet file", e))?;
    let schema = reader.metadata().file_metadata().schema();
    let present: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
    let mut wanted = vec![field(spec, "text"), field(spec, "label")];
    wanted.extend(spec.group_field.as_deref());
    let mut columns: Vec<Arc<Type>> = Vec::new();
    for name in &wanted {
        let col = schema
            .get_fields()
            .iter()
            .find(|f| f.name() == *name)
            .ok_or_else(|| {
                DatasetError::parse(
                    &file.path,
                    "(schema)",
                    name,
                    &format!("a column named `{name}`"),
                    present.join(","),
                )
            })?;
        if !columns.iter().any(|c| c.name() == *name) {
            columns.push(col.clone());
        }
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(columns)
        .build()
        .map_err(|e| DatasetError::parse(&file.path, "(schema)", "(file)", "a flat table", e))?;
    let iter = reader
        .get_row_iter(Some(projection))
        .map_err(|e| DatasetError::parse(&file.path, "(schema)", "(file)", "a flat table", e))?;
    let mut rows = Vec::new();
    for (index, row) in iter.enumerate() {
        let location = format!("row[{index}]");
        let row = row.map_err(|e| {
            DatasetError::parse(
                &file.path,
                &location,
                "(record)",
                "a readable row (plain or snappy-compressed pages)",
                e,
            )
        })?;
        let get = |name: &str, want_text: bool| -> Result<String, DatasetError> {
            let value = row
                .get_column_iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v);
            let scalar = value.and_then(|v| parquet_scalar(v, want_text));
            scalar.ok_or_else(|| {
                DatasetError::parse(
                    &file.path,
                    &location,
                    name,
                    if want_text {
                        "a string"
                    } else {
                        "a string, integer or boolean"
                    },
                    value.map_or("nothing".to_string(), |v| v.to_string()),
                )
            })
        };
        rows.push(RawRow {
            index,
            text: get(field(spec, "text"), true)?,
            label: get(field(spec, "label"), false)?,
            group: spec
                .group_field
                .as_deref()
                .map(|g| get(g, false))
                .transpose()?,
            location,
        });
    }
    Ok(rows)
}

/// A Parquet value as text: strings as is; for labels also integers and
/// booleans as written (the Hub stores class labels as int64).
fn parquet_scalar(v: &parquet::record::Field, text_only: bool) -> Option<String> {
    use parquet::record::Field;
    match v {
        Field::Str(s) => Some(s.clone()),
        _ if text_only => None,
        Field::Bool(b) => Some(b.to_string()),
        Field::Byte(i) => Some(i.to_string()),
        Field::Short(i) => Some(i.to_string()),
        Field::Int(i) => Some(i.to_string()),
        Field::Long(i) => Some(i.to_string()),
        Field::UByte(i) => Some(i.to_string()),
        Field::UShort(i) => Some(i.to_string()),
        Field::UInt(i) => Some(i.to_string()),
        Field::ULong(i) => Some(i.to_string()),
        _ => None,
    }
}
