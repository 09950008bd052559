//! The scalar tier, which is also the specification of the output bits.
//!
//! Every SIMD tier must give exactly the bits this code gives (tests compare them on every
//! run). The code is written for clarity first: each step below is one step of the
//! operation order documented in the crate docs.

use crate::plan::Job;

/// Flips the sign of `x` where `mask` has its top bit set (exact; no arithmetic).
#[inline]
pub(crate) fn flip(x: f32, mask: u32) -> f32 {
    f32::from_bits(x.to_bits() ^ mask)
}

/// Runs `job` on every vector of `data` (after copying `input` into it, if given).
pub(crate) fn run(job: &Job<'_>, input: Option<&[f32]>, data: &mut [f32]) {
    if let Some(input) = input {
        data.copy_from_slice(input);
    }
    for v in data.chunks_exact_mut(job.len()) {
        vector(job, v);
    }
}

/// The reference transform of one vector.
fn vector(job: &Job<'_>, v: &mut [f32]) {
    let (p, m) = (job.pow2, job.odd);
    // Step 1: input signs (forward with signs only).
    if job.pre {
        for (x, &s) in v.iter_mut().zip(job.masks) {
            *x = flip(*x, s);
        }
    }
    // Step 2: unnormalised radix-2 butterflies on each row, stride 1, 2, 4, ... p/2.
    for row in v.chunks_exact_mut(p) {
        butterflies(row);
    }
    // Step 3: mixing of the rows by the table (which carries the 1/sqrt normalisation).
    if m == 1 {
        let w = job.table[0];
        for x in v.iter_mut() {
            *x *= w;
        }
    } else {
        let mut u = [0.0f32; 7];
        for c in 0..p {
            for (j, uj) in u[..m].iter_mut().enumerate() {
                *uj = v[j * p + c];
            }
            for r in 0..m {
                let w = &job.table[r * m..(r + 1) * m];
                let mut acc = w[0] * u[0];
                for (&wj, &uj) in w[1..].iter().zip(&u[1..m]) {
                    acc += wj * uj;
                }
                v[r * p + c] = acc;
            }
        }
    }
    // Step 4: output signs (inverse with signs only).
    if job.post {
        for (x, &s) in v.iter_mut().zip(job.masks) {
            *x = flip(*x, s);
        }
    }
}

/// In-place unnormalised Sylvester butterflies in natural order: for each stride `h`
/// (1, 2, 4, ...), each pair `(a, b) = (x[j], x[j + h])` with bit `h` of `j` clear becomes
/// `(a + b, a - b)`.
fn butterflies(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
}
