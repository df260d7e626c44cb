//! Seeded generators: the coin-flip task in the shipped file's exact wording,
//! Cities-style true/false statements from a built-in city table, and the
//! arithmetic items of the Calculation task (never released by the paper). Every item draws from its own stream (seed, purpose, index), so an
//! item does not change when more items are asked for or others are filtered out.

use crate::rng::example_rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// First names the coin-flip generator draws from (four distinct per item).
const NAMES: &[&str] = &[
    "Alice", "Bob", "Carmen", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
    "Keiko", "Liam", "Maya", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tara", "Umar",
    "Vera", "Wes", "Xin", "Yara", "Zane", "Amara", "Boris", "Chloe", "Diego", "Esther", "Felix",
    "Gemma", "Hassan", "Ivy", "Jonas", "Kira", "Leon", "Mina", "Noah", "Omar", "Priya", "Rafael",
    "Sofia", "Tomas", "Uma", "Victor", "Wanda", "Yusuf", "Zoe",
];

/// One coin-flip item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinflipItem {
    pub question: String,
    /// `yes` when the coin is still heads up (an even number of flips), else `no`.
    pub answer: &'static str,
}

/// The coin-flip question for four (or any number of) people, in the wording
/// of the shipped file, and its parity answer.
pub fn coinflip_question(people: &[(&str, bool)]) -> CoinflipItem {
    let mut q = String::from("A coin is heads up.");
    for (name, flips) in people {
        let verb = if *flips { "flips" } else { "does not flip" };
        q.push_str(&format!(" {name} {verb} the coin."));
    }
    q.push_str(" Is the coin still heads up? Note that \"flip\" here means \"reverse\".");
    let flips = people.iter().filter(|(_, f)| *f).count();
    CoinflipItem {
        question: q,
        answer: if flips % 2 == 0 { "yes" } else { "no" },
    }
}

/// `n` seeded items: four distinct names, each flipping with probability 1/2.
pub fn coinflip_items(n: usize, seed: u64) -> Vec<CoinflipItem> {
    (0..n)
        .map(|i| {
            let mut rng = example_rng(seed, "generate/coinflip", i);
            let names: Vec<&str> = NAMES.choose_multiple(&mut rng, 4).copied().collect();
            let people: Vec<(&str, bool)> =
                names.iter().map(|n| (*n, rng.random_bool(0.5))).collect();
            coinflip_question(&people)
        })
        .collect()
}

/// `city,country` facts about well-known cities, written for this project
/// (country names read as they do after "is in", e.g. "the United States").
const WORLD_CITIES: &str = include_str!("world_cities.csv");

/// The built-in city table, in file order.
pub fn city_table() -> Vec<(&'static str, &'static str)> {
    WORLD_CITIES
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_once(',')
                .expect("world_cities.csv rows are `city,country`")
        })
        .collect()
}

/// One generated Cities statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CityStatement {
    /// `The city of X is in Y.`
    pub statement: String,
    /// `1` when true, `0` when false (the Cities file's labels).
    pub label: &'static str,
    /// The city (the statement's group).
    pub city: &'static str,
}

/// Two statements per city, true then false: `n` cities drawn by the seed
/// (all when `None`), in table order. The false country is drawn, per city,
/// from the table's other countries.
pub fn cities_items(n: Option<usize>, seed: u64) -> Vec<CityStatement> {
    let table = city_table();
    let mut countries: Vec<&str> = table.iter().map(|(_, c)| *c).collect();
    countries.sort_unstable();
    countries.dedup();
    let mut chosen: Vec<usize> = (0..table.len()).collect();
    if let Some(n) = n.filter(|&n| n < table.len()) {
        chosen.shuffle(&mut example_rng(seed, "generate/cities/choose", 0));
        chosen.truncate(n);
        chosen.sort_unstable();
    }
    let mut out = Vec::with_capacity(2 * chosen.len());
    for i in chosen {
        let (city, country) = table[i];
        let mut rng = example_rng(seed, "generate/cities", i);
        let others: Vec<&str> = countries
            .iter()
            .copied()
            .filter(|c| *c != country)
            .collect();
        let wrong = others
            .choose(&mut rng)
            .expect("the table has other countries");
        for (c, label) in [(country, "1"), (*wrong, "0")] {
            out.push(CityStatement {
                statement: format!("The city of {city} is in {c}."),
                label,
                city,
            });
        }
    }
    out
}

/// An exact decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dec {
    pub mantissa: i128,
    pub scale: u32,
}

impl Dec {
    fn int(v: i128) -> Dec {
        Dec {
            mantissa: v,
            scale: 0,
        }
    }
    fn align(a: Dec, b: Dec) -> (i128, i128, u32) {
        let s = a.scale.max(b.scale);
        (
            a.mantissa * 10i128.pow(s - a.scale),
            b.mantissa * 10i128.pow(s - b.scale),
            s,
        )
    }
    fn add(a: Dec, b: Dec) -> Dec {
        let (x, y, s) = Dec::align(a, b);
        Dec {
            mantissa: x + y,
            scale: s,
        }
        .normalized()
    }
    fn sub(a: Dec, b: Dec) -> Dec {
        let (x, y, s) = Dec::align(a, b);
        Dec {
            mantissa: x - y,
            scale: s,
        }
        .normalized()
    }
    fn mul(a: Dec, b: Dec) -> Dec {
        Dec {
            mantissa: a.mantissa * b.mantissa,
            scale: a.scale + b.scale,
        }
        .normalized()
    }
    /// a / b rounded half away from zero to 2 decimals.
    fn div2(a: Dec, b: Dec) -> Dec {
        // a/b = (am / 10^as) / (bm / 10^bs) = am * 10^bs / (bm * 10^as)
        let num = a.mantissa * 10i128.pow(b.scale + 2);
        let den = b.mantissa * 10i128.pow(a.scale);
        let q = num / den;
        let r = num % den;
        let q = if 2 * r.abs() >= den.abs() {
            q + num.signum() * den.signum()
        } else {
            q
        };
        Dec {
            mantissa: q,
            scale: 2,
        }
        .normalized()
    }
    /// Drop trailing zero decimals.
    fn normalized(mut self) -> Dec {
        while self.scale > 0 && self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.scale -= 1;
        }
        self
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        if self.scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let s = self.scale as usize;
        let padded = format!("{digits:0>width$}", width = s + 1);
        let (int, frac) = padded.split_at(padded.len() - s);
        write!(f, "{sign}{int}.{frac}")
    }
}

/// Integer or decimal operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberKind {
    Int,
    Dec,
}

/// Operand size classes (digits before the decimal point).
pub(crate) const DIGIT_CLASSES: [(u32, u32); 3] = [(1, 2), (3, 4), (5, 6)];

/// The operations of the Calculation task.
pub(crate) const OPS: [&str; 6] = ["add", "sub", "mul", "div", "mix2", "mix3"];

/// One arithmetic item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CalcItem {
    /// `int/1-2/add/0`.
    pub id: String,
    /// The expression, e.g. `12 + 7`.
    pub expression: String,
    pub answer: Dec,
    /// Distinct wrong answers, none equal to `answer`.
    pub wrong: Vec<Dec>,
}

fn operand(rng: &mut ChaCha8Rng, kind: NumberKind, digits: (u32, u32)) -> Dec {
    let d = rng.random_range(digits.0..=digits.1);
    let lo = if d == 1 { 1 } else { 10i128.pow(d - 1) };
    let int = rng.random_range(lo..10i128.pow(d));
    match kind {
        NumberKind::Int => Dec::int(int),
        // Two decimals, the last non-zero so the operand really is a decimal.
        NumberKind::Dec => Dec {
            mantissa: int * 100 + rng.random_range(0..10) * 10 + rng.random_range(1..10),
            scale: 2,
        },
    }
}

/// Evaluate `terms[0] op terms[1] op ...` with `*` before `+`/`-`.
fn eval(terms: &[Dec], ops: &[char]) -> Dec {
    let mut sums: Vec<(char, Dec)> = vec![('+', terms[0])];
    for (op, t) in ops.iter().zip(&terms[1..]) {
        if *op == '*' {
            let last = sums.last_mut().expect("non-empty");
            last.1 = Dec::mul(last.1, *t);
        } else {
            sums.push((*op, *t));
        }
    }
    sums.iter().skip(1).fold(sums[0].1, |acc, (op, t)| {
        if *op == '+' {
            Dec::add(acc, *t)
        } else {
            Dec::sub(acc, *t)
        }
    })
}

/// One item of a cell, from its own stream.
pub(crate) fn calc_item(
    seed: u64,
    kind: NumberKind,
    digits: (u32, u32),
    op: &str,
    index: usize,
    n_wrong: usize,
) -> CalcItem {
    let kind_name = match kind {
        NumberKind::Int => "int",
        NumberKind::Dec => "dec",
    };
    let id = format!("{kind_name}/{}-{}/{op}/{index}", digits.0, digits.1);
    let mut rng = example_rng(
        seed,
        &format!(
            "generate/calculation/{kind_name}/{}-{}/{op}",
            digits.0, digits.1
        ),
        index,
    );
    let (expression, answer) = match op {
        "add" | "sub" | "mul" => {
            let (a, b) = (
                operand(&mut rng, kind, digits),
                operand(&mut rng, kind, digits),
            );
            let sym = match op {
                "add" => '+',
                "sub" => '-',
                _ => '*',
            };
            (format!("{a} {sym} {b}"), eval(&[a, b], &[sym]))
        }
        "div" => {
            let b = operand(&mut rng, kind, digits);
            match kind {
                // Integer division is exact: the size class applies to the
                // divisor and the quotient, the dividend is their product.
                NumberKind::Int => {
                    let q = operand(&mut rng, kind, digits);
                    let a = Dec::mul(b, q);
                    (format!("{a} / {b}"), q)
                }
                NumberKind::Dec => {
                    let a = operand(&mut rng, kind, digits);
                    (format!("{a} / {b}"), Dec::div2(a, b))
                }
            }
        }
        _ => {
            let n_ops = if op == "mix2" { 2 } else { 3 };
            let terms: Vec<Dec> = (0..=n_ops)
                .map(|_| operand(&mut rng, kind, digits))
                .collect();
            let ops: Vec<char> = (0..n_ops)
                .map(|_| *['+', '-', '*'].choose(&mut rng).expect("non-empty"))
                .collect();
            let mut e = terms[0].to_string();
            for (o, t) in ops.iter().zip(&terms[1..]) {
                e.push_str(&format!(" {o} {t}"));
            }
            (e, eval(&terms, &ops))
        }
    };
    let wrong = wrong_answers(answer, n_wrong, &mut rng);
    CalcItem {
        id,
        expression,
        answer,
        wrong,
    }
}

/// Wrong answers: repeatedly perturb the true answer's digits (replace one
/// digit by another, or add/subtract 1-9 units at one digit's place, or swap
/// two adjacent different digits), keeping distinct values that differ from
/// the truth, until `n` are found.
fn wrong_answers(truth: Dec, n: usize, rng: &mut ChaCha8Rng) -> Vec<Dec> {
    let mut out: Vec<Dec> = Vec::new();
    let digits: Vec<u8> = truth
        .mantissa
        .unsigned_abs()
        .to_string()
        .bytes()
        .map(|b| b - b'0')
        .collect();
    let sign = truth.mantissa.signum().max(0) * 2 - 1; // -1 or +1 (0 counts as +)
    let sign = if truth.mantissa == 0 { 1 } else { sign };
    let rebuild = |ds: &[u8]| -> Dec {
        let m = ds.iter().fold(0i128, |acc, &d| acc * 10 + i128::from(d));
        Dec {
            mantissa: sign * m,
            scale: truth.scale,
        }
        .normalized()
    };
    let mut attempts = 0;
    while out.len() < n && attempts < 10_000 {
        attempts += 1;
        let pos = rng.random_range(0..digits.len());
        let candidate = match rng.random_range(0..3) {
            0 => {
                let mut ds = digits.clone();
                let min = if pos == 0 && ds.len() > 1 { 1 } else { 0 };
                let d = rng.random_range(min..10u8);
                if d == ds[pos] {
                    continue;
                }
                ds[pos] = d;
                rebuild(&ds)
            }
            1 => {
                let place = 10i128.pow((digits.len() - 1 - pos) as u32);
                let delta =
                    rng.random_range(1..10) * place * if rng.random_bool(0.5) { 1 } else { -1 };
                Dec {
                    mantissa: truth.mantissa + delta,
                    scale: truth.scale,
                }
                .normalized()
            }
            _ => {
                if pos + 1 >= digits.len()
                    || digits[pos] == digits[pos + 1]
                    || (pos == 0 && digits[1] == 0)
                {
                    continue;
                }
                let mut ds = digits.clone();
                ds.swap(pos, pos + 1);
                rebuild(&ds)
            }
        };
        if candidate != truth && !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_arithmetic_is_exact() {
        let a = Dec {
            mantissa: 1234,
            scale: 2,
        };
        let b = Dec {
            mantissa: 5,
            scale: 1,
        };
        assert_eq!(Dec::add(a, b).to_string(), "12.84");
        assert_eq!(Dec::sub(b, a).to_string(), "-11.84");
        assert_eq!(Dec::mul(a, b).to_string(), "6.17");
        assert_eq!(Dec::div2(Dec::int(10), Dec::int(3)).to_string(), "3.33");
        assert_eq!(Dec::div2(Dec::int(-2), Dec::int(3)).to_string(), "-0.67");
        assert_eq!(
            Dec {
                mantissa: 5,
                scale: 2
            }
            .to_string(),
            "0.05"
        );
        assert_eq!(
            eval(&[Dec::int(2), Dec::int(3), Dec::int(4)], &['+', '*']).to_string(),
            "14"
        );
        assert_eq!(
            eval(
                &[Dec::int(2), Dec::int(3), Dec::int(4), Dec::int(5)],
                &['*', '-', '*']
            )
            .to_string(),
            "-14"
        );
    }
}
