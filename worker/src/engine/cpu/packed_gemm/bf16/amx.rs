//! The bf16 block kernel on Intel AMX tiles ([`Bf16Kernel::Tiles`](super::Bf16Kernel)).
//!
//! Why: an AMX unit multiplies a 16 × 32 bf16 tile by a 32 × 16 one into a
//! 16 × 16 f32 tile in one instruction (`tdpbf16ps`), about eight times the
//! multiply-add rate of AVX-512 f32 on the same core, which is what PyTorch's
//! bf16 path uses on these machines.
//!
//! Register blocking: one 32 × 32 output block is four f32 accumulator tiles
//! (tmm0–3), two tiles of `x` (tmm4–5) and two of `W` (tmm6–7) per k-block
//! of 32; the panels' layout ([`super`]) is the one `tdpbf16ps` reads
//! its second operand in, so one k-block of a panel is one contiguous 1 KiB
//! tile.
//!
//! Instructions are written with `asm!`: Rust has no stable AMX intrinsics.
//! Linux grants the tile state once per process (`cpu::isa`); the kernel
//! loads the tile configuration once per thread.

use super::{BLOCK, KB, T};
use std::arch::asm;
use std::cell::Cell;

/// The tile configuration every unit uses: palette 1, eight tiles of 16
/// rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = T as u8; // rows
        }
        TileConfig(c)
    }
}

/// Loads the tile configuration in this thread if it has not been yet.
///
/// # Safety
/// The CPU has AMX-BF16 and this process was granted the tile state
/// ([`Isa::Amx`](crate::engine::cpu::isa::Isa::Amx) is active).
pub(super) unsafe fn configure_thread() {
    thread_local!(static DONE: Cell<bool> = const { Cell::new(false) });
    DONE.with(|done| {
        if !done.get() {
            let cfg = TileConfig::all_full();
            // SAFETY: a valid palette-1 configuration; the caller checked AMX.
            unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
            done.set(true);
        }
    });
}

/// One 32 × 32 block: `out = x_block · W_groupᵀ` over all of `kp`, stored
/// as 32 rows of 32 f32 `ld` floats apart.
///
/// # Safety
/// AMX runs in this process and this thread is configured ([`configure_thread`]);
/// `x` holds 32 rows of `kp` bf16; `w` two panels of `kp / 2` rows of 32
/// bf16, 64-byte aligned; `out` is valid for those writes.
pub(super) unsafe fn block(x: &[u16], kp: usize, w: &[u16], out: *mut f32, ld: usize) {
    debug_assert!(x.len() >= BLOCK * kp && w.len() >= 2 * kp * T);
    let (xs, ws) = (kp * 2, 64usize); // row strides in bytes
    let (x0, x1) = (x.as_ptr(), x[T * kp..].as_ptr());
    let (w0, w1) = (w.as_ptr(), w[kp * T..].as_ptr());
    // SAFETY: every load stays in `x` (rows 0..32, values kb·32..kb·32+32)
    // and `w` (rows kb·16..kb·16+16 of each panel); stores fill `out`.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for kb in 0..kp / KB {
            asm!(
                "tileloadd tmm4, [{x0} + {xs}*1]",
                "tileloadd tmm5, [{x1} + {xs}*1]",
                "tileloadd tmm6, [{w0} + {ws}*1]",
                "tileloadd tmm7, [{w1} + {ws}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                x0 = in(reg) x0.add(kb * KB),
                x1 = in(reg) x1.add(kb * KB),
                w0 = in(reg) w0.add(kb * T * KB),
                w1 = in(reg) w1.add(kb * T * KB),
                xs = in(reg) xs,
                ws = in(reg) ws,
                options(nostack, readonly)
            );
        }
        let o = out;
        let os = ld * 4; // bytes per output row
        asm!(
            "tilestored [{c00} + {os}*1], tmm0",
            "tilestored [{c01} + {os}*1], tmm1",
            "tilestored [{c10} + {os}*1], tmm2",
            "tilestored [{c11} + {os}*1], tmm3",
            c00 = in(reg) o,
            c01 = in(reg) o.add(T),
            c10 = in(reg) o.add(T * ld),
            c11 = in(reg) o.add(T * ld + T),
            os = in(reg) os,
            options(nostack)
        );
    }
}
