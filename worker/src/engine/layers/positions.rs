//! Where each token sits: rotary tables (RoPE, with its long-context
//! rescalings) and the additive causal / sliding-window mask of the
//! device-generic attention.

use crate::engine::config::{LayerKind, Rope, RopeScaling};
use candle_core::{DType, Device, Tensor};

/// Inverse rotary frequencies, computed in f32 as transformers does.
fn inv_freq(rope: &Rope, head_dim: usize) -> Vec<f32> {
    let base = rope.theta as f32;
    let raw: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match &rope.scaling {
        RopeScaling::None => raw,
        RopeScaling::Linear { factor } => raw.iter().map(|f| f / *factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => {
            let (factor, lo, hi, old) = (
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_max_position as f64,
            );
            let (low_wavelen, high_wavelen) = (old / lo, old / hi);
            raw.iter()
                .map(|&f| {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f as f32
                    } else if wavelen > low_wavelen {
                        (f / factor) as f32
                    } else {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        ((1.0 - smooth) * f / factor + smooth * f) as f32
                    }
                })
                .collect()
        }
    }
}

/// `cos`/`sin` tables `[time, head_dim/2]` for positions `offset..offset + time`.
pub(crate) fn rope_tables(
    rope: &Rope,
    head_dim: usize,
    offset: usize,
    time: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv = inv_freq(rope, head_dim);
    let half = inv.len();
    let mut cos = Vec::with_capacity(time * half);
    let mut sin = Vec::with_capacity(time * half);
    for p in offset..offset + time {
        for &f in &inv {
            // The angle is rounded to f32 like transformers' f32 outer product.
            let a = (p as f32 * f) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (time, half), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (time, half), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Additive causal mask `[time, prefix + time]` (f32): query `i` sits at
/// position `prefix + i`; key `j` is visible when `j ≤ prefix + i` and, for
/// sliding layers, `prefix + i − j < window`.
pub(crate) fn causal_mask(
    kind: LayerKind,
    window: Option<usize>,
    prefix: usize,
    time: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let s = prefix + time;
    let mut m = vec![0f32; time * s];
    for i in 0..time {
        let qp = prefix + i;
        for j in 0..s {
            let hidden = j > qp
                || match (kind, window) {
                    (LayerKind::Sliding, Some(w)) => qp - j.min(qp) >= w,
                    _ => false,
                };
            if hidden {
                m[i * s + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (time, s), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(mask: &Tensor) -> Vec<Vec<bool>> {
        mask.to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|v| v == 0.0).collect())
            .collect()
    }

    #[test]
    fn global_mask_is_causal_after_a_prefix() {
        // Two cached positions, three new queries at positions 2, 3, 4.
        let m = causal_mask(LayerKind::Global, None, 2, 3, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), &[3, 5]);
        let v = visible(&m);
        for (i, row) in v.iter().enumerate() {
            for (j, &seen) in row.iter().enumerate() {
                assert_eq!(seen, j <= 2 + i, "query {i} key {j}");
            }
        }
    }

    #[test]
    fn sliding_mask_shows_exactly_the_last_window_keys() {
        let m = causal_mask(LayerKind::Sliding, Some(2), 0, 4, &Device::Cpu).unwrap();
        let v = visible(&m);
        for (q, row) in v.iter().enumerate() {
            for (k, &seen) in row.iter().enumerate() {
                assert_eq!(seen, k <= q && q - k < 2, "query {q} key {k}");
            }
        }
        // A global layer ignores the window.
        let g = visible(&causal_mask(LayerKind::Global, Some(2), 0, 4, &Device::Cpu).unwrap());
        assert!(g[3][0]);
    }

    #[test]
    fn inverse_frequencies_follow_each_scaling_rule() {
        let plain = Rope {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        };
        // head_dim 4: 1 / 10000^(0/4), 1 / 10000^(2/4).
        assert_eq!(inv_freq(&plain, 4), vec![1.0, 0.01]);
        let linear = Rope {
            scaling: RopeScaling::Linear { factor: 4.0 },
            ..plain.clone()
        };
        assert_eq!(inv_freq(&linear, 4), vec![0.25, 0.0025]);
        // LLaMA-3.1's rule with a context of 8192: wavelengths under
        // 8192/4 = 2048 are kept, over 8192/1 are divided by the factor,
        // the band between is blended.
        let llama3 = Rope {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 8192,
            },
        };
        let raw = inv_freq(
            &Rope {
                scaling: RopeScaling::None,
                ..llama3.clone()
            },
            128,
        );
        let scaled = inv_freq(&llama3, 128);
        let two_pi = 2.0 * std::f64::consts::PI;
        let (mut kept, mut divided, mut blended) = (0, 0, 0);
        for (r, s) in raw.iter().zip(&scaled) {
            let wavelen = two_pi / *r as f64;
            if wavelen < 2048.0 {
                assert_eq!(r, s);
                kept += 1;
            } else if wavelen > 8192.0 {
                assert_eq!(*s, (*r as f64 / 8.0) as f32);
                divided += 1;
            } else {
                assert!(*s < *r && *s > *r / 8.0, "{r} -> {s}");
                blended += 1;
            }
        }
        assert!(kept > 0 && divided > 0 && blended > 0);
    }

    #[test]
    fn rope_tables_hold_cos_and_sin_of_position_times_frequency() {
        let rope = Rope {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        };
        let (cos, sin) = rope_tables(&rope, 4, 3, 2, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(cos.dims(), &[2, 2]);
        let (cos, sin) = (cos.to_vec2::<f32>().unwrap(), sin.to_vec2::<f32>().unwrap());
        for (row, p) in [3f32, 4.0].into_iter().enumerate() {
            for (col, f) in [1f32, 0.01].into_iter().enumerate() {
                let a = (p * f) as f64;
                assert_eq!(cos[row][col], a.cos() as f32);
                assert_eq!(sin[row][col], a.sin() as f32);
            }
        }
    }
}
