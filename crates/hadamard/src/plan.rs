//! Plans ([`Fwht`]) and the caching [`Planner`].
//!
//! A plan owns everything a transform call needs (shape, mixing table, sign masks, the
//! kernel chosen for its tier), so the calls themselves allocate nothing and need no
//! scratch space.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::Arc;

use crate::simd::Kernel;
use crate::{Error, Shape, Tier, signs};

/// What one kernel call must do; shared by the scalar reference and the SIMD tiers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job<'a> {
    /// Row length `2^k`.
    pub(crate) pow2: usize,
    /// Number of rows `m`.
    pub(crate) odd: usize,
    /// `m * m` mixing weights, row-major, with the `1/sqrt(2^k)` factor folded in.
    pub(crate) table: &'a [f32],
    /// The plan's `n` sign masks (empty when the plan has no signs).
    pub(crate) masks: &'a [u32],
    /// Flip the input signs before the butterflies (forward with signs).
    pub(crate) pre: bool,
    /// Flip the output signs after the mixing (inverse with signs).
    pub(crate) post: bool,
}

impl Job<'_> {
    pub(crate) fn len(&self) -> usize {
        self.pow2 * self.odd
    }
}

/// The `m * m` mixing table of the transform of shape `shape`, row-major, as f32.
///
/// Entry `(r, j)` is `cas(2*pi*((r*j) mod m)/m) / sqrt(m * 2^k)` with `cas = cos + sin`,
/// evaluated in f64 (`cos` and `sin` of the f64 angle, their f64 sum, divided by the f64
/// square root of `n = m * 2^k`) and rounded to f32 once. For `m = 1` the table is the single
/// value `1/sqrt(2^k)`. The table is the orthonormal discrete Hartley matrix of size `m`
/// with the normalisation of the `2^k`-point butterflies folded in; it is exposed so that
/// other backends (a GPU kernel) can use the very same numbers.
///
/// ```
/// use hadamard::{Shape, mixing_table};
/// assert_eq!(mixing_table(Shape::of(64).unwrap()), [0.125]);
/// let t = mixing_table(Shape::of(12).unwrap()); // m = 3, 2^k = 4
/// assert_eq!(t.len(), 9);
/// assert_eq!(t[0], (1.0f64 / 12f64.sqrt()) as f32);
/// ```
pub fn mixing_table(shape: Shape) -> Vec<f32> {
    let m = shape.odd;
    let norm = ((m * shape.pow2) as f64).sqrt();
    let mut t = Vec::with_capacity(m * m);
    for r in 0..m {
        for j in 0..m {
            let theta = 2.0 * PI * ((r * j) % m) as f64 / m as f64;
            t.push(((theta.cos() + theta.sin()) / norm) as f32);
        }
    }
    t
}

/// Direction of a call: forward is `T·diag(s)`, inverse is `diag(s)·T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Inverse,
}

/// A planned orthonormal fast Walsh–Hadamard transform of one length, optionally with
/// frozen random signs; see the [crate docs](crate) for the exact definition.
///
/// Without signs `forward` and `inverse` are the same map `T` (which is symmetric and its
/// own inverse). With signs of seed `s`, `forward(x) = T·diag(s)·x` and
/// `inverse(y) = diag(s)·T·y`, so `inverse(forward(x)) = x` up to rounding.
///
/// All transform methods work on a batch: a slice of `count * len()` values holding
/// `count` vectors back to back. They allocate nothing and use no scratch space.
/// A plan is `Send + Sync`; run one batch per thread to parallelise.
#[derive(Debug, Clone)]
pub struct Fwht {
    shape: Shape,
    tier: Tier,
    kernel: Kernel,
    seed: Option<u64>,
    signs: Vec<f32>,
    masks: Vec<u32>,
    table: Vec<f32>,
}

// `len` is the plan's vector length and is never zero, so `is_empty` would be meaningless.
#[allow(clippy::len_without_is_empty)]
impl Fwht {
    /// The plain transform `T` of length `len` on the fastest tier of this CPU.
    ///
    /// # Errors
    /// [`Error::UnsupportedLength`] when `len` is not supported ([`crate::is_supported`]).
    pub fn new(len: usize) -> Result<Self, Error> {
        Self::with_tier(len, None, Tier::detect())
    }

    /// The randomised transform with the frozen signs of `seed`, on the fastest tier.
    ///
    /// # Errors
    /// [`Error::UnsupportedLength`] when `len` is not supported.
    pub fn with_signs(len: usize, seed: u64) -> Result<Self, Error> {
        Self::with_tier(len, Some(seed), Tier::detect())
    }

    /// A plan on a specific tier, with signs when `seed` is `Some`.
    ///
    /// # Errors
    /// [`Error::UnsupportedLength`] when `len` is not supported;
    /// [`Error::TierUnavailable`] when the CPU lacks `tier`.
    pub fn with_tier(len: usize, seed: Option<u64>, tier: Tier) -> Result<Self, Error> {
        let shape = Shape::of(len)?;
        tier.check()?;
        let kernel = Kernel::select(tier, shape.pow2);
        let (signs, masks) = match seed {
            Some(seed) => {
                let mut s = vec![0.0; len];
                signs::random_signs(seed, &mut s);
                (s, signs::sign_masks(seed, len))
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(Fwht {
            shape,
            tier,
            kernel,
            seed,
            signs,
            masks,
            table: mixing_table(shape),
        })
    }

    /// The vector length `n`.
    pub fn len(&self) -> usize {
        self.shape.len()
    }

    /// The factorisation `n = pow2 * odd`.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The tier this plan runs on.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The sign seed, if the plan is randomised.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The `len()` signs (`±1.0`), if the plan is randomised.
    pub fn signs(&self) -> Option<&[f32]> {
        self.seed.map(|_| self.signs.as_slice())
    }

    /// The `len()` sign masks (`0` or `0x8000_0000`, XORed into the f32 bits), if randomised.
    pub fn sign_masks(&self) -> Option<&[u32]> {
        self.seed.map(|_| self.masks.as_slice())
    }

    /// The `odd * odd` mixing table this plan multiplies by; see [`mixing_table`].
    pub fn mixing_table(&self) -> &[f32] {
        &self.table
    }

    /// Forward transform of every vector of `data`, in place.
    ///
    /// # Panics
    /// If `data.len()` is not a multiple of [`len`](Self::len).
    pub fn forward_inplace(&self, data: &mut [f32]) {
        self.run(Direction::Forward, None, data);
    }

    /// Inverse transform of every vector of `data`, in place.
    ///
    /// # Panics
    /// If `data.len()` is not a multiple of [`len`](Self::len).
    pub fn inverse_inplace(&self, data: &mut [f32]) {
        self.run(Direction::Inverse, None, data);
    }

    /// Forward transform of every vector of `input`, written to `output`.
    ///
    /// # Panics
    /// If the two lengths differ or are not a multiple of [`len`](Self::len).
    pub fn forward(&self, input: &[f32], output: &mut [f32]) {
        self.run(Direction::Forward, Some(input), output);
    }

    /// Inverse transform of every vector of `input`, written to `output`.
    ///
    /// # Panics
    /// If the two lengths differ or are not a multiple of [`len`](Self::len).
    pub fn inverse(&self, input: &[f32], output: &mut [f32]) {
        self.run(Direction::Inverse, Some(input), output);
    }

    fn run(&self, dir: Direction, input: Option<&[f32]>, data: &mut [f32]) {
        let n = self.len();
        assert!(
            data.len().is_multiple_of(n),
            "hadamard: batch length {} is not a multiple of the transform length {n}",
            data.len()
        );
        if let Some(input) = input {
            assert!(
                input.len() == data.len(),
                "hadamard: input length {} differs from output length {}",
                input.len(),
                data.len()
            );
        }
        let signed = self.seed.is_some();
        let job = Job {
            pow2: self.shape.pow2,
            odd: self.shape.odd,
            table: &self.table,
            masks: &self.masks,
            pre: signed && dir == Direction::Forward,
            post: signed && dir == Direction::Inverse,
        };
        self.kernel.run(&job, input, data);
    }
}

/// Builds plans and caches them by `(length, sign seed)`, RustFFT style.
///
/// The tier is detected once, when the planner is made. Plans are shared as [`Arc`], so a
/// plan obtained once can be cloned cheaply to worker threads.
///
/// ```
/// let mut planner = hadamard::Planner::new();
/// let a = planner.plan(128).unwrap();
/// let b = planner.plan(128).unwrap();
/// assert!(std::sync::Arc::ptr_eq(&a, &b));
/// ```
#[derive(Debug)]
pub struct Planner {
    tier: Tier,
    cache: HashMap<(usize, Option<u64>), Arc<Fwht>>,
}

impl Default for Planner {
    fn default() -> Self {
        Self::new()
    }
}

impl Planner {
    /// A planner for the fastest tier of this CPU.
    pub fn new() -> Self {
        Planner {
            tier: Tier::detect(),
            cache: HashMap::new(),
        }
    }

    /// A planner whose plans all run on `tier`.
    ///
    /// # Errors
    /// [`Error::TierUnavailable`] when the CPU lacks `tier`.
    pub fn with_tier(tier: Tier) -> Result<Self, Error> {
        tier.check()?;
        Ok(Planner {
            tier,
            cache: HashMap::new(),
        })
    }

    /// The tier of this planner's plans.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The plain transform of length `len` (cached).
    ///
    /// # Errors
    /// [`Error::UnsupportedLength`] when `len` is not supported.
    pub fn plan(&mut self, len: usize) -> Result<Arc<Fwht>, Error> {
        self.get(len, None)
    }

    /// The randomised transform of length `len` with the signs of `seed` (cached).
    ///
    /// # Errors
    /// [`Error::UnsupportedLength`] when `len` is not supported.
    pub fn plan_with_signs(&mut self, len: usize, seed: u64) -> Result<Arc<Fwht>, Error> {
        self.get(len, Some(seed))
    }

    fn get(&mut self, len: usize, seed: Option<u64>) -> Result<Arc<Fwht>, Error> {
        if let Some(p) = self.cache.get(&(len, seed)) {
            return Ok(Arc::clone(p));
        }
        let plan = Arc::new(Fwht::with_tier(len, seed, self.tier)?);
        self.cache.insert((len, seed), Arc::clone(&plan));
        Ok(plan)
    }
}
