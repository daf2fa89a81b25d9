//! Runtime dispatch to the CPU's widest vector unit for the element-wise kernels. The crate is
//! built for baseline x86-64 (SSE2: 4 lanes, no FMA), so a loop the compiler vectorises runs
//! 4 lanes wide everywhere; compiled again inside a `target_feature` function it runs 16 lanes
//! wide on AVX-512 and 8 on AVX2. The arithmetic is the same in every version (no fused
//! multiply-adds are formed: Rust never contracts `a * b + c`, and reductions keep their
//! explicit lane order), so results do not depend on the machine. wasm has one version
//! (SIMD128, chosen at build time by .cargo/config.toml).

/// `f()`, compiled for AVX-512 or AVX2 + FMA where the CPU has them. Mark the closure and
/// the helpers it calls `#[inline(always)]`: only code inlined into the versions below is
/// compiled with their features (a closure left out of line stays 4 lanes wide, measured).
#[inline(always)]
pub(crate) fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has the features `avx512` is compiled for (checked above).
            return unsafe { x86::avx512(f) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: as above, for AVX2 and FMA.
            return unsafe { x86::avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}
