//! How the packed f32 products walk their operands: the size of the row
//! blocks of `x` and the chunks of `k`, fixed per process and tunable per
//! machine through the environment.
//!
//! Why tunable: the best blocking depends on a machine's caches, not on its
//! instruction set, and it moves the kernels' share of the FMA peak by
//! several percent (`docs/bench-extract.md`). Neither knob changes a bit of
//! any output: every output element is one chain of multiply-adds in `k`
//! order whatever the blocking (a chunk's sums are carried into the next
//! chunk exactly, in f32), so a tuned run gives the same activations as the
//! default one; the tests check that.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CD_CPU_ROW_BLOCK_KIB` | `4096` | KiB of `x` per row block: every weight panel is read from memory once per block |
//! | `CD_CPU_K_CHUNK` | `off` | steps along `k` per chunk (a positive multiple of 4, or `off`): a chunk of a tile's panels passes over every tile of a unit of rows before the next chunk |
//!
//! `cd-bench matmul --blockings` times several blockings side by side, in one
//! process, interleaved.

use std::sync::OnceLock;

/// The environment variable for the row block size, in KiB of `x`.
pub const ROW_BLOCK_ENV: &str = "CD_CPU_ROW_BLOCK_KIB";
/// The environment variable for the k chunk length, in steps along `k`.
pub const K_CHUNK_ENV: &str = "CD_CPU_K_CHUNK";

/// A blocking of the packed f32 products (see the module's note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Bytes of `x` per row block (at least one unit of rows is taken
    /// whatever this says).
    pub row_block_bytes: usize,
    /// Steps along `k` per chunk, a multiple of 4; `None`: all of `k` at once.
    pub k_chunk: Option<usize>,
}

impl Default for Blocking {
    /// 4 MiB row blocks, so a batch of short texts reads each weight from
    /// memory once per call; no k chunks (on the machines measured, a whole
    /// panel streamed from L2 cost less than carrying sums between chunks).
    fn default() -> Self {
        Blocking {
            row_block_bytes: 4 << 20,
            k_chunk: None,
        }
    }
}

/// A blocking variable this process cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockingError {
    /// Not a positive whole number of KiB.
    #[error("{ROW_BLOCK_ENV}={0:?}: expected a positive whole number of KiB (default 4096)")]
    RowBlock(String),
    /// Not `off` and not a positive multiple of 4.
    #[error("{K_CHUNK_ENV}={0:?}: expected `off` or a positive multiple of 4 (steps along k)")]
    KChunk(String),
}

impl Blocking {
    /// The blocking named by the two variables' contents (`None` if unset).
    pub fn resolve(
        row_block_kib: Option<&str>,
        k_chunk: Option<&str>,
    ) -> Result<Self, BlockingError> {
        let mut blocking = Blocking::default();
        if let Some(text) = row_block_kib.map(str::trim).filter(|t| !t.is_empty()) {
            blocking.row_block_bytes = text
                .parse::<usize>()
                .ok()
                .filter(|&kib| kib > 0)
                .and_then(|kib| kib.checked_mul(1024))
                .ok_or_else(|| BlockingError::RowBlock(text.to_string()))?;
        }
        if let Some(text) = k_chunk.map(str::trim).filter(|t| !t.is_empty()) {
            blocking.k_chunk = match text {
                "off" => None,
                _ => Some(
                    text.parse::<usize>()
                        .ok()
                        .filter(|&len| len > 0 && len % 4 == 0)
                        .ok_or_else(|| BlockingError::KChunk(text.to_string()))?,
                ),
            };
        }
        Ok(blocking)
    }

    /// Parses a blocking written as `default`, or as comma-separated
    /// `row_block_kib=N` and `k_chunk=N|off` (what `cd-bench matmul
    /// --blockings` takes); unnamed knobs keep their defaults.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec == "default" {
            return Ok(Blocking::default());
        }
        let (mut rows, mut chunk) = (None, None);
        for part in spec.split(',') {
            match part.trim().split_once('=') {
                Some(("row_block_kib", v)) => rows = Some(v),
                Some(("k_chunk", v)) => chunk = Some(v),
                _ => {
                    return Err(format!(
                        "`{part}` in `{spec}`: expected row_block_kib=N or k_chunk=N|off"
                    ))
                }
            }
        }
        Blocking::resolve(rows, chunk).map_err(|e| e.to_string())
    }

    /// The blocking this process uses (read once). A bad variable that the
    /// binary's start-up check ([`check_env`]) did not stop falls back to
    /// the default, loudly.
    pub fn active() -> Self {
        static ACTIVE: OnceLock<Blocking> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            check_env().unwrap_or_else(|e| {
                tracing::error!("{e}; using the default blocking");
                Blocking::default()
            })
        })
    }

    /// The chunks `(first, len)` that `0..k` is cut into: at most
    /// `k_chunk` steps each and as even as multiples of four allow (k = 576
    /// in chunks of at most 256: 192 + 192 + 192), or one chunk of all of k.
    pub(super) fn k_chunks(&self, k: usize) -> impl Iterator<Item = (usize, usize)> {
        let len = match self.k_chunk {
            Some(max) if k > max => k.div_ceil(k.div_ceil(max)).next_multiple_of(4),
            _ => k.max(1),
        };
        (0..k)
            .step_by(len)
            .map(move |first| (first, len.min(k - first)))
    }

    /// Short form for reports: empty for the default, else the knobs set.
    pub fn label(&self) -> String {
        let default = Blocking::default();
        let mut parts = Vec::new();
        if self.row_block_bytes != default.row_block_bytes {
            parts.push(format!("row_block_kib={}", self.row_block_bytes / 1024));
        }
        if let Some(len) = self.k_chunk {
            parts.push(format!("k_chunk={len}"));
        }
        parts.join(",")
    }
}

/// The blocking the environment asks for; binaries call it at start-up so a
/// bad value stops them with a configuration error before any work.
pub fn check_env() -> Result<Blocking, BlockingError> {
    let var = |name| std::env::var(name).ok();
    Blocking::resolve(var(ROW_BLOCK_ENV).as_deref(), var(K_CHUNK_ENV).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_resolve_or_say_what_they_expected() {
        assert_eq!(Blocking::resolve(None, None), Ok(Blocking::default()));
        assert_eq!(
            Blocking::resolve(Some(" 1024 "), Some("256")),
            Ok(Blocking {
                row_block_bytes: 1 << 20,
                k_chunk: Some(256)
            })
        );
        assert_eq!(
            Blocking::resolve(Some(""), Some("off")),
            Ok(Blocking::default())
        );
        let err = Blocking::resolve(Some("0"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CD_CPU_ROW_BLOCK_KIB=\"0\": expected a positive whole number of KiB (default 4096)"
        );
        assert!(Blocking::resolve(Some("4M"), None).is_err());
        let err = Blocking::resolve(None, Some("250")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CD_CPU_K_CHUNK=\"250\": expected `off` or a positive multiple of 4 (steps along k)"
        );
        assert!(Blocking::resolve(None, Some("0")).is_err());
        assert!(Blocking::resolve(None, Some("-4")).is_err());
    }

    #[test]
    fn specs_parse_and_label_round_trip() {
        let b = Blocking::parse("k_chunk=128, row_block_kib=512").unwrap();
        assert_eq!(
            b,
            Blocking {
                row_block_bytes: 512 << 10,
                k_chunk: Some(128)
            }
        );
        assert_eq!(b.label(), "row_block_kib=512,k_chunk=128");
        assert_eq!(Blocking::parse(&b.label()), Ok(b));
        assert_eq!(Blocking::parse("default"), Ok(Blocking::default()));
        assert_eq!(Blocking::default().label(), "");
        let err = Blocking::parse("kc=256").unwrap_err();
        assert!(
            err.contains("`kc=256`") && err.contains("k_chunk=N|off"),
            "{err}"
        );
    }

    #[test]
    fn chunks_cover_k_once_in_even_multiples_of_four() {
        let chunks = |k, max| {
            let b = Blocking {
                k_chunk: max,
                ..Blocking::default()
            };
            b.k_chunks(k).collect::<Vec<_>>()
        };
        assert_eq!(chunks(576, None), vec![(0, 576)]);
        assert_eq!(
            chunks(576, Some(256)),
            vec![(0, 192), (192, 192), (384, 192)]
        );
        assert_eq!(
            chunks(1536, Some(256)),
            (0..6).map(|i| (i * 256, 256)).collect::<Vec<_>>()
        );
        assert_eq!(chunks(200, Some(256)), vec![(0, 200)]);
        assert_eq!(chunks(7, Some(4)), vec![(0, 4), (4, 3)]);
        assert_eq!(chunks(0, Some(4)), Vec::<(usize, usize)>::new());
        for k in 1..300 {
            for max in [4, 8, 12, 64, 128] {
                let c = chunks(k, Some(max));
                assert_eq!(c.iter().map(|&(_, len)| len).sum::<usize>(), k);
                assert!(c.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
                assert!(c
                    .iter()
                    .all(|&(first, len)| first % 4 == 0 && len > 0 && len <= max));
            }
        }
    }
}
