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
        let byte = self.pos / 8;
        if let Some(window) = self.data.get(byte..byte + 16) {
            let w = u128::from_le_bytes(window.try_into().expect("16 bytes"));
            let value = (w >> (self.pos % 8)) & ((1u128 << bits) - 1);
            self.pos = end;
            return Ok(value as u64);
        }
        let mut value = 0u64;
        let mut done = 0usize;
        while done < bits as usize {
            let byte = self.pos / 8;
            let offset = self.pos % 8;
            let take = (8 - offset).min(bits as usize - done);
            let chunk = (u64::from(self.data[byte]) >> offset) & ((1 << take) - 1);
            value |= chunk << done;
            done += take;
            self.pos += take;
        }
        Ok(value)
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
