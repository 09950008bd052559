//! Finite codebooks carved from a lattice, each with an exact size and a bijective
//! index ↔ point map.
//!
//! * [`ZBox`], [`DBox`], [`E8Box`]: Λ ∩ [−Q, Q]^N, the published KakeyaLattice scheme, with an encoder that
//!   returns the nearest point *inside* the box (the published clamp leaves E8).
//! * [`VoronoiCodebook`]: the nested-lattice code Λ/qΛ of Conway and Sloane (1983): the
//!   index is the coordinates of λ in a lattice basis, reduced mod q, and the point is the
//!   coset representative λ − q·Q_Λ(λ/q).

use crate::error::Error;
use core::marker::PhantomData;

use wide::f32x8;

use crate::lattice::{
    Lattice, Point, basis_coordinates, dn_nearest_in_range, e8_nearest_in_range,
    from_basis_coordinates, from_lanes, round_ties_even, to_lanes,
};

/// A finite set of lattice points with a quantiser and a bijection to `0..size()`.
pub trait Codebook<const N: usize>: Send + Sync {
    /// Exact number of points.
    fn size(&self) -> u128;

    /// Bits a fixed-width index of one block needs: ⌈log2 len⌉.
    fn index_bits(&self) -> u32 {
        match self.size() {
            0 | 1 => 0,
            n => 128 - (n - 1).leading_zeros(),
        }
    }

    /// The codebook point the encoder maps `x` to.
    fn quantize(&self, x: &[f32; N]) -> [f32; N];

    /// The index of `p`, or `None` if `p` is not a point of this codebook.
    fn index_of(&self, p: &[f32; N]) -> Option<u128>;

    /// The point with index `index`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if `index >= len()` (indices may come from untrusted bytes).
    fn point_at(&self, index: u128) -> Result<[f32; N], Error>;

    /// Quantises `x` and returns the index of the point.
    fn encode(&self, x: &[f32; N]) -> u128 {
        let p = self.quantize(x);
        self.index_of(&p)
            .expect("a codebook's quantiser returns one of its points")
    }
}

/// Integer vectors in `[lo, hi]^k` whose coordinate sum has a given parity, ranked in
/// lexicographic order. This is what makes box codebooks of D_N and E8 exactly indexable:
/// counts[j][t] = number of length-j vectors whose sum has parity t.
#[derive(Clone, Debug)]
struct ParityBox {
    lo: i64,
    hi: i64,
    counts: Vec<[u128; 2]>,
}

fn parity(v: i64) -> usize {
    (v & 1) as usize
}

/// Number of even integers in `[a, b]` (zero when `a > b`).
fn evens_in(a: i64, b: i64) -> i64 {
    if a > b {
        0
    } else {
        b.div_euclid(2) - (a - 1).div_euclid(2)
    }
}

impl ParityBox {
    fn new(lo: i64, hi: i64, k: usize) -> Self {
        let evens = evens_in(lo, hi) as u128;
        let odds = (hi - lo + 1) as u128 - evens;
        let mut counts = vec![[1u128, 0u128]];
        for j in 1..=k {
            let prev = counts[j - 1];
            counts.push([
                evens * prev[0] + odds * prev[1],
                evens * prev[1] + odds * prev[0],
            ]);
        }
        Self { lo, hi, counts }
    }

    fn size(&self) -> u128 {
        self.counts[self.counts.len() - 1][0]
    }

    /// Rank of `z` among even-sum vectors, or `None` if `z` leaves the range or sums odd.
    fn rank(&self, z: &[i64]) -> Option<u128> {
        let k = z.len();
        let mut t = 0usize;
        let mut rank = 0u128;
        for (pos, &v) in z.iter().enumerate() {
            if v < self.lo || v > self.hi {
                return None;
            }
            let rest = &self.counts[k - pos - 1];
            let evens_below = evens_in(self.lo, v - 1) as u128;
            let odds_below = (v - self.lo) as u128 - evens_below;
            // A smaller first value v' leaves the rest needing parity t ⊕ parity(v').
            rank += evens_below * rest[t] + odds_below * rest[t ^ 1];
            t ^= parity(v);
        }
        (t == 0).then_some(rank)
    }

    /// The even-sum vector of rank `index` (caller checks `index < len()`).
    fn unrank(&self, mut index: u128, z: &mut [i64]) {
        let k = z.len();
        let mut t = 0usize;
        for (pos, out) in z.iter_mut().enumerate() {
            let rest = &self.counts[k - pos - 1];
            // Values come in (lo + 2p, lo + 2p + 1) pairs, one of each parity.
            let first = rest[t ^ parity(self.lo)];
            let pair = rest[t] + rest[t ^ 1];
            let p = index / pair;
            index -= p * pair;
            let mut v = self.lo + 2 * p as i64;
            if index >= first {
                index -= first;
                v += 1;
            }
            *out = v;
            t ^= parity(v);
        }
    }
}

/// Largest `Q` a box codebook accepts: E8 at Q = 4095 needs 104 bits per block, well inside
/// the `u128` index.
pub const MAX_BOX_Q: u32 = 4095;

fn check_box_q(q: u32) -> Result<(), Error> {
    if (1..=MAX_BOX_Q).contains(&q) {
        Ok(())
    } else {
        Err(Error::ParameterOutOfRange {
            name: "q_range",
            value: u64::from(q),
            min: 1,
            max: u64::from(MAX_BOX_Q),
        })
    }
}

/// Integer coordinates of `p` if every coordinate is an integer (within the exact domain).
fn integer_coords<const N: usize>(p: &[f32; N]) -> Option<[i64; N]> {
    let point = Point::try_from_f32(p)?;
    point
        .twice
        .iter()
        .all(|t| t % 2 == 0)
        .then(|| point.twice.map(|t| i64::from(t / 2)))
}

/// The box codebook Z^N ∩ [−Q, Q]^N (plain uniform scalar levels, indexed in radix 2Q + 1).
#[derive(Clone, Copy, Debug)]
pub struct ZBox<const N: usize> {
    q: u32,
}

impl<const N: usize> ZBox<N> {
    /// Z^N ∩ [−q, q]^N.
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] unless `1 ≤ q ≤` [`MAX_BOX_Q`] and (2q+1)^N fits `u128`.
    pub fn new(q: u32) -> Result<Self, Error> {
        check_box_q(q)?;
        if (2 * u128::from(q) + 1).checked_pow(N as u32).is_none() {
            return Err(Error::ParameterOutOfRange {
                name: "dimension",
                value: N as u64,
                min: 1,
                max: 8,
            });
        }
        Ok(Self { q })
    }

    /// The half-width `Q` of the box in lattice units.
    pub fn q(&self) -> u32 {
        self.q
    }

    fn width(&self) -> u128 {
        2 * u128::from(self.q) + 1
    }
}

impl<const N: usize> Codebook<N> for ZBox<N> {
    fn size(&self) -> u128 {
        self.width().pow(N as u32)
    }

    fn quantize(&self, x: &[f32; N]) -> [f32; N] {
        let q = self.q as f32;
        x.map(|v| round_ties_even(v.clamp(-q, q)))
    }

    fn index_of(&self, p: &[f32; N]) -> Option<u128> {
        let q = i64::from(self.q);
        let mut index = 0u128;
        for &v in integer_coords(p)?.iter().rev() {
            if v.abs() > q {
                return None;
            }
            index = index * self.width() + (v + q) as u128;
        }
        Some(index)
    }

    fn point_at(&self, mut index: u128) -> Result<[f32; N], Error> {
        let count = self.size();
        if index >= count {
            return Err(Error::IndexOutOfRange { index, count });
        }
        let mut p = [0f32; N];
        for v in &mut p {
            *v = (index % self.width()) as f32 - self.q as f32;
            index /= self.width();
        }
        Ok(p)
    }
}

/// The box codebook D_N ∩ [−Q, Q]^N of the published scheme (N ≤ 8), with
/// ((2Q+1)^N + 1)/2 points for even N and the valid nearest-point-inside-the-box encoder.
#[derive(Clone, Debug)]
pub struct DBox<const N: usize> {
    q: u32,
    points: ParityBox,
}

impl<const N: usize> DBox<N> {
    /// D_N ∩ [−q, q]^N.
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] unless `1 ≤ q ≤` [`MAX_BOX_Q`] and `N ≤ 8`.
    pub fn new(q: u32) -> Result<Self, Error> {
        check_box_q(q)?;
        if N > 8 {
            return Err(Error::ParameterOutOfRange {
                name: "dimension",
                value: N as u64,
                min: 1,
                max: 8,
            });
        }
        let q64 = i64::from(q);
        Ok(Self {
            q,
            points: ParityBox::new(-q64, q64, N),
        })
    }

    /// The half-width `Q` of the box in lattice units.
    pub fn q(&self) -> u32 {
        self.q
    }
}

impl<const N: usize> Codebook<N> for DBox<N> {
    fn size(&self) -> u128 {
        self.points.size()
    }

    fn quantize(&self, x: &[f32; N]) -> [f32; N] {
        let q = self.q as f32;
        dn_nearest_in_range(x, -q, q)
    }

    fn index_of(&self, p: &[f32; N]) -> Option<u128> {
        self.points.rank(&integer_coords(p)?)
    }

    fn point_at(&self, index: u128) -> Result<[f32; N], Error> {
        let count = self.size();
        if index >= count {
            return Err(Error::IndexOutOfRange { index, count });
        }
        let mut z = [0i64; N];
        self.points.unrank(index, &mut z);
        Ok(z.map(|v| v as f32))
    }
}

/// D4 ∩ [−Q, Q]^4, the published D4 codebook.
pub type D4Box = DBox<4>;
/// D8 ∩ [−Q, Q]^8, the integer half of [`E8Box`].
pub type D8Box = DBox<8>;

/// The box codebook E8 ∩ [−Q, Q]^8 of the published scheme: ((2Q+1)^8 + 1)/2 integer points
/// (indices first) and (2Q)^8/2 half-integer points, with the nearest-point-inside-the-box
/// encoder. Every point it returns is in E8, unlike the published clamp.
#[derive(Clone, Debug)]
pub struct E8Box {
    q: u32,
    /// D8 ∩ [−Q, Q]^8.
    integer: ParityBox,
    /// z with z + ½ in the box: D8 ∩ [−Q, Q − 1]^8.
    half: ParityBox,
}

impl E8Box {
    /// E8 ∩ [−q, q]^8.
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] unless `1 ≤ q ≤` [`MAX_BOX_Q`].
    pub fn new(q: u32) -> Result<Self, Error> {
        check_box_q(q)?;
        let q64 = i64::from(q);
        Ok(Self {
            q,
            integer: ParityBox::new(-q64, q64, 8),
            half: ParityBox::new(-q64, q64 - 1, 8),
        })
    }

    /// The half-width `Q` of the box in lattice units.
    pub fn q(&self) -> u32 {
        self.q
    }
}

impl Codebook<8> for E8Box {
    fn size(&self) -> u128 {
        self.integer.size() + self.half.size()
    }

    fn quantize(&self, x: &[f32; 8]) -> [f32; 8] {
        let q = self.q as f32;
        e8_nearest_in_range(x, -q, q)
    }

    fn index_of(&self, p: &[f32; 8]) -> Option<u128> {
        if let Some(z) = integer_coords(p) {
            return self.integer.rank(&z);
        }
        let z = integer_coords(&p.map(|v| v - 0.5))?;
        Some(self.integer.size() + self.half.rank(&z)?)
    }

    fn point_at(&self, index: u128) -> Result<[f32; 8], Error> {
        let count = self.size();
        if index >= count {
            return Err(Error::IndexOutOfRange { index, count });
        }
        let mut z = [0i64; 8];
        let integers = self.integer.size();
        if index < integers {
            self.integer.unrank(index, &mut z);
            Ok(z.map(|v| v as f32))
        } else {
            self.half.unrank(index - integers, &mut z);
            Ok(z.map(|v| v as f32 + 0.5))
        }
    }
}

/// The nested-lattice (Voronoi) codebook Λ/qΛ (Conway & Sloane 1983).
///
/// It has exactly q^N points: one representative of every coset of qΛ in Λ, namely the one in
/// the Voronoi cell of qΛ around the origin (λ − q·Q_Λ(λ/q), with Q_Λ's tie rules deciding
/// points on the cell boundary). The index of a point is its coordinates in
/// `L::BASIS_TWICE` reduced mod q, as the mixed-radix number Σ cᵢ·q^i, so for q = 2^b the
/// index is exactly N·b bits with coordinate i in bits i·b .. (i+1)·b.
///
/// [`Codebook::encode`] is the standard Voronoi encoder: the index of the coset of the
/// closest lattice point of `x`; [`Codebook::quantize`] returns that coset's representative. When `x` lies outside the cell of qΛ (an *overload*)
/// the result is not the nearest codebook point; callers detect this by comparing with
/// `L::closest_point(x)` and scale accordingly.
///
/// For q a power of two every step is exact in f32; for other q the division λ/q is rounded
/// once (IEEE, so identical on every backend), which can only move ties on the cell boundary.
#[derive(Clone, Copy, Debug)]
pub struct VoronoiCodebook<L, const N: usize> {
    q: u32,
    inv_q: f32,
    lattice: PhantomData<L>,
}

impl<L: Lattice<N>, const N: usize> VoronoiCodebook<L, N> {
    /// Λ/qΛ.
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] unless `q ≥ 2`, q^N < 2^127 and q ≤ 2^16.
    pub fn new(q: u32) -> Result<Self, Error> {
        let max = max_voronoi_q(N);
        if !(2..=max).contains(&q) {
            return Err(Error::ParameterOutOfRange {
                name: "voronoi_q",
                value: u64::from(q),
                min: 2,
                max: u64::from(max),
            });
        }
        Ok(Self {
            q,
            inv_q: 1.0 / q as f32,
            lattice: PhantomData,
        })
    }

    /// The nesting ratio q.
    pub fn q(&self) -> u32 {
        self.q
    }

    /// λ − q·Q_Λ(λ/q) for a lattice point `lambda`: a point of the same coset of qΛ inside
    /// the Voronoi cell of qΛ. On the cell boundary the tie rules make the result depend on
    /// `lambda` itself, which is why the codebook's points are defined as the reduction of
    /// each coset's canonical member (basis coordinates in `0..q`).
    #[inline]
    pub fn reduce(&self, lambda: &[f32; N]) -> [f32; N] {
        self.recentre(lambda, &L::closest_point(&self.shrink(lambda)))
    }

    /// λ/q: a multiplication by the exact reciprocal when q is a power of two, a division
    /// otherwise (the two round alike for powers of two).
    #[inline]
    fn shrink(&self, lambda: &[f32; N]) -> [f32; N] {
        if self.q.is_power_of_two() {
            lambda.map(|v| v * self.inv_q)
        } else {
            lambda.map(|v| v / self.q as f32)
        }
    }

    /// λ − q·centre.
    #[inline]
    fn recentre(&self, lambda: &[f32; N], centre: &[f32; N]) -> [f32; N] {
        let q = self.q as f32;
        let mut out = *lambda;
        for i in 0..N {
            out[i] -= q * centre[i];
        }
        out
    }

    /// The coset's canonical member: basis coordinates `c`, each below q.
    ///
    /// # Panics
    /// Panics if a coordinate is not below q.
    #[inline]
    fn canonical(&self, c: &[u32; N]) -> [f32; N] {
        assert!(
            c.iter().all(|&ci| ci < self.q),
            "coset coordinates {c:?} not below q = {}",
            self.q
        );
        from_basis_coordinates::<L, N>(&c.map(|ci| ci as i32)).map(|t| t as f32 * 0.5)
    }
}

/// Largest q with q^n < 2^127 and q ≤ 2^16.
fn max_voronoi_q(n: usize) -> u32 {
    let mut q: u32 = 1 << 16;
    while (u128::from(q))
        .checked_pow(n as u32)
        .is_none_or(|c| c >= 1 << 127)
    {
        q /= 2;
    }
    q
}

impl<L: Lattice<N>, const N: usize> VoronoiCodebook<L, N> {
    /// The coset of the lattice point `lambda` as its basis coordinates mod q, each in
    /// `0..q`. The codebook point of this coset is `lambda` itself unless `lambda` lies
    /// outside the Voronoi cell of qΛ (compare with
    /// [`VoronoiCodebook::point_of_coordinates`] to detect overload).
    ///
    /// # Panics
    /// Panics if `lambda` is not a point of the lattice.
    #[inline]
    pub fn coset_coordinates(&self, lambda: &[f32; N]) -> [u32; N] {
        // Decoder outputs are half-integers within the exact domain: doubling is exact.
        let twice = Point {
            twice: lambda.map(|v| (v * 2.0) as i32),
        };
        let c = basis_coordinates::<L, N>(&twice);
        if self.q.is_power_of_two() {
            c.map(|ci| (ci & (self.q as i32 - 1)) as u32)
        } else {
            c.map(|ci| ci.rem_euclid(self.q as i32) as u32)
        }
    }

    /// [`VoronoiCodebook::coset_coordinates`] of eight lattice points in lanes (lane b of
    /// `lambda[i]` is coordinate i of point b), as f32 integers in `0..q`: the same
    /// back-substitution in f32, exact for these small integers (the basis's diagonal is
    /// powers of two, so each step multiplies by an exact reciprocal).
    ///
    /// # Panics
    /// Panics if a point is not a point of the lattice.
    #[inline]
    pub fn coset_coordinates_in_lanes(&self, lambda: &[f32x8; N]) -> [f32x8; N] {
        let mut c = [f32x8::ZERO; N];
        for j in (0..N).rev() {
            let mut rest = lambda[j] * f32x8::splat(2.0);
            for (i, &ci) in c.iter().enumerate().skip(j + 1) {
                let b = L::BASIS_TWICE[i][j];
                if b != 0 {
                    rest -= ci * f32x8::splat(b as f32);
                }
            }
            c[j] = rest * f32x8::splat(1.0 / L::BASIS_TWICE[j][j] as f32);
        }
        assert!(
            c.iter().all(|&ci| ci.round().simd_eq(ci).all()),
            "points {lambda:?} are not all in {}",
            L::NAME
        );
        let q = f32x8::splat(self.q as f32);
        c.map(|ci| {
            let quotient = if self.q.is_power_of_two() {
                ci * f32x8::splat(self.inv_q)
            } else {
                ci / q
            };
            ci - q * quotient.floor()
        })
    }

    /// The codebook point of the coset with basis coordinates `c` (each in `0..q`).
    ///
    /// # Panics
    /// Panics if a coordinate is not below q.
    #[inline]
    pub fn point_of_coordinates(&self, c: &[u32; N]) -> [f32; N] {
        self.reduce(&self.canonical(c))
    }

    /// [`VoronoiCodebook::point_of_coordinates`] of eight cosets at once, through
    /// [`Lattice::closest_points`]: the same points, faster where the lattice decodes blocks
    /// side by side.
    ///
    /// # Panics
    /// Panics if a coordinate is not below q.
    pub fn points_of_coordinates(&self, c: &[[u32; N]; 8]) -> [[f32; N]; 8] {
        let coords = c.map(|block| block.map(|ci| ci as f32));
        from_lanes(&self.points_of_coordinates_in_lanes(&to_lanes(&coords)))
    }

    /// [`VoronoiCodebook::points_of_coordinates`] with the eight cosets in lanes (see
    /// [`Lattice::closest_points_in_lanes`]): lane b of `c[i]` is basis coordinate i of coset
    /// b, an integer in `0..q` held as f32, and lane b of `result[i]` is coordinate i of its
    /// point. The canonical member's coordinates are sums of small integer multiples of the
    /// basis, exact in f32, so the points are those of the one-coset path bit for bit.
    ///
    /// # Panics
    /// Panics if a coordinate is not an integer in `0..q`.
    #[inline]
    pub fn points_of_coordinates_in_lanes(&self, c: &[f32x8; N]) -> [f32x8; N] {
        let q = f32x8::splat(self.q as f32);
        assert!(
            c.iter().all(
                |&ci| (ci.simd_ge(f32x8::ZERO) & ci.simd_lt(q) & ci.round().simd_eq(ci)).all()
            ),
            "coset coordinates {c:?} not integers below q = {}",
            self.q
        );
        self.points_of_reduced_coordinates_in_lanes(c)
    }

    /// [`VoronoiCodebook::points_of_coordinates_in_lanes`] without its check, for
    /// coordinates that [`VoronoiCodebook::coset_coordinates_in_lanes`] returned (integers in
    /// `0..q` by construction): the check cost about a twentieth of the encoder's time in
    /// the cell-boundary test.
    #[inline]
    fn points_of_reduced_coordinates_in_lanes(&self, c: &[f32x8; N]) -> [f32x8; N] {
        let q = f32x8::splat(self.q as f32);
        // λ = ½·Σᵢ cᵢ·BASIS_TWICE[i]: the basis is lower triangular and sparse, and the zero
        // entries (constants once the loops unroll) are skipped rather than multiplied.
        let mut lambda = [f32x8::ZERO; N];
        for (i, &ci) in c.iter().enumerate() {
            for (j, l) in lambda.iter_mut().enumerate().take(i + 1) {
                let b = L::BASIS_TWICE[i][j];
                if b != 0 {
                    *l += ci * f32x8::splat(b as f32);
                }
            }
        }
        let lambda = lambda.map(|l| l * f32x8::splat(0.5));
        let shrunk = if self.q.is_power_of_two() {
            lambda.map(|l| l * f32x8::splat(self.inv_q))
        } else {
            lambda.map(|l| l / q)
        };
        let centres = L::closest_points_in_lanes(&shrunk);
        std::array::from_fn(|i| lambda[i] - q * centres[i])
    }

    /// Whether the lattice point `lambda` is the codebook point of its own coset, i.e.
    /// encoding it loses nothing: `point_of_coordinates(coset_coordinates(lambda)) == lambda`.
    ///
    /// Points strictly inside the Voronoi cell of qΛ are codewords and points outside it are
    /// not, whatever the tie rules, which the cell's gauge ([`Lattice::cell_gauge`]) tells
    /// exactly for lattice points; only points on the boundary are decoded.
    ///
    /// # Panics
    /// Panics if `lambda` is not a point of the lattice.
    #[inline]
    pub fn is_codeword(&self, lambda: &[f32; N]) -> bool {
        let gauge = L::cell_gauge(lambda);
        let q = self.q as f32;
        if gauge != q {
            return gauge < q;
        }
        self.point_of_coordinates(&self.coset_coordinates(lambda)) == *lambda
    }

    /// [`VoronoiCodebook::is_codeword`] of eight lattice points at once.
    ///
    /// # Panics
    /// Panics if a point is not a point of the lattice.
    pub fn are_codewords(&self, lambdas: &[[f32; N]; 8]) -> [bool; 8] {
        self.are_codewords_in_lanes(&to_lanes(lambdas))
            .to_array()
            .map(|answer| answer.to_bits() != 0)
    }

    /// [`VoronoiCodebook::are_codewords`] of eight points held in lanes (lane b of
    /// `lanes[i]` is coordinate i of point b), as the lattice's lane decoders return them:
    /// a lane mask, all bits set where the point is a codeword.
    ///
    /// # Panics
    /// Panics if a point is not a point of the lattice.
    pub fn are_codewords_in_lanes(&self, lanes: &[f32x8; N]) -> f32x8 {
        let q = f32x8::splat(self.q as f32);
        let gauges = L::cell_gauges_in_lanes(lanes);
        let inside = gauges.simd_lt(q);
        let on_boundary = gauges.simd_eq(q);
        if !on_boundary.any() {
            return inside;
        }
        // On the boundary: whether the coset's point is the point itself, all eight at once
        // (the others' answers stand).
        let points =
            self.points_of_reduced_coordinates_in_lanes(&self.coset_coordinates_in_lanes(lanes));
        let same = (0..N).fold(f32x8::splat(f32::from_bits(u32::MAX)), |all, i| {
            all & points[i].simd_eq(lanes[i])
        });
        inside | (on_boundary & same)
    }

    /// Index of the coset of the lattice point `lambda`: [`VoronoiCodebook::coset_coordinates`]
    /// as the mixed-radix number Σ cᵢ·q^i.
    ///
    /// # Panics
    /// Panics if `lambda` is not a point of the lattice.
    pub fn coset_index(&self, lambda: &[f32; N]) -> u128 {
        let c = self.coset_coordinates(lambda);
        c.iter().rev().fold(0u128, |index, &ci| {
            index * u128::from(self.q) + u128::from(ci)
        })
    }
}

impl<L: Lattice<N>, const N: usize> Codebook<N> for VoronoiCodebook<L, N> {
    fn size(&self) -> u128 {
        u128::from(self.q).pow(N as u32)
    }

    /// The representative of the coset of `L::closest_point(x)`. It is computed from the
    /// coset's index, as the decoder does, so that the tie rules on the cell boundary are a
    /// function of the coset alone.
    fn quantize(&self, x: &[f32; N]) -> [f32; N] {
        self.point_at(self.encode(x))
            .expect("a coset index is below q^N")
    }

    fn index_of(&self, p: &[f32; N]) -> Option<u128> {
        let point = Point::try_from_f32(p)?;
        if !L::contains(&point) {
            return None;
        }
        let index = self.coset_index(p);
        (self.point_at(index).ok()? == *p).then_some(index)
    }

    fn point_at(&self, mut index: u128) -> Result<[f32; N], Error> {
        let count = self.size();
        if index >= count {
            return Err(Error::IndexOutOfRange { index, count });
        }
        let mut c = [0u32; N];
        for ci in &mut c {
            *ci = (index % u128::from(self.q)) as u32;
            index /= u128::from(self.q);
        }
        Ok(self.point_of_coordinates(&c))
    }

    #[inline]
    fn encode(&self, x: &[f32; N]) -> u128 {
        self.coset_index(&L::closest_point(x))
    }
}
