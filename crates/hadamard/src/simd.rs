//! SIMD kernels (AVX2, AVX-512F) and the dispatch between them and the scalar reference.
//!
//! This is the only module of the crate that may use `unsafe`. The unsafe operations are
//! (a) unaligned vector loads and stores, each through a reference to exactly one vector's
//! worth of `f32`/`u32` (so the memory is valid and borrowed), and (b) calls of the
//! `#[target_feature]` entry points, made only through a [`Kernel`] value, which can only
//! be built by [`Kernel::select`] after `is_x86_feature_detected!` has confirmed the feature.
//!
//! Both tiers share one body of kernel code (the `shared_kernels!` macro), instantiated once
//! per tier with that tier's vector type and primitives. The kernels compute exactly the
//! butterfly graph and operation order of the scalar reference in [`crate::scalar`]: only
//! adds, subtracts and multiplies of single f32 lanes, no fused multiply-add, no horizontal
//! operations. Where a SIMD step computes `b + a` instead of the reference's `a + b`, or
//! `a + (-b)` instead of `a - b`, the IEEE 754 result is the same bits (addition is
//! commutative and `a - b` is defined as `a + (-b)`), except possibly the payload of a NaN.

use crate::plan::Job;
use crate::{Tier, scalar};

/// Which code runs a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The kernel of a plan; holding a SIMD kind proves the CPU has the feature it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    kind: Kind,
}

impl Kernel {
    /// The fastest kernel allowed by `tier` for rows of `pow2` values.
    ///
    /// Rows shorter than one SIMD vector fall back to a narrower kernel (AVX-512 rows of 8 use
    /// AVX2, rows of 1, 2 or 4 use the scalar code); the bits are the same either way.
    pub(crate) fn select(tier: Tier, pow2: usize) -> Kernel {
        let _ = (tier, pow2);
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            let avx512 = avx2 && std::arch::is_x86_feature_detected!("avx512f");
            if tier == Tier::Avx512 && avx512 && pow2 >= avx512::L {
                return Kernel { kind: Kind::Avx512 };
            }
            if matches!(tier, Tier::Avx2 | Tier::Avx512) && avx2 && pow2 >= avx2::L {
                return Kernel { kind: Kind::Avx2 };
            }
        }
        Kernel { kind: Kind::Scalar }
    }

    /// Runs `job` on every vector of `data`, reading from `input` instead when given.
    ///
    /// The caller has checked that `data.len()` is a multiple of `job.len()` and that
    /// `input`, if given, has the same length as `data`.
    pub(crate) fn run(self, job: &Job<'_>, input: Option<&[f32]>, data: &mut [f32]) {
        match self.kind {
            Kind::Scalar => scalar::run(job, input, data),
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => {
                // SAFETY: `Kind::Avx2` is only built by `select` after
                // `is_x86_feature_detected!("avx2")` returned true on this CPU.
                unsafe { avx2::run(job, input, data) }
            }
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => {
                // SAFETY: `Kind::Avx512` is only built by `select` after
                // `is_x86_feature_detected!` returned true for both "avx2" and "avx512f".
                unsafe { avx512::run(job, input, data) }
            }
        }
    }
}

/// The kernel code common to all SIMD tiers, written once over the tier's primitives
/// (`V`, `L`, `R`, `zero`, `splat`, `add`, `sub`, `mul`, `xor`, `load`, `load_mask`, `store`,
/// `inreg`), which the invoking module defines.
///
/// The const parameters `PRE` (flip input signs), `FIN` (this pass ends the row's work when
/// `m = 1`: multiply by the normalisation) and `POST` (after that multiply, flip output
/// signs) are fixed once per batch so that the inner loops carry no flag tests.
#[cfg(target_arch = "x86_64")]
macro_rules! shared_kernels {
    ($feature:literal) => {
        /// Runs `job` on every vector of `data` (reading from `input` when given).
        #[target_feature(enable = $feature)]
        pub(super) fn run(job: &Job<'_>, input: Option<&[f32]>, data: &mut [f32]) {
            match (job.pre, job.post) {
                (false, false) => run_with::<false, false>(job, input, data),
                (true, false) => run_with::<true, false>(job, input, data),
                (false, true) => run_with::<false, true>(job, input, data),
                (true, true) => run_with::<true, true>(job, input, data),
            }
        }

        #[target_feature(enable = $feature)]
        fn run_with<const PRE: bool, const POST: bool>(
            job: &Job<'_>,
            input: Option<&[f32]>,
            data: &mut [f32],
        ) {
            let (pc, nc) = (job.pow2 / L, job.len() / L);
            let masks = job.masks.as_chunks::<L>().0;
            let scale = splat(job.table[0]);
            let src = input.map(|s| s.as_chunks::<L>().0);
            let dst = data.as_chunks_mut::<L>().0;
            if job.odd == 1 && pc <= RW {
                // Each vector is one block of registers: a single pass over the batch.
                match pc {
                    1 => whole::<1, PRE, POST>(src, dst, masks, scale),
                    2 => whole::<2, PRE, POST>(src, dst, masks, scale),
                    4 => whole::<4, PRE, POST>(src, dst, masks, scale),
                    8 => whole::<8, PRE, POST>(src, dst, masks, scale),
                    16 => whole::<16, PRE, POST>(src, dst, masks, scale),
                    _ => unreachable!("block of {pc} registers"),
                }
                return;
            }
            if job.odd > 1 && pc <= RM {
                // Each vector fits in registers: butterflies and mixing in a single pass.
                match (pc, job.odd) {
                    (1, 3) => mixed::<1, 3, PRE, POST>(src, dst, masks, job.table),
                    (1, 5) => mixed::<1, 5, PRE, POST>(src, dst, masks, job.table),
                    (1, 7) => mixed::<1, 7, PRE, POST>(src, dst, masks, job.table),
                    (2, 3) => mixed::<2, 3, PRE, POST>(src, dst, masks, job.table),
                    (2, 5) => mixed::<2, 5, PRE, POST>(src, dst, masks, job.table),
                    (2, 7) => mixed::<2, 7, PRE, POST>(src, dst, masks, job.table),
                    (4, 3) => mixed::<4, 3, PRE, POST>(src, dst, masks, job.table),
                    (4, 5) => mixed::<4, 5, PRE, POST>(src, dst, masks, job.table),
                    (4, 7) => mixed::<4, 7, PRE, POST>(src, dst, masks, job.table),
                    _ => unreachable!("shape {pc} x {}", job.odd),
                }
                return;
            }
            match src {
                Some(src) => {
                    for (s, d) in src.chunks_exact(nc).zip(dst.chunks_exact_mut(nc)) {
                        vector::<PRE, POST>(job, Some(s), d, masks, scale);
                    }
                }
                None => {
                    for d in dst.chunks_exact_mut(nc) {
                        vector::<PRE, POST>(job, None, d, masks, scale);
                    }
                }
            }
        }

        /// A batch of vectors of exactly `N` registers each (`m = 1`).
        #[target_feature(enable = $feature)]
        #[inline]
        fn whole<const N: usize, const PRE: bool, const POST: bool>(
            src: Option<&[[f32; L]]>,
            dst: &mut [[f32; L]],
            masks: &[[u32; L]],
            scale: V,
        ) {
            match src {
                Some(src) => {
                    for (s, d) in src.chunks_exact(N).zip(dst.chunks_exact_mut(N)) {
                        block::<N, PRE, true, POST>(Some(s), d, masks, scale);
                    }
                }
                None => {
                    for d in dst.chunks_exact_mut(N) {
                        block::<N, PRE, true, POST>(None, d, masks, scale);
                    }
                }
            }
        }

        /// A batch of vectors of `M` rows of exactly `N` registers each, entirely in
        /// registers: load (and input signs), butterflies of each row, then the mixing of
        /// each column register (and output signs), store.
        #[target_feature(enable = $feature)]
        #[inline]
        fn mixed<const N: usize, const M: usize, const PRE: bool, const POST: bool>(
            src: Option<&[[f32; L]]>,
            dst: &mut [[f32; L]],
            masks: &[[u32; L]],
            table: &[f32],
        ) {
            let table = &table[..M * M];
            let nc = N * M;
            for (k, d) in dst.chunks_exact_mut(nc).enumerate() {
                let s = src.map(|s| &s[k * nc..(k + 1) * nc]);
                let mut v = [[zero(); N]; M];
                for r in 0..M {
                    for i in 0..N {
                        let j = r * N + i;
                        let x = match s {
                            Some(s) => load(&s[j]),
                            None => load(&d[j]),
                        };
                        let x = if PRE { xor(x, load_mask(&masks[j])) } else { x };
                        v[r][i] = inreg(x);
                    }
                    cross(&mut v[r]);
                }
                for i in 0..N {
                    for r in 0..M {
                        let mut acc = mul(splat(table[r * M]), v[0][i]);
                        for j in 1..M {
                            acc = add(acc, mul(splat(table[r * M + j]), v[j][i]));
                        }
                        if POST {
                            acc = xor(acc, load_mask(&masks[r * N + i]));
                        }
                        store(&mut d[r * N + i], acc);
                    }
                }
            }
        }

        /// The butterflies between the `N` registers of a block (strides `L`, `2 L`, ...).
        #[target_feature(enable = $feature)]
        #[inline]
        fn cross<const N: usize>(v: &mut [V; N]) {
            let mut t = 1;
            while t < N {
                for i in 0..N {
                    if i & t == 0 {
                        let (a, b) = (v[i], v[i + t]);
                        v[i] = add(a, b);
                        v[i + t] = sub(a, b);
                    }
                }
                t *= 2;
            }
        }

        /// One vector of any supported shape: butterflies on each row, then the mixing.
        #[target_feature(enable = $feature)]
        #[inline]
        fn vector<const PRE: bool, const POST: bool>(
            job: &Job<'_>,
            src: Option<&[[f32; L]]>,
            dst: &mut [[f32; L]],
            masks: &[[u32; L]],
            scale: V,
        ) {
            let (m, pc) = (job.odd, job.pow2 / L);
            if m == 1 {
                row::<PRE, true, POST>(src, dst, masks, scale);
                return;
            }
            for r in 0..m {
                let rows = r * pc..(r + 1) * pc;
                let row_masks = if PRE { &masks[rows.clone()] } else { &[] };
                let row_src = src.map(|s| &s[rows.clone()]);
                row::<PRE, false, false>(row_src, &mut dst[rows], row_masks, scale);
            }
            match m {
                3 => mix::<3, POST>(dst, pc, job.table, masks),
                5 => mix::<5, POST>(dst, pc, job.table, masks),
                7 => mix::<7, POST>(dst, pc, job.table, masks),
                _ => unreachable!("odd factor {m} is not supported"),
            }
        }

        /// All butterflies of one row of `dst.len()` registers: blocks of up to `R`
        /// registers (every stride below `R * L`), then radix-4 passes (one radix-2 pass
        /// first when the number of remaining strides is odd); the last pass finishes.
        #[target_feature(enable = $feature)]
        #[inline]
        fn row<const PRE: bool, const FIN: bool, const POST: bool>(
            src: Option<&[[f32; L]]>,
            dst: &mut [[f32; L]],
            masks: &[[u32; L]],
            scale: V,
        ) {
            let pc = dst.len();
            if pc <= R {
                match pc {
                    1 => blocks::<1, PRE, FIN, POST>(src, dst, masks, scale),
                    2 => blocks::<2, PRE, FIN, POST>(src, dst, masks, scale),
                    4 => blocks::<4, PRE, FIN, POST>(src, dst, masks, scale),
                    8 => blocks::<8, PRE, FIN, POST>(src, dst, masks, scale),
                    16 => blocks::<16, PRE, FIN, POST>(src, dst, masks, scale),
                    _ => unreachable!("row of {pc} registers"),
                }
                return;
            }
            blocks::<R, PRE, false, false>(src, dst, masks, scale);
            let mut hc = R;
            let mut stages = (pc / R).trailing_zeros();
            if stages % 2 == 1 {
                if stages == 1 {
                    radix2::<FIN, POST>(dst, hc, masks, scale);
                } else {
                    radix2::<false, false>(dst, hc, masks, scale);
                }
                hc *= 2;
                stages -= 1;
            }
            while stages > 0 {
                if stages == 2 {
                    radix4::<FIN, POST>(dst, hc, masks, scale);
                } else {
                    radix4::<false, false>(dst, hc, masks, scale);
                }
                hc *= 4;
                stages -= 2;
            }
        }

        /// Runs [`block`] over consecutive blocks of `N` registers of a row.
        #[target_feature(enable = $feature)]
        #[inline]
        fn blocks<const N: usize, const PRE: bool, const FIN: bool, const POST: bool>(
            src: Option<&[[f32; L]]>,
            dst: &mut [[f32; L]],
            masks: &[[u32; L]],
            scale: V,
        ) {
            for (b, d) in dst.chunks_exact_mut(N).enumerate() {
                let s = src.map(|s| &s[b * N..(b + 1) * N]);
                let m = if PRE || POST {
                    &masks[b * N..(b + 1) * N]
                } else {
                    &[]
                };
                block::<N, PRE, FIN, POST>(s, d, m, scale);
            }
        }

        /// One block of `N` registers: load (flipping input signs if `PRE`), the strides
        /// inside each register, the strides between the `N` registers, then (if `FIN`)
        /// the normalisation and output signs, and store.
        #[target_feature(enable = $feature)]
        #[inline]
        fn block<const N: usize, const PRE: bool, const FIN: bool, const POST: bool>(
            src: Option<&[[f32; L]]>,
            dst: &mut [[f32; L]],
            masks: &[[u32; L]],
            scale: V,
        ) {
            let mut v = [zero(); N];
            for i in 0..N {
                let x = match src {
                    Some(s) => load(&s[i]),
                    None => load(&dst[i]),
                };
                let x = if PRE { xor(x, load_mask(&masks[i])) } else { x };
                v[i] = inreg(x);
            }
            cross(&mut v);
            for i in 0..N {
                store(&mut dst[i], finish::<FIN, POST>(v[i], scale, masks, i));
            }
        }

        /// The end of a row's work when `m = 1`: multiply by the normalisation, then flip
        /// the output sign of register `i`. Identity unless `FIN`.
        #[target_feature(enable = $feature)]
        #[inline]
        fn finish<const FIN: bool, const POST: bool>(
            x: V,
            scale: V,
            masks: &[[u32; L]],
            i: usize,
        ) -> V {
            if !FIN {
                return x;
            }
            let x = mul(x, scale);
            if POST {
                xor(x, load_mask(&masks[i]))
            } else {
                x
            }
        }

        /// One radix-2 stage of stride `hc` registers over the row `x`.
        #[target_feature(enable = $feature)]
        #[inline]
        fn radix2<const FIN: bool, const POST: bool>(
            x: &mut [[f32; L]],
            hc: usize,
            masks: &[[u32; L]],
            scale: V,
        ) {
            for g in (0..x.len()).step_by(2 * hc) {
                for j in g..g + hc {
                    let (a, b) = (load(&x[j]), load(&x[j + hc]));
                    store(&mut x[j], finish::<FIN, POST>(add(a, b), scale, masks, j));
                    store(
                        &mut x[j + hc],
                        finish::<FIN, POST>(sub(a, b), scale, masks, j + hc),
                    );
                }
            }
        }

        /// Two radix-2 stages (strides `hc` then `2 hc` registers) in one pass over the row.
        #[target_feature(enable = $feature)]
        #[inline]
        fn radix4<const FIN: bool, const POST: bool>(
            x: &mut [[f32; L]],
            hc: usize,
            masks: &[[u32; L]],
            scale: V,
        ) {
            for g in (0..x.len()).step_by(4 * hc) {
                for j in g..g + hc {
                    let a = load(&x[j]);
                    let b = load(&x[j + hc]);
                    let c = load(&x[j + 2 * hc]);
                    let d = load(&x[j + 3 * hc]);
                    let (a1, b1, c1, d1) = (add(a, b), sub(a, b), add(c, d), sub(c, d));
                    let (a2, c2, b2, d2) = (add(a1, c1), sub(a1, c1), add(b1, d1), sub(b1, d1));
                    store(&mut x[j], finish::<FIN, POST>(a2, scale, masks, j));
                    store(
                        &mut x[j + hc],
                        finish::<FIN, POST>(b2, scale, masks, j + hc),
                    );
                    store(
                        &mut x[j + 2 * hc],
                        finish::<FIN, POST>(c2, scale, masks, j + 2 * hc),
                    );
                    store(
                        &mut x[j + 3 * hc],
                        finish::<FIN, POST>(d2, scale, masks, j + 3 * hc),
                    );
                }
            }
        }

        /// Mixes the `M` rows (of `pc` registers each) of `v` by the `M * M` table, one
        /// column register at a time, accumulating left to right; then output signs.
        #[target_feature(enable = $feature)]
        #[inline]
        fn mix<const M: usize, const POST: bool>(
            v: &mut [[f32; L]],
            pc: usize,
            table: &[f32],
            masks: &[[u32; L]],
        ) {
            let table = &table[..M * M];
            for c in 0..pc {
                let mut u = [zero(); M];
                for j in 0..M {
                    u[j] = load(&v[j * pc + c]);
                }
                for r in 0..M {
                    let mut acc = mul(splat(table[r * M]), u[0]);
                    for j in 1..M {
                        acc = add(acc, mul(splat(table[r * M + j]), u[j]));
                    }
                    if POST {
                        acc = xor(acc, load_mask(&masks[r * pc + c]));
                    }
                    store(&mut v[r * pc + c], acc);
                }
            }
        }
    };
}

/// AVX2: 8 lanes; whole vectors in registers up to 128 values (`m = 1`) or rows of 32
/// (`m > 1`); longer rows in blocks of 64 values, then radix-4 passes.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // Butterfly index arithmetic reads best as indices.
mod avx2 {
    use core::arch::x86_64::*;

    use crate::plan::Job;

    type V = __m256;
    /// Lanes per vector register.
    pub(super) const L: usize = 8;
    /// Registers per block of the first pass over longer rows.
    const R: usize = 8;
    /// Registers of the largest vector transformed entirely in registers (`m = 1`).
    const RW: usize = 16;
    /// Registers per row of the largest `m > 1` vector transformed entirely in registers.
    const RM: usize = 4;

    #[target_feature(enable = "avx2")]
    #[inline]
    fn zero() -> V {
        _mm256_setzero_ps()
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn splat(x: f32) -> V {
        _mm256_set1_ps(x)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn add(a: V, b: V) -> V {
        _mm256_add_ps(a, b)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn sub(a: V, b: V) -> V {
        _mm256_sub_ps(a, b)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn mul(a: V, b: V) -> V {
        _mm256_mul_ps(a, b)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn xor(a: V, b: V) -> V {
        _mm256_xor_ps(a, b)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(a: &[f32; L]) -> V {
        // SAFETY: `a` borrows exactly L initialised f32, which is what the unaligned
        // L-lane load reads; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(a.as_ptr()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn load_mask(a: &[u32; L]) -> V {
        // SAFETY: `a` borrows exactly L initialised u32 (same size as f32, any bit pattern
        // is a valid f32), which is what the unaligned L-lane load reads.
        unsafe { _mm256_loadu_ps(a.as_ptr().cast::<f32>()) }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn store(a: &mut [f32; L], v: V) {
        // SAFETY: `a` mutably borrows exactly L f32, which is what the unaligned L-lane
        // store writes; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
    }

    /// The strides 1, 2, 4 inside one register. For stride `h`, `s` is the register with
    /// lanes `j` and `j ^ h` swapped; lanes with bit `h` clear get `x[j + h] + x[j]`, lanes
    /// with it set get `x[j - h] + (-x[j])`: the reference's `a + b` and `a - b`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn inreg(v: V) -> V {
        const N: f32 = -0.0;
        let m1 = _mm256_setr_ps(0.0, N, 0.0, N, 0.0, N, 0.0, N);
        let m2 = _mm256_setr_ps(0.0, 0.0, N, N, 0.0, 0.0, N, N);
        let m4 = _mm256_setr_ps(0.0, 0.0, 0.0, 0.0, N, N, N, N);
        let v = add(_mm256_permute_ps(v, 0b10_11_00_01), xor(v, m1));
        let v = add(_mm256_permute_ps(v, 0b01_00_11_10), xor(v, m2));
        add(_mm256_permute2f128_ps(v, v, 0x01), xor(v, m4))
    }

    shared_kernels!("avx2");
}

/// AVX-512F: 16 lanes; whole vectors in registers up to 256 values (`m = 1`) or rows of 64
/// (`m > 1`); longer rows in blocks of 128 values, then radix-4 passes.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // Butterfly index arithmetic reads best as indices.
mod avx512 {
    use core::arch::x86_64::*;

    use crate::plan::Job;

    type V = __m512;
    /// Lanes per vector register.
    pub(super) const L: usize = 16;
    /// Registers per block of the first pass over longer rows.
    const R: usize = 8;
    /// Registers of the largest vector transformed entirely in registers (`m = 1`).
    const RW: usize = 16;
    /// Registers per row of the largest `m > 1` vector transformed entirely in registers.
    const RM: usize = 4;

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn zero() -> V {
        _mm512_setzero_ps()
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn splat(x: f32) -> V {
        _mm512_set1_ps(x)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn add(a: V, b: V) -> V {
        _mm512_add_ps(a, b)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sub(a: V, b: V) -> V {
        _mm512_sub_ps(a, b)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn mul(a: V, b: V) -> V {
        _mm512_mul_ps(a, b)
    }

    /// Bitwise XOR through the integer domain (`_mm512_xor_ps` would need AVX-512DQ).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn xor(a: V, b: V) -> V {
        _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(a),
            _mm512_castps_si512(b),
        ))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load(a: &[f32; L]) -> V {
        // SAFETY: `a` borrows exactly L initialised f32, which is what the unaligned
        // L-lane load reads; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_ps(a.as_ptr()) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load_mask(a: &[u32; L]) -> V {
        // SAFETY: `a` borrows exactly L initialised u32 (same size as f32, any bit pattern
        // is a valid f32), which is what the unaligned L-lane load reads.
        unsafe { _mm512_loadu_ps(a.as_ptr().cast::<f32>()) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store(a: &mut [f32; L], v: V) {
        // SAFETY: `a` mutably borrows exactly L f32, which is what the unaligned L-lane
        // store writes; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) }
    }

    /// The strides 1, 2, 4, 8 inside one register, as in the AVX2 tier: for stride `h`,
    /// `s` swaps lanes `j` and `j ^ h`, and the lanes with bit `h` set are negated before
    /// the add, giving the reference's `a + b` and `a - b`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn inreg(v: V) -> V {
        const N: f32 = -0.0;
        let m1 = _mm512_setr_ps(
            0.0, N, 0.0, N, 0.0, N, 0.0, N, 0.0, N, 0.0, N, 0.0, N, 0.0, N,
        );
        let m2 = _mm512_setr_ps(
            0.0, 0.0, N, N, 0.0, 0.0, N, N, 0.0, 0.0, N, N, 0.0, 0.0, N, N,
        );
        let m4 = _mm512_setr_ps(
            0.0, 0.0, 0.0, 0.0, N, N, N, N, 0.0, 0.0, 0.0, 0.0, N, N, N, N,
        );
        let m8 = _mm512_setr_ps(
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, N, N, N, N, N, N, N, N,
        );
        let v = add(_mm512_permute_ps(v, 0b10_11_00_01), xor(v, m1));
        let v = add(_mm512_permute_ps(v, 0b01_00_11_10), xor(v, m2));
        let v = add(_mm512_shuffle_f32x4(v, v, 0b10_11_00_01), xor(v, m4));
        add(_mm512_shuffle_f32x4(v, v, 0b01_00_11_10), xor(v, m8))
    }

    shared_kernels!("avx512f");
}
