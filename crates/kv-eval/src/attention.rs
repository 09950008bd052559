//! Scaled dot-product attention with grouped-query heads and a causal mask, on candle
//! tensors: the reference every [`KvStore`](crate::store::KvStore) uses unless it brings
//! attention of its own.

use candle_core::{D, Tensor};

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
    // Heads of one group are contiguous in q, so one reshape lines them up with their KV head.
    let q = q.reshape((hkv, g * n, d))?;
    let scale = 1.0 / (d as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?; // [hkv, g·n, t]
    if n > 1 {
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..t).map(move |j| {
                    if j > t - n + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, t), q.device())?;
        scores = scores
            .reshape((hkv, g, n, t))?
            .broadcast_add(&mask)?
            .reshape((hkv, g * n, t))?;
    }
    let max = scores.max_keepdim(D::Minus1)?;
    let e = scores.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    Ok(p.matmul(v)?.reshape((hq, n, d))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Plain loops: the definition.
    fn naive(q: &[f32], k: &[f32], v: &[f32], hq: usize, hkv: usize, n: usize, t: usize, d: usize) -> Vec<f32> {
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
                        qi.iter().zip(kj).map(|(a, b)| f64::from(a * b)).sum::<f64>() / (d as f64).sqrt()
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
        let (hq, hkv, n, t, d) = (6, 2, 3, 5, 4);
        let make = |len: usize, seed: f32| -> Vec<f32> {
            (0..len).map(|i| ((i as f32 + seed) * 0.731).sin()).collect()
        };
        let (q, k, v) = (make(hq * n * d, 1.0), make(hkv * t * d, 2.0), make(hkv * t * d, 3.0));
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
        let want = naive(&q, &k, &v, hq, hkv, n, t, d);
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
