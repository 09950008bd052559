//! Attention computed on the compressed pages: `softmax(q·Kᵀ/√d)·V` with a causal mask,
//! grouped-query heads and an optional sliding window, without materialising K or V.
//!
//! The codecs rotate each vector by an orthonormal `R` before quantising, and `q·k̂ =
//! (R_K·q)·(R_K·k̂)`, so each query is rotated once (and scaled by `1/√d`), and every key is
//! decoded only to its rotated-domain reconstruction, a block of at most
//! [`super::layer::BLOCK_TOKENS`] tokens at a time in a small buffer. Values are summed in
//! V's rotated domain and each output is rotated back once: `o = R_Vᵀ·Σ pᵢ·(R_V·v̂ᵢ)`.
//! Formats that do not rotate use the identity.
//!
//! The softmax is online (FlashAttention-style): each work item keeps, per query, the
//! running maximum `m`, the sum `l` of `exp(s − m)` and the weighted sum of values, and
//! rescales them when the maximum grows. Work items are (stream, chunk of
//! [`CHUNK_TOKENS`] tokens), run in parallel and merged in chunk order, so the result is
//! the same with [`Par::Seq`] and [`Par::Rayon`] and whatever the thread count. Each
//! stream's key and value blocks are decoded once for all the queries that share them:
//! every query head of its GQA group at every query position.

use rayon::prelude::*;
use wide::f32x8;

use super::Kv;
use super::layer::Layer;
use crate::codec::{Input, Output, Par};
use crate::error::Error;

/// Tokens per work item (rounded up to whole read blocks): long contexts are split into
/// chunks that run in parallel and are merged in order.
pub(crate) const CHUNK_TOKENS: usize = 1024;

/// Online-softmax state of the queries of one stream over some keys.
#[derive(Debug)]
struct State {
    /// Running maximum score per query (−∞ before any key).
    max: Vec<f32>,
    /// Sum of `exp(score − max)` per query.
    sum: Vec<f32>,
    /// Weighted sum of rotated values per query, `d` each.
    acc: Vec<f32>,
}

impl State {
    fn new(queries: usize, d: usize) -> Self {
        Self {
            max: vec![f32::NEG_INFINITY; queries],
            sum: vec![0.0; queries],
            acc: vec![0.0; queries * d],
        }
    }

    /// Folds `other` (the state of later keys) into `self`.
    fn merge(&mut self, other: &State, d: usize) {
        for q in 0..self.max.len() {
            if other.sum[q] == 0.0 {
                continue;
            }
            let m = self.max[q].max(other.max[q]);
            let (a, b) = ((self.max[q] - m).exp(), (other.max[q] - m).exp());
            self.max[q] = m;
            self.sum[q] = self.sum[q] * a + other.sum[q] * b;
            let acc = &mut self.acc[q * d..(q + 1) * d];
            for (x, &y) in acc.iter_mut().zip(&other.acc[q * d..(q + 1) * d]) {
                *x = *x * a + y * b;
            }
        }
    }
}

/// Dot product with eight interleaved partial sums (which compilers vectorise) in a fixed
/// order, so that results do not depend on the CPU.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let [s] = dots([a], b);
    s
}

/// [`dot`] of each of `Q` queries with one key, the key read once for all of them; every
/// sum is [`dot`]'s, in the same order.
fn dots<const Q: usize>(qs: [&[f32]; Q], k: &[f32]) -> [f32; Q] {
    // Partial sum l of each query in lane l (written with `wide`: the compiler left the
    // plain-array form of these loops scalar).
    let mut lanes = [f32x8::ZERO; Q];
    let head = k.len() / 8 * 8;
    for (c, y) in k[..head].chunks_exact(8).enumerate() {
        let y = f32x8::from(<[f32; 8]>::try_from(y).expect("eight values"));
        for (lane, q) in lanes.iter_mut().zip(&qs) {
            let x = <[f32; 8]>::try_from(&q[8 * c..8 * c + 8]).expect("eight values");
            *lane += f32x8::from(x) * y;
        }
    }
    core::array::from_fn(|i| {
        let q = qs[i];
        let tail: f32 = q[head..].iter().zip(&k[head..]).map(|(x, y)| x * y).sum();
        lane_sum(lanes[i]) + tail
    })
}

/// The sum of eight lanes in a fixed order (pairs four lanes apart, then the pairs' pairs),
/// so that a sum taken in lanes does not depend on the CPU.
fn lane_sum(lanes: f32x8) -> f32 {
    let l = lanes.to_array();
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// `acc += Σₜ w[t]·v[t]` over rows of `d` values, each element summed in token order (the
/// sums of the plain loop), with [`ACC_DIMS`] elements of `acc` kept in registers across
/// the tokens rather than loaded and stored for every token.
fn accumulate(acc: &mut [f32], w: &[f32], v: &[f32], d: usize) {
    for (j, a) in acc.chunks_mut(ACC_DIMS).enumerate() {
        let off = j * ACC_DIMS;
        if let Ok(a) = <&mut [f32; ACC_DIMS]>::try_from(&mut *a) {
            let mut r = *a;
            for (&wt, row) in w.iter().zip(v.chunks_exact(d)) {
                let row = &row[off..off + ACC_DIMS];
                for l in 0..ACC_DIMS {
                    r[l] += wt * row[l];
                }
            }
            *a = r;
        } else {
            for (&wt, row) in w.iter().zip(v.chunks_exact(d)) {
                for (x, &y) in a.iter_mut().zip(&row[off..]) {
                    *x += wt * y;
                }
            }
        }
    }
}

/// Replaces each score `s` of `w` by `e^(s − m)` (`m` at least every score) and returns
/// their sum: eight lanes at a time with [`exp_nonpositive`], the sum taken lane by lane and
/// then by [`lane_sum`], so that it does not depend on the CPU or the build.
fn exp_shifted(w: &mut [f32], m: f32) -> f32 {
    let m8 = f32x8::splat(m);
    let mut sums = f32x8::ZERO;
    let mut chunks = w.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let x = f32x8::from(<[f32; 8]>::try_from(&*chunk).expect("eight scores"));
        let e = exp_nonpositive(x - m8);
        chunk.copy_from_slice(e.as_array());
        sums += e;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        // Lanes past the tail hold −∞, whose exponential is 0.
        let mut x = [f32::NEG_INFINITY; 8];
        x[..tail.len()].copy_from_slice(tail);
        let e = exp_nonpositive(f32x8::from(x) - m8);
        tail.copy_from_slice(&e.as_array()[..tail.len()]);
        sums += e;
    }
    lane_sum(sums)
}

/// `e^x` on eight lanes for `x ≤ 0` (NaN-free), within a few ulp of `f32::exp`, written
/// with plain multiplications and additions (no fused multiply-add), so that every build
/// and CPU computes the same bits; below −87, where `e^x` is under f32's smallest normal,
/// it is 0. `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial to degree
/// 7 (truncation under 2^-27), times `2^n` built in the exponent bits.
fn exp_nonpositive(x: f32x8) -> f32x8 {
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 8 significant bits, so that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let floor = f32x8::splat(-87.0);
    let kept = x.simd_ge(floor);
    let x = x.fast_max(floor);
    let n = lattice_core::round_ties_even_x8(x * f32x8::splat(std::f32::consts::LOG2_E));
    let r = (x - n * f32x8::splat(LN2_HI)) - n * f32x8::splat(LN2_LO);
    let mut p = f32x8::splat(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + f32x8::splat(c);
    }
    let pow2 = (n.trunc_int() + wide::i32x8::splat(127)) << 23;
    let e = p * wide::bytemuck::cast::<wide::i32x8, f32x8>(pow2);
    kept.select(e, f32x8::ZERO)
}

/// Elements of a value sum held in registers at once (four AVX2 vectors).
const ACC_DIMS: usize = 32;

/// Queries whose keys are scored in one pass over the keys.
const QUERY_GROUP: usize = 4;

/// The queries of one call: positions and the keys each may see.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// Position of query 0 (queries are the last `n` positions of the layer).
    first: usize,
    /// Query positions per stream and head.
    n: usize,
    /// Sliding window in tokens (`usize::MAX`: none).
    window: usize,
}

impl Span {
    /// Keys query `i` sees: `lo..=position`.
    fn keys(&self, i: usize) -> (usize, usize) {
        let p = self.first + i;
        ((p + 1).saturating_sub(self.window), p + 1)
    }
}

/// The geometry of an attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    /// Batch rows.
    pub(crate) batch: usize,
    /// KV heads.
    pub(crate) kv_heads: usize,
    /// Query heads (a multiple of `kv_heads`).
    pub(crate) q_heads: usize,
}

/// Attention of `queries` (`[batch, q_heads, n, d]`, the layer's last `n` positions) over
/// the layer, into `out` (same shape).
///
/// # Errors
/// [`Error::HeadsMismatch`], [`Error::LengthMismatch`], [`Error::TokensNotHeld`] (keys a
/// query needs were evicted or never appended), [`Error::CorruptPayload`].
pub(crate) fn attend(
    layer: &Layer,
    heads: Heads,
    queries: Input<'_>,
    window: Option<usize>,
    mut out: Output<'_>,
    par: Par,
) -> Result<(), Error> {
    let Heads {
        batch,
        kv_heads,
        q_heads,
    } = heads;
    if q_heads == 0 || !q_heads.is_multiple_of(kv_heads) {
        return Err(Error::HeadsMismatch { q_heads, kv_heads });
    }
    let fmt = &layer.fmt;
    let d = fmt.d;
    let per_position = batch * q_heads * d;
    if queries.len() == 0 || !queries.len().is_multiple_of(per_position) {
        return Err(Error::LengthMismatch {
            what: "queries",
            expected: queries.len().max(1).next_multiple_of(per_position),
            actual: queries.len(),
        });
    }
    if out.len() != queries.len() {
        return Err(Error::LengthMismatch {
            what: "attention output",
            expected: queries.len(),
            actual: out.len(),
        });
    }
    let n = queries.len() / per_position;
    let pos = layer.pos;
    if n > pos.len {
        return Err(layer.not_held(0, n));
    }
    let span = Span {
        first: pos.len - n,
        n,
        window: window.unwrap_or(usize::MAX),
    };
    let lo = span.keys(0).0;
    if lo < layer.held_start() {
        return Err(layer.not_held(lo, pos.len));
    }

    // Rotate every query once into K's rotated domain, with the 1/√d scale folded in.
    let scale = 1.0 / (d as f32).sqrt();
    let mut rotated = vec![0f32; queries.len()];
    for (i, q) in rotated.chunks_exact_mut(d).enumerate() {
        queries.load(i, d, q);
        q.iter_mut().for_each(|v| *v *= scale);
    }
    if let Some(r) = fmt.k.rotation() {
        r.forward_inplace(&mut rotated);
    }

    let group = q_heads / kv_heads;
    let chunk = CHUNK_TOKENS.div_ceil(fmt.block()) * fmt.block();
    let chunks: Vec<(usize, usize)> = {
        let mut c = Vec::new();
        let mut t = lo;
        while t < pos.len {
            let end = ((t / chunk + 1) * chunk).min(pos.len);
            c.push((t, end));
            t = end;
        }
        c
    };
    let items: Vec<(usize, (usize, usize))> = (0..layer.streams.len())
        .flat_map(|s| chunks.iter().map(move |&c| (s, c)))
        .collect();
    let work = |&(s, (t0, t1)): &(usize, (usize, usize))| -> Result<State, Error> {
        // The queries of stream s = b·kv_heads + h: heads h·group.., every position.
        let (b, h) = (s / kv_heads, s % kv_heads);
        let first = (b * q_heads + h * group) * n;
        let q = &rotated[first * d..(first + group * n) * d];
        chunk_state(layer, s, q, span, t0..t1)
    };
    let states: Vec<Result<State, Error>> = match par {
        Par::Seq => items.iter().map(work).collect(),
        Par::Rayon => items.par_iter().map(work).collect(),
    };

    let v_rotation = fmt.v.rotation();
    let mut states = states.into_iter();
    let mut o = vec![0f32; d];
    for s in 0..layer.streams.len() {
        let mut total = State::new(group * n, d);
        for _ in 0..chunks.len() {
            let state = states.next().expect("one state per stream and chunk")?;
            total.merge(&state, d);
        }
        let (b, h) = (s / kv_heads, s % kv_heads);
        let first = (b * q_heads + h * group) * n;
        for (qi, acc) in total.acc.chunks_exact_mut(d).enumerate() {
            // Every query sees at least its own token, so the sum is positive.
            let inv = 1.0 / total.sum[qi];
            acc.iter_mut().for_each(|v| *v *= inv);
            match v_rotation {
                Some(r) => r.inverse(acc, &mut o),
                None => o.copy_from_slice(acc),
            }
            out.store((first + qi) * d, &o);
        }
    }
    Ok(())
}

/// The online-softmax state of one stream's queries `q` (`group · n` rotated queries of
/// `d` values, head-major) over the keys `range`.
fn chunk_state(
    layer: &Layer,
    s: usize,
    q: &[f32],
    span: Span,
    range: core::ops::Range<usize>,
) -> Result<State, Error> {
    let fmt = &layer.fmt;
    let d = fmt.d;
    let view = layer.view(s);
    let queries = q.len() / d;
    let block = fmt.block();
    let mut state = State::new(queries, d);
    let mut keys = vec![0f32; block * d];
    let mut values = vec![0f32; block * d];
    // Per query: its weights over the block's tokens, and which tokens it sees.
    let mut weights = vec![0f32; queries * block];
    let mut seen = vec![(0usize, 0usize); queries];
    let mut scratch = fmt.scratches();
    for (t0, count) in fmt.blocks(layer.pos, range.clone()) {
        let t1 = t0 + count;
        // The keys in this block that query `qi` (head-major, then position) may see.
        let visible = |qi: usize| {
            let (lo, hi) = span.keys(qi % span.n);
            (lo.max(t0).max(range.start), hi.min(t1))
        };
        if (0..span.n).all(|i| {
            let (a, b) = visible(i);
            a >= b
        }) {
            continue;
        }
        let keys = &mut keys[..count * d];
        view.read(Kv::K, t0, keys, true, &mut scratch)?;
        for (qi, s) in seen.iter_mut().enumerate() {
            *s = visible(qi);
        }
        // Scores: runs of QUERY_GROUP queries that see the same keys (the query heads of a
        // decode step, when the GQA group has at least QUERY_GROUP heads) share one pass over
        // them; the others are scored one by one.
        let mut qi = 0;
        while qi < queries {
            let (a, b) = seen[qi];
            let run = seen[qi..]
                .iter()
                .take(QUERY_GROUP)
                .take_while(|&&r| r == (a, b))
                .count();
            let take = if run == QUERY_GROUP { QUERY_GROUP } else { 1 };
            if a < b {
                let keys = keys[(a - t0) * d..(b - t0) * d].chunks_exact(d);
                if take == QUERY_GROUP {
                    let qs: [&[f32]; QUERY_GROUP] =
                        core::array::from_fn(|i| &q[(qi + i) * d..(qi + i + 1) * d]);
                    for (t, k) in keys.enumerate() {
                        for (i, s) in dots(qs, k).into_iter().enumerate() {
                            weights[(qi + i) * block + a - t0 + t] = s;
                        }
                    }
                } else {
                    let qv = &q[qi * d..(qi + 1) * d];
                    for (wt, k) in weights[qi * block + a - t0..].iter_mut().zip(keys) {
                        *wt = dot(qv, k);
                    }
                }
            }
            qi += take;
        }
        for (qi, w) in weights.chunks_exact_mut(block).enumerate() {
            let (a, b) = seen[qi];
            if a >= b {
                continue;
            }
            let w = &mut w[a - t0..b - t0];
            let top = w.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let m = state.max[qi].max(top);
            let correction = (state.max[qi] - m).exp();
            let sum = exp_shifted(w, m);
            state.max[qi] = m;
            state.sum[qi] = state.sum[qi] * correction + sum;
            if correction != 1.0 {
                state.acc[qi * d..(qi + 1) * d]
                    .iter_mut()
                    .for_each(|x| *x *= correction);
            }
        }
        let values = &mut values[..count * d];
        view.read(Kv::V, t0, values, true, &mut scratch)?;
        for (qi, w) in weights.chunks_exact(block).enumerate() {
            let (a, b) = seen[qi];
            if a >= b {
                continue;
            }
            accumulate(
                &mut state.acc[qi * d..(qi + 1) * d],
                &w[a - t0..b - t0],
                &values[(a - t0) * d..(b - t0) * d],
                d,
            );
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn four_queries_at_once_score_as_one_at_a_time() {
        for d in [8, 12, 64, 72, 80, 96, 128, 256] {
            let q = values(4 * d, 1);
            let k = values(d, 2);
            let qs: [&[f32]; 4] = core::array::from_fn(|i| &q[i * d..(i + 1) * d]);
            let together = dots(qs, &k);
            for (i, s) in together.iter().enumerate() {
                assert_eq!(s.to_bits(), dot(qs[i], &k).to_bits(), "d={d} query {i}");
                // The documented order, written as plain scalar loops.
                let head = d / 8 * 8;
                let mut l = [0f32; 8];
                for (j, (x, y)) in qs[i][..head].iter().zip(&k).enumerate() {
                    l[j % 8] += x * y;
                }
                let tail: f32 = qs[i][head..]
                    .iter()
                    .zip(&k[head..])
                    .map(|(x, y)| x * y)
                    .sum();
                let plain =
                    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])) + tail;
                assert_eq!(s.to_bits(), plain.to_bits(), "d={d} query {i}: plain loops");
            }
        }
    }

    /// The lanes' exponential stays within 2^-21 relative of f64's over [−87, 0] (a few
    /// ulp), is exactly 1 at zero, and 0 below −87; exp_shifted sums what it writes.
    #[test]
    fn lane_exponentials_are_close_to_f64s() {
        let exp8 = |x: [f32; 8]| exp_nonpositive(f32x8::from(x)).to_array();
        let mut worst = 0f64;
        for i in (0..870_000).step_by(8) {
            let x: [f32; 8] = core::array::from_fn(|k| -((i + k) as f32) * 1e-4);
            for (e, &x) in exp8(x).iter().zip(&x) {
                let want = f64::from(x).exp();
                worst = worst.max((f64::from(*e) - want).abs() / want);
            }
        }
        assert!(
            worst < 1.0 / f64::from(1u32 << 21),
            "worst relative error {worst:e}"
        );
        let e = exp8([
            0.0,
            -0.0,
            -87.5,
            f32::NEG_INFINITY,
            -1e30,
            -87.0,
            -1.0,
            -0.5,
        ]);
        assert_eq!(&e[..5], &[1.0, 1.0, 0.0, 0.0, 0.0]);
        assert!(e[5] > 0.0);
        let mut w = values(21, 9);
        let m = w.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let want: Vec<f32> = w.iter().map(|&s| (s - m).exp()).collect();
        let sum = exp_shifted(&mut w, m);
        for (got, want) in w.iter().zip(&want) {
            assert!(
                (got - want).abs() <= 4e-7 * want.max(1e-30),
                "{got} vs {want}"
            );
        }
        assert!((sum - w.iter().sum::<f32>()).abs() < 1e-5);
    }

    #[test]
    fn value_sums_are_the_plain_loops_bit_for_bit() {
        for d in [8, 12, 64, 72, 80, 96, 128, 256] {
            let tokens = 37;
            let (w, v) = (values(tokens, 3), values(tokens * d, 4));
            let mut plain = values(d, 5);
            let mut blocked = plain.clone();
            for (&wt, row) in w.iter().zip(v.chunks_exact(d)) {
                for (x, &y) in plain.iter_mut().zip(row) {
                    *x += wt * y;
                }
            }
            accumulate(&mut blocked, &w, &v, d);
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&blocked), bits(&plain), "d={d}");
        }
    }
}
