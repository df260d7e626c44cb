//! The largest forward pass a task will run, measured on its dataset's real
//! token lengths: what memory planning sizes the activations for (a fixed
//! guess would refuse short-text sweeps that fit, or place long-text ones
//! that then run out of memory).

use crate::placement::BatchShape;
use cd_common::datasets::McQuestion;
use tokenizers::Tokenizer;

/// The texts a task will run through the model.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workload<'a> {
    /// Texts extracted in batches of `batch_size`, longest first.
    Texts {
        /// The dataset's texts.
        texts: &'a [String],
        /// Texts per forward pass.
        batch_size: usize,
    },
    /// Multiple-choice items: one forward pass per item, one row per
    /// candidate, each row the prompt followed by the candidate.
    Choices(&'a [McQuestion]),
}

impl Workload<'_> {
    /// The batch shape of the largest forward pass, in tokens as `tokenizer`
    /// counts them (special tokens included, as the engine adds them).
    pub(crate) fn largest_batch(&self, tokenizer: &Tokenizer) -> Result<BatchShape, String> {
        let count = |text: &str| {
            tokenizer
                .encode(text, true)
                .map(|e| e.get_ids().len())
                .map_err(|e| format!("tokenising for memory planning: {e}"))
        };
        match *self {
            Workload::Texts { texts, batch_size } => {
                let mut seq = 0;
                for t in texts {
                    seq = seq.max(count(t)?);
                }
                // Extraction sorts by length, longest first: the first batch
                // is the widest, with as many rows as a batch holds.
                Ok(BatchShape {
                    batch: batch_size.max(1).min(texts.len().max(1)),
                    seq: seq.max(1),
                })
            }
            Workload::Choices(items) => {
                let (mut batch, mut seq) = (1, 1);
                for item in items {
                    batch = batch.max(item.candidates.len());
                    for c in &item.candidates {
                        seq = seq.max(count(&format!("{}{}", item.prompt, c))?);
                    }
                }
                Ok(BatchShape { batch, seq })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;

    fn words() -> Tokenizer {
        let vocab = [("[UNK]", 0), ("a", 1), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(w, i)| (w.to_string(), i))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut t = Tokenizer::new(model);
        t.with_pre_tokenizer(Some(Whitespace {}));
        t
    }

    fn item(prompt: &str, candidates: &[&str]) -> McQuestion {
        McQuestion {
            id: "i".into(),
            prompt: prompt.into(),
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
            correct: vec![true; candidates.len()],
            best: 0,
            leaked_demo: false,
            dropped_negatives: 0,
            unwinnable: false,
        }
    }

    #[test]
    fn texts_plan_for_the_longest_text_in_a_full_batch() {
        let texts: Vec<String> = ["a", "a b c a b c a", "b c"]
            .into_iter()
            .map(String::from)
            .collect();
        let shape = Workload::Texts {
            texts: &texts,
            batch_size: 2,
        }
        .largest_batch(&words())
        .unwrap();
        assert_eq!((shape.batch, shape.seq), (2, 7));
        // A batch larger than the dataset runs as many rows as there are texts.
        let shape = Workload::Texts {
            texts: &texts,
            batch_size: 64,
        }
        .largest_batch(&words())
        .unwrap();
        assert_eq!((shape.batch, shape.seq), (3, 7));
    }

    #[test]
    fn choices_plan_for_the_widest_item_and_the_longest_prompt_with_a_candidate() {
        let items = [
            item("a b", &[" c", " c c c"]),
            item("a", &[" a", " b", " c", " a"]),
        ];
        let shape = Workload::Choices(&items).largest_batch(&words()).unwrap();
        assert_eq!((shape.batch, shape.seq), (4, 5));
    }
}
