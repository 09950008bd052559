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
        /// Number of per-block scale choices (1 to 4).
        scales: u32,
    },
    /// Baseline: bfloat16 passthrough, 16 bits per value. String: `bf16`.
    Bf16,
    /// Baseline: OCP FP8 E4M3FN values with one 16-bit scale per `group` values (0: one per
    /// vector), as vLLM's FP8 KV cache. String: `fp8-e4m3`, `fp8-e4m3-g64`.
    Fp8E4m3 {
        /// Values per scale; 0 for the whole vector.
        group: u32,
    },
    /// Baseline: symmetric absmax integers of `bits` bits (levels ±(2^(bits−1) − 1)) with one
    /// f16 scale per `group` values (0: one per vector), no rotation: per-token KV
    /// quantisation as engines do it. String: `int8`, `int4`, `int4-g32`.
    Int {
        /// Bits per value (2..=8).
        bits: u32,
        /// Values per scale; 0 for the whole vector.
        group: u32,
    },
    /// Baseline: llama.cpp's `q8_0` (`bits` = 8) or `q4_0` (`bits` = 4) blocks of 32 values,
    /// after a random-sign Hadamard rotation. String: `q8_0`, `q4_0`.
    LlamaCpp {
        /// 4 or 8.
        bits: u32,
    },
    /// Baseline: TurboQuant-MSE (Zandieh et al. 2025): random-sign Hadamard rotation of the
    /// unit vector, the `bits`-bit Lloyd–Max quantiser of N(0, 1/d) per coordinate, 16-bit
    /// norm. String: `turboquant-b3`.
    TurboQuant {
        /// Bits per coordinate (2..=8).
        bits: u32,
    },
    /// Baseline, labelled as such: the uniform quantiser the published KakeyaLattice
    /// repository calls "TurboQuant" (2^bits − 1 levels over ±absmax after the Sylvester
    /// Hadamard rotation of the unit vector, f16 norm and f16 absmax). Not the real method.
    /// String: `strawman-b3`.
    Strawman {
        /// Bits per coordinate (2..=8).
        bits: u32,
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
            Self::Bf16 => (WIRE_BF16, [0; 4]),
            Self::Fp8E4m3 { group } => (WIRE_FP8_E4M3, [group, 0, 0, 0]),
            Self::Int { bits, group } => (WIRE_INT, [bits, group, 0, 0]),
            Self::LlamaCpp { bits } => (WIRE_LLAMA_CPP, [bits, 0, 0, 0]),
            Self::TurboQuant { bits } => (WIRE_TURBOQUANT, [bits, 0, 0, 0]),
            Self::Strawman { bits } => (WIRE_STRAWMAN, [bits, 0, 0, 0]),
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
            WIRE_BF16..=WIRE_STRAWMAN => {
                // Baselines use their leading parameters only; the rest must be zero.
                let used = match id {
                    WIRE_BF16 => 0,
                    WIRE_INT => 2,
                    _ => 1,
                };
                if params[used..].iter().any(|&p| p != 0) {
                    return Err(Error::CorruptHeader {
                        field: "codec parameters",
                    });
                }
                match id {
                    WIRE_BF16 => Self::Bf16,
                    WIRE_FP8_E4M3 => Self::Fp8E4m3 { group: params[0] },
                    WIRE_INT => Self::Int {
                        bits: params[0],
                        group: params[1],
                    },
                    WIRE_LLAMA_CPP => Self::LlamaCpp { bits: params[0] },
                    WIRE_TURBOQUANT => Self::TurboQuant { bits: params[0] },
                    _ => Self::Strawman { bits: params[0] },
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
                if !(1..=4).contains(&scales) {
                    return Err(Error::InvalidParameter {
                        name: "scales",
                        value: u64::from(scales),
                        allowed: "1 to 4",
                    });
                }
            }
            Self::Bf16 => {}
            Self::Fp8E4m3 { group } => check_group(group)?,
            Self::Int { bits, group } => {
                check_bits(bits, 2..=8, "2..=8")?;
                check_group(group)?;
            }
            Self::LlamaCpp { bits } => {
                if bits != 4 && bits != 8 {
                    return Err(Error::InvalidParameter {
                        name: "bits",
                        value: u64::from(bits),
                        allowed: "4 (q4_0) or 8 (q8_0)",
                    });
                }
            }
            Self::TurboQuant { bits } | Self::Strawman { bits } => {
                check_bits(bits, 2..=8, "2..=8")?;
            }
        }
        Ok(())
    }

    /// Example specs of every family, for `kvc codecs` and documentation.
    pub fn examples() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "voronoi-e8-q<q>-s<k>",
                "nested-lattice E8/qE8 code, k ∈ 1..=4 scale choices per 8-block (default family)",
            ),
            (
                "compat-d4-q<Q>[-joint]",
                "published KakeyaLattice D4 box at Q (bit-compatible accounting)",
            ),
            (
                "compat-e8-q<Q>[-joint]",
                "published KakeyaLattice E8 box at Q, with valid (in-lattice) clamping",
            ),
            ("bf16", "baseline: bfloat16 passthrough, 16 bits per value"),
            (
                "fp8-e4m3[-g<n>]",
                "baseline: OCP FP8 E4M3FN, one 16-bit scale per vector (or per n values); vLLM's FP8 KV",
            ),
            (
                "int<b>[-g<n>]",
                "baseline: per-token absmax integers, b ∈ 2..=8, one f16 scale per vector (or per n values), no rotation",
            ),
            (
                "q8_0",
                "baseline: llama.cpp q8_0 (32-value blocks, f16 scale + int8) after random-sign Hadamard, 8.5 bits/value",
            ),
            (
                "q4_0",
                "baseline: llama.cpp q4_0 (32-value blocks, f16 scale + 4-bit) after random-sign Hadamard, 4.5 bits/value",
            ),
            (
                "turboquant-b<b>",
                "baseline: TurboQuant-MSE (Zandieh et al. 2025): random-sign Hadamard + Gaussian Lloyd–Max, b ∈ 2..=8, 16-bit norm",
            ),
            (
                "strawman-b<b>",
                "STRAWMAN baseline: what the published repo calls \"TurboQuant\" (uniform 2^b−1 levels, f16 norm + absmax); not the real method",
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
            Self::Bf16 => f.write_str("bf16"),
            Self::Fp8E4m3 { group } => write!(f, "fp8-e4m3{}", GroupSuffix(group)),
            Self::Int { bits, group } => write!(f, "int{bits}{}", GroupSuffix(group)),
            Self::LlamaCpp { bits } => write!(f, "q{bits}_0"),
            Self::TurboQuant { bits } => write!(f, "turboquant-b{bits}"),
            Self::Strawman { bits } => write!(f, "strawman-b{bits}"),
        }
    }
}

/// Parses `prefix<number>` from one dash-separated token.
fn number(token: Option<&str>, prefix: &str) -> Option<u32> {
    token?.strip_prefix(prefix)?.parse().ok()
}

// Wire ids of the baselines (ids below 16 are kept for the lattice codecs).
const WIRE_BF16: u16 = 16;
const WIRE_FP8_E4M3: u16 = 17;
const WIRE_INT: u16 = 18;
const WIRE_LLAMA_CPP: u16 = 19;
const WIRE_TURBOQUANT: u16 = 20;
const WIRE_STRAWMAN: u16 = 21;

/// Like [`number`], but canonical only: ASCII digits without a sign or a leading zero, so
/// that every accepted string is the one `Display` writes.
fn canonical_number(token: Option<&str>, prefix: &str) -> Option<u32> {
    let digits = token?.strip_prefix(prefix)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// Parses the optional `g<n>` token of a grouped baseline (absent: 0, the whole vector).
/// An explicit `g0` is refused, so that each spec has exactly one string.
fn group_token(token: Option<&str>) -> Option<u32> {
    match token {
        None => Some(0),
        Some(t) => canonical_number(Some(t), "g").filter(|&g| g > 0),
    }
}

/// Writes `-g<n>` for an explicit group, nothing for the whole vector.
struct GroupSuffix(u32);

impl fmt::Display for GroupSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, "-g{}", self.0)
        }
    }
}

fn check_bits(
    bits: u32,
    range: core::ops::RangeInclusive<u32>,
    allowed: &'static str,
) -> Result<(), Error> {
    if range.contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name: "bits",
            value: u64::from(bits),
            allowed,
        })
    }
}

/// A group of values per scale: 0 (the whole vector) or 1..=4096.
fn check_group(group: u32) -> Result<(), Error> {
    if group as usize > hadamard::MAX_LEN {
        return Err(Error::InvalidParameter {
            name: "group",
            value: u64::from(group),
            allowed: "0 (whole vector) or 1..=4096",
        });
    }
    Ok(())
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
            Some("bf16") => Self::Bf16,
            Some("fp8") => {
                if t.next() != Some("e4m3") {
                    return Err(unknown());
                }
                Self::Fp8E4m3 {
                    group: group_token(t.next()).ok_or_else(unknown)?,
                }
            }
            Some("q4_0") => Self::LlamaCpp { bits: 4 },
            Some("q8_0") => Self::LlamaCpp { bits: 8 },
            Some("turboquant") => Self::TurboQuant {
                bits: canonical_number(t.next(), "b").ok_or_else(unknown)?,
            },
            Some("strawman") => Self::Strawman {
                bits: canonical_number(t.next(), "b").ok_or_else(unknown)?,
            },
            Some(tok) if tok.starts_with("int") => {
                let bits = canonical_number(Some(tok), "int").ok_or_else(unknown)?;
                Self::Int {
                    bits,
                    group: group_token(t.next()).ok_or_else(unknown)?,
                }
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
            "voronoi-e8-q16-s5",
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
            CodecSpec::from_wire(3, [16, 5, 0, 0]),
            Err(Error::CorruptHeader { .. })
        ));
    }
}
