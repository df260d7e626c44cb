//! Memory planning: which device holds which part of a model.
//!
//! Given a model's shape, the precision and the planned batch, the planner
//! estimates every part's memory (weights plus the activations of one batch;
//! extraction keeps no KV cache) and assigns contiguous layer ranges to the
//! devices in order: the embedding on the first device, the final norm and LM
//! head on the last. Among the splits that fit it picks the one that leaves
//! every device the same fraction of its memory free (so hidden states cross
//! each device boundary once per batch, and no device runs at its limit). When
//! nothing fits, it refuses with what is needed and what would fit instead:
//! more devices, 8-bit weights, or a smaller batch.
//!
//! Memory model (bytes; `a` = activation bytes per element, `w` = bytes per
//! matrix weight, both from [`cd_common::memory`]):
//! - embedding: `vocab × hidden × a` (kept unquantized);
//! - each layer: `(q, k, v, o, gate, up, down weights) × w + (2 norms + biases) × a`;
//! - head: `hidden × a` (final norm) `+ vocab × hidden × a` (the engine keeps
//!   the LM head unquantized; a tied head on a device other than the
//!   embedding's needs its own copy);
//! - activations, once per device that runs layers: the transient peak of one
//!   layer, `batch × seq × ((4·hidden + 6·heads·head_dim + 3·intermediate) × a +
//!   3·heads·seq × 4)`: residual, norm output, q/k/v and their contiguous
//!   copies, attention output, the MLP's gate, up and product, and the
//!   attention scores, masked scores and probabilities (f32 whatever the
//!   precision), summed as if all were alive at once; 8-bit runs add one
//!   dequantized f32 copy of the largest matrix;
//! - the head's device adds `batch × vocab × 4 × 2` for pooled logits;
//! - every CUDA device loses [`cd_common::memory::CUDA_RESERVE_BYTES`] first.
//!
//! Why this file is long: the memory model, the split search and the refusal
//! that explains what would fit use the same per-part estimates; the header
//! documents the model they implement.

use crate::devices::DeviceInfo;
use crate::engine::{DeviceMap, ModelConfig};
use cd_common::memory::{activation_bytes, matrix_bytes_per_weight, CUDA_RESERVE_BYTES};
use cd_common::spec::Precision;
use std::fmt;

/// Errors planning a placement.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// No devices were given.
    #[error("no devices to place the model on")]
    NoDevices,
    /// The batch is empty.
    #[error("batch of {batch} × {seq} tokens: both must be at least 1")]
    EmptyBatch { batch: usize, seq: usize },
    /// The model does not fit; the message says what would.
    #[error("{0}")]
    DoesNotFit(Box<Shortfall>),
}

/// The architecture numbers memory depends on, read from the model's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the MLP's inner layer.
    pub intermediate: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention (query) heads.
    pub heads: usize,
    /// Key/value heads (GQA); equal to `heads` without GQA.
    pub kv_heads: usize,
    /// Width of one head (`hidden / heads` unless the config says otherwise).
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Whether the LM head reuses the embedding matrix.
    pub tied_embeddings: bool,
    /// Whether q/k/v projections carry biases (Qwen2).
    pub qkv_bias: bool,
}

impl ModelShape {
    /// LLaMA-2-7B's shape.
    #[cfg(test)]
    pub(crate) fn llama2_7b() -> Self {
        Self::llama(4096, 11008, 32, 32, 32)
    }

    /// LLaMA-2-13B's shape.
    #[cfg(test)]
    pub(crate) fn llama2_13b() -> Self {
        Self::llama(5120, 13824, 40, 40, 40)
    }

    /// LLaMA-2-70B's shape (GQA with 8 key/value heads).
    #[cfg(test)]
    pub(crate) fn llama2_70b() -> Self {
        Self::llama(8192, 28672, 80, 64, 8)
    }

    #[cfg(test)]
    fn llama(
        hidden: usize,
        intermediate: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        ModelShape {
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            vocab: 32000,
            tied_embeddings: false,
            qkv_bias: false,
        }
    }

    /// Weights of one block's matrices (q, k, v, o, gate, up, down).
    pub fn layer_matrix_params(&self) -> u64 {
        let (h, i) = (self.hidden as u64, self.intermediate as u64);
        let q = (self.heads * self.head_dim) as u64;
        let kv = (self.kv_heads * self.head_dim) as u64;
        h * q + 2 * h * kv + q * h + 3 * h * i
    }

    /// Weights of one block's vectors (two norms, optional q/k/v biases).
    pub(crate) fn layer_vector_params(&self) -> u64 {
        let bias = if self.qkv_bias {
            ((self.heads + 2 * self.kv_heads) * self.head_dim) as u64
        } else {
            0
        };
        2 * self.hidden as u64 + bias
    }

    /// Total parameter count (a tied head counted once).
    pub fn params(&self) -> u64 {
        let embed = (self.vocab * self.hidden) as u64;
        let head = if self.tied_embeddings { 0 } else { embed };
        embed
            + self.layers as u64 * (self.layer_matrix_params() + self.layer_vector_params())
            + self.hidden as u64
            + head
    }

    /// The matrix parameters that take part in a forward pass per token:
    /// the FLOP count of a forward pass is about `2 × this × tokens` (plus
    /// attention's `O(seq)` term, excluded as the papers' MFU convention does).
    pub fn matmul_params(&self) -> u64 {
        self.layers as u64 * self.layer_matrix_params()
    }
}

impl From<&ModelConfig> for ModelShape {
    fn from(cfg: &ModelConfig) -> Self {
        ModelShape {
            hidden: cfg.hidden_size,
            intermediate: cfg.intermediate_size,
            layers: cfg.num_layers,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            vocab: cfg.vocab_size,
            tied_embeddings: cfg.tie_word_embeddings,
            qkv_bias: cfg.qkv_bias,
        }
    }
}

/// The batch a plan is made for: `batch` texts padded to `seq` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// Texts per forward pass.
    pub batch: usize,
    /// Tokens per text after padding.
    pub seq: usize,
}

impl BatchShape {
    /// Whether a plan made for `self` also holds a pass of `other`: no more
    /// rows and no more tokens per row (activation memory grows with both).
    pub(crate) fn covers(self, other: BatchShape) -> bool {
        other.batch <= self.batch && other.seq <= self.seq
    }

    /// The smallest shape that covers both.
    pub(crate) fn union(self, other: BatchShape) -> BatchShape {
        BatchShape {
            batch: self.batch.max(other.batch),
            seq: self.seq.max(other.seq),
        }
    }
}

/// A device as the planner sees it: a name and the bytes it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBudget {
    /// `cpu` or `cuda:N`.
    pub name: String,
    /// Bytes the model may use (free memory minus the CUDA reserve).
    pub usable_bytes: u64,
}

impl DeviceBudget {
    /// The budget of an opened device: its free memory, less the CUDA reserve
    /// on a GPU.
    pub fn of(info: &DeviceInfo) -> Self {
        let reserve = if info.is_cuda() {
            CUDA_RESERVE_BYTES
        } else {
            0
        };
        DeviceBudget {
            name: info.name.clone(),
            usable_bytes: info.free_bytes.saturating_sub(reserve),
        }
    }

    /// A GPU with `total_bytes` of memory, all of it free (for plans made
    /// without the hardware, e.g. in tests or a capacity question).
    pub fn gpu(name: impl Into<String>, total_bytes: u64) -> Self {
        DeviceBudget {
            name: name.into(),
            usable_bytes: total_bytes.saturating_sub(CUDA_RESERVE_BYTES),
        }
    }
}

/// How much one device carries under a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLoad {
    /// Bytes of weights placed on it.
    pub weight_bytes: u64,
    /// Transient activation bytes it needs (zero if it runs nothing).
    pub activation_bytes: u64,
    /// Its budget.
    pub usable_bytes: u64,
    /// The layers it runs, as a half-open range (empty when none).
    pub layers: std::ops::Range<usize>,
}

impl DeviceLoad {
    /// Weights plus activations.
    #[cfg(test)]
    pub(crate) fn total_bytes(&self) -> u64 {
        self.weight_bytes + self.activation_bytes
    }
}

/// Where each part of the model goes, as indices into the device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Device of the token embedding (always the first).
    pub embed: usize,
    /// Device of each block, in order; contiguous and non-decreasing.
    pub layers: Vec<usize>,
    /// Device of the final norm and LM head (always the last).
    pub head: usize,
    /// What each device carries, in device order.
    pub loads: Vec<DeviceLoad>,
}

impl Plan {
    /// The engine's device map for this plan over the opened `devices` (the
    /// same list, in the same order, the plan was made for).
    pub fn device_map(&self, devices: &[DeviceInfo]) -> DeviceMap {
        let dev = |i: usize| devices[i].device.clone();
        DeviceMap {
            embed: dev(self.embed),
            layers: self.layers.iter().map(|&i| dev(i)).collect(),
            head: dev(self.head),
        }
    }

    /// Number of places where the hidden state moves to another device.
    pub fn boundaries(&self) -> usize {
        let mut path = vec![self.embed];
        path.extend(&self.layers);
        path.push(self.head);
        path.windows(2).filter(|w| w[0] != w[1]).count()
    }
}

/// The estimated memory of each part of a model at a precision and batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// The embedding table.
    pub embed: u64,
    /// One block's weights.
    pub layer: u64,
    /// Final norm and LM head (a tied head: its own copy).
    pub head: u64,
    /// The same when the head shares the embedding's device and matrix.
    pub head_sharing_embed: u64,
    /// Peak transient activations of one block on one device.
    pub activations: u64,
    /// Extra transient memory on the head's device (pooled logits).
    pub head_activations: u64,
}

impl Footprint {
    /// Estimate every part (see the module documentation for the formulas).
    pub fn new(shape: &ModelShape, precision: Precision, batch: BatchShape) -> Self {
        let a = activation_bytes(precision);
        let w = matrix_bytes_per_weight(precision);
        let matrix = |params: u64| (params as f64 * w).ceil() as u64;
        let embed_params = (shape.vocab * shape.hidden) as u64;
        let embed = embed_params * a;
        let layer = matrix(shape.layer_matrix_params()) + shape.layer_vector_params() * a;
        let norm = shape.hidden as u64 * a;
        // The engine keeps the LM head at the activation dtype, 8-bit runs too.
        let head = norm + embed;
        let head_sharing_embed = if shape.tied_embeddings { norm } else { head };
        let (b, s) = (batch.batch as u64, batch.seq as u64);
        let qh = (shape.heads * shape.head_dim) as u64;
        let per_token = (4 * shape.hidden as u64 + 6 * qh + 3 * shape.intermediate as u64) * a
            + 3 * shape.heads as u64 * s * 4;
        let mut activations = b * s * per_token;
        if precision == Precision::Q8_0 {
            // 8-bit matmuls dequantize a weight to f32 for large batches.
            let largest = (shape.hidden * shape.intermediate.max(qh as usize)) as u64;
            activations += largest * 4;
        }
        let head_activations = b * shape.vocab as u64 * 4 * 2;
        Footprint {
            embed,
            layer,
            head,
            head_sharing_embed,
            activations,
            head_activations,
        }
    }

    /// Bytes for the whole model on one device.
    pub(crate) fn single_device(&self, layers: usize) -> u64 {
        self.embed
            + layers as u64 * self.layer
            + self.head_sharing_embed
            + self.activations
            + self.head_activations
    }
}

/// Plan a loaded model's config over opened devices and return the engine's
/// device map, logging the split.
pub fn place(
    cfg: &ModelConfig,
    precision: Precision,
    batch: BatchShape,
    devices: &[DeviceInfo],
) -> Result<(Plan, DeviceMap), PlacementError> {
    let budgets: Vec<DeviceBudget> = devices.iter().map(DeviceBudget::of).collect();
    let plan = plan(&ModelShape::from(cfg), precision, batch, &budgets)?;
    for (load, device) in plan.loads.iter().zip(devices) {
        tracing::info!(
            device = %device.name,
            layers = ?load.layers,
            weights_gib = load.weight_bytes as f64 / (1u64 << 30) as f64,
            activations_gib = load.activation_bytes as f64 / (1u64 << 30) as f64,
            usable_gib = load.usable_bytes as f64 / (1u64 << 30) as f64,
            "placed model part"
        );
    }
    let map = plan.device_map(devices);
    Ok((plan, map))
}

/// Plan `shape` at `precision` for `batch` over `devices` (in order), or
/// refuse with what would fit.
pub fn plan(
    shape: &ModelShape,
    precision: Precision,
    batch: BatchShape,
    devices: &[DeviceBudget],
) -> Result<Plan, PlacementError> {
    if devices.is_empty() {
        return Err(PlacementError::NoDevices);
    }
    if batch.batch == 0 || batch.seq == 0 {
        return Err(PlacementError::EmptyBatch {
            batch: batch.batch,
            seq: batch.seq,
        });
    }
    let footprint = Footprint::new(shape, precision, batch);
    match balanced(shape.layers, &footprint, devices) {
        Some(plan) => Ok(plan),
        None => Err(PlacementError::DoesNotFit(Box::new(Shortfall::explain(
            shape, precision, batch, devices, &footprint,
        )))),
    }
}

/// The split whose fullest device is least full (fill measured as a fraction
/// of each device's budget), found by bisecting on that fraction; `None` if
/// even a full fill does not fit.
fn balanced(layers: usize, fp: &Footprint, devices: &[DeviceBudget]) -> Option<Plan> {
    let mut plan = pack(layers, fp, devices, 1.0)?;
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    // 40 halvings resolve the fill to ~1e-12: far below one layer's share.
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        match pack(layers, fp, devices, mid) {
            Some(p) => {
                plan = p;
                hi = mid;
            }
            None => lo = mid,
        }
    }
    Some(plan)
}

/// Greedy contiguous packing with each device capped at `fill` of its budget:
/// layers go to the earliest device with room. Front-loading is optimal for
/// contiguous packing with fixed caps, so `None` means no split fits the caps.
fn pack(layers: usize, fp: &Footprint, devices: &[DeviceBudget], fill: f64) -> Option<Plan> {
    let last = devices.len() - 1;
    let mut assignment = Vec::with_capacity(layers);
    let mut loads = Vec::with_capacity(devices.len());
    let mut next = 0;
    for (d, device) in devices.iter().enumerate() {
        let cap = (device.usable_bytes as f64 * fill) as u64;
        let fixed_weights = |n_layers: usize| {
            let mut bytes = n_layers as u64 * fp.layer;
            if d == 0 {
                bytes += fp.embed;
            }
            if d == last {
                bytes += if last == 0 {
                    fp.head_sharing_embed
                } else {
                    fp.head
                };
            }
            bytes
        };
        let activations = |n_layers: usize| {
            let mut bytes = if n_layers > 0 || d == 0 || d == last {
                fp.activations
            } else {
                0
            };
            if d == last {
                bytes += fp.head_activations;
            }
            bytes
        };
        let fits = |n: usize| fixed_weights(n) + activations(n) <= cap;
        let mut n = 0;
        if d == last {
            n = layers - next;
            if !fits(n) {
                return None;
            }
        } else {
            if d == 0 && !fits(0) {
                return None;
            }
            while next + n < layers && fits(n + 1) {
                n += 1;
            }
        }
        assignment.extend(std::iter::repeat_n(d, n));
        let uses = n > 0 || d == 0 || d == last;
        loads.push(DeviceLoad {
            weight_bytes: fixed_weights(n),
            activation_bytes: if uses { activations(n) } else { 0 },
            usable_bytes: device.usable_bytes,
            layers: next..next + n,
        });
        next += n;
    }
    Some(Plan {
        embed: 0,
        layers: assignment,
        head: last,
        loads,
    })
}

/// Why a model does not fit, and what would.
#[derive(Debug, Clone)]
pub struct Shortfall {
    /// Bytes the model needs on one device of unlimited size.
    pub needed_bytes: u64,
    /// Bytes the devices offer together.
    pub available_bytes: u64,
    /// Alternatives that fit, most direct first.
    pub suggestions: Vec<String>,
    summary: String,
}

impl Shortfall {
    fn explain(
        shape: &ModelShape,
        precision: Precision,
        batch: BatchShape,
        devices: &[DeviceBudget],
        fp: &Footprint,
    ) -> Self {
        let needed_bytes = fp.single_device(shape.layers);
        let available_bytes = devices.iter().map(|d| d.usable_bytes).sum();
        let device_list: Vec<String> = devices
            .iter()
            .map(|d| format!("{} {}", d.name, gib(d.usable_bytes)))
            .collect();
        let summary = format!(
            "the model ({:.1}B parameters, {} layers, hidden {}) at precision {} with batch {}×{} \
             needs about {} (weights {}, activations {} per device) but the devices offer {} \
             ({})",
            shape.params() as f64 / 1e9,
            shape.layers,
            shape.hidden,
            precision,
            batch.batch,
            batch.seq,
            gib(needed_bytes),
            gib(needed_bytes - fp.activations - fp.head_activations),
            gib(fp.activations),
            gib(available_bytes),
            device_list.join(", "),
        );
        let mut suggestions = Vec::new();
        // More devices like the largest one given.
        let largest = devices
            .iter()
            .max_by_key(|d| d.usable_bytes)
            .expect("devices is non-empty");
        if let Some(n) = (devices.len() + 1..=16).find(|&n| {
            let more: Vec<DeviceBudget> = (0..n).map(|_| largest.clone()).collect();
            balanced(shape.layers, fp, &more).is_some()
        }) {
            suggestions.push(format!(
                "{n} devices like {} ({} usable each; {} given)",
                largest.name,
                gib(largest.usable_bytes),
                devices.len()
            ));
        }
        // Lower precision on the same devices.
        for lower in lower_precisions(precision) {
            let fp_lower = Footprint::new(shape, lower, batch);
            if balanced(shape.layers, &fp_lower, devices).is_some() {
                suggestions.push(format!(
                    "precision {lower} ({}) on these devices",
                    gib(fp_lower.single_device(shape.layers))
                ));
                break;
            }
        }
        // A smaller batch on the same devices.
        let mut smaller = batch;
        while smaller.batch > 1 {
            smaller.batch /= 2;
            if balanced(
                shape.layers,
                &Footprint::new(shape, precision, smaller),
                devices,
            )
            .is_some()
            {
                suggestions.push(format!("batch size {} or less", smaller.batch));
                break;
            }
        }
        Shortfall {
            needed_bytes,
            available_bytes,
            suggestions,
            summary,
        }
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)?;
        if self.suggestions.is_empty() {
            f.write_str("; no smaller configuration of these devices fits either")
        } else {
            write!(f, "; it would fit with: {}", self.suggestions.join(", or "))
        }
    }
}

/// Precisions with smaller weights than `p`, nearest first, that are
/// verified on CUDA (`cd_common::verified`): the planner never proposes a
/// pair that would be refused.
fn lower_precisions(p: Precision) -> Vec<Precision> {
    let smaller = match p {
        Precision::F32 => vec![Precision::Bf16, Precision::F16, Precision::Int8],
        Precision::Bf16 | Precision::F16 => vec![Precision::Int8],
        Precision::Int8 | Precision::Q8_0 => vec![],
    };
    smaller
        .into_iter()
        .filter(|q| cd_common::verified::is_verified(*q, cd_common::verified::DeviceKind::Cuda))
        .collect()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_covers_only_batches_no_wider_and_no_longer() {
        let plan = BatchShape { batch: 8, seq: 100 };
        assert!(plan.covers(BatchShape { batch: 8, seq: 100 }));
        assert!(plan.covers(BatchShape { batch: 1, seq: 20 }));
        assert!(!plan.covers(BatchShape { batch: 9, seq: 20 }));
        assert!(!plan.covers(BatchShape { batch: 2, seq: 101 }));
        // Re-planning for a longer task keeps the earlier, wider batch.
        let next = plan.union(BatchShape { batch: 4, seq: 300 });
        assert_eq!(next, BatchShape { batch: 8, seq: 300 });
        assert!(next.covers(plan) && next.covers(BatchShape { batch: 4, seq: 300 }));
    }

    const GB80: u64 = 80 * (1 << 30);
    const B32X256: BatchShape = BatchShape {
        batch: 32,
        seq: 256,
    };

    fn gpus(n: usize) -> Vec<DeviceBudget> {
        (0..n)
            .map(|i| DeviceBudget::gpu(format!("cuda:{i}"), GB80))
            .collect()
    }

    fn assert_valid(plan: &Plan, shape: &ModelShape, n_devices: usize) {
        assert_eq!(plan.layers.len(), shape.layers);
        assert_eq!(plan.embed, 0);
        assert_eq!(plan.head, n_devices - 1);
        assert!(
            plan.layers.windows(2).all(|w| w[0] <= w[1]),
            "contiguous ranges"
        );
        for load in &plan.loads {
            assert!(load.total_bytes() <= load.usable_bytes, "{load:?}");
        }
        let covered: usize = plan.loads.iter().map(|l| l.layers.len()).sum();
        assert_eq!(covered, shape.layers);
    }

    #[test]
    fn parameter_counts_match_the_published_sizes() {
        // LLaMA-2 7B / 13B / 70B: 6.74B, 13.02B, 68.98B parameters.
        let billions = |s: ModelShape| (s.params() as f64 / 1e7).round() / 100.0;
        assert_eq!(billions(ModelShape::llama2_7b()), 6.74);
        assert_eq!(billions(ModelShape::llama2_13b()), 13.02);
        assert_eq!(billions(ModelShape::llama2_70b()), 68.98);
    }

    #[test]
    fn seventy_b_bf16_splits_over_two_80gb_gpus() {
        let shape = ModelShape::llama2_70b();
        let plan = plan(&shape, Precision::Bf16, B32X256, &gpus(2)).unwrap();
        assert_valid(&plan, &shape, 2);
        assert_eq!(plan.boundaries(), 1);
        // Balanced: the two halves differ by at most one layer's weight.
        let (a, b) = (plan.loads[0].layers.len(), plan.loads[1].layers.len());
        assert!(a.abs_diff(b) <= 2, "{a} vs {b}");
    }

    #[test]
    fn seventy_b_bf16_on_one_gpu_is_refused_with_alternatives() {
        let shape = ModelShape::llama2_70b();
        let err = plan(&shape, Precision::Bf16, B32X256, &gpus(1)).unwrap_err();
        let PlacementError::DoesNotFit(refusal) = &err else {
            panic!("{err}")
        };
        assert!(
            refusal.needed_bytes > 128 * (1 << 30),
            "{}",
            refusal.needed_bytes
        );
        let msg = err.to_string();
        println!("{msg}");
        assert!(msg.contains("2 devices like cuda:0"), "{msg}");
        // LLM.int8 is not a verified CUDA pair yet: never proposed.
        assert!(!msg.contains("precision 8"), "{msg}");
        assert!(
            !msg.contains("batch size"),
            "no batch fits 138 GB of weights into 79: {msg}"
        );
    }

    #[test]
    fn seventy_b_int8_fits_one_80gb_gpu() {
        let shape = ModelShape::llama2_70b();
        let plan = plan(&shape, Precision::Int8, B32X256, &gpus(1)).unwrap();
        assert_valid(&plan, &shape, 1);
        assert_eq!(plan.boundaries(), 0);
    }

    #[test]
    fn seven_and_thirteen_b_fit_one_gpu_in_bf16_and_f32_seven_b_on_24gb_only_in_bf16() {
        for shape in [ModelShape::llama2_7b(), ModelShape::llama2_13b()] {
            assert_valid(
                &plan(&shape, Precision::Bf16, B32X256, &gpus(1)).unwrap(),
                &shape,
                1,
            );
            assert_valid(
                &plan(&shape, Precision::F32, B32X256, &gpus(1)).unwrap(),
                &shape,
                1,
            );
        }
        let gb24 = [DeviceBudget::gpu("cuda:0", 24 << 30)];
        let seven = ModelShape::llama2_7b();
        assert!(plan(&seven, Precision::Bf16, B32X256, &gb24).is_ok());
        let msg = plan(&seven, Precision::F32, B32X256, &gb24)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("precision 16"), "{msg}");
    }

    #[test]
    fn a_batch_too_large_is_refused_with_a_batch_that_fits() {
        // 13B bf16 weights (~24.3 GiB) on a 32 GiB GPU: room for a few GiB of activations.
        let shape = ModelShape::llama2_13b();
        let dev = [DeviceBudget::gpu("cuda:0", 32 << 30)];
        let huge = BatchShape {
            batch: 256,
            seq: 1024,
        };
        let msg = plan(&shape, Precision::Bf16, huge, &dev)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("batch size"), "{msg}");
        let suggested: usize = msg
            .split("batch size ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(plan(
            &shape,
            Precision::Bf16,
            BatchShape {
                batch: suggested,
                seq: 1024
            },
            &dev
        )
        .is_ok());
        assert!(plan(
            &shape,
            Precision::Bf16,
            BatchShape {
                batch: suggested * 2,
                seq: 1024
            },
            &dev
        )
        .is_err());
    }

    #[test]
    fn splits_are_deterministic_and_follow_capacity() {
        let shape = ModelShape::llama2_70b();
        let uneven = [
            DeviceBudget::gpu("cuda:0", GB80),
            DeviceBudget::gpu("cuda:1", 2 * GB80),
        ];
        let a = plan(&shape, Precision::Bf16, B32X256, &uneven).unwrap();
        let b = plan(&shape, Precision::Bf16, B32X256, &uneven).unwrap();
        assert_eq!(a, b);
        assert_valid(&a, &shape, 2);
        // The larger device takes about two thirds of the layers.
        let on_big = a.loads[1].layers.len();
        assert!((50..=56).contains(&on_big), "{on_big}");
        // Four GPUs: four contiguous ranges of 20 ± 1 layers.
        let four = plan(&shape, Precision::Bf16, B32X256, &gpus(4)).unwrap();
        assert_valid(&four, &shape, 4);
        assert_eq!(four.boundaries(), 3);
        for load in &four.loads {
            assert!((19..=21).contains(&load.layers.len()), "{:?}", four.loads);
        }
    }

    /// The shape through the engine's config parser (the only one).
    fn shape_of(config: &serde_json::Value) -> Result<ModelShape, crate::engine::EngineError> {
        let cfg = ModelConfig::from_hf_config_json(
            &config.to_string(),
            std::path::Path::new("config.json"),
        )?;
        Ok(ModelShape::from(&cfg))
    }

    #[test]
    fn shapes_from_hf_configs_with_defaults_and_bad_fields_named() {
        let llama: serde_json::Value = serde_json::json!({
            "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
            "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
            "vocab_size": 32000, "tie_word_embeddings": false
        });
        assert_eq!(shape_of(&llama).unwrap(), ModelShape::llama2_70b());
        let gemma3 = serde_json::json!({"model_type": "gemma3", "text_config": {
            "model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048,
            "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 256, "vocab_size": 262144}});
        let g = shape_of(&gemma3).unwrap();
        assert_eq!((g.head_dim, g.kv_heads, g.tied_embeddings), (256, 1, true));
        let qwen = serde_json::json!({"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "vocab_size": 151936, "tie_word_embeddings": true});
        let q = shape_of(&qwen).unwrap();
        // Qwen2-0.5B: 494M parameters.
        assert_eq!(q.params() / 1_000_000, 494);
        let bad = serde_json::json!({"model_type": "llama", "hidden_size": "big"});
        let msg = shape_of(&bad).unwrap_err().to_string();
        assert!(msg.contains("`hidden_size`"), "{msg}");
        let missing = serde_json::json!({"model_type": "llama", "hidden_size": 8,
            "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 16});
        let msg = shape_of(&missing).unwrap_err().to_string();
        assert!(
            msg.contains("`intermediate_size`") && msg.contains("missing"),
            "{msg}"
        );
    }

    #[test]
    fn agrees_with_the_coordinators_coarse_check_on_the_grid_models() {
        use cd_common::memory::fits;
        for (shape, size_b) in [
            (ModelShape::llama2_7b(), 7.0),
            (ModelShape::llama2_13b(), 13.0),
            (ModelShape::llama2_70b(), 70.0),
        ] {
            for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
                for n in 1..=2 {
                    let exact = plan(&shape, p, B32X256, &gpus(n)).is_ok();
                    let coarse = fits(size_b, p, &vec![GB80; n], true);
                    assert_eq!(exact, coarse, "{size_b}B at {p} on {n} GPU(s)");
                }
            }
        }
    }

    #[test]
    fn a_split_cpu_model_equals_the_unsplit_one_bit_for_bit() {
        // Two CPU handles are one device, so this checks the per-layer
        // placement plumbing (weights looked up per layer device, states
        // handed across the split) rather than a copy; the CUDA run of
        // `cd-bench random --check --split 2` checks real boundary copies.
        use crate::engine::random_model::{build, random_texts, random_weights, shape_config};
        use crate::engine::{Device, ExtractOptions, Pooling, Site};
        let cfg_json = shape_config("tiny", None).unwrap();
        let cfg =
            ModelConfig::from_hf_config_json(&cfg_json.to_string(), std::path::Path::new("tiny"))
                .unwrap();
        let single = DeviceMap::single(Device::Cpu, cfg.num_layers);
        let weights = random_weights(&cfg, &single, candle_core::DType::F32, 7).unwrap();
        let budgets = [
            DeviceBudget {
                name: "cpu-a".into(),
                usable_bytes: 1 << 30,
            },
            DeviceBudget {
                name: "cpu-b".into(),
                usable_bytes: 1 << 30,
            },
        ];
        let plan = plan(
            &ModelShape::from(&cfg),
            Precision::F32,
            BatchShape { batch: 4, seq: 16 },
            &budgets,
        )
        .unwrap();
        assert_eq!(plan.boundaries(), 1, "{plan:?}");
        let infos: Vec<DeviceInfo> = budgets
            .iter()
            .map(|b| DeviceInfo {
                device: Device::Cpu,
                name: b.name.clone(),
                model: "cpu".into(),
                total_bytes: b.usable_bytes,
                free_bytes: b.usable_bytes,
            })
            .collect();
        let split = plan.device_map(&infos);
        let texts = random_texts(5, 11, cfg.vocab_size, 3);
        let texts: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(k, t)| t.split(' ').take(3 + 2 * k).collect::<Vec<_>>().join(" "))
            .collect();
        let opts = ExtractOptions {
            site: Site::Residual,
            pooling: Pooling::Last,
            batch_size: 2,
            max_tokens: None,
            add_special_tokens: false,
        };
        let a = build(&cfg_json, weights.clone(), Precision::F32, single).unwrap();
        let b = build(&cfg_json, weights, Precision::F32, split).unwrap();
        let fa = a.extract(&texts, &opts, &mut |_| {}).unwrap();
        let fb = b.extract(&texts, &opts, &mut |_| {}).unwrap();
        assert_eq!(fa.data.dim(), (5, cfg.num_layers + 1, cfg.hidden_size));
        assert!(fa.data.iter().any(|&x| x != 0.0));
        assert_eq!(
            fa.data, fb.data,
            "the split model must reproduce the unsplit one exactly"
        );
        assert_eq!(fa.token_counts, vec![3, 5, 7, 9, 11]);
    }
}
