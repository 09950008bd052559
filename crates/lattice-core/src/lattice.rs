//! The lattices Z^n, D_n and E8 with their Conway–Sloane closest-point decoders.
//!
//! Points are handled in two forms. The hot paths work on `[f32; N]` whose entries are
//! integers or half-integers, which f32 holds exactly up to [`MAX_ABS_COORD`]. Exact integer
//! work (membership, indexing) uses [`Point`], which stores every coordinate doubled, so that
//! the half-integer coset of E8 is held in `i32` without loss.
//!
//! # Rounding and tie rules
//! Every decoder here rounds with ties to even ([`round_ties_even`]), never half away
//! from zero. The D_n decoder repairs an odd coordinate sum by re-rounding, the other way,
//! the coordinate whose rounding error is largest; among equal errors the lowest index is
//! re-rounded, and a coordinate that was exactly an integer is moved up (+1). E8 returns the
//! D8 candidate when the two cosets are exactly equally near. These rules are part of the
//! bit-exact contract shared with every other backend.

use core::fmt::Debug;
use wide::{f32x8, i32x8};

/// Largest |coordinate| for which the decoders are exact: below 2^21, `x − ½` and its
/// rounding are exact in f32 and doubled coordinates fit `i32` with room to spare.
pub const MAX_ABS_COORD: f32 = 2_097_152.0;

/// Rounds to the nearest integer, ties to even: bit-identical to [`f32::round_ties_even`]
/// (and to CUDA's `rintf`), but branch-free and inlined.
///
/// Without SSE4.1 in the baseline target, `round_ties_even` compiles to a call into libm's
/// `rintf`, which made the decoders ten times slower. Adding and subtracting 2^23 rounds any
/// |x| < 2^23 in the current (round-to-nearest-even) mode; larger magnitudes are already
/// integers and pass through, as do NaN and infinities.
#[inline(always)]
pub fn round_ties_even(x: f32) -> f32 {
    const TWO_POW_23: f32 = 8_388_608.0;
    let a = x.abs();
    let rounded = ((a + TWO_POW_23) - TWO_POW_23).copysign(x);
    if a < TWO_POW_23 { rounded } else { x }
}

/// A lattice point with every coordinate stored doubled (`twice[i] = 2·xᵢ`), so that the
/// half-integer points of E8 are exact integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Point<const N: usize> {
    /// Twice each coordinate.
    pub twice: [i32; N],
}

impl<const N: usize> Point<N> {
    /// Converts f32 coordinates that are integers or half-integers (as the decoders return)
    /// to doubled integers.
    ///
    /// # Panics
    /// Panics if a coordinate is not a multiple of ½ or exceeds [`MAX_ABS_COORD`].
    pub fn from_f32(x: &[f32; N]) -> Self {
        Self::try_from_f32(x).unwrap_or_else(|| {
            panic!("{x:?} has a coordinate that is not a half-integer within ±{MAX_ABS_COORD}")
        })
    }

    /// Like [`Point::from_f32`], but `None` for a coordinate that is not a multiple of ½
    /// within ±[`MAX_ABS_COORD`] (NaN and infinities included).
    pub fn try_from_f32(x: &[f32; N]) -> Option<Self> {
        let mut twice = [0i32; N];
        for (t, &v) in twice.iter_mut().zip(x) {
            let d = v * 2.0;
            if round_ties_even(d) != d || v.abs() > MAX_ABS_COORD {
                return None;
            }
            *t = d as i32;
        }
        Some(Self { twice })
    }

    /// The coordinates as f32 (exact for points within [`MAX_ABS_COORD`]).
    pub fn to_f32(&self) -> [f32; N] {
        self.twice.map(|t| t as f32 * 0.5)
    }
}

/// A lattice in R^N with a closest-point decoder and a lower-triangular basis.
///
/// Implementors are zero-sized markers; everything is an associated function so that the
/// codec's hot loops monomorphise without indirection.
pub trait Lattice<const N: usize>: Copy + Debug + Default + Send + Sync + 'static {
    /// Short name used in reports and snapshots, e.g. `"E8"`.
    const NAME: &'static str;

    /// Basis vectors (rows) in doubled coordinates. The matrix is lower triangular
    /// (`BASIS_TWICE[i][j] == 0` for `j > i`) with positive powers of two on the diagonal,
    /// which makes the coordinates of a point in this basis a short back-substitution
    /// with shifts.
    const BASIS_TWICE: [[i32; N]; N];

    /// The gauge of the Voronoi cell at `x`: max over the Voronoi-relevant vectors r of
    /// 2⟨x, r⟩ / |r|², so that `x` lies inside the cell of qΛ (around the origin) when the
    /// gauge is below q, outside when above, and on its boundary when equal. Exact for
    /// half-integer points within [`MAX_ABS_COORD`].
    fn cell_gauge(x: &[f32; N]) -> f32;

    /// The closest lattice point to `x`, as f32 coordinates.
    ///
    /// Exact (per the module's tie rules) for finite `|xᵢ| ≤` [`MAX_ABS_COORD`]; outside that
    /// domain the result is a lattice point near `x` only as far as f32 allows.
    fn closest_point(x: &[f32; N]) -> [f32; N];

    /// The closest points of eight inputs: [`Lattice::closest_point`] of each, bit for bit.
    /// Lattices with a faster side-by-side decoder (E8) override it.
    #[inline]
    fn closest_points(x: &[[f32; N]; 8]) -> [[f32; N]; 8] {
        x.map(|block| Self::closest_point(&block))
    }

    /// [`Lattice::closest_points`] with the eight inputs in lanes (structure of arrays):
    /// lane b of `x[i]` is coordinate i of input b, and so for the result. Callers that
    /// already hold blocks this way skip two transposes where the lattice decodes side by
    /// side (E8 overrides it); the default goes through [`Lattice::closest_points`].
    #[inline]
    fn closest_points_in_lanes(x: &[f32x8; N]) -> [f32x8; N] {
        to_lanes(&Self::closest_points(&from_lanes(x)))
    }

    /// [`Lattice::cell_gauge`] of eight inputs, bit for bit.
    #[inline]
    fn cell_gauges(x: &[[f32; N]; 8]) -> [f32; 8] {
        x.map(|block| Self::cell_gauge(&block))
    }

    /// [`Lattice::cell_gauges`] with the eight inputs in lanes (as
    /// [`Lattice::closest_points_in_lanes`] takes them); lane b of the result is input b's.
    /// E8 overrides it; the default goes through [`Lattice::cell_gauges`].
    #[inline]
    fn cell_gauges_in_lanes(x: &[f32x8; N]) -> f32x8 {
        f32x8::from(Self::cell_gauges(&from_lanes(x)))
    }

    /// Whether `p` belongs to the lattice.
    fn contains(p: &Point<N>) -> bool;
}

/// The integer lattice Z^N.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Zn<const N: usize>;

/// The checkerboard lattice D_N = { z ∈ Z^N : Σ zᵢ even }.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dn<const N: usize>;

/// D4, the densest lattice packing in four dimensions.
pub type D4 = Dn<4>;
/// D8, the integer half of E8.
pub type D8 = Dn<8>;

/// The Gosset lattice E8 = D8 ∪ (D8 + ½·1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E8;

const fn identity_twice<const N: usize>() -> [[i32; N]; N] {
    let mut b = [[0i32; N]; N];
    let mut i = 0;
    while i < N {
        b[i][i] = 2;
        i += 1;
    }
    b
}

/// D_N basis: (2, 0, …), then (−1, 1, 0, …) shifted along; determinant 2 = det D_N.
const fn dn_basis_twice<const N: usize>() -> [[i32; N]; N] {
    let mut b = [[0i32; N]; N];
    b[0][0] = 4;
    let mut i = 1;
    while i < N {
        b[i][i - 1] = -2;
        b[i][i] = 2;
        i += 1;
    }
    b
}

impl<const N: usize> Lattice<N> for Zn<N> {
    const NAME: &'static str = "Z";
    const BASIS_TWICE: [[i32; N]; N] = identity_twice::<N>();

    #[inline]
    fn closest_point(x: &[f32; N]) -> [f32; N] {
        x.map(round_ties_even)
    }

    /// The relevant vectors are ±eᵢ (the cell is the cube [−½, ½]^N).
    #[inline]
    fn cell_gauge(x: &[f32; N]) -> f32 {
        2.0 * largest_two_abs(x).0
    }

    fn contains(p: &Point<N>) -> bool {
        p.twice.iter().all(|t| t % 2 == 0)
    }
}

impl<const N: usize> Lattice<N> for Dn<N> {
    const NAME: &'static str = "D";
    const BASIS_TWICE: [[i32; N]; N] = dn_basis_twice::<N>();

    #[inline]
    fn closest_point(x: &[f32; N]) -> [f32; N] {
        dn_nearest_in_range(x, f32::NEG_INFINITY, f32::INFINITY)
    }

    /// The roots ±eᵢ ± eⱼ give |xᵢ| + |xⱼ| for the two largest magnitudes; the other relevant
    /// vectors of D_N (±2eᵢ, from N = 5 on) give |xᵢ|, never more.
    #[inline]
    fn cell_gauge(x: &[f32; N]) -> f32 {
        let (a1, a2) = largest_two_abs(x);
        a1 + a2
    }

    fn contains(p: &Point<N>) -> bool {
        p.twice.iter().all(|t| t % 2 == 0) && p.twice.iter().map(|t| t / 2).sum::<i32>() % 2 == 0
    }
}

impl Lattice<8> for E8 {
    const NAME: &'static str = "E8";
    const BASIS_TWICE: [[i32; 8]; 8] = {
        let mut b = dn_basis_twice::<8>();
        // Replace the last D8 row by the glue vector ½·1: determinant 2·½ = 1 = det E8.
        b[7] = [1; 8];
        b
    };

    #[inline]
    fn closest_point(x: &[f32; 8]) -> [f32; 8] {
        e8_nearest_in_range(x, f32::NEG_INFINITY, f32::INFINITY)
    }

    /// The relevant vectors are the 240 roots (Conway & Sloane, SPLAG ch. 21): ±eᵢ ± eⱼ give
    /// the two largest magnitudes; (±½)^8 with an even number of minus signs give ½Σ|xᵢ|,
    /// less the smallest magnitude when the signs of `x` have odd parity.
    #[inline]
    fn cell_gauge(x: &[f32; 8]) -> f32 {
        let (a1, a2) = largest_two_abs(x);
        let mut sum = 0f32;
        let mut smallest = f32::INFINITY;
        let mut negatives = 0u32;
        for &v in x {
            sum += v.abs();
            smallest = smallest.min(v.abs());
            negatives += u32::from(v < 0.0);
        }
        let half = 0.5
            * if negatives % 2 == 1 {
                sum - 2.0 * smallest
            } else {
                sum
            };
        (a1 + a2).max(half)
    }

    #[inline]
    fn closest_points(x: &[[f32; 8]; 8]) -> [[f32; 8]; 8] {
        let points = Self::closest_points_in_lanes(&f32x8::transpose(x.map(f32x8::from)));
        f32x8::transpose(points).map(|p| p.to_array())
    }

    /// The eight blocks are decoded side by side, one per SIMD lane (structure of arrays), so
    /// that no step needs a horizontal operation: several times faster than block by block.
    #[inline]
    fn closest_points_in_lanes(coords: &[f32x8; 8]) -> [f32x8; 8] {
        let half = f32x8::splat(0.5);
        let p0 = d8_nearest_lanes(coords);
        // Loops rather than `array::map`, which was not inlined here.
        let mut shifted = *coords;
        for c in &mut shifted {
            *c -= half;
        }
        let mut p1 = d8_nearest_lanes(&shifted);
        for p in &mut p1 {
            *p += half;
        }
        // Squared distances summed in index order, as `dist2` does for one block.
        let (mut s0, mut s1) = (f32x8::ZERO, f32x8::ZERO);
        for i in 0..8 {
            let (e0, e1) = (coords[i] - p0[i], coords[i] - p1[i]);
            s0 += e0 * e0;
            s1 += e1 * e1;
        }
        let take_half = s1.simd_lt(s0);
        std::array::from_fn(|i| take_half.select(p1[i], p0[i]))
    }

    fn cell_gauges(x: &[[f32; 8]; 8]) -> [f32; 8] {
        Self::cell_gauges_in_lanes(&f32x8::transpose(x.map(f32x8::from))).to_array()
    }

    /// One block per lane, with the same operations in the same order as `cell_gauge`.
    fn cell_gauges_in_lanes(coords: &[f32x8; 8]) -> f32x8 {
        let (mut a1, mut a2) = (f32x8::ZERO, f32x8::ZERO);
        let (mut sum, mut smallest) = (f32x8::ZERO, f32x8::splat(f32::INFINITY));
        // Lane masks: all ones where an odd number of coordinates so far were negative.
        let mut odd = f32x8::ZERO;
        for &c in coords {
            let a = c.abs();
            let above_first = a.simd_gt(a1);
            a2 = above_first.select(a1, a.simd_gt(a2).select(a, a2));
            a1 = above_first.select(a, a1);
            sum += a;
            smallest = smallest.min(a);
            odd ^= c.simd_lt(f32x8::ZERO);
        }
        let half = f32x8::splat(0.5) * odd.select(sum - f32x8::splat(2.0) * smallest, sum);
        (a1 + a2).max(half)
    }

    fn contains(p: &Point<8>) -> bool {
        let all_even = p.twice.iter().all(|t| t % 2 == 0);
        let all_odd = p.twice.iter().all(|t| t % 2 != 0);
        // Σ coordinates = Σ twice / 2 must be an even integer, i.e. Σ twice ≡ 0 (mod 4).
        (all_even || all_odd) && p.twice.iter().sum::<i32>().rem_euclid(4) == 0
    }
}

/// The largest and second largest of |xᵢ| (the second is 0 for N = 1).
#[inline(always)]
fn largest_two_abs<const N: usize>(x: &[f32; N]) -> (f32, f32) {
    let (mut a1, mut a2) = (0f32, 0f32);
    for &v in x {
        let a = v.abs();
        if a > a1 {
            a2 = a1;
            a1 = a;
        } else if a > a2 {
            a2 = a;
        }
    }
    (a1, a2)
}

/// Nearest point of D_N ∩ [lo, hi]^N to `x`, where `lo < hi` are integers or infinite.
///
/// This is Conway–Sloane's D_N decoder with the box folded in: per coordinate the best
/// integer in range is the rounded, clamped value, and the best integer of the other parity
/// is its neighbour on `x`'s side (or the other neighbour where the box ends). If the parity
/// is wrong, exactly one coordinate moves to that alternative: the one where it costs least.
/// The cost is compared through the signed rounding error, which is exact in f32.
#[inline(always)]
pub(crate) fn dn_nearest_in_range<const N: usize>(x: &[f32; N], lo: f32, hi: f32) -> [f32; N] {
    // Straight-line passes over fixed-size arrays so that the compiler unrolls and vectorises
    // them; a data-dependent branch per coordinate cost more than the arithmetic.
    let mut r = [0f32; N];
    let mut alt = [0f32; N];
    // Larger key = cheaper flip: +|err| when the alternative lies on x's side (cost 1 − 2|err|),
    // −|err| when the box forces the far side (cost 1 + 2|err|).
    let mut key = [0f32; N];
    for i in 0..N {
        let xi = x[i];
        let ri = round_ties_even(xi.max(lo).min(hi));
        let err = xi - ri;
        let want_up = err >= 0.0;
        let go_up = (want_up & (ri + 1.0 <= hi)) | (ri - 1.0 < lo);
        alt[i] = if go_up { ri + 1.0 } else { ri - 1.0 };
        key[i] = if go_up == want_up {
            err.abs()
        } else {
            -err.abs()
        };
        r[i] = ri;
    }
    let mut sum = 0i32;
    for &ri in &r {
        sum = sum.wrapping_add(ri as i32);
    }
    // Flip at the first largest key. Finding the maximum first and then its first position
    // keeps every array in registers (indexing by a computed position did not).
    let mut max_key = key[0];
    for &k in &key[1..] {
        max_key = max_key.max(k);
    }
    let odd = sum & 1 != 0;
    let mut seen = false;
    for i in 0..N {
        let first = key[i] == max_key && !seen;
        seen |= key[i] == max_key;
        r[i] = if odd && first { alt[i] } else { r[i] };
    }
    r
}

/// Squared Euclidean distance, summed in index order (the fixed order every backend uses).
#[inline(always)]
pub(crate) fn dist2<const N: usize>(a: &[f32; N], b: &[f32; N]) -> f32 {
    let mut s = 0f32;
    for i in 0..N {
        let d = a[i] - b[i];
        s += d * d;
    }
    s
}

/// [`round_ties_even`] on eight lanes (the same bits as each lane's `f32::round_ties_even`).
#[inline(always)]
pub fn round_ties_even_x8(x: f32x8) -> f32x8 {
    // With AVX the lanes' `f32::round_ties_even` compiles to one vroundps (same bits).
    if cfg!(target_feature = "avx") {
        let mut lanes = x.to_array();
        for v in &mut lanes {
            *v = v.round_ties_even();
        }
        return f32x8::from(lanes);
    }
    let two_pow_23 = f32x8::splat(8_388_608.0);
    let a = x.abs();
    let sign = x & f32x8::splat(-0.0);
    let rounded = ((a + two_pow_23) - two_pow_23) | sign;
    a.simd_lt(two_pow_23).select(rounded, x)
}

/// [`dn_nearest_in_range`] for N = 8 on eight SIMD lanes: the same operations per coordinate
/// and the same flip (the first largest key), so the same bits.
#[inline(always)]
fn d8_nearest_in_range(x: f32x8, lo: f32, hi: f32) -> f32x8 {
    let (lo, hi) = (f32x8::splat(lo), f32x8::splat(hi));
    let one = f32x8::ONE;
    let r = round_ties_even_x8(x.max(lo).min(hi));
    let err = x - r;
    let want_up = err.simd_ge(f32x8::ZERO);
    let go_up = (want_up & (r + one).simd_le(hi)) | (r - one).simd_lt(lo);
    let parity = r
        .trunc_int()
        .to_array()
        .iter()
        .fold(0i32, |s, &v| s.wrapping_add(v))
        & 1;
    if parity == 0 {
        return r;
    }
    let alt = go_up.select(r + one, r - one);
    // Larger key = cheaper flip: +|err| towards x's side, −|err| where the box forces the
    // far side.
    let key = (go_up ^ want_up).select(-err.abs(), err.abs());
    let keys = key.to_array();
    let max_key = keys[1..]
        .iter()
        .fold(keys[0], |m, &k| if k > m { k } else { m });
    let first = key
        .simd_eq(f32x8::splat(max_key))
        .to_bitmask()
        .trailing_zeros();
    let lane = f32x8::from([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    lane.simd_eq(f32x8::splat(first as f32)).select(alt, r)
}

/// Nearest point of E8 ∩ [lo, hi]^8 to `x`, for integer `lo < hi` (or infinite bounds).
///
/// The integer coset is D8 ∩ [lo, hi]^8; the half-integer coset is (D8 ∩ [lo, hi − 1]^8) + ½,
/// because the half-integers inside [lo, hi] run from lo + ½ to hi − ½. The nearer candidate
/// wins (distances summed in index order) and the integer one wins exact ties.
#[inline(always)]
pub(crate) fn e8_nearest_in_range(x: &[f32; 8], lo: f32, hi: f32) -> [f32; 8] {
    let v = f32x8::from(*x);
    let half = f32x8::splat(0.5);
    let p0 = d8_nearest_in_range(v, lo, hi).to_array();
    let p1 = (d8_nearest_in_range(v - half, lo, hi - 1.0) + half).to_array();
    if dist2(x, &p1) < dist2(x, &p0) {
        p1
    } else {
        p0
    }
}

/// The unbounded D8 decoder of [`d8_nearest_in_range`] for eight blocks side by side:
/// `coords[i]` holds coordinate i of every block, one block per lane.
#[inline(always)]
fn d8_nearest_lanes(coords: &[f32x8; 8]) -> [f32x8; 8] {
    let one = f32x8::ONE;
    let mut r = [f32x8::ZERO; 8];
    let mut sum = i32x8::ZERO;
    // The first largest |error| per lane, and where it is.
    let mut max_key = f32x8::splat(-1.0);
    let mut flip_at = f32x8::ZERO;
    let mut alt = [f32x8::ZERO; 8];
    for i in 0..8 {
        r[i] = round_ties_even_x8(coords[i]);
        let err = coords[i] - r[i];
        alt[i] = err.simd_ge(f32x8::ZERO).select(r[i] + one, r[i] - one);
        let key = err.abs();
        let larger = key.simd_gt(max_key);
        max_key = larger.select(key, max_key);
        flip_at = larger.select(f32x8::splat(i as f32), flip_at);
        sum += r[i].trunc_int();
    }
    let odd = (sum & i32x8::ONE).round_float().simd_eq(f32x8::ONE);
    for (i, ri) in r.iter_mut().enumerate() {
        let flip = odd & flip_at.simd_eq(f32x8::splat(i as f32));
        *ri = flip.select(alt[i], *ri);
    }
    r
}

/// Eight N-dimensional blocks in lanes: lane b of `result[i]` is coordinate i of block b.
#[inline]
pub fn to_lanes<const N: usize>(blocks: &[[f32; N]; 8]) -> [f32x8; N] {
    std::array::from_fn(|i| f32x8::new(std::array::from_fn(|b| blocks[b][i])))
}

/// The blocks of [`to_lanes`] back, one array per block.
#[inline]
pub fn from_lanes<const N: usize>(lanes: &[f32x8; N]) -> [[f32; N]; 8] {
    let columns = lanes.map(|l| l.to_array());
    std::array::from_fn(|b| std::array::from_fn(|i| columns[i][b]))
}

/// Coordinates of the lattice point `p` in the basis `L::BASIS_TWICE` (exact integers).
///
/// Every basis here has powers of two on its diagonal, so the back-substitution divides by
/// shifting.
///
/// # Panics
/// Panics if `p` is not a point of the lattice (the back-substitution would not divide).
#[inline]
pub fn basis_coordinates<L: Lattice<N>, const N: usize>(p: &Point<N>) -> [i32; N] {
    let b = L::BASIS_TWICE;
    let mut c = [0i32; N];
    for j in (0..N).rev() {
        let mut rest = p.twice[j];
        for i in j + 1..N {
            rest -= c[i] * b[i][j];
        }
        let shift = b[j][j].trailing_zeros();
        assert!(
            rest & ((1 << shift) - 1) == 0,
            "point {p:?} is not in {}",
            L::NAME
        );
        c[j] = rest >> shift;
    }
    c
}

/// The lattice point with basis coordinates `c`, in doubled coordinates.
///
/// # Panics
/// May panic on overflow (debug builds) for coordinates beyond ±2^26; codebooks use
/// coordinates below 2^16.
#[inline]
pub fn from_basis_coordinates<L: Lattice<N>, const N: usize>(c: &[i32; N]) -> [i32; N] {
    let b = L::BASIS_TWICE;
    let mut t = [0i32; N];
    for i in 0..N {
        for j in 0..=i {
            t[j] += c[i] * b[i][j];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{E8, Lattice, dist2, dn_nearest_in_range, e8_nearest_in_range};

    /// The E8 decoder composed from the scalar D_N decoder: the specification the SIMD one
    /// must match bit for bit.
    fn e8_reference(x: &[f32; 8], lo: f32, hi: f32) -> [f32; 8] {
        let p0 = dn_nearest_in_range(x, lo, hi);
        let mut p1 = dn_nearest_in_range(&x.map(|v| v - 0.5), lo, hi - 1.0);
        for v in &mut p1 {
            *v += 0.5;
        }
        if dist2(x, &p1) < dist2(x, &p0) {
            p1
        } else {
            p0
        }
    }

    /// Coordinates that hit the decoder's tie cases often: exact integers, half-integers and
    /// quarter points, besides arbitrary values.
    fn coord() -> impl Strategy<Value = f32> {
        prop_oneof![
            (-64i32..64).prop_map(|k| k as f32 * 0.5),
            (-64i32..64).prop_map(|k| k as f32 * 0.25),
            -1000.0f32..1000.0,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn eight_lane_e8_gauge_matches_one_block_at_a_time(
            x in prop::array::uniform8(prop::array::uniform8(coord())),
        ) {
            let lanes = E8::cell_gauges(&x);
            for (block, gauge) in x.iter().zip(lanes) {
                prop_assert_eq!(gauge.to_bits(), E8::cell_gauge(block).to_bits());
            }
        }

        #[test]
        fn eight_lane_e8_decoder_matches_one_block_at_a_time(
            x in prop::array::uniform8(prop::array::uniform8(coord())),
        ) {
            let lanes = E8::closest_points(&x);
            for (block, point) in x.iter().zip(&lanes) {
                prop_assert_eq!(point.map(f32::to_bits), E8::closest_point(block).map(f32::to_bits));
            }
        }

        #[test]
        fn simd_e8_decoder_matches_the_scalar_one_bit_for_bit(
            x in prop::array::uniform8(coord()),
            q in prop_oneof![Just(f32::INFINITY), (1i32..40).prop_map(|q| q as f32)],
        ) {
            let fast = e8_nearest_in_range(&x, -q, q).map(f32::to_bits);
            prop_assert_eq!(fast, e8_reference(&x, -q, q).map(f32::to_bits));
        }
    }
}
