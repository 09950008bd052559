//! Orthonormal fast Walsh–Hadamard transforms whose output bits are the same on every CPU
//! tier.
//!
//! This crate rotates vectors (for `kv-codec`, the key and value vectors of an LLM's KV
//! cache) by an orthonormal, symmetric, self-inverse matrix `T` of size `n`, in
//! `O(n log n)` operations. It is built for a codec whose output bytes must not depend on
//! the machine, so the floating-point operation sequence that produces each output value
//! is specified below and is the same in the scalar, AVX2 and AVX-512 tiers (and must be
//! reproduced by any other backend, such as a GPU kernel).
//!
//! # Example
//!
//! ```
//! use hadamard::Planner;
//!
//! let mut planner = Planner::new(); // detects the CPU's SIMD tier once
//! let fwht = planner.plan_with_signs(128, 0x5EED)?; // T·diag(s), cached by (len, seed)
//!
//! // A batch of 3 vectors of length 128, back to back.
//! let x: Vec<f32> = (0..3 * 128).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut y = vec![0.0; x.len()];
//! fwht.forward(&x, &mut y);
//!
//! // Orthonormal: the energy is preserved (up to rounding) ...
//! let energy = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
//! assert!((energy(&x) - energy(&y)).abs() < 1e-3 * energy(&x));
//!
//! // ... and the inverse undoes it.
//! fwht.inverse_inplace(&mut y);
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-5));
//! # Ok::<(), hadamard::Error>(())
//! ```
//!
//! # The transform
//!
//! Supported lengths are `n = 2^k * m` with `m` in {1, 3, 5, 7}, `n <= 4096` ([`MAX_LEN`]),
//! and `2^k >= 4` when `m > 1` (see [`is_supported`], [`supported_lengths`], [`Shape`]).
//! Any other length gives [`Error::UnsupportedLength`].
//!
//! Write `p = 2^k`. The vector is viewed as `m` rows of `p` contiguous values: value `i` is
//! in row `r = i / p`, column `c = i % p`. Then
//!
//! `T = C_m ⊗ H_p`, that is `T[r*p + c][s*p + d] = C_m[r][s] * H_p[c][d]`, where
//!
//! * `H_p` is the orthonormal Sylvester–Hadamard matrix in **natural (Sylvester) order**:
//!   `H_1 = [1]`, `H_2p = [[H_p, H_p], [H_p, -H_p]] / sqrt(2)`, so
//!   `H_p[c][d] = (-1)^popcount(c & d) / sqrt(p)`. (Not sequency or dyadic order.)
//! * `C_m` is the orthonormal discrete Hartley matrix
//!   `C_m[r][s] = cas(2*pi*r*s/m) / sqrt(m)` with `cas(t) = cos(t) + sin(t)`;
//!   `C_1 = [1]`. It is real, symmetric, orthonormal and its own inverse, like `H_p`.
//!
//! So `T` is symmetric and orthonormal, hence its own inverse. For `m = 1`, `T` is exactly
//! the normalised Sylvester–Hadamard matrix `H_n`, the matrix used by published codecs.
//! The transform of the basis vector `e_0` is the constant `1/sqrt(n)` when `m = 1`.
//!
//! **Signs.** A plan may carry frozen pseudo-random signs `s` (see [`random_signs`] for the
//! generator and bit mapping). Then `forward = T·diag(s)` and `inverse = diag(s)·T`, which
//! are inverse to each other. Without signs both are `T`.
//!
//! # Determinism contract: the exact operation order
//!
//! All arithmetic is IEEE 754 binary32 with round-to-nearest-even; there is no fused
//! multiply-add and no reduction whose order depends on the tier. For each vector:
//!
//! 1. *Input signs* (forward with signs only): `x[i] <- x[i]` with its sign bit XORed with
//!    the sign bit of `s[i]` (exact; the same as multiplying by `±1` for non-NaN values).
//! 2. *Butterflies*, on each row independently, unnormalised, for strides
//!    `h = 1, 2, 4, ..., p/2` in this order: for every `j` with bit `h` of `j` clear,
//!    `(x[j], x[j+h]) <- (x[j] + x[j+h], x[j] - x[j+h])` (row-relative indices).
//!    Each output of a stage is one rounded f32 add or subtract of two outputs of the
//!    previous stage; the graph of these operations is fixed, and any schedule of it (the
//!    SIMD tiers fuse strides into radix-4 passes and in-register shuffles) gives the same
//!    bits.
//! 3. *Mixing and normalisation*, with the f32 table `W` of [`mixing_table`]
//!    (`W[r][s] = C_m[r][s] / sqrt(p)`, computed in f64 and rounded to f32 once):
//!    * `m = 1`: `y[c] = W[0][0] * u[c]`, one rounded multiply by `1/sqrt(p)`;
//!    * `m > 1`: for each column `c`, with `u_s = u[s*p + c]` the butterfly outputs,
//!      `y[r*p + c] = ((W[r][0]*u_0 + W[r][1]*u_1) + W[r][2]*u_2) + ...`, left to right up
//!      to `s = m - 1`; every product and every sum rounded to f32 separately.
//! 4. *Output signs* (inverse with signs only): as step 1, on `y`.
//!
//! The SIMD tiers reproduce these bits exactly for every input that contains no NaN (NaN
//! inputs give NaN outputs where the reference does, but the NaN payload may differ).
//! Overflow to infinity happens identically. The tests compare every available tier with
//! the scalar tier bit for bit on random data on every run.
//!
//! # Tiers and planning
//!
//! [`Tier`] names the implementations: `Scalar` (portable; defines the bits), `Avx2` and
//! `Avx512` (x86-64, chosen at run time by `is_x86_feature_detected!`, never by compile
//! flags). A [`Planner`] detects the best tier once and caches plans by `(len, seed)` as
//! [`std::sync::Arc`]`<`[`Fwht`]`>`; [`Planner::with_tier`] and [`Fwht::with_tier`] build
//! plans for a specific tier and fail with [`Error::TierUnavailable`] if the CPU lacks it.
//! Rows shorter than one SIMD register run on a narrower tier's code; the bits are the same.
//!
//! Transform calls take a batch (any number of vectors back to back), allocate nothing and
//! need no scratch. The crate starts no threads: to use several cores, split the batch and
//! call the (shared, `Sync`) plan from each thread.
//!
//! # Unsafe code
//!
//! Only the private SIMD module uses `unsafe` (vector loads/stores through references of
//! exactly one register's size, and calls of `#[target_feature]` functions after run-time
//! detection); every block states its invariant in a `SAFETY` comment.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod length;
mod plan;
mod scalar;
mod signs;
#[allow(unsafe_code)]
mod simd;
mod tier;

pub use error::Error;
pub use length::{MAX_LEN, MIN_POW2_WITH_ODD, ODD_FACTORS, Shape, is_supported, supported_lengths};
pub use plan::{Fwht, Planner, mixing_table};
pub use signs::{SplitMix64, random_signs, sign_masks};
pub use tier::Tier;
