//! Multiple-choice tasks (probing across scales and layers): each item is a
//! prompt (few-shot prefix included) and candidate continuations with the
//! correct ones marked.
//!
//! Why this file is long: the class rules of every multiple-choice task of the
//! paper (calculation, math word problems, LAMA, TruthfulQA, ReClor) sit side
//! by side so their prompt conventions can be compared.

use super::generate::{self, NumberKind, DIGIT_CLASSES, OPS};
use super::manifest::{AnswerTransform, DatasetManifest, McSpec, SourceFormat};
use super::source::{self, SourceFile};
use super::{DataRoot, DatasetError, DatasetProvenance};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How a multiple-choice dataset is loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McOptions {
    /// Seeds generated datasets (Calculation).
    pub seed: u64,
    /// Keep only the first N items.
    pub max_items: Option<usize>,
    /// Leave out items whose question is one of the few-shot demonstrations
    /// (they are always flagged in [`McQuestion::leaked_demo`]).
    pub drop_leaked: bool,
}

/// One multiple-choice item.
#[derive(Debug, Clone, PartialEq)]
pub struct McQuestion {
    /// Stable id (`row 12`, `val_3`, `int/1-2/add/0`).
    pub id: String,
    /// The full prompt: header, demonstrations and the item.
    pub prompt: String,
    /// Candidate continuations, each starting with the continuation prefix.
    pub candidates: Vec<String>,
    /// Which candidates are correct (true answers come first).
    pub correct: Vec<bool>,
    /// Index of the best (reference) answer among the candidates.
    pub best: usize,
    /// The item's question is one of the few-shot demonstrations.
    pub leaked_demo: bool,
    /// Negatives dropped because they are another gold answer of the same prompt.
    pub dropped_negatives: usize,
    /// A false candidate is identical to the best answer, so MC1 cannot succeed.
    pub unwinnable: bool,
}

/// A loaded multiple-choice dataset.
#[derive(Debug, Clone)]
pub struct McDataset {
    pub name: String,
    pub items: Vec<McQuestion>,
    pub provenance: DatasetProvenance,
}

impl McDataset {
    /// Mean of 1 / number of candidates: MC1's chance level.
    pub fn chance_level(&self) -> f64 {
        if self.items.is_empty() {
            return 0.0;
        }
        self.items
            .iter()
            .map(|i| 1.0 / i.candidates.len() as f64)
            .sum::<f64>()
            / self.items.len() as f64
    }
}

/// An item before the prompt is assembled.
struct RawItem {
    id: String,
    context: Option<String>,
    question: String,
    truths: Vec<String>,
    falses: Vec<String>,
    best: usize,
    dropped_negatives: usize,
}

pub(crate) fn load(
    manifest: &DatasetManifest,
    param: Option<&str>,
    root: &DataRoot,
    opts: &McOptions,
) -> Result<McDataset, DatasetError> {
    let spec = manifest.mc.as_ref().expect("validated: mc spec");
    let mut stats = BTreeMap::new();
    let (raw, files, generator) = match (&manifest.source, &manifest.generator) {
        (Some(src), _) => {
            if let Some(p) = param {
                return Err(DatasetError::BadOption {
                    what: "dataset name",
                    value: format!("{}/{p}", manifest.name),
                    expected: format!("`{}` (it takes no parameter)", manifest.name),
                });
            }
            // Multiple-choice sources name single files (validated): one file.
            let file = source::open(&manifest.name, root.local_dir()?, src)?
                .into_iter()
                .next()
                .expect("open returns at least one file");
            let raw = match src.format {
                SourceFormat::Gsm8kMc => read_gsm8k(&file)?,
                SourceFormat::MlamaTsv => read_mlama(&file, &mut stats)?,
                SourceFormat::TruthfulqaCsv => read_truthfulqa(&file)?,
                SourceFormat::ReclorJson => read_reclor(&file)?,
                other => {
                    return Err(DatasetError::parse(
                        &file.path,
                        "-",
                        "format",
                        "a multiple-choice format",
                        format!("{other:?}"),
                    ))
                }
            };
            (raw, vec![file.provenance], None)
        }
        (None, Some(g)) => {
            let raw = calculation(
                manifest,
                param,
                opts.seed,
                g.items,
                g.wrong_answers.unwrap_or(3),
            )?;
            (
                raw,
                Vec::new(),
                Some(format!(
                    "calculation {} seed={}",
                    param.unwrap_or("*/*/*"),
                    opts.seed
                )),
            )
        }
        (None, None) => unreachable!("validated"),
    };

    let demo_keys: HashSet<String> = spec.demos.iter().map(|d| normalise(&d.question)).collect();
    let demo_ctx: HashSet<String> = spec
        .demos
        .iter()
        .filter_map(|d| d.context.as_deref().map(normalise))
        .collect();
    let prefix = few_shot_prefix(spec);
    let mut items = Vec::new();
    let (mut leaked, mut unwinnable, mut dropped) = (0, 0, 0);
    for r in raw {
        let leaked_demo = demo_keys.contains(&normalise(&r.question))
            && r.context
                .as_deref()
                .is_none_or(|c| demo_ctx.contains(&normalise(c)));
        if leaked_demo {
            leaked += 1;
            if opts.drop_leaked {
                continue;
            }
        }
        let transform = |a: &str| {
            format!(
                "{}{}",
                spec.continuation_prefix,
                transform_answer(spec.answer_transform, a)
            )
        };
        let truths: Vec<String> = r.truths.iter().map(|a| transform(a)).collect();
        let falses: Vec<String> = r.falses.iter().map(|a| transform(a)).collect();
        let is_unwinnable = falses.contains(&truths[r.best]);
        unwinnable += usize::from(is_unwinnable);
        dropped += r.dropped_negatives;
        let prompt = format!(
            "{prefix}{}",
            fill(&spec.item_layout, r.context.as_deref(), &r.question, None)
        );
        let mut correct = vec![true; truths.len()];
        correct.extend(std::iter::repeat_n(false, falses.len()));
        items.push(McQuestion {
            id: r.id,
            prompt,
            candidates: truths.into_iter().chain(falses).collect(),
            correct,
            best: r.best,
            leaked_demo,
            dropped_negatives: r.dropped_negatives,
            unwinnable: is_unwinnable,
        });
        if opts.max_items.is_some_and(|m| items.len() >= m) {
            break;
        }
    }
    if items.is_empty() {
        return Err(DatasetError::TooFew {
            dataset: manifest.name.clone(),
            detail: "no items".into(),
        });
    }
    stats.insert("leaked_demo_items".into(), leaked);
    stats.insert("unwinnable_items".into(), unwinnable);
    stats.insert("dropped_negatives".into(), dropped);
    let candidates: usize = items.iter().map(|i| i.candidates.len()).sum();
    let provenance = DatasetProvenance {
        dataset: manifest.name.clone(),
        files,
        generator,
        counts: BTreeMap::from([
            ("items".to_string(), items.len()),
            ("candidates".to_string(), candidates),
        ]),
        positive_class: None,
        prompt_mode: None,
        noise: "none".into(),
        seed: opts.seed,
        stats,
    };
    Ok(McDataset {
        name: manifest.name.clone(),
        items,
        provenance,
    })
}

/// Lowercase letters and digits only, so spacing differences do not hide a leak.
fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn fill(layout: &str, context: Option<&str>, question: &str, answer: Option<&str>) -> String {
    // Context first: a question can contain a literal "{answer}" only by accident,
    // but filling in one pass keeps inserted text from being re-scanned.
    let mut out = String::with_capacity(layout.len() + question.len() + 64);
    let mut rest = layout;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let pieces: [(&str, &str); 3] = [
            ("{context}", context.unwrap_or("")),
            ("{question}", question),
            ("{answer}", answer.unwrap_or("")),
        ];
        match pieces.iter().find(|(k, _)| tail.starts_with(k)) {
            Some((k, v)) => {
                out.push_str(v);
                rest = &tail[k.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Header plus every demonstration.
pub(crate) fn few_shot_prefix(spec: &McSpec) -> String {
    let mut s = spec.header.clone();
    for d in &spec.demos {
        s.push_str(&fill(
            &spec.demo_layout,
            d.context.as_deref(),
            &d.question,
            Some(&d.answer),
        ));
    }
    s
}

fn transform_answer(t: AnswerTransform, a: &str) -> String {
    match t {
        AnswerTransform::None => a.to_string(),
        AnswerTransform::Gsm8kMath => a.replace('\n', " ").replace("####", "The answer is"),
        AnswerTransform::ClosePeriod => close_period(a),
    }
}

fn close_period(a: &str) -> String {
    let a = a.trim();
    if a.ends_with('.') {
        a.to_string()
    } else {
        format!("{a}.")
    }
}

fn str_list(
    v: &serde_json::Value,
    file: &SourceFile,
    loc: &str,
    field: &str,
) -> Result<Vec<String>, DatasetError> {
    let bad = || {
        DatasetError::parse(
            &file.path,
            loc,
            field,
            "a non-empty array of strings",
            v.get(field).map_or("nothing".into(), |x| x.to_string()),
        )
    };
    let arr = v.get(field).and_then(|a| a.as_array()).ok_or_else(bad)?;
    let out: Option<Vec<String>> = arr.iter().map(|x| x.as_str().map(str::to_string)).collect();
    out.filter(|o| !o.is_empty()).ok_or_else(bad)
}

/// MPS-Cal / xMPS-Cal: true = `truth_answer` (the first is the best), false = `error`.
fn read_gsm8k(file: &SourceFile) -> Result<Vec<RawItem>, DatasetError> {
    let text = source::text(file)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let loc = format!("line {}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| DatasetError::parse(&file.path, &loc, "(record)", "a JSON object", e))?;
        let question = v.get("question").and_then(|q| q.as_str()).ok_or_else(|| {
            DatasetError::parse(
                &file.path,
                &loc,
                "question",
                "a string",
                v.get("question")
                    .map_or("nothing".into(), |x| x.to_string()),
            )
        })?;
        out.push(RawItem {
            id: format!("line {}", i + 1),
            context: None,
            question: question.to_string(),
            truths: str_list(&v, file, &loc, "truth_answer")?,
            falses: str_list(&v, file, &loc, "error")?,
            best: 0,
            dropped_negatives: 0,
        });
    }
    Ok(out)
}

/// mLAMA subset: `Prompt \t Ans \t Candidate Ans \t Subject`. Rows whose
/// candidate list has one entry are skipped (as the paper's reader does); the
/// negatives are the candidates but the last (the gold), minus any that is a
/// gold answer of another row with the same prompt.
fn read_mlama(
    file: &SourceFile,
    stats: &mut BTreeMap<String, usize>,
) -> Result<Vec<RawItem>, DatasetError> {
    let text = source::text(file)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        let loc = format!("line {}", i + 1);
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 {
            return Err(DatasetError::parse(
                &file.path,
                &loc,
                "Candidate Ans",
                "4 tab-separated fields",
                format!("{} fields", f.len()),
            ));
        }
        rows.push((i + 1, f[0].to_string(), f[1].to_string(), f[2].to_string()));
    }
    let mut golds: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (_, prompt, gold, _) in &rows {
        golds
            .entry(prompt.as_str())
            .or_default()
            .insert(gold.as_str());
    }
    let mut out = Vec::new();
    let mut single = 0;
    for (line, prompt, gold, cands) in &rows {
        let parts: Vec<&str> = cands.trim().split(',').collect();
        if parts.len() < 2 {
            single += 1;
            continue;
        }
        let negatives: Vec<String> = parts[..parts.len() - 1]
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let same_prompt = &golds[prompt.as_str()];
        let kept: Vec<String> = negatives
            .iter()
            .filter(|n| !same_prompt.contains(n.as_str()))
            .cloned()
            .collect();
        let dropped = negatives.len() - kept.len();
        if kept.is_empty() {
            single += 1;
            continue;
        }
        out.push(RawItem {
            id: format!("line {line}"),
            context: None,
            question: prompt.clone(),
            truths: vec![gold.clone()],
            falses: kept,
            best: 0,
            dropped_negatives: dropped,
        });
    }
    stats.insert("skipped_rows".into(), single);
    Ok(out)
}

/// TruthfulQA: `;`-separated answer lists, each answer closed with a period.
fn read_truthfulqa(file: &SourceFile) -> Result<Vec<RawItem>, DatasetError> {
    let text = source::text(file)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|e| DatasetError::parse(&file.path, "line 1", "(header)", "a header", e))?
        .clone();
    let col = |n: &str| {
        headers.iter().position(|h| h == n).ok_or_else(|| {
            DatasetError::parse(
                &file.path,
                "line 1",
                n,
                &format!("a column `{n}`"),
                headers.iter().collect::<Vec<_>>().join(","),
            )
        })
    };
    let (q, best, t, f) = (
        col("Question")?,
        col("Best Answer")?,
        col("Correct Answers")?,
        col("Incorrect Answers")?,
    );
    let split = |s: &str| -> Vec<String> {
        s.trim()
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(close_period)
            .collect()
    };
    let mut out = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            DatasetError::parse(
                &file.path,
                format!("line {line}"),
                "(record)",
                "7 fields",
                e,
            )
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        let loc = format!("line {line}");
        let mut truths = split(&rec[t]);
        let falses = split(&rec[f]);
        if falses.is_empty() {
            return Err(DatasetError::parse(
                &file.path,
                &loc,
                "Incorrect Answers",
                "at least one answer",
                &rec[f],
            ));
        }
        let best_answer = close_period(&rec[best]);
        // The paper's code looks the best answer up among the true ones; add it
        // when absent rather than fail (the shipped file never needs this).
        let best_idx = match truths.iter().position(|a| a == &best_answer) {
            Some(p) => p,
            None => {
                truths.insert(0, best_answer);
                0
            }
        };
        out.push(RawItem {
            id: format!("row {i}"),
            context: None,
            question: rec[q].to_string(),
            truths,
            falses,
            best: best_idx,
            dropped_negatives: 0,
        });
    }
    Ok(out)
}

/// ReClor: the labelled option is true, the others false.
fn read_reclor(file: &SourceFile) -> Result<Vec<RawItem>, DatasetError> {
    let doc = source::parse_json(file)?;
    let arr = doc.as_array().ok_or_else(|| {
        DatasetError::parse(
            &file.path,
            "(top level)",
            "(document)",
            "a JSON array",
            "something else",
        )
    })?;
    let mut out = Vec::new();
    for (i, v) in arr.iter().enumerate() {
        let loc = format!("[{i}]");
        let answers = str_list(v, file, &loc, "answers")?;
        let label = v
            .get("label")
            .and_then(|l| l.as_u64())
            .map(|l| l as usize)
            .filter(|&l| l < answers.len())
            .ok_or_else(|| {
                DatasetError::parse(
                    &file.path,
                    &loc,
                    "label",
                    &format!("an index below {}", answers.len()),
                    v.get("label").map_or("nothing".into(), |x| x.to_string()),
                )
            })?;
        let truth = answers[label].clone();
        let falses: Vec<String> = answers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != label)
            .map(|(_, a)| a.clone())
            .collect();
        out.push(RawItem {
            id: v
                .get("id_string")
                .and_then(|x| x.as_str())
                .map_or_else(|| format!("[{i}]"), str::to_string),
            context: Some(source::str_field(file, &loc, v, "context")?),
            question: source::str_field(file, &loc, v, "question")?,
            truths: vec![truth],
            falses,
            best: 0,
            dropped_negatives: 0,
        });
    }
    Ok(out)
}

/// The parts of a calculation filter `<int|dec>/<1-2|3-4|5-6>/<op>` (any part
/// may be `*`, trailing parts may be left out), or why it is not one.
pub(crate) fn calculation_filter<'p>(
    manifest: &DatasetManifest,
    param: Option<&'p str>,
) -> Result<Vec<&'p str>, DatasetError> {
    let parts: Vec<&str> = param.map(|p| p.split('/').collect()).unwrap_or_default();
    let bad = || DatasetError::BadOption {
        what: "dataset name",
        value: format!("{}/{}", manifest.name, param.unwrap_or("")),
        expected: format!(
            "{}[/<int|dec|*>[/<1-2|3-4|5-6|*>[/<{}|*>]]]",
            manifest.name,
            OPS.join("|")
        ),
    };
    if parts.len() > 3
        || parts
            .first()
            .is_some_and(|p| !["int", "dec", "*"].contains(p))
        || parts.get(1).is_some_and(|p| {
            *p != "*" && !DIGIT_CLASSES.iter().any(|(a, b)| *p == format!("{a}-{b}"))
        })
        || parts.get(2).is_some_and(|p| *p != "*" && !OPS.contains(p))
    {
        return Err(bad());
    }
    Ok(parts)
}

/// Calculation items, optionally filtered by `<int|dec>/<1-2|3-4|5-6>/<op>`
/// (any part may be `*`, trailing parts may be left out).
fn calculation(
    manifest: &DatasetManifest,
    param: Option<&str>,
    seed: u64,
    per_cell: usize,
    n_wrong: usize,
) -> Result<Vec<RawItem>, DatasetError> {
    let parts = calculation_filter(manifest, param)?;
    let want = |i: usize, v: &str| parts.get(i).is_none_or(|p| *p == "*" || *p == v);
    let mut out = Vec::new();
    for (kind, kname) in [(NumberKind::Int, "int"), (NumberKind::Dec, "dec")] {
        if !want(0, kname) {
            continue;
        }
        for digits in DIGIT_CLASSES {
            if !want(1, &format!("{}-{}", digits.0, digits.1)) {
                continue;
            }
            for op in OPS {
                if !want(2, op) {
                    continue;
                }
                for i in 0..per_cell {
                    let it = generate::calc_item(seed, kind, digits, op, i, n_wrong);
                    out.push(RawItem {
                        id: it.id,
                        context: None,
                        question: it.expression,
                        truths: vec![it.answer.to_string()],
                        falses: it.wrong.iter().map(|w| w.to_string()).collect(),
                        best: 0,
                        dropped_negatives: 0,
                    });
                }
            }
        }
    }
    Ok(out)
}
