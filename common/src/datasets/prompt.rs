//! Prompt modes and the assembly of a binary dataset's model input.

use super::DatasetError;
use serde::{Deserialize, Serialize};

/// The one prompt the released Concept Depth code applied to every dataset: its
/// probe script overwrites the per-dataset prompt with this sentiment prompt
/// before building inputs, keeping each dataset's layout and CoT suffix.
pub(crate) const CD_LEGACY_INSTRUCTION: &str =
    "According to the sentence, judge the emotion is Positive or Negative.";

/// Which instruction goes into the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PromptMode {
    /// Each dataset's own instruction, as the paper's code defines it.
    #[serde(rename = "paper")]
    Paper,
    /// The released code's behaviour: [`CD_LEGACY_INSTRUCTION`] everywhere.
    #[serde(rename = "cd-legacy")]
    CdLegacy,
}

impl PromptMode {
    /// Parse `paper` or `cd-legacy`.
    pub fn parse(s: &str) -> Result<PromptMode, DatasetError> {
        match s {
            "paper" => Ok(PromptMode::Paper),
            "cd-legacy" => Ok(PromptMode::CdLegacy),
            other => Err(DatasetError::BadOption {
                what: "prompt mode",
                value: other.to_string(),
                expected: "`paper` (per-dataset prompts) or `cd-legacy` (the released code's single sentiment prompt)".into(),
            }),
        }
    }

    /// The canonical name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PromptMode::Paper => "paper",
            PromptMode::CdLegacy => "cd-legacy",
        }
    }
}

impl std::fmt::Display for PromptMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a binary model input is assembled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// The dataset's own prompt in the paper's code.
    pub instruction: String,
    /// Chain-of-thought suffix, where the paper's code has one.
    #[serde(default)]
    pub cot: Option<String>,
    /// Where the pieces go: `{instruction}`, `{sample}` and `{cot}` placeholders
    /// with the literal separators between them.
    pub layout: String,
}

impl PromptSpec {
    /// Checks [`PromptSpec::layout`] against the pieces this prompt has.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_layout(&self.layout, self.cot.is_some())
    }
}

/// Check a layout: `{instruction}` and `{sample}` exactly once, `{cot}` exactly
/// once when (and only when) the prompt has a CoT suffix, no other placeholder.
pub(crate) fn check_layout(layout: &str, has_cot: bool) -> Result<(), String> {
    let count = |p: &str| layout.matches(p).count();
    if count("{instruction}") != 1 || count("{sample}") != 1 {
        return Err(format!(
            "prompt.layout `{layout}` must contain {{instruction}} and {{sample}} exactly once"
        ));
    }
    if count("{cot}") != usize::from(has_cot) {
        return Err(format!(
            "prompt.layout `{layout}` must contain {{cot}} exactly when prompt.cot is set"
        ));
    }
    let stripped = layout
        .replace("{instruction}", "")
        .replace("{sample}", "")
        .replace("{cot}", "");
    if stripped.contains('{') || stripped.contains('}') {
        return Err(format!(
            "prompt.layout `{layout}` has an unknown placeholder"
        ));
    }
    Ok(())
}

/// Build the model input from an (already perturbed) sample.
pub fn render(spec: &PromptSpec, mode: PromptMode, sample: &str) -> String {
    let instruction = match mode {
        PromptMode::Paper => spec.instruction.as_str(),
        PromptMode::CdLegacy => CD_LEGACY_INSTRUCTION,
    };
    // Split on the placeholders instead of chained `replace` so that braces
    // inside a sample can never be mistaken for a placeholder.
    let mut out = String::with_capacity(spec.layout.len() + instruction.len() + sample.len() + 128);
    let mut rest = spec.layout.as_str();
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let (piece, len) = if tail.starts_with("{instruction}") {
            (instruction, "{instruction}".len())
        } else if tail.starts_with("{sample}") {
            (sample, "{sample}".len())
        } else if tail.starts_with("{cot}") {
            (spec.cot.as_deref().unwrap_or(""), "{cot}".len())
        } else {
            ("{", 1)
        };
        out.push_str(piece);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}
