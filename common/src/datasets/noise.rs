//! Input perturbations, applied to the raw sample text before the prompt is
//! joined. Every choice is seeded from the task's seed and the example's index
//! in its source file, so reruns and different workers produce identical inputs
//! whatever order examples are processed in.

use super::DatasetError;
use crate::rng::example_rng;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A named perturbation.
///
/// Serialized as its canonical name (`"typos:0.05"`), as grids write it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NoiseKind {
    /// No perturbation.
    None,
    /// The Concept Depth perturbation: `aaa` or `bbb` (one choice per example,
    /// probability 1/2 each) glued without a space onto the front of the sample.
    PrefixAaaBbb,
    /// Character-level typos: every ASCII letter is, with probability `rate`,
    /// deleted, doubled, swapped with the next character or replaced by a random
    /// lowercase letter (one of the four with equal probability).
    Typos { rate: f64 },
}

impl NoiseKind {
    /// Parse `none`, `prefix-aaa-bbb` or `typos:RATE` (0 <= RATE <= 1).
    pub fn parse(s: &str) -> Result<NoiseKind, DatasetError> {
        let bad = |expected: &str| DatasetError::BadOption {
            what: "noise",
            value: s.to_string(),
            expected: expected.to_string(),
        };
        match s {
            "none" => Ok(NoiseKind::None),
            "prefix-aaa-bbb" => Ok(NoiseKind::PrefixAaaBbb),
            _ => match s.split_once(':') {
                Some(("typos", rate)) => {
                    let rate: f64 = rate
                        .parse()
                        .map_err(|_| bad("typos:RATE with RATE a number, e.g. typos:0.05"))?;
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(bad("typos:RATE with 0 <= RATE <= 1"));
                    }
                    Ok(NoiseKind::Typos { rate })
                }
                _ => Err(bad(
                    "one of `none`, `prefix-aaa-bbb`, `typos:RATE` (e.g. typos:0.05)",
                )),
            },
        }
    }

    /// The canonical name, which [`NoiseKind::parse`] reads back.
    pub fn name(&self) -> String {
        match self {
            NoiseKind::None => "none".into(),
            NoiseKind::PrefixAaaBbb => "prefix-aaa-bbb".into(),
            NoiseKind::Typos { rate } => format!("typos:{rate}"),
        }
    }

    /// Perturb one sample. `index` is the example's index in its source file.
    pub fn apply(&self, sample: &str, seed: u64, index: usize) -> String {
        match self {
            NoiseKind::None => sample.to_string(),
            NoiseKind::PrefixAaaBbb => {
                let mut rng = example_rng(seed, "noise/prefix-aaa-bbb", index);
                let prefix = if rng.random_bool(0.5) { "aaa" } else { "bbb" };
                format!("{prefix}{sample}")
            }
            NoiseKind::Typos { rate } => {
                typos(sample, *rate, &mut example_rng(seed, "noise/typos", index))
            }
        }
    }
}

impl TryFrom<String> for NoiseKind {
    type Error = DatasetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NoiseKind::parse(&s)
    }
}

impl From<NoiseKind> for String {
    fn from(n: NoiseKind) -> String {
        n.name()
    }
}

impl std::fmt::Display for NoiseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

fn typos(sample: &str, rate: f64, rng: &mut ChaCha8Rng) -> String {
    let chars: Vec<char> = sample.chars().collect();
    let mut out = String::with_capacity(sample.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // One draw per letter whatever the outcome keeps the stream aligned with
        // the text, so a typo early on does not reshuffle every later choice.
        let hit = c.is_ascii_alphabetic() && rng.random_bool(rate);
        let op: u8 = rng.random_range(0..4);
        let letter = char::from(b'a' + rng.random_range(0..26u8));
        if !hit {
            out.push(c);
            i += 1;
            continue;
        }
        match op {
            0 => {} // deletion
            1 => {
                out.push(c);
                out.push(c);
            }
            2 if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                out.push(c);
                i += 1;
            }
            _ => out.push(letter),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips() {
        for s in ["none", "prefix-aaa-bbb", "typos:0.05", "typos:1"] {
            assert_eq!(NoiseKind::parse(s).unwrap().name(), s);
        }
        assert!(NoiseKind::parse("noise").is_err());
        assert!(NoiseKind::parse("typos:2").is_err());
        assert!(NoiseKind::parse("typos:x").is_err());
    }

    #[test]
    fn prefix_depends_only_on_seed_and_index() {
        let n = NoiseKind::PrefixAaaBbb;
        let a: Vec<String> = (0..64).map(|i| n.apply("x", 7, i)).collect();
        let b: Vec<String> = (0..64).rev().map(|i| n.apply("x", 7, i)).collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        assert!(a.iter().all(|s| s == "aaax" || s == "bbbx"));
        let aaa = a.iter().filter(|s| s.starts_with("aaa")).count();
        assert!((16..=48).contains(&aaa), "both prefixes occur: {aaa}/64");
        let other: Vec<String> = (0..64).map(|i| n.apply("x", 8, i)).collect();
        assert_ne!(a, other, "the seed matters");
    }

    #[test]
    fn typos_rate_zero_is_identity_and_rate_changes_text() {
        let s = "The city of Krasnodar is in Russia.";
        assert_eq!(NoiseKind::Typos { rate: 0.0 }.apply(s, 1, 0), s);
        let t = NoiseKind::Typos { rate: 0.3 }.apply(s, 1, 0);
        assert_ne!(t, s);
        assert_eq!(t, NoiseKind::Typos { rate: 0.3 }.apply(s, 1, 0));
    }
}
