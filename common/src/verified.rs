//! Which (precision, device) pairs have been checked against a reference, and
//! by what. Anything else is refused before it runs: by the grid when no
//! device it allows can run a precision, by the coordinator when leasing
//! (a worker only gets cells its device kind is verified for), by the
//! worker's engine when loading, and by the memory planner, which proposes
//! only verified alternatives. A pair joins the table when a test or a
//! recorded measurement shows its numbers are right; the evidence column
//! says which.

use crate::spec::Precision;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of device a worker computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Host CPUs.
    Cpu,
    /// NVIDIA GPUs.
    Cuda,
}

impl DeviceKind {
    /// Every kind.
    pub const ALL: [DeviceKind; 2] = [DeviceKind::Cpu, DeviceKind::Cuda];

    /// The name used in grids and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified pair and the evidence for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The precision.
    pub precision: Precision,
    /// The device kind.
    pub device: DeviceKind,
    /// What showed the numbers are right.
    pub evidence: &'static str,
}

/// The pairs known to compute correct numbers.
pub(crate) const VERIFIED: &[Verified] = &[
    Verified {
        precision: Precision::F32,
        device: DeviceKind::Cpu,
        evidence: "per-layer states equal HF transformers f32 within 1e-4 rel. (worker/tests/engine_parity.rs)",
    },
    Verified {
        precision: Precision::Bf16,
        device: DeviceKind::Cpu,
        evidence: "per-layer cosine to f32 >= 0.999 on SmolLM2 and tiny models (worker/tests/engine_core_precision.rs)",
    },
    Verified {
        precision: Precision::F16,
        device: DeviceKind::Cpu,
        evidence: "per-layer cosine to f32 >= 0.9999 (worker/tests/engine_core_precision.rs)",
    },
    Verified {
        precision: Precision::Int8,
        device: DeviceKind::Cpu,
        evidence: "every LLM.int8 projection bit-identical to a reference that equals bitsandbytes; per-layer states follow it (worker/tests/engine_int8.rs)",
    },
    Verified {
        precision: Precision::Q8_0,
        device: DeviceKind::Cpu,
        evidence: "per-layer cosine to f32 >= 0.995 (worker/tests/engine_core_precision.rs)",
    },
    Verified {
        precision: Precision::F32,
        device: DeviceKind::Cuda,
        evidence: "H100: CUDA vs CPU f32 within 1.7e-6 rel. (docs/bench-gpu.md)",
    },
    Verified {
        precision: Precision::Bf16,
        device: DeviceKind::Cuda,
        evidence: "H100: per-layer cosine to CPU f32 >= 0.99982 (docs/bench-gpu.md)",
    },
];

/// The evidence for a pair, or why it may not run and what to use instead.
pub fn check(precision: Precision, device: DeviceKind) -> Result<&'static Verified, String> {
    if let Some(v) = VERIFIED
        .iter()
        .find(|v| v.precision == precision && v.device == device)
    {
        return Ok(v);
    }
    let elsewhere: Vec<&str> = VERIFIED
        .iter()
        .filter(|v| v.precision == precision)
        .map(|v| v.device.as_str())
        .collect();
    let here: Vec<&str> = VERIFIED
        .iter()
        .filter(|v| v.device == device)
        .map(|v| v.precision.as_str())
        .collect();
    let why = match (precision, device) {
        (Precision::Q8_0, DeviceKind::Cuda) => {
            " (candle's CUDA Q8_0 matmul was measured wrong: cosine 0.948 and NaN)"
        }
        _ => " (not yet checked against a reference on this device)",
    };
    let instead = if elsewhere.is_empty() {
        String::new()
    } else {
        format!("run it on {}, or ", elsewhere.join(" or "))
    };
    Err(format!(
        "precision `{precision}` on `{device}` is not a verified pair{why}: {instead}use precision {} on {device}",
        here.join(", ")
    ))
}

/// Whether a pair is verified.
pub fn is_verified(precision: Precision, device: DeviceKind) -> bool {
    check(precision, device).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_runs_somewhere_and_refusals_say_what_instead() {
        for p in Precision::ALL {
            assert!(
                DeviceKind::ALL.iter().any(|d| is_verified(p, *d)),
                "{p} runs nowhere"
            );
        }
        let msg = check(Precision::Q8_0, DeviceKind::Cuda).unwrap_err();
        assert!(
            msg.contains("`q8_0` on `cuda`") && msg.contains("measured wrong"),
            "{msg}"
        );
        assert!(
            msg.contains("run it on cpu") && msg.contains("use precision 32, 16"),
            "{msg}"
        );
        assert!(check(Precision::Int8, DeviceKind::Cuda).is_err());
        assert!(check(Precision::Bf16, DeviceKind::Cuda).is_ok());
    }
}
