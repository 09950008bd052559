//! Codec specifications: which codec, with which parameters, as a value, a string
//! (`"voronoi-e8-q16-s4"`) and a header field (id + four `u32` parameters).

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The lattice of a compatibility-mode codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompatLattice {
    /// D4 blocks of 4 values.
    D4,
    /// E8 blocks of 8 values.
    E8,
}

/// A codec and its format-relevant parameters.
///
/// The string form is what `kvc` and configuration files use; [`CodecSpec::wire`] is what
/// the stream header stores. Both round-trip exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum CodecSpec {
    /// The published KakeyaLattice pipeline: f16 norm, Sylvester–Hadamard, f16 absmax, box
    /// codebook at `q`. `joint` packs all block indices of a vector as one mixed-radix number
    /// instead of a whole number of bits per block. String: `compat-d4-q38`, `compat-e8-q4-joint`.
    Compat {
        /// D4 or E8.
        lattice: CompatLattice,
        /// Box half-width Q in lattice units.
        q: u32,
        /// Joint (mixed-radix) index packing.
        joint: bool,
    },
    /// The nested-lattice E8 code E8/qE8 with `scales` per-block scale choices, random-sign
    /// Hadamard rotation and one 16-bit scale per vector. String: `voronoi-e8-q16-s4`.
    Voronoi {
        /// Nesting ratio q (2 ≤ q ≤ 2^15); log2 q bits per value when q is a power of two.
        q: u32,
        /// Number of per-block scale choices (1, 2 or 4).
        scales: u32,
    },
}

impl CodecSpec {
    /// The header form: a codec id and four parameters.
    pub fn wire(&self) -> (u16, [u32; 4]) {
        match *self {
            Self::Compat { lattice, q, joint } => {
                let id = match lattice {
                    CompatLattice::D4 => 1,
                    CompatLattice::E8 => 2,
                };
                (id, [q, u32::from(joint), 0, 0])
            }
            Self::Voronoi { q, scales } => (3, [q, scales, 0, 0]),
        }
    }

    /// The inverse of [`CodecSpec::wire`], for untrusted headers.
    ///
    /// # Errors
    /// [`Error::UnknownCodecId`] for an unknown id, [`Error::CorruptHeader`] for parameters
    /// no encoder writes.
    pub fn from_wire(id: u16, params: [u32; 4]) -> Result<Self, Error> {
        let spec = match id {
            1 | 2 => {
                if params[1] > 1 || params[2] != 0 || params[3] != 0 {
                    return Err(Error::CorruptHeader {
                        field: "codec parameters",
                    });
                }
                let lattice = if id == 1 {
                    CompatLattice::D4
                } else {
                    CompatLattice::E8
                };
                Self::Compat {
                    lattice,
                    q: params[0],
                    joint: params[1] == 1,
                }
            }
            3 => {
                if params[2] != 0 || params[3] != 0 {
                    return Err(Error::CorruptHeader {
                        field: "codec parameters",
                    });
                }
                Self::Voronoi {
                    q: params[0],
                    scales: params[1],
                }
            }
            _ => return Err(Error::UnknownCodecId { id }),
        };
        spec.validate().map_err(|_| Error::CorruptHeader {
            field: "codec parameters",
        })?;
        Ok(spec)
    }

    /// Checks the parameters' ranges (not the head_dim, which the codec checks).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad parameter.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Self::Compat { q, .. } => {
                if !(1..=lattice_core::MAX_BOX_Q).contains(&q) {
                    return Err(Error::InvalidParameter {
                        name: "q",
                        value: u64::from(q),
                        allowed: "1..=4095",
                    });
                }
            }
            Self::Voronoi { q, scales } => {
                if !(2..=1 << 15).contains(&q) {
                    return Err(Error::InvalidParameter {
                        name: "q",
                        value: u64::from(q),
                        allowed: "2..=32768",
                    });
                }
                if ![1, 2, 4].contains(&scales) {
                    return Err(Error::InvalidParameter {
                        name: "scales",
                        value: u64::from(scales),
                        allowed: "1, 2 or 4",
                    });
                }
            }
        }
        Ok(())
    }

    /// Example specs of every family, for `kvc codecs` and documentation.
    pub fn examples() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "voronoi-e8-q<q>-s<k>",
                "nested-lattice E8/qE8 code, k ∈ {1,2,4} scale choices per 8-block (default family)",
            ),
            (
                "compat-d4-q<Q>[-joint]",
                "published KakeyaLattice D4 box at Q (bit-compatible accounting)",
            ),
            (
                "compat-e8-q<Q>[-joint]",
                "published KakeyaLattice E8 box at Q, with valid (in-lattice) clamping",
            ),
        ]
    }
}

impl fmt::Display for CodecSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Compat { lattice, q, joint } => {
                let l = match lattice {
                    CompatLattice::D4 => "d4",
                    CompatLattice::E8 => "e8",
                };
                write!(f, "compat-{l}-q{q}{}", if joint { "-joint" } else { "" })
            }
            Self::Voronoi { q, scales } => write!(f, "voronoi-e8-q{q}-s{scales}"),
        }
    }
}

/// Parses `prefix<number>` from one dash-separated token.
fn number(token: Option<&str>, prefix: &str) -> Option<u32> {
    token?.strip_prefix(prefix)?.parse().ok()
}

impl FromStr for CodecSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let unknown = || Error::UnknownSpec { spec: s.to_owned() };
        let mut t = s.split('-');
        let spec = match t.next() {
            Some("compat") => {
                let lattice = match t.next() {
                    Some("d4") => CompatLattice::D4,
                    Some("e8") => CompatLattice::E8,
                    _ => return Err(unknown()),
                };
                let q = number(t.next(), "q").ok_or_else(unknown)?;
                let joint = match t.next() {
                    None => false,
                    Some("joint") => true,
                    Some(_) => return Err(unknown()),
                };
                Self::Compat { lattice, q, joint }
            }
            Some("voronoi") => {
                if t.next() != Some("e8") {
                    return Err(unknown());
                }
                let q = number(t.next(), "q").ok_or_else(unknown)?;
                let scales = number(t.next(), "s").ok_or_else(unknown)?;
                Self::Voronoi { q, scales }
            }
            _ => return Err(unknown()),
        };
        if t.next().is_some() {
            return Err(unknown());
        }
        spec.validate()?;
        Ok(spec)
    }
}

impl TryFrom<String> for CodecSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<CodecSpec> for String {
    fn from(spec: CodecSpec) -> String {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_wire_forms_round_trip() {
        for s in [
            "compat-d4-q38",
            "compat-e8-q4-joint",
            "voronoi-e8-q16-s4",
            "voronoi-e8-q3-s1",
        ] {
            let spec: CodecSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            let (id, params) = spec.wire();
            assert_eq!(CodecSpec::from_wire(id, params).unwrap(), spec);
        }
    }

    #[test]
    fn bad_specs_are_rejected() {
        for s in [
            "",
            "compat",
            "compat-d5-q3",
            "compat-d4-q0",
            "voronoi-e8-q16-s3",
            "voronoi-e8-q16-s4-x",
            "voronoi-d4-q4-s1",
        ] {
            assert!(s.parse::<CodecSpec>().is_err(), "{s}");
        }
        assert!(matches!(
            CodecSpec::from_wire(999, [0; 4]),
            Err(Error::UnknownCodecId { id: 999 })
        ));
        assert!(matches!(
            CodecSpec::from_wire(3, [16, 3, 0, 0]),
            Err(Error::CorruptHeader { .. })
        ));
    }
}
