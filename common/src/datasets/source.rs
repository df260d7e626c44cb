//! Locating and reading raw files: each reader turns a file into rows of
//! (index, line, text, label, group) without interpreting the labels.

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
    pub bytes: Vec<u8>,
    pub provenance: FileProvenance,
}

/// One row of a binary dataset before the class rule is applied.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    /// 0-based record index in the file (seeds the noise).
    pub index: usize,
    /// Where the row is, for messages (`line 12`, `examples[3]`).
    pub location: String,
    pub text: String,
    pub label: String,
    pub group: Option<String>,
}

/// Find and read the first existing candidate file.
pub(crate) fn open(
    dataset: &str,
    root: &Path,
    spec: &SourceSpec,
) -> Result<SourceFile, DatasetError> {
    let found = spec.files.iter().find(|f| root.join(f).is_file());
    let Some(rel) = found else {
        let hint = match &spec.hub_repo {
            Some(repo) => format!(
                "Export the HF dataset `{repo}` to one of these names (see docs/datasets.md)."
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
        path: rel.clone(),
        sha256,
        bytes: bytes.len() as u64,
        matches_paper_file,
    };
    Ok(SourceFile {
        path,
        bytes,
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
        other => Err(DatasetError::parse(
            path,
            "-",
            "(file name)",
            "a .jsonl, .json, .csv or .tsv file",
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
    let text = obj.get(tf).and_then(|v| v.as_str()).ok_or_else(|| {
        DatasetError::parse(
            &file.path,
            &location,
            tf,
            "a string",
            obj.get(tf).map_or("nothing".into(), |v| v.to_string()),
        )
    })?;
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
        text: text.to_string(),
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

fn parse_json(file: &SourceFile) -> Result<serde_json::Value, DatasetError> {
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
        let s = |k: &str| -> Result<String, DatasetError> {
            ex.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    DatasetError::parse(
                        &file.path,
                        &loc,
                        k,
                        "a string",
                        ex.get(k).map_or("nothing".into(), |v| v.to_string()),
                    )
                })
        };
        let input = s("input")?;
        let target = s("target")?;
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
