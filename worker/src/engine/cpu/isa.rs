//! Which vector instruction set the engine's CPU kernels use, chosen once per
//! process at run time.
//!
//! Why at run time: one binary runs on every x86-64 node of a cluster, from
//! AVX2-only machines to AVX-512 ones, whose 16-lane registers double the
//! multiply-add rate; compiling for the best one would crash on the others,
//! compiling for the oldest would leave half of the newer ones idle.
//!
//! The choice is the best set the CPU has, unless `CD_CPU_ISA` asks for a
//! lower one (to test or benchmark every path on one machine):
//!
//! | `CD_CPU_ISA` | kernels |
//! |---|---|
//! | unset or `auto` | the best below that the CPU has |
//! | `amx` | `avx512`, and bf16 projections (precision `16`) on AMX tiles |
//! | `avx512bf16` | `avx512`, and bf16 projections on AVX512-BF16 `vdpbf16ps` |
//! | `avx512` | AVX-512F: 8 × 48 register tiles, 16-lane epilogues |
//! | `avx2` | AVX2 + FMA: 6 × 16 register tiles, 8-lane epilogues |
//! | `generic` | none of the packed kernels: candle's portable matmul, the engine's row operations compiled for the baseline target |
//!
//! Asking for a set this CPU lacks, or for an unknown name, is a
//! configuration error ([`check_env`]) rather than a silent downgrade: a
//! benchmark labelled `avx512` must have run AVX-512.

use std::sync::OnceLock;

/// The environment variable that overrides the detected instruction set.
pub(crate) const ENV: &str = "CD_CPU_ISA";

/// A vector instruction set the CPU kernels are compiled for, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// No packed kernels: portable code only.
    Generic,
    /// x86-64 AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// x86-64 AVX-512 Foundation (16 f32 lanes, 32 registers).
    Avx512,
    /// AVX-512F plus AVX512-BF16: f32 work as [`Isa::Avx512`], bf16
    /// projections on `vdpbf16ps` (pairs of bf16 products into f32 lanes).
    Avx512Bf16,
    /// AVX-512F plus AMX-BF16 tiles granted to this process: f32 work as
    /// [`Isa::Avx512`], bf16 projections on the tiles.
    Amx,
}

/// `CD_CPU_ISA` names a set this process cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsaError {
    /// Not one of the names the variable takes.
    #[error("{ENV}={0:?} is not one of auto, amx, avx512bf16, avx512, avx2, generic")]
    Unknown(String),
    /// A known set this CPU does not have.
    #[error("{ENV}={asked} asks for kernels this CPU lacks: it supports at most {best}")]
    Unsupported {
        /// What the variable asked for.
        asked: Isa,
        /// The best set the CPU has.
        best: Isa,
    },
}

impl Isa {
    /// The name `CD_CPU_ISA` takes for this set, and the one reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// The best set this CPU supports.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                return if amx_bf16_granted() {
                    Isa::Amx
                } else if has!("avx512bf16") {
                    Isa::Avx512Bf16
                } else {
                    Isa::Avx512
                };
            }
            if has!("avx2") && has!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the CPU has AMX tiles with bf16 (CPUID leaf 7: AMX-TILE and
/// AMX-BF16) and Linux grants this process their state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux ≥ 5.16; a
/// permission request, asked once per process).
#[cfg(target_arch = "x86_64")]
fn amx_bf16_granted() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(|| {
        // CPUID leaf 7 exists on every CPU with AVX-512 (the only caller's
        // condition).
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (bf16, tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        // Inputs are rounded to bf16 with AVX512-BF16, which every CPU with
        // AMX-BF16 has; checked all the same.
        if !(bf16 && tile && std::arch::is_x86_feature_detected!("avx512bf16")) {
            return false;
        }
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call with a request that only
        // changes which register state this process may use.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if ret != 0 {
            tracing::info!(
                "Linux did not grant AMX tile state (arch_prctl: {ret}); bf16 runs without AMX"
            );
        }
        ret == 0
    })
}

/// The set named by `value` (the content of `CD_CPU_ISA`, `None` if unset),
/// on a CPU whose best set is `best`.
pub fn resolve(value: Option<&str>, best: Isa) -> Result<Isa, IsaError> {
    let asked = match value.map(str::trim) {
        None | Some("") | Some("auto") => return Ok(best),
        Some("amx") => Isa::Amx,
        Some("avx512bf16") => Isa::Avx512Bf16,
        Some("avx512") => Isa::Avx512,
        Some("avx2") => Isa::Avx2,
        Some("generic") => Isa::Generic,
        Some(other) => return Err(IsaError::Unknown(other.to_string())),
    };
    if asked > best {
        return Err(IsaError::Unsupported { asked, best });
    }
    Ok(asked)
}

/// Checks `CD_CPU_ISA` against this CPU; binaries call it at start-up so a
/// bad value stops them with a configuration error before any work.
pub fn check_env() -> Result<Isa, IsaError> {
    resolve(std::env::var(ENV).ok().as_deref(), Isa::detected())
}

/// Whether the engine's own CPU kernels (packed projections, fused gated
/// MLP, one-pass attention, row operations) run f32 work on the CPU: yes,
/// unless `CD_CPU_KERNELS=0` asks for candle's generic operations (kept
/// selectable so the two can be compared in one benchmark run). Read once.
pub(crate) fn kernels_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CD_CPU_KERNELS").map_or(true, |v| v != "0"))
}

/// The set the kernels use in this process (read once). A bad `CD_CPU_ISA`
/// that [`check_env`] did not stop falls back to the detected set, loudly.
pub(crate) fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| match check_env() {
        Ok(isa) => isa,
        Err(e) => {
            let best = Isa::detected();
            tracing::error!("{e}; using {best}");
            best
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_sets_no_better_than_the_cpu() {
        assert_eq!(resolve(None, Isa::Avx512), Ok(Isa::Avx512));
        assert_eq!(resolve(Some("avx512"), Isa::Amx), Ok(Isa::Avx512));
        assert_eq!(resolve(Some("avx512bf16"), Isa::Amx), Ok(Isa::Avx512Bf16));
        assert!(resolve(Some("amx"), Isa::Avx512Bf16).is_err());
        assert!(resolve(Some("avx512bf16"), Isa::Avx512).is_err());
        assert_eq!(resolve(Some("auto"), Isa::Avx2), Ok(Isa::Avx2));
        assert_eq!(resolve(Some(" avx2 "), Isa::Avx512), Ok(Isa::Avx2));
        assert_eq!(resolve(Some("generic"), Isa::Avx2), Ok(Isa::Generic));
        assert_eq!(
            resolve(Some("avx512"), Isa::Avx2),
            Err(IsaError::Unsupported {
                asked: Isa::Avx512,
                best: Isa::Avx2
            })
        );
        let err = resolve(Some("AVX512"), Isa::Avx512).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CD_CPU_ISA=\"AVX512\" is not one of auto, amx, avx512bf16, avx512, avx2, generic"
        );
        let err = resolve(Some("avx2"), Isa::Generic).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CD_CPU_ISA=avx2 asks for kernels this CPU lacks: it supports at most generic"
        );
    }
}
