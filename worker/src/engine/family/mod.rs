//! The architecture families: one file each, holding every quirk of the
//! family (how its HF config is read where it differs, its norm and
//! embedding conventions, and its decoder layer, written in the order the
//! papers write it). Nothing outside this module matches on [`Arch`]: the
//! rest of the engine asks the [`Family`] of a config.
//!
//! Adding a family: a file implementing [`Family`] (its defaults are
//! LLaMA's), a variant of [`Arch`] (`config.rs`), and its line in
//! [`Arch::family`].

pub(crate) mod gemma;
pub(crate) mod gemma3;
pub(crate) mod llama;
pub(crate) mod qwen2;

use super::activation::Act;
use super::config::{self, Arch, Fields, LayerKind, ModelConfig, Rope};
use super::layers::{Block, NormScale};
use super::quant::Numerics;
use super::EngineError;
use candle_core::DType;
use candle_nn::VarBuilder;

impl Arch {
    /// Every family, in the order errors list them.
    pub(crate) const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Gemma, Arch::Gemma3];

    /// What this family does differently (the one `match` on the architecture).
    pub(crate) fn family(self) -> &'static dyn Family {
        match self {
            Arch::Llama => &llama::Llama,
            Arch::Qwen2 => &qwen2::Qwen2,
            Arch::Gemma => &gemma::Gemma,
            Arch::Gemma3 => &gemma3::Gemma3,
        }
    }

    /// The family's name as used in metadata.
    pub fn as_str(&self) -> &'static str {
        self.family().name()
    }

    /// The family that reads HF `model_type` `t`.
    pub(crate) fn from_model_type(t: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.family().model_types().contains(&t))
    }

    /// Every accepted `model_type`, for error messages.
    pub(crate) fn model_type_names() -> String {
        Arch::ALL
            .iter()
            .flat_map(|a| a.family().model_types())
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One architecture family. The provided methods are LLaMA's behaviour;
/// a family overrides exactly its quirks.
pub(crate) trait Family: Sync {
    /// The family's name in metadata (`architecture` in outputs).
    fn name(&self) -> &'static str;

    /// The HF `model_type` values this family reads.
    fn model_types(&self) -> &'static [&'static str];

    /// Whether a multimodal checkpoint of this family (its top-level
    /// `model_type` one of ours) keeps the language model's config under
    /// `text_config`.
    fn nests_text_config(&self) -> bool {
        false
    }

    /// `rope_theta` when the config does not say.
    fn default_rope_theta(&self) -> f64 {
        10_000.0
    }

    /// `tie_word_embeddings` when the config does not say.
    fn ties_embeddings_by_default(&self) -> bool {
        false
    }

    /// The global RoPE and, for families whose sliding layers use their own
    /// base, the local one (`None`: sliding layers use the global one).
    fn ropes(&self, f: &Fields<'_>, top_theta: f64) -> Result<(Rope, Option<Rope>), EngineError> {
        Ok((config::single_rope(f, top_theta)?, None))
    }

    /// The sliding-attention window, if the config enables one.
    fn sliding_window(&self, f: &Fields<'_>) -> Result<Option<usize>, EngineError> {
        f.usize_opt("sliding_window")
    }

    /// Each layer's kind when the config has no `layer_types` list: every
    /// layer slides when there is a window.
    fn default_layer_kinds(
        &self,
        _f: &Fields<'_>,
        num_layers: usize,
        window: Option<usize>,
    ) -> Result<Vec<LayerKind>, EngineError> {
        let kind = match window {
            Some(_) => LayerKind::Sliding,
            None => LayerKind::Global,
        };
        Ok(vec![kind; num_layers])
    }

    /// Biases on (q/k/v, o) given the config's `attention_bias`.
    fn attention_biases(&self, attention_bias: bool) -> (bool, bool) {
        (attention_bias, attention_bias)
    }

    /// The attention score scale: `head_dim^-0.5`.
    fn attention_scale(&self, _f: &Fields<'_>, head_dim: usize) -> Result<f64, EngineError> {
        Ok((head_dim as f64).powf(-0.5))
    }

    /// The activation named when the config names none.
    fn default_activation(&self) -> &'static str {
        "silu"
    }

    /// The MLP nonlinearity a config's activation name means here, `None`
    /// when the family does not support it.
    fn activation(&self, name: &str) -> Option<Act> {
        (name == "silu").then_some(Act::Silu)
    }

    /// How the family's RMSNorms scale.
    fn norm_scale(&self) -> NormScale {
        NormScale::Weight
    }

    /// The factor token embeddings are multiplied by, if any.
    fn embedding_scale(&self, _hidden_size: usize, _dtype: DType) -> Option<f64> {
        None
    }

    /// Build one decoder layer from `vb` (already at `model.layers.{i}`):
    /// LLaMA's layer with this family's norm parameterisation.
    fn load_block(
        &self,
        vb: &VarBuilder,
        cfg: &ModelConfig,
        num: &Numerics,
    ) -> Result<Box<dyn Block>, EngineError> {
        let layer = llama::DecoderLayer::load(vb, cfg, self.norm_scale(), num)?;
        Ok(Box::new(layer))
    }
}

/// `sqrt(d)` rounded to the activation dtype, as transformers computes
/// Gemma's embedding normaliser (a tensor of the model's dtype).
pub(crate) fn sqrt_hidden_rounded(hidden_size: usize, dtype: DType) -> f64 {
    let s = (hidden_size as f64).sqrt();
    match dtype {
        DType::BF16 => half::bf16::from_f64(s).to_f64(),
        DType::F16 => half::f16::from_f64(s).to_f64(),
        DType::F32 => s as f32 as f64,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_type_names_exactly_one_family() {
        for arch in Arch::ALL {
            for t in arch.family().model_types() {
                assert_eq!(Arch::from_model_type(t), Some(arch), "{t}");
            }
        }
        assert_eq!(Arch::from_model_type("gpt2"), None);
        assert_eq!(
            Arch::model_type_names(),
            "llama, mistral, qwen2, gemma, gemma3_text, gemma3"
        );
    }

    #[test]
    fn gemma_embedding_scale_is_rounded_to_the_activation_dtype() {
        // sqrt(2048) = 45.2548...; bf16 keeps 8 significant bits: 45.25.
        assert_eq!(sqrt_hidden_rounded(2048, DType::BF16), 45.25);
        assert_eq!(
            sqrt_hidden_rounded(2048, DType::F32),
            (2048f64).sqrt() as f32 as f64
        );
        assert_eq!(
            Arch::Gemma.family().embedding_scale(2048, DType::BF16),
            Some(45.25)
        );
        assert_eq!(
            Arch::Llama.family().embedding_scale(2048, DType::BF16),
            None
        );
    }
}
