//! `lattice-core`: lattices, closest-point decoders and codebooks for lattice vector
//! quantisation.
//!
//! This is the pure-math leaf of the kv-codec workspace. It provides
//!
//! * the lattices [`Zn`], [`Dn`] ([`D4`], [`D8`]) and [`E8`] with the closest-point decoders
//!   of Conway & Sloane ("Fast quantizing and decoding algorithms for lattice quantizers and
//!   codes", IEEE Trans. IT 28, 1982), with documented tie rules (see [`lattice`]);
//! * finite [`Codebook`]s with exact sizes and bijective index ↔ point maps: box codebooks
//!   ([`ZBox`], [`DBox`], [`E8Box`]) as in the published KakeyaLattice codec, but with an
//!   encoder that stays inside the lattice, and nested-lattice (Voronoi) codebooks
//!   [`VoronoiCodebook`] (Conway & Sloane, "A fast encoding method for lattice codes and
//!   quantizers", IEEE Trans. IT 29, 1983);
//! * joint [`MixedRadix`] indexing of many blocks into one integer.
//!
//! Hot entry points take and return fixed-size arrays and never allocate.
//!
//! ```
//! use lattice_core::{Codebook, E8, E8Box, Lattice};
//!
//! let x = [0.4, 0.6, -1.2, 0.1, 0.5, 0.5, 0.2, -0.3];
//! assert_eq!(E8::closest_point(&x), [0.5, 0.5, -1.5, -0.5, 0.5, 0.5, 0.5, -0.5]);
//!
//! let book = E8Box::new(1).unwrap(); // E8 ∩ [−1, 1]^8
//! let index = book.encode(&x);
//! assert_eq!(book.point_at(index).unwrap(), book.quantize(&x));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codebook;
mod error;
pub mod lattice;
pub mod mixed_radix;

pub use codebook::{Codebook, D4Box, D8Box, DBox, E8Box, MAX_BOX_Q, VoronoiCodebook, ZBox};
pub use error::Error;
pub use lattice::{
    D4, D8, Dn, E8, Lattice, MAX_ABS_COORD, Point, Zn, round_ties_even, round_ties_even_x8,
};
pub use mixed_radix::{MixedRadix, limbs_for_bits};
