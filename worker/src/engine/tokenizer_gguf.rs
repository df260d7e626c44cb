//! Rebuilding a `tokenizers::Tokenizer` from a GGUF file's `tokenizer.ggml.*`
//! metadata, so a single `.gguf` is a complete model.
//!
//! Two vocabulary kinds are supported, named by `tokenizer.ggml.model`:
//! - `gpt2`: byte-level BPE. Tokens are stored in GPT-2's byte alphabet and the
//!   merges are given. How text is split before BPE is named by
//!   `tokenizer.ggml.pre` and follows llama.cpp's table (e.g. `smollm` splits
//!   every digit on its own, then applies GPT-2's split; `llama3`/`llama-bpe`
//!   use LLaMA-3's split; `qwen2` Qwen2's).
//! - `llama`: SentencePiece BPE with byte fallback (`<0x41>` tokens). The file
//!   has no merges: they are recovered from the vocabulary, ranked by the
//!   tokens' scores (Gemma: by their order in the file, since Gemma's scores
//!   do not follow its merge order). LLaMA prepends `▁` and turns spaces into
//!   `▁` (Metaspace); Gemma only turns spaces into `▁`.
//!
//! Control tokens (type 3) become special added tokens (matched whole, never
//! split); user-defined tokens (type 4) become plain added tokens. BOS is
//! prepended when `tokenizer.ggml.add_bos_token` says so (default: yes for
//! `llama` vocabularies, no for `gpt2`), EOS appended when
//! `tokenizer.ggml.add_eos_token` is set.

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use tokenizers::Tokenizer;

/// LLaMA-3's pre-tokenizer split (also Falcon3, DBRX, smaug-bpe, ...).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer split (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token type codes of llama.cpp's vocabulary.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A failure to build the tokenizer, with what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct GgufTokenizerError(pub String);

fn err(msg: impl Into<String>) -> GgufTokenizerError {
    GgufTokenizerError(msg.into())
}

fn meta<'a>(c: &'a Content, key: &str) -> Option<&'a Value> {
    c.metadata.get(key)
}

fn meta_str<'a>(c: &'a Content, key: &str) -> Option<&'a str> {
    match meta(c, key) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn meta_bool(c: &Content, key: &str) -> Option<bool> {
    match meta(c, key) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// Any integer-typed metadata value as i64.
pub(crate) fn value_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => *x as i64,
        Value::I64(x) => *x,
        Value::Bool(b) => *b as i64,
        _ => return None,
    })
}

fn meta_i64(c: &Content, key: &str) -> Option<i64> {
    meta(c, key).and_then(value_i64)
}

fn string_array(c: &Content, key: &str) -> Result<Option<Vec<String>>, GgufTokenizerError> {
    match meta(c, key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(err(format!(
                    "`{key}` holds a {:?}, expected strings",
                    other.value_type()
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(err(format!(
            "`{key}` is a {:?}, expected an array",
            other.value_type()
        ))),
    }
}

fn number_array(c: &Content, key: &str) -> Option<Vec<f64>> {
    match meta(c, key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::F32(x) => Some(*x as f64),
                Value::F64(x) => Some(*x),
                other => value_i64(other).map(|x| x as f64),
            })
            .collect(),
        _ => None,
    }
}

/// GPT-2's reversible byte → printable character table.
fn bytes_to_unicode() -> HashMap<u8, char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid code point")))
        .collect()
}

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": special
    })
}

/// Pre-tokenizer for a byte-level vocabulary, by llama.cpp's `tokenizer.ggml.pre` name.
fn byte_level_pre_tokenizer(pre: &str) -> Json {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    match pre {
        // Every digit alone, then GPT-2's split (llama.cpp groups these five).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            json!({"type": "Sequence", "pretokenizers": [split(r"\p{N}"), byte_level(true)]})
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" | "pixtral" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)]})
        }
        "qwen2" | "deepseek-r1-qwen" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)]})
        }
        other => {
            if !matches!(
                other,
                "gpt2" | "default" | "gpt-2" | "mpt" | "olmo" | "jais"
            ) {
                tracing::warn!(
                    pre = other,
                    "unknown gguf pre-tokenizer type, using gpt-2's split"
                );
            }
            byte_level(true)
        }
    }
}

/// Merges recovered from a vocabulary ranked by `scores` (higher merges first),
/// exactly as transformers' `generate_merges` ranks them: every split of a
/// token into two vocabulary pieces, ordered by the token's score, then the
/// longer left piece, then the longer right piece, ties kept in vocabulary order.
fn merges_from_scores(
    tokens: &[String],
    vocab: &HashMap<&str, usize>,
    scores: &[f64],
) -> Vec<(String, String)> {
    struct M {
        l: String,
        r: String,
        score: f64,
        seq: usize,
    }
    let mut merges: Vec<M> = Vec::new();
    // Iterate distinct tokens in first-seen order, as a Python dict built from the list would.
    let mut seen = std::collections::HashSet::new();
    for tok in tokens {
        if !seen.insert(tok.as_str()) {
            continue;
        }
        let score = scores[vocab[tok.as_str()].min(scores.len() - 1)];
        let mut local: Vec<(usize, usize, String, String)> = Vec::new();
        for (pos, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(pos);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, l.to_string(), r.to_string()));
            }
        }
        local.sort_by_key(|x| (x.0, x.1));
        for (_, _, l, r) in local {
            let seq = merges.len();
            merges.push(M { l, r, score, seq });
        }
    }
    // Python's sorted(key=(score, len(l), len(r)), reverse=True) is stable, so
    // equal keys keep their original order.
    merges.sort_by(|a, b| {
        let ka = (a.l.chars().count(), a.r.chars().count());
        let kb = (b.l.chars().count(), b.r.chars().count());
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(kb.cmp(&ka))
            .then(a.seq.cmp(&b.seq))
    });
    merges.into_iter().map(|m| (m.l, m.r)).collect()
}

/// Build the tokenizer described by a GGUF file's metadata. `arch` is
/// `general.architecture` (it picks Gemma's SentencePiece flavour).
pub(crate) fn tokenizer_from_gguf(
    content: &Content,
    arch: &str,
) -> Result<Tokenizer, GgufTokenizerError> {
    let kind = meta_str(content, "tokenizer.ggml.model")
        .ok_or_else(|| err("no `tokenizer.ggml.model` key: the file carries no tokenizer"))?;
    let mut tokens = string_array(content, "tokenizer.ggml.tokens")?
        .ok_or_else(|| err("no `tokenizer.ggml.tokens` array"))?;
    let types: Vec<i64> = match meta(content, "tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items.iter().map(|v| value_i64(v).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let id_of = |key: &str| meta_i64(content, key).map(|v| v as usize);
    let bos = id_of("tokenizer.ggml.bos_token_id");
    let eos = id_of("tokenizer.ggml.eos_token_id");
    let unk = id_of("tokenizer.ggml.unknown_token_id");

    let is_gemma = arch.starts_with("gemma");
    let (model, normalizer, pre_tokenizer, decoder, default_bos) = match kind {
        "gpt2" => {
            let pre = meta_str(content, "tokenizer.ggml.pre").unwrap_or("default");
            let table = bytes_to_unicode();
            let alphabet: std::collections::HashSet<char> = table.values().copied().collect();
            // Tokens outside the byte alphabet (rare) are respelled byte by byte.
            let spelled: Vec<String> = tokens
                .iter()
                .map(|t| {
                    if t.chars().all(|c| alphabet.contains(&c)) {
                        t.clone()
                    } else {
                        t.bytes().map(|b| table[&b]).collect()
                    }
                })
                .collect();
            let merges = string_array(content, "tokenizer.ggml.merges")?
                .ok_or_else(|| err("byte-level (`gpt2`) vocabulary without `tokenizer.ggml.merges`"))?;
            let merges: Vec<Json> = merges
                .iter()
                .map(|m| match m.split_once(' ') {
                    Some((a, b)) => Ok(json!([a, b])),
                    None => Err(err(format!("merge `{m}` is not two space-separated pieces"))),
                })
                .collect::<Result<_, _>>()?;
            let vocab: serde_json::Map<String, Json> =
                spelled.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
            tokens = spelled;
            (
                json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                       "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                       "ignore_merges": false, "vocab": vocab, "merges": merges}),
                Json::Null,
                byte_level_pre_tokenizer(pre),
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
                false,
            )
        }
        "llama" => {
            if is_gemma {
                // Gemma stores runs of spaces as real spaces; its pieces use `▁`.
                for t in tokens.iter_mut() {
                    if !t.is_empty() && t.chars().all(|c| c == ' ') {
                        *t = "\u{2581}".repeat(t.chars().count());
                    }
                }
            }
            let vocab_idx: HashMap<&str, usize> =
                tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
            let scores: Vec<f64> = if is_gemma {
                // Rank by position: earlier tokens merge first.
                (0..tokens.len()).map(|i| -(i as f64)).collect()
            } else {
                number_array(content, "tokenizer.ggml.scores")
                    .ok_or_else(|| err("sentencepiece (`llama`) vocabulary without `tokenizer.ggml.scores`"))?
            };
            // `scores` is indexed by the id a token maps to (last occurrence wins).
            let merges = merges_from_scores(&tokens, &vocab_idx, &scores);
            let vocab: serde_json::Map<String, Json> =
                vocab_idx.iter().map(|(t, i)| (t.to_string(), json!(i))).collect();
            let merges: Vec<Json> = merges.into_iter().map(|(a, b)| json!([a, b])).collect();
            let unk_tok = unk.and_then(|i| tokens.get(i)).cloned();
            let model = json!({"type": "BPE", "dropout": null, "unk_token": unk_tok,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
                "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges});
            let decoder = json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]});
            if is_gemma {
                (
                    model,
                    json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
                    json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
                    decoder,
                    true,
                )
            } else {
                let prefix = meta_bool(content, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
                (
                    model,
                    Json::Null,
                    json!({"type": "Metaspace", "replacement": "\u{2581}",
                           "prepend_scheme": if prefix { "first" } else { "never" }, "split": false}),
                    decoder,
                    true,
                )
            }
        }
        other => {
            return Err(err(format!(
                "tokenizer kind `{other}` (tokenizer.ggml.model) is not supported: expected gpt2 or llama"
            )))
        }
    };

    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(types.iter()).enumerate() {
        if *ty == TOKEN_TYPE_CONTROL {
            added.push(added_token(i, t, true));
        } else if *ty == TOKEN_TYPE_USER_DEFINED {
            added.push(added_token(i, t, false));
        }
    }

    let add_bos = meta_bool(content, "tokenizer.ggml.add_bos_token").unwrap_or(default_bos);
    let add_eos = meta_bool(content, "tokenizer.ggml.add_eos_token").unwrap_or(false);
    let special =
        |id: Option<usize>, what: &str| -> Result<Option<(String, usize)>, GgufTokenizerError> {
            match id {
                None => Ok(None),
                Some(i) => tokens.get(i).map(|t| Some((t.clone(), i))).ok_or_else(|| {
                    err(format!(
                        "{what} token id {i} is outside the vocabulary of {}",
                        tokens.len()
                    ))
                }),
            }
        };
    let bos_tok = if add_bos { special(bos, "bos")? } else { None };
    let eos_tok = if add_eos { special(eos, "eos")? } else { None };
    let post_processor = if bos_tok.is_some() || eos_tok.is_some() {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = serde_json::Map::new();
        if let Some((t, i)) = &bos_tok {
            single.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            pair.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            specials.insert(t.clone(), json!({"id": t, "ids": [i], "tokens": [t]}));
        }
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
        if let Some((t, i)) = &eos_tok {
            single.push(json!({"SpecialToken": {"id": t, "type_id": 0}}));
            pair.push(json!({"SpecialToken": {"id": t, "type_id": 1}}));
            specials.insert(t.clone(), json!({"id": t, "ids": [i], "tokens": [t]}));
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
    } else if kind == "gpt2" {
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
    } else {
        Json::Null
    };

    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": model,
    });
    let text = serde_json::to_string(&doc).map_err(|e| err(e.to_string()))?;
    text.parse::<Tokenizer>()
        .map_err(|e| err(format!("the rebuilt tokenizer does not load: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        let chars: std::collections::HashSet<_> = t.values().collect();
        assert_eq!(chars.len(), 256);
        assert_eq!(t[&b' '], '\u{120}');
        assert_eq!(t[&b'A'], 'A');
    }

    #[test]
    fn merges_follow_scores_then_piece_lengths() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let vocab: HashMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        // `bc` scores higher than `ab`; `abc` splits as ab+c and a+bc.
        let scores = vec![0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let m = merges_from_scores(&tokens, &vocab, &scores);
        let want: Vec<(String, String)> = [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(m, want);
    }
}
