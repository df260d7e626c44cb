//! Feature rows as the probe solver reads them: a strided view, so one layer of
//! an `[N, L, d]` array needs no copy.

use super::ProbeError;

/// A read-only view of `n` rows of `d` f32 values; row `i` starts at
/// `offset + i·stride`. One layer of an `[N, L, d]` feature array is the view
/// with `offset = layer·d` and `stride = L·d`, so no copy is needed.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    offset: usize,
    stride: usize,
    n: usize,
    d: usize,
}

impl<'a> Rows<'a> {
    /// A contiguous row-major `[n, d]` matrix.
    pub fn contiguous(data: &'a [f32], n: usize, d: usize) -> Result<Self, ProbeError> {
        Self::layer(data, n, 1, d, 0)
    }

    /// Layer `layer` of a row-major `[n, n_layers, d]` array.
    pub fn layer(
        data: &'a [f32],
        n: usize,
        n_layers: usize,
        d: usize,
        layer: usize,
    ) -> Result<Self, ProbeError> {
        if data.len() != n * n_layers * d || layer >= n_layers || d == 0 {
            return Err(ProbeError::Input(format!(
                "feature array of {} values is not [{n}, {n_layers}, {d}] or layer {layer} is out of range",
                data.len()
            )));
        }
        Ok(Rows {
            data,
            offset: layer * d,
            stride: n_layers * d,
            n,
            d,
        })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Row width.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Row `i`.
    #[inline(always)]
    pub fn row(&self, i: usize) -> &'a [f32] {
        let start = self.offset + i * self.stride;
        &self.data[start..start + self.d]
    }
}
