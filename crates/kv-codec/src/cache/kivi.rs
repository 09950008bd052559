//! KIVI as a cache policy and baseline (Liu, Yuan, Jin, Zhong, Xu, Braverman, Chen and Hu,
//! "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache", ICML 2024).
//!
//! KIVI observes that keys have outlier *channels* and values do not, so it quantises keys
//! per channel and values per token, both asymmetrically (a minimum and a step per group,
//! `2^b` levels from the minimum up), and keeps the most recent tokens in full precision:
//!
//! * keys: per channel, over groups of `G` consecutive tokens of one stream (batch row and
//!   KV head); a group is written once its `G` tokens are known, so it is the unit of the
//!   key pages;
//! * values: per token, over groups of `G` channels (`G` divides `head_dim`);
//! * the last `R` tokens (at least `R`, fewer than `R + G`) stay in f16: tokens leave the
//!   f16 window in whole key groups once it holds `R + G` of them.
//!
//! The published implementation flushes the key window when it reaches `R` tokens (so
//! 0…R−1 recent keys are exact) and keeps exactly `R` recent values; this policy keeps at
//! least `R` of both, which is what "the last R tokens in f16" promises.
//!
//! Each group stores its minimum `m` and step `s = (max − min) / (2^b − 1)` in the 16-bit
//! [`f16x`] format (IEEE f16 as KIVI stores them, with an escape that keeps huge inputs
//! finite); the encoder quantises with the stored values,
//! `q = clamp(round_ties_even((x − m) / s), 0, 2^b − 1)` (0 when `s` is 0), and decoding is
//! `x̂ = m + s·q`, saturated. Neither rotates.
//!
//! Layouts (bits least significant first, as everywhere): a key group is `head_dim` pairs
//! (minimum, step) of 16 bits, then the `G · head_dim` codes of `b` bits token by token,
//! padded to a whole byte; a value vector is, per channel group, minimum, step and `G` codes.
//! Both cost `b + 32/G` bits per value.

use hadamard::Fwht;
use serde::{Deserialize, Serialize};

use super::store::{PageFormat, ReadError, Scratch, VectorCoder};
use crate::bits::{BitReader, BitWriter};
use crate::codecs::baselines::{f16x, saturate};
use crate::error::Error;

/// The KIVI policy of a layer (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Kivi {
    /// Bits per code, 2..=8 (KIVI's published settings are 2 and 4).
    pub bits: u32,
    /// Tokens per key group and channels per value group (KIVI uses 32).
    pub group: u32,
    /// Recent tokens kept in f16 (KIVI uses 32 to 128).
    pub residual: u32,
}

impl Kivi {
    /// KIVI-2 as published: 2 bits, groups of 32, 128 recent tokens in f16.
    pub const KIVI2: Self = Self {
        bits: 2,
        group: 32,
        residual: 128,
    };

    /// Checks the parameters against a layer of `head_dim` values and pages of
    /// `page_tokens` tokens.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for bits outside 2..=8, a group of 0, one that does not
    /// divide `head_dim` or `page_tokens`, or a residual above 2^20 tokens.
    pub fn validate(&self, head_dim: usize, page_tokens: usize) -> Result<(), Error> {
        if !(2..=8).contains(&self.bits) {
            return Err(Error::InvalidParameter {
                name: "bits",
                value: u64::from(self.bits),
                allowed: "2..=8",
            });
        }
        let g = self.group as usize;
        if g == 0 || !head_dim.is_multiple_of(g) || !page_tokens.is_multiple_of(g) {
            return Err(Error::InvalidParameter {
                name: "group",
                value: u64::from(self.group),
                allowed: "a divisor of both head_dim and the page's tokens",
            });
        }
        if self.residual > 1 << 20 {
            return Err(Error::InvalidParameter {
                name: "residual",
                value: u64::from(self.residual),
                allowed: "0..=1048576",
            });
        }
        Ok(())
    }

    fn top(&self) -> u32 {
        (1 << self.bits) - 1
    }
}

/// The stored minimum and step of a group: their codes and values.
struct Fit {
    codes: (u16, u16),
    min: f32,
    step: f32,
}

/// Fits the asymmetric quantiser of `2^b` levels to a group of finite values.
fn fit(values: impl Iterator<Item = f32>, top: u32) -> Fit {
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    // The range of two finite f32 can exceed f32::MAX; the step saturates instead.
    let step = ((f64::from(hi) - f64::from(lo)) / f64::from(top)).min(f64::from(f32::MAX)) as f32;
    let codes = (f16x::encode(lo), f16x::encode(step));
    Fit {
        codes,
        min: f16x::decode(codes.0).expect("encode writes decodable codes"),
        step: f16x::decode(codes.1).expect("encode writes decodable codes"),
    }
}

impl Fit {
    /// The level of `v`, with the stored minimum and step.
    fn level(&self, v: f32, top: u32) -> u64 {
        if self.step > 0.0 {
            let q = ((f64::from(v) - f64::from(self.min)) / f64::from(self.step)).round_ties_even();
            q.clamp(0.0, f64::from(top)) as u64
        } else {
            0
        }
    }
}

/// Reads a (minimum, step) pair, refusing codes no encoder writes.
fn read_fit(r: &mut BitReader<'_>) -> Result<(f32, f32), &'static str> {
    let min = f16x::decode(r.read(16).map_err(|_| "truncated")? as u16)
        .ok_or("minimum escape out of range")?;
    let step = f16x::decode(r.read(16).map_err(|_| "truncated")? as u16)
        .ok_or("step escape out of range")?;
    if step.is_sign_negative() {
        return Err("step is negative");
    }
    Ok((min, step))
}

/// KIVI's keys: per channel over groups of tokens (see the module docs).
#[derive(Debug)]
pub(crate) struct KiviKeys {
    pub(crate) kivi: Kivi,
    pub(crate) head_dim: usize,
}

impl KiviKeys {
    fn group(&self) -> usize {
        self.kivi.group as usize
    }

    fn group_bytes(&self) -> usize {
        let d = self.head_dim;
        (32 * d + self.group() * d * self.kivi.bits as usize).div_ceil(8)
    }
}

impl PageFormat for KiviKeys {
    fn page_bytes(&self, tokens: usize) -> usize {
        tokens / self.group() * self.group_bytes()
    }

    fn unit(&self) -> usize {
        self.group()
    }

    fn bit_of(&self, slot: usize) -> usize {
        slot / self.group() * self.group_bytes() * 8
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            floats: vec![0.0; 2 * self.head_dim],
            bytes: Vec::new(),
        }
    }

    fn rotation(&self) -> Option<&Fwht> {
        None
    }

    fn write(&self, page: &mut [u8], slot: usize, x: &[f32], _scratch: &mut Scratch) {
        let (d, g, top) = (self.head_dim, self.group(), self.kivi.top());
        let gb = self.group_bytes();
        for (j, group) in x.chunks_exact(g * d).enumerate() {
            let at = slot / g * gb + j * gb;
            let mut w = BitWriter::new(&mut page[at..at + gb]);
            let fits: Vec<Fit> = (0..d)
                .map(|c| fit(group.iter().skip(c).step_by(d).copied(), top))
                .collect();
            for f in &fits {
                w.write(u64::from(f.codes.0), 16);
                w.write(u64::from(f.codes.1), 16);
            }
            for token in group.chunks_exact(d) {
                for (&v, f) in token.iter().zip(&fits) {
                    w.write(f.level(v, top), self.kivi.bits);
                }
            }
        }
    }

    fn read(
        &self,
        page: &[u8],
        slot: usize,
        out: &mut [f32],
        _rotated: bool,
        scratch: &mut Scratch,
    ) -> Result<(), ReadError> {
        let (d, g) = (self.head_dim, self.group());
        let gb = self.group_bytes();
        let (mins, steps) = scratch.floats.split_at_mut(d);
        for (j, group) in out.chunks_exact_mut(g * d).enumerate() {
            let at = slot / g * gb + j * gb;
            let bytes = page.get(at..at + gb).ok_or((j * g, "truncated"))?;
            let mut r = BitReader::new(bytes);
            for c in 0..d {
                (mins[c], steps[c]) = read_fit(&mut r).map_err(|e| (j * g, e))?;
            }
            for (t, token) in group.chunks_exact_mut(d).enumerate() {
                for (c, o) in token.iter_mut().enumerate() {
                    let q = r
                        .read(self.kivi.bits)
                        .map_err(|_| (j * g + t, "truncated"))?;
                    *o = saturate(mins[c] + steps[c] * q as f32);
                }
            }
        }
        Ok(())
    }
}

/// KIVI's values: per token over groups of channels (see the module docs).
#[derive(Debug)]
pub(crate) struct KiviValues {
    pub(crate) kivi: Kivi,
    pub(crate) head_dim: usize,
}

impl VectorCoder for KiviValues {
    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn bits(&self) -> usize {
        let g = self.kivi.group as usize;
        self.head_dim / g * (32 + g * self.kivi.bits as usize)
    }

    fn scratch_len(&self) -> usize {
        0
    }

    fn rotation(&self) -> Option<&Fwht> {
        None
    }

    fn encode(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        let top = self.kivi.top();
        let mut w = BitWriter::new(out);
        for group in x.chunks_exact(self.kivi.group as usize) {
            let f = fit(group.iter().copied(), top);
            w.write(u64::from(f.codes.0), 16);
            w.write(u64::from(f.codes.1), 16);
            for &v in group {
                w.write(f.level(v, top), self.kivi.bits);
            }
        }
    }

    fn decode(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _rotated: bool,
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        let mut r = BitReader::new(bytes);
        for group in out.chunks_exact_mut(self.kivi.group as usize) {
            let (min, step) = read_fit(&mut r)?;
            for o in group.iter_mut() {
                let q = r.read(self.kivi.bits).map_err(|_| "truncated")?;
                *o = saturate(min + step * q as f32);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_quantised_per_channel_and_values_per_token() {
        // Two tokens of 4 channels, 2 bits, groups of 2: channel 0 spans 0..3 over the
        // tokens, so its step is 1 and both tokens are exact.
        let kivi = Kivi {
            bits: 2,
            group: 2,
            residual: 0,
        };
        let keys = KiviKeys { kivi, head_dim: 4 };
        let x = [0.0, 10.0, -1.0, 5.0, 3.0, 10.0, 2.0, 8.0];
        let mut page = vec![0u8; keys.page_bytes(2)];
        assert_eq!(page.len(), (32 * 4 + 2 * 4 * 2) / 8);
        let mut scratch = keys.scratch();
        keys.write(&mut page, 0, &x, &mut scratch);
        let mut y = [0f32; 8];
        keys.read(&page, 0, &mut y, false, &mut scratch).unwrap();
        assert_eq!(y, x, "every channel has two values and four levels");

        let values = KiviValues { kivi, head_dim: 4 };
        assert_eq!(values.bits(), 2 * (32 + 2 * 2));
        let mut bytes = vec![0u8; values.bits().div_ceil(8)];
        values.encode(&[0.0, 3.0, 1.0, 1.0], &mut bytes, &mut []);
        let mut v = [9f32; 4];
        values.decode(&bytes, &mut v, false, &mut []).unwrap();
        assert_eq!(v, [0.0, 3.0, 1.0, 1.0]);
    }

    #[test]
    fn validation_names_the_parameter() {
        let ok = Kivi::KIVI2;
        assert!(ok.validate(128, 64).is_ok());
        let bad = |k: Kivi, d, p| match k.validate(d, p) {
            Err(Error::InvalidParameter { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(Kivi { bits: 1, ..ok }, 128, 64), "bits");
        assert_eq!(bad(ok, 80, 64), "group");
        assert_eq!(bad(ok, 128, 48), "group");
        assert_eq!(bad(Kivi { group: 0, ..ok }, 128, 64), "group");
    }
}
