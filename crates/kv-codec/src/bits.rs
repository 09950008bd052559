//! Little-endian, least-significant-bit-first bit packing within one vector's bytes.
//!
//! Bit `k` of the stream is bit `k % 8` of byte `k / 8`; a value of `n` bits is written
//! least significant bit first. This is the only bit order in the format (see FORMAT.md).

use crate::error::Error;

/// Writes values of 1–64 bits into a byte slice.
#[derive(Debug)]
pub struct BitWriter<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> BitWriter<'a> {
    /// A writer at bit 0 of `out`, which it zeroes first.
    pub fn new(out: &'a mut [u8]) -> Self {
        out.fill(0);
        Self { out, pos: 0 }
    }

    /// Appends the first `bits` bits of `src` (in this module's bit order).
    ///
    /// # Panics
    /// Panics if `src` holds fewer than `bits` bits or the output is full.
    pub fn write_bits_of(&mut self, src: &[u8], bits: usize) {
        let mut r = BitReader::new(src);
        let mut left = bits;
        while left > 0 {
            let take = left.min(64) as u32;
            self.write(r.read(take).expect("source holds the bits"), take);
            left -= take as usize;
        }
    }

    /// Appends `count` fields of `bits` bits each (1 to 32), field `k` being `f(k)`, with
    /// ⌊64 / bits⌋ fields per write instead of one write each (the mirror of
    /// [`BitReader::read_fields`]).
    ///
    /// # Panics
    /// As [`BitWriter::write`], if a field has bits set above `bits` or the slice is full.
    pub fn write_fields(&mut self, bits: u32, count: usize, mut f: impl FnMut(usize) -> u64) {
        debug_assert!((1..=32).contains(&bits));
        let per_write = (64 / bits) as usize;
        for first in (0..count).step_by(per_write) {
            let n = per_write.min(count - first);
            let mut word = 0u64;
            for k in 0..n {
                let field = f(first + k);
                assert!(field >> bits == 0, "field {field} does not fit {bits} bits");
                word |= field << (bits * k as u32);
            }
            self.write(word, bits * n as u32);
        }
    }

    /// Appends the low `bits` bits of `value`.
    ///
    /// # Panics
    /// Panics if `bits > 64`, if `value` has bits set above `bits`, or if the slice is full:
    /// codecs size their output exactly, so either is a bug.
    #[inline]
    pub fn write(&mut self, value: u64, bits: u32) {
        assert!(
            bits <= 64 && (bits == 64 || value >> bits == 0),
            "value {value} does not fit {bits} bits"
        );
        // Fast path: OR the value into a 16-byte window (the written bits never reach past
        // byte 9 of it; the other bytes are stored back unchanged).
        let byte = self.pos / 8;
        if let Some(window) = self.out.get_mut(byte..byte + 16) {
            let mut w = u128::from_le_bytes(window.try_into().expect("16 bytes"));
            w |= u128::from(value) << (self.pos % 8);
            window.copy_from_slice(&w.to_le_bytes());
            self.pos += bits as usize;
            return;
        }
        let mut value = value;
        let mut left = bits as usize;
        while left > 0 {
            let byte = self.pos / 8;
            let offset = self.pos % 8;
            let take = (8 - offset).min(left);
            self.out[byte] |= ((value & ((1 << take) - 1)) as u8) << offset;
            value >>= take;
            left -= take;
            self.pos += take;
        }
    }

    /// Appends the low `bits` bits of a little-endian limb array.
    pub fn write_limbs(&mut self, limbs: &[u64], bits: u32) {
        let mut left = bits;
        for &limb in limbs {
            let take = left.min(64);
            self.write(
                if take == 64 {
                    limb
                } else {
                    limb & ((1u64 << take) - 1)
                },
                take,
            );
            left -= take;
        }
        assert_eq!(left, 0, "limbs hold fewer than {bits} bits");
    }

    /// Bits written so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// Reads values of 1–64 bits from a byte slice, with an error instead of a panic at the end.
#[derive(Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at bit 0 of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Reads `bits` (≤ 64) bits.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than `bits` bits remain.
    #[inline]
    pub fn read(&mut self, bits: u32) -> Result<u64, Error> {
        debug_assert!(bits <= 64);
        let end = self.pos + bits as usize;
        if end > self.data.len() * 8 {
            return Err(Error::Truncated {
                needed: end.div_ceil(8),
                available: self.data.len(),
            });
        }
        // A 16-byte little-endian window holds any 64 bits from any bit offset.
        let byte = self.pos / 8;
        let value = match self.data.get(byte..byte + 16) {
            Some(window) => {
                let w = u128::from_le_bytes(window.try_into().expect("16 bytes"));
                (w >> (self.pos % 8)) & ((1u128 << bits) - 1)
            }
            None => self.near_the_end(bits),
        };
        self.pos = end;
        Ok(value as u64)
    }

    /// Reads `count` fields of `bits` bits each (1 to 32) and passes them in order to
    /// `f(k, field)`, taking ⌊64 / bits⌋ fields per read instead of one read each.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than `count · bits` bits remain (fields of the reads
    /// before the missing bits have been passed by then).
    pub fn read_fields(
        &mut self,
        bits: u32,
        count: usize,
        mut f: impl FnMut(usize, u64),
    ) -> Result<(), Error> {
        debug_assert!((1..=32).contains(&bits));
        let per_read = (64 / bits) as usize;
        let mask = (1u64 << bits) - 1;
        for first in (0..count).step_by(per_read) {
            let n = per_read.min(count - first);
            let mut word = self.read(bits * n as u32)?;
            for k in first..first + n {
                f(k, word & mask);
                word >>= bits;
            }
        }
        Ok(())
    }

    /// The `bits` bits at `pos` where fewer than 16 bytes are left (they are there): the
    /// window is then the data's last 16 bytes, which hold every bit from `pos` on (no copy:
    /// a per-vector reader spends a fifth of its reads here), or the data zero-padded.
    fn near_the_end(&self, bits: u32) -> u128 {
        if bits == 0 {
            return 0;
        }
        let (w, shift) = if let Some(start) = self.data.len().checked_sub(16) {
            let w = u128::from_le_bytes(self.data[start..].try_into().expect("16 bytes"));
            (w, self.pos - 8 * start)
        } else {
            let mut window = [0u8; 16];
            window[..self.data.len()].copy_from_slice(self.data);
            (u128::from_le_bytes(window), self.pos)
        };
        (w >> shift) & ((1u128 << bits) - 1)
    }

    /// Reads the next `bits` bits into `out` (zeroed first), starting at its bit 0.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than `bits` bits remain.
    pub fn read_bits_into(&mut self, out: &mut [u8], bits: usize) -> Result<(), Error> {
        let mut w = BitWriter::new(out);
        let mut left = bits;
        while left > 0 {
            let take = left.min(64) as u32;
            w.write(self.read(take)?, take);
            left -= take as usize;
        }
        Ok(())
    }

    /// Reads `bits` bits into little-endian limbs (the rest of `limbs` is zeroed).
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than `bits` bits remain.
    pub fn read_limbs(&mut self, limbs: &mut [u64], bits: u32) -> Result<(), Error> {
        let mut left = bits;
        for limb in limbs.iter_mut() {
            let take = left.min(64);
            *limb = self.read(take)?;
            left -= take;
        }
        Ok(())
    }
}

/// Copies `bits` bits starting at bit `from` of `src` to the start of `dst`, a byte at a
/// time (the fast path for reading one vector out of a page); the bits of `dst`'s last
/// used byte beyond `bits` are cleared, and `dst` past it is left alone.
///
/// # Panics
/// If `src` holds fewer than `from + bits` bits or `dst` fewer than `bits`.
pub fn extract_bits(src: &[u8], from: usize, bits: usize, dst: &mut [u8]) {
    let n = bits.div_ceil(8);
    if n == 0 {
        return;
    }
    let first = from / 8;
    let shift = from % 8;
    let dst = &mut dst[..n];
    if shift == 0 {
        dst.copy_from_slice(&src[first..first + n]);
    } else {
        // Every output byte but the last straddles two input bytes that both exist.
        for (i, o) in dst[..n - 1].iter_mut().enumerate() {
            *o = (src[first + i] >> shift) | (src[first + i + 1] << (8 - shift));
        }
        let hi = src.get(first + n).map_or(0, |b| b << (8 - shift));
        dst[n - 1] = (src[first + n - 1] >> shift) | hi;
    }
    if !bits.is_multiple_of(8) {
        dst[n - 1] &= (1u8 << (bits % 8)) - 1;
    }
}

/// ORs the first `bits` bits of `src` into `dst` from bit `at` on: appending a vector to a
/// page whose bits from `at` on are still zero. Bits of `src` beyond `bits` are ignored.
///
/// # Panics
/// If `dst` holds fewer than `at + bits` bits or `src` fewer than `bits`.
pub fn or_bits(dst: &mut [u8], at: usize, src: &[u8], bits: usize) {
    let n = bits.div_ceil(8);
    let first = at / 8;
    let shift = at % 8;
    for (i, &byte) in src[..n].iter().enumerate() {
        let b = if i == n - 1 && !bits.is_multiple_of(8) {
            byte & ((1u8 << (bits % 8)) - 1)
        } else {
            byte
        };
        dst[first + i] |= b << shift;
        // The high part is zero when the bits end inside this byte, which may be the last.
        if shift != 0 && b >> (8 - shift) != 0 {
            dst[first + i + 1] |= b >> (8 - shift);
        }
    }
}

/// Clears every bit of `dst` from bit `from` on (truncating a page).
///
/// # Panics
/// If `from` is beyond the end of `dst`.
pub fn clear_bits_from(dst: &mut [u8], from: usize) {
    let byte = from / 8;
    if !from.is_multiple_of(8) {
        dst[byte] &= (1u8 << (from % 8)) - 1;
        dst[byte + 1..].fill(0);
    } else {
        dst[byte..].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_mixed_widths() {
        let fields = [
            (1u64, 1u32),
            (0x2a, 6),
            (u64::MAX, 64),
            (0, 3),
            (0x0001_2345_6789, 37),
            (5, 3),
        ];
        let total: u32 = fields.iter().map(|f| f.1).sum();
        let mut buf = vec![0u8; (total as usize).div_ceil(8)];
        let mut w = BitWriter::new(&mut buf);
        for &(v, b) in &fields {
            w.write(v, b);
        }
        assert_eq!(w.position(), total as usize);
        let mut r = BitReader::new(&buf);
        for &(v, b) in &fields {
            assert_eq!(r.read(b).unwrap(), v);
        }
        assert!(matches!(r.read(8), Err(Error::Truncated { .. })));
    }

    #[test]
    fn bulk_bit_copies_agree_with_the_reader_and_writer() {
        // A pseudo-random source, fields of every offset and width up to 70 bits.
        let src: Vec<u8> = (0u32..24)
            .map(|i| (i.wrapping_mul(0x9e) ^ 0x5a) as u8)
            .collect();
        for from in 0..40 {
            for bits in 0..=70 {
                let mut fast = [0xffu8; 10];
                extract_bits(&src, from, bits, &mut fast);
                let mut slow = [0u8; 10];
                let mut r = BitReader::new(&src);
                r.read(from as u32).unwrap();
                r.read_bits_into(&mut slow[..bits.div_ceil(8)], bits)
                    .unwrap();
                assert_eq!(fast[..bits.div_ceil(8)], slow[..bits.div_ceil(8)]);

                // Writing the field back at another offset gives what a writer gives.
                let at = (from * 7) % 23;
                let mut page = vec![0u8; (at + bits).div_ceil(8)];
                or_bits(&mut page, at, &fast, bits);
                let mut expected = vec![0u8; page.len()];
                let mut w = BitWriter::new(&mut expected);
                w.write(0, at.min(64) as u32);
                w.write_bits_of(&slow, bits);
                assert_eq!(page, expected, "from {from} bits {bits}");

                clear_bits_from(&mut page, at);
                assert!(page.iter().all(|&b| b == 0));
            }
        }
        let mut b = [0xffu8; 3];
        clear_bits_from(&mut b, 11);
        assert_eq!(b, [0xff, 0x07, 0]);
        clear_bits_from(&mut b, 24);
        assert_eq!(b, [0xff, 0x07, 0]);
    }

    #[test]
    fn fields_read_many_at_once_are_the_single_reads() {
        let data: Vec<u8> = (0..97u32)
            .map(|i| (i.wrapping_mul(0x9e37_79b9) >> 13) as u8)
            .collect();
        for bits in 1..=32u32 {
            for offset in [0u32, 3, 13] {
                let count = (data.len() * 8 - offset as usize) / bits as usize;
                let mut one = BitReader::new(&data);
                one.read(offset).unwrap();
                let want: Vec<u64> = (0..count).map(|_| one.read(bits).unwrap()).collect();
                let mut many = BitReader::new(&data);
                many.read(offset).unwrap();
                let mut got = vec![u64::MAX; count];
                many.read_fields(bits, count, |k, field| got[k] = field)
                    .unwrap();
                assert_eq!(got, want, "{bits} bits from bit {offset}");
                // Fewer than `bits` bits are left.
                assert!(many.read_fields(bits, 1, |_, _| {}).is_err());
            }
        }
    }

    #[test]
    fn fields_written_many_at_once_are_the_single_writes() {
        let value =
            |k: usize, bits: u32| (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits);
        for bits in 1..=32u32 {
            for offset in [0u32, 3, 13] {
                let count = (97 * 8 - offset as usize) / bits as usize;
                let (mut a, mut b) = ([0u8; 97], [0u8; 97]);
                // A lead of `offset` bits, so that fields start inside a byte.
                let lead = 0b1_0110_1101_0101u64 & ((1 << offset) - 1);
                let mut one = BitWriter::new(&mut a);
                one.write(lead, offset);
                (0..count).for_each(|k| one.write(value(k, bits), bits));
                let mut many = BitWriter::new(&mut b);
                many.write(lead, offset);
                many.write_fields(bits, count, |k| value(k, bits));
                assert_eq!(a, b, "{bits} bits from bit {offset}");
            }
        }
    }

    #[test]
    fn bit_order_is_lsb_first() {
        let mut buf = [0u8; 2];
        let mut w = BitWriter::new(&mut buf);
        w.write(0b101, 3);
        w.write(0xff, 8);
        assert_eq!(buf, [0b1111_1101, 0b0000_0111]);
    }

    #[test]
    fn word_and_byte_paths_agree_with_a_bit_by_bit_model() {
        // 40 bytes: early fields take the 16-byte window path, the last ones the byte loop.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut fields = Vec::new();
            let mut total = 0;
            loop {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let bits = (state >> 58) as u32 + 1;
                if total + bits > 320 {
                    break;
                }
                let value = if bits == 64 {
                    state
                } else {
                    state & ((1 << bits) - 1)
                };
                fields.push((value, bits));
                total += bits;
            }
            let mut buf = [0xffu8; 40];
            let mut w = BitWriter::new(&mut buf);
            let mut model = Vec::new();
            for &(v, b) in &fields {
                w.write(v, b);
                model.extend((0..b).map(|i| (v >> i) & 1 == 1));
            }
            for (k, &bit) in model.iter().enumerate() {
                assert_eq!((buf[k / 8] >> (k % 8)) & 1 == 1, bit, "bit {k}");
            }
            assert!(buf[model.len().div_ceil(8)..].iter().all(|&b| b == 0));
            let mut r = BitReader::new(&buf);
            for &(v, b) in &fields {
                assert_eq!(r.read(b).unwrap(), v);
            }
        }
    }
}
