//! LLM.int8() projections, as bitsandbytes' `Linear8bitLt` computes them for
//! a model loaded with `load_in_8bit` (what the Concept Depth code's
//! `--quant 8` ran). The arithmetic, step by step:
//!
//! **Weights, once.** The `[out, in]` weight is cast to f16 (`B`); per output
//! row `SCB[o] = max_i |B[o,i]|` and `CB[o,i] = rne(f32(B[o,i]) · s)` with
//! `s = f32(f32(1/SCB[o]) · 127)` (torch evaluates `127/x` as a reciprocal
//! then a product), stored as int8: one byte per weight on the device.
//!
//! **Each call**, for the f16 input `A` (`[T, in]`, every token of the call):
//! 1. outlier entries `|a| ≥ 6.0`; an outlier *column* is one with an outlier
//!    in any row;
//! 2. per row, `SCA[t] = max |a|` over the row's non-outlier entries;
//! 3. `CA[t,i] = rne(f32(A[t,i]) · f32(f32(1/SCA[t]) · 127))`, and every
//!    outlier column of `CA` set to 0;
//! 4. `C = CA · CBᵀ` with exact integer accumulation;
//! 5. `Y = f16(fma(f32(C) · SCA[t] · SCB[o], 1/127², bias))` (the CUDA
//!    kernel's constant `6.200012e-05f`, products left to right in f32);
//! 6. the outlier columns go through f16: `W' = f16(CB[:,cols] · SCB · (1/127))`
//!    (the *dequantized* int8 weights, as bitsandbytes does), and
//!    `Y = f16(f32(Y) + Σ_cols f32(A[:,cols]) · f32(W'))`.
//!
//! Rounding is round-half-to-even everywhere. The LM head, embeddings and
//! norms are not quantized; everything else runs in f16. On the CPU the
//! kernel below follows these steps exactly (integer products in i32, a true
//! fused multiply-add); on other devices the same steps run as tensor
//! operations ([`Int8Weight::forward_tensors`]), integer products exact in
//! f64, with one difference: step 5's fused multiply-add becomes a product
//! and a sum in f64, which can move an output by one f16 ulp in rare ties.

use candle_core::{DType, Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// Magnitude at or above which an activation is an outlier (bitsandbytes'
/// `llm_int8_threshold`, default of `load_in_8bit`).
pub(crate) const THRESHOLD: f32 = 6.0;
/// `f32(1/127²)` as the CUDA dequantization kernel writes it.
const DEQUANT: f32 = 6.200_012e-5;
/// `1/127` as bitsandbytes' weight dequantization writes it.
const INV_127: f32 = 7.874_016e-3;

/// Round half to even in f32 (torch's `round`, CUDA's `__float2int_rn`).
fn rne(v: f32) -> f32 {
    v.round_ties_even()
}

/// `f32(f32(1/absmax) · 127)`: the scale torch computes for `127 / absmax`.
fn scale_of(absmax: f32) -> f32 {
    (1.0f32 / absmax) * 127.0
}

/// An int8 weight matrix with its per-row absolute maxima.
pub(crate) struct Int8Weight {
    out: usize,
    inp: usize,
    /// `CB`, row-major `[out, in]`, in host memory (CPU kernel).
    cb: Vec<i8>,
    /// `SCB[o]`.
    scb: Vec<f32>,
    /// `CB` as a `U8` tensor (two's complement bytes) and `SCB` as `F32`, on
    /// a non-CPU device, for the tensor path.
    device: Option<(Tensor, Tensor)>,
}

impl Int8Weight {
    /// Quantize a `[out, in]` weight (any float dtype) as `Int8Params` does,
    /// keeping it on `w`'s device.
    pub(crate) fn quantize(w: &Tensor) -> candle_core::Result<Int8Weight> {
        let (out, inp) = w.dims2()?;
        let rows: Vec<Vec<f16>> = w
            .to_dtype(DType::F16)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f16>()?;
        let mut cb = Vec::with_capacity(out * inp);
        let mut scb = Vec::with_capacity(out);
        for row in &rows {
            let absmax = row.iter().map(|v| v.to_f32().abs()).fold(0f32, f32::max);
            scb.push(absmax);
            if absmax == 0.0 {
                cb.extend(std::iter::repeat_n(0i8, inp));
                continue;
            }
            let s = scale_of(absmax);
            cb.extend(row.iter().map(|v| rne(v.to_f32() * s) as i8));
        }
        let device = if w.device().is_cpu() {
            None
        } else {
            let bytes: Vec<u8> = cb.iter().map(|&v| v as u8).collect();
            let cb_t = Tensor::from_vec(bytes, (out, inp), w.device())?;
            let scb_t = Tensor::from_vec(scb.clone(), out, w.device())?;
            Some((cb_t, scb_t))
        };
        let cb = if device.is_some() { Vec::new() } else { cb };
        Ok(Int8Weight {
            out,
            inp,
            cb,
            scb,
            device,
        })
    }

    /// `y = LLM.int8(x, W) + b` for `x` `[m, in]` (f16); f16 `[m, out]`.
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        if self.device.is_some() {
            return self.forward_tensors(x, bias);
        }
        let (m, k) = x.dims2()?;
        if k != self.inp {
            candle_core::bail!(
                "[{m}, {k}] input to an int8 projection of {} features",
                self.inp
            )
        }
        let a: Vec<f32> = x
            .to_dtype(DType::F16)?
            .flatten_all()?
            .to_vec1::<f16>()?
            .iter()
            .map(|v| v.to_f32())
            .collect();
        let bias: Option<Vec<f32>> = match bias {
            Some(b) => Some(
                b.to_dtype(DType::F16)?
                    .to_vec1::<f16>()?
                    .iter()
                    .map(|v| v.to_f32())
                    .collect(),
            ),
            None => None,
        };
        let y = self.forward_host(&a, m, bias.as_deref());
        Tensor::from_vec(y, (m, self.out), x.device())
    }

    /// The CPU kernel over `a` (`[m, in]` f16 values as f32).
    fn forward_host(&self, a: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f16> {
        let (k, n) = (self.inp, self.out);
        let mut outlier_col = vec![false; k];
        for row in a.chunks_exact(k) {
            for (c, v) in row.iter().enumerate() {
                if v.abs() >= THRESHOLD {
                    outlier_col[c] = true;
                }
            }
        }
        let cols: Vec<usize> = (0..k).filter(|&c| outlier_col[c]).collect();
        // Steps 2–3: row scales and int8 codes.
        let mut sca = vec![0f32; m];
        let mut ca = vec![0i8; m * k];
        for (t, row) in a.chunks_exact(k).enumerate() {
            let absmax = row
                .iter()
                .filter(|v| v.abs() < THRESHOLD)
                .map(|v| v.abs())
                .fold(0f32, f32::max);
            sca[t] = absmax;
            if absmax == 0.0 {
                continue;
            }
            let s = scale_of(absmax);
            for (c, v) in row.iter().enumerate() {
                if !outlier_col[c] {
                    ca[t * k + c] = rne(v * s) as i8;
                }
            }
        }
        // The outlier part's dequantized weights, f16 (step 6).
        let w_out: Vec<f32> = (0..n)
            .flat_map(|o| {
                let scb = self.scb[o];
                cols.iter().map(move |&c| (o, c, scb))
            })
            .map(|(o, c, scb)| {
                f16::from_f32(f32::from(self.cb[o * k + c]) * scb * INV_127).to_f32()
            })
            .collect();
        let mut y = vec![f16::ZERO; m * n];
        y.par_chunks_mut(n).enumerate().for_each(|(t, out)| {
            let ca_row = &ca[t * k..(t + 1) * k];
            let a_row = &a[t * k..(t + 1) * k];
            for (o, slot) in out.iter_mut().enumerate() {
                let cb_row = &self.cb[o * k..(o + 1) * k];
                let acc: i32 = ca_row
                    .iter()
                    .zip(cb_row)
                    .map(|(&p, &q)| i32::from(p) * i32::from(q))
                    .sum();
                let b = bias.map_or(0.0, |b| b[o]);
                let v = (acc as f32 * sca[t] * self.scb[o]).mul_add(DEQUANT, b);
                let mut y16 = f16::from_f32(v);
                if !cols.is_empty() {
                    let w_row = &w_out[o * cols.len()..(o + 1) * cols.len()];
                    let extra: f32 = cols.iter().zip(w_row).map(|(&c, w)| a_row[c] * w).sum();
                    y16 = f16::from_f32(y16.to_f32() + extra);
                }
                *slot = y16;
            }
        });
        y
    }

    /// The same steps as tensor operations, for weights on a non-CPU device
    /// (and, in tests, to check them against the CPU kernel).
    pub(crate) fn forward_tensors(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let dev = x.device();
        let (cb_u8, scb) = match &self.device {
            Some((cb, scb)) => (cb.clone(), scb.clone()),
            None => {
                let bytes: Vec<u8> = self.cb.iter().map(|&v| v as u8).collect();
                (
                    Tensor::from_vec(bytes, (self.out, self.inp), dev)?,
                    Tensor::from_vec(self.scb.clone(), self.out, dev)?,
                )
            }
        };
        let a = x.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        let abs = a.abs()?;
        let is_out = abs.ge(f64::from(THRESHOLD))?.to_dtype(DType::F32)?;
        let col_out = is_out.max_keepdim(0)?; // [1, in]
        let keep = (1.0 - &is_out)?;
        let sca = (&abs * &keep)?.max_keepdim(1)?; // [m, 1]
        let zero_row = sca.eq(0.0)?.to_dtype(DType::F32)?;
        let scale = ((&sca + &zero_row)?.recip()? * 127.0)?;
        let scaled = a.broadcast_mul(&scale)?;
        // Round half to even in f32 by the 1.5·2²³ trick (|v| ≤ 127 here).
        let magic = 12_582_912.0;
        let ca = ((scaled + magic)? - magic)?.broadcast_mul(&(1.0 - &col_out)?)?;
        // Signed int8 weights from their bytes, exact in f64.
        let cb = cb_u8.to_dtype(DType::F64)?;
        let cb = (&cb - (cb.ge(128.0)?.to_dtype(DType::F64)? * 256.0)?)?;
        let c = ca.to_dtype(DType::F64)?.matmul(&cb.t()?)?;
        let sca64 = sca.to_dtype(DType::F64)?;
        let scb64 = scb.to_dtype(DType::F64)?.unsqueeze(0)?;
        // (f32(C)·SCA)·SCB rounded in f32 at each step, then ·1/127² + bias.
        let t1 = c
            .broadcast_mul(&sca64)?
            .to_dtype(DType::F32)?
            .to_dtype(DType::F64)?;
        let t2 = t1
            .broadcast_mul(&scb64)?
            .to_dtype(DType::F32)?
            .to_dtype(DType::F64)?;
        let mut y = (t2 * f64::from(DEQUANT))?;
        if let Some(b) = bias {
            let b = b.to_dtype(DType::F16)?.to_dtype(DType::F64)?.unsqueeze(0)?;
            y = y.broadcast_add(&b)?;
        }
        let y = y.to_dtype(DType::F32)?.to_dtype(DType::F16)?;
        let cols: Vec<u32> = col_out
            .squeeze(0)?
            .to_vec1::<f32>()?
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(c, _)| c as u32)
            .collect();
        if cols.is_empty() {
            return Ok(y);
        }
        let idx = Tensor::from_vec(cols.clone(), cols.len(), dev)?;
        let sub_a = a.index_select(&idx, 1)?;
        let sub_w = cb
            .index_select(&idx, 1)?
            .to_dtype(DType::F32)?
            .broadcast_mul(&scb.unsqueeze(1)?)?
            .affine(f64::from(INV_127), 0.0)?
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?;
        let extra = sub_a.matmul(&sub_w.t()?)?;
        (y.to_dtype(DType::F32)? + extra)?.to_dtype(DType::F16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(out: usize, inp: usize) -> Tensor {
        let v: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2)
            .collect();
        Tensor::from_vec(v, (out, inp), &Device::Cpu).unwrap()
    }

    /// The reference's recorded call of one projection (`linear_*` tensors of
    /// `tests/fixtures/int8_*.safetensors`, written by
    /// `scripts/fixtures/make_int8_reference.py` and checked there to equal
    /// bitsandbytes' own `Linear8bitLt`): our kernel on its input and int8
    /// weights must give its output bit for bit.
    #[test]
    fn the_cpu_kernel_reproduces_the_references_recorded_calls_bit_for_bit() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("int8_") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let f32s = |key: &str| -> (Vec<f32>, Vec<usize>) {
                let v = st.tensor(key).unwrap();
                let data = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (data, v.shape().to_vec())
            };
            let cb_view = st.tensor("linear_cb").unwrap();
            let (out, inp) = (cb_view.shape()[0], cb_view.shape()[1]);
            let q = Int8Weight {
                out,
                inp,
                cb: cb_view.data().iter().map(|&b| b as i8).collect(),
                scb: f32s("linear_scb").0,
                device: None,
            };
            let (input, shape) = f32s("linear_input");
            let x = Tensor::from_vec(input, (shape[0], shape[1]), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap();
            let want = f32s("linear_output").0;
            let got: Vec<f32> = q
                .forward(&x, None)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{name}: {differ} of {} outputs differ",
                want.len()
            );
            // The tensor path (other devices) within one f16 ulp.
            let tensors: Vec<f32> = q
                .forward_tensors(&x, None)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in tensors.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= b.abs().max(6e-5) / 1024.0 + 1e-7,
                    "{name}: {a} vs {b}"
                );
            }
            checked += 1;
        }
        assert!(checked >= 7, "only {checked} fixtures");
    }

    #[test]
    fn weights_are_row_absmax_codes() {
        let w = Tensor::from_vec(
            vec![1.0f32, -0.5, 0.25, 0.0, 0.0, 0.0],
            (2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let q = Int8Weight::quantize(&w).unwrap();
        assert_eq!(q.scb, [1.0, 0.0]);
        // 127, -63.5 → -64 (ties to even), 31.75 → 32.
        assert_eq!(&q.cb[..3], &[127, -64, 32]);
        assert_eq!(&q.cb[3..], &[0, 0, 0]);
    }

    #[test]
    fn outliers_take_the_f16_path_and_both_paths_agree() {
        let (m, k, n) = (5, 64, 24);
        let q = Int8Weight::quantize(&weight(n, k)).unwrap();
        let mut x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31 % 97) as f32 / 97.0 - 0.5) * 2.0)
            .collect();
        x[3] = 9.5; // column 3 is an outlier column (row 0)
        x[2 * k + 10] = -6.0; // |x| ≥ 6 counts: column 10 too
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let bias = Tensor::from_vec(vec![0.125f32; n], n, &Device::Cpu).unwrap();
        let host = q.forward(&xt, Some(&bias)).unwrap();
        let tensors = q.forward_tensors(&xt, Some(&bias)).unwrap();
        let a: Vec<f32> = host
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = tensors
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (i, (p, r)) in a.iter().zip(&b).enumerate() {
            let ulp = f16::from_f32(*p).to_f32().abs().max(1e-3) * 1e-3;
            assert!((p - r).abs() <= ulp, "output {i}: {p} vs {r}");
        }
        // Against f32 arithmetic the int8 product is close, not equal.
        let dense = xt
            .to_dtype(DType::F32)
            .unwrap()
            .matmul(&weight(n, k).t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        let d: Vec<f32> = dense.flatten_all().unwrap().to_vec1().unwrap();
        let err = a
            .iter()
            .zip(&d)
            .map(|(p, r)| (p - r).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.05, "{err}");
    }
}
