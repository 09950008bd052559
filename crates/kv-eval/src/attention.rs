//! Scaled dot-product attention with grouped-query heads and a causal mask: the reference
//! every [`KvStore`](crate::store::KvStore) uses unless it brings attention of its own.
//!
//! Several query positions (prefill) run as candle matmuls; a single query position (a
//! decode step) runs as plain loops over the values, which for one row of scores costs less
//! than the dispatch of the dozen small tensor operations the general path needs — and a
//! decode step of `eval` attends once per layer for every row of its batch.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Attention of the last `n` positions' queries `q` `[q_heads, n, d]` over all `t` keys and
/// values `k`, `v` `[kv_heads, t, d]` (query position `i` is absolute position `t − n + i`
/// and sees keys `0..=t − n + i`). Query heads `g·j .. g·(j+1)` share KV head `j`, where
/// `g = q_heads / kv_heads`, as in Hugging Face's `repeat_kv`. Returns `[q_heads, n, d]`.
///
/// # Errors
/// [`Error::LengthMismatch`] when the shapes do not fit together; tensor errors.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (hq, n, d) = q.dims3()?;
    let (hkv, t, dk) = k.dims3()?;
    if dk != d || v.dims3()? != (hkv, t, d) {
        return Err(Error::LengthMismatch {
            what: "key/value head_dim",
            expected: d,
            actual: dk,
        });
    }
    if hkv == 0 || !hq.is_multiple_of(hkv) || n > t {
        return Err(Error::LengthMismatch {
            what: "query heads (a multiple of KV heads) or query positions (at most the keys)",
            expected: hkv,
            actual: hq,
        });
    }
    let g = hq / hkv;
    if n == 1 {
        let out = attend_one(
            &q.flatten_all()?.to_vec1::<f32>()?,
            &k.flatten_all()?.to_vec1::<f32>()?,
            &v.flatten_all()?.to_vec1::<f32>()?,
            (hkv, g, t, d),
        );
        return Ok(Tensor::from_vec(out, (hq, 1, d), q.device())?);
    }
    // Heads of one group are contiguous in q, so one reshape lines them up with their KV head.
    let q = q.reshape((hkv, g * n, d))?;
    let scores = q.matmul(&k.t()?)?; // [hkv, g·n, t]
    // Scale, causal mask and softmax in one pass over each row of scores, in place: on long
    // prefills the score tensor is large and each separate tensor operation would be a
    // full pass over memory.
    let mut p = scores.flatten_all()?.to_vec1::<f32>()?;
    let scale = 1.0 / (d as f32).sqrt();
    p.par_chunks_exact_mut(t).enumerate().for_each(|(row, s)| {
        let visible = t - n + row % n + 1;
        let (seen, future) = s.split_at_mut(visible);
        softmax_scaled(seen, scale);
        future.fill(0.0);
    });
    let p = Tensor::from_vec(p, (hkv, g * n, t), q.device())?;
    Ok(p.matmul(v)?.reshape((hq, n, d))?)
}

/// `softmax(scale · s)` in place.
fn softmax_scaled(s: &mut [f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for x in s.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in s.iter_mut() {
        *x /= sum;
    }
}

/// Dot product with eight partial sums, so that the compiler can keep them in one vector
/// register.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One query position: `q` `[kv_heads·g, d]`, `k`, `v` `[kv_heads, t, d]` → `[kv_heads·g, d]`.
fn attend_one(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (hkv, g, t, d): (usize, usize, usize, usize),
) -> Vec<f32> {
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; hkv * g * d];
    let mut scores = vec![0f32; t];
    for j in 0..hkv {
        let (kj, vj) = (
            &k[j * t * d..(j + 1) * t * d],
            &v[j * t * d..(j + 1) * t * d],
        );
        for h in j * g..(j + 1) * g {
            let qh = &q[h * d..(h + 1) * d];
            for (s, kt) in scores.iter_mut().zip(kj.chunks_exact(d)) {
                *s = dot(qh, kt);
            }
            softmax_scaled(&mut scores, scale);
            let o = &mut out[h * d..(h + 1) * d];
            for (&p, vt) in scores.iter().zip(vj.chunks_exact(d)) {
                for (o, &x) in o.iter_mut().zip(vt) {
                    *o += p * x;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Plain loops: the definition.
    /// `(hq, hkv, n, t, d)`: query heads, KV heads, query positions, keys, head_dim.
    type Dims = (usize, usize, usize, usize, usize);

    fn naive(q: &[f32], k: &[f32], v: &[f32], (hq, hkv, n, t, d): Dims) -> Vec<f32> {
        let g = hq / hkv;
        let mut out = vec![0f32; hq * n * d];
        for h in 0..hq {
            let kv = h / g;
            for i in 0..n {
                let visible = t - n + i + 1;
                let qi = &q[(h * n + i) * d..][..d];
                let s: Vec<f64> = (0..visible)
                    .map(|j| {
                        let kj = &k[(kv * t + j) * d..][..d];
                        qi.iter()
                            .zip(kj)
                            .map(|(a, b)| f64::from(a * b))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    let p = (sj - m).exp() / z;
                    for c in 0..d {
                        out[(h * n + i) * d + c] += (p * f64::from(v[(kv * t + j) * d + c])) as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_with_groups_and_mask() {
        // Several positions (the tensor path) and one (the loop path), d not a multiple of 8.
        for (n, d) in [(3, 4), (1, 4), (1, 19)] {
            check(6, 2, n, 5, d);
        }
    }

    fn check(hq: usize, hkv: usize, n: usize, t: usize, d: usize) {
        let make = |len: usize, seed: f32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i as f32 + seed) * 0.731).sin())
                .collect()
        };
        let (q, k, v) = (
            make(hq * n * d, 1.0),
            make(hkv * t * d, 2.0),
            make(hkv * t * d, 3.0),
        );
        let dev = Device::Cpu;
        let got = attention(
            &Tensor::from_vec(q.clone(), (hq, n, d), &dev).unwrap(),
            &Tensor::from_vec(k.clone(), (hkv, t, d), &dev).unwrap(),
            &Tensor::from_vec(v.clone(), (hkv, t, d), &dev).unwrap(),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let want = naive(&q, &k, &v, (hq, hkv, n, t, d));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        let z = |s: (usize, usize, usize)| Tensor::zeros(s, candle_core::DType::F32, &dev).unwrap();
        assert!(attention(&z((5, 1, 4)), &z((2, 3, 4)), &z((2, 3, 4))).is_err());
        assert!(attention(&z((4, 4, 4)), &z((2, 3, 4)), &z((2, 3, 4))).is_err());
        assert!(attention(&z((4, 1, 4)), &z((2, 3, 8)), &z((2, 3, 8))).is_err());
    }
}
