//! The kernels' parameter blocks: one 32-bit word per field, in the order of [`FIELDS`] (the
//! codecs' `Params`) or [`ATTN_FIELDS`] (the attention kernels' `AttnParams`).
//!
//! The CUDA side's structs are generated from the same tables (see [`c_struct`]), so the
//! layouts cannot drift apart: with only 4-byte fields, C lays a struct out as the array of
//! words this module writes.

/// How a field's word is read by the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `unsigned int`.
    U32,
    /// `float` (the word holds its bits).
    F32,
}

use Kind::{F32, U32};

/// Every field, in layout order.
pub(crate) const FIELDS: [(&str, Kind); 44] = [
    // Shape and launch.
    ("codec", U32),
    ("d", U32),
    ("p", U32),
    ("m", U32),
    ("t_per_vec", U32),
    ("vpw", U32),
    ("n", U32),
    ("chunk", U32),
    ("bits", U32),
    ("dtype", U32),
    // Rotation tables (word offsets into the plan's table buffer).
    ("off_masks", U32),
    ("off_mix", U32),
    // Voronoi E8/qE8.
    ("q", U32),
    ("q_pow2", U32),
    ("log2q", U32),
    ("scales", U32),
    ("choice_bits", U32),
    ("index_bits", U32),
    ("joint", U32),
    ("joint_bits", U32),
    ("joint_words", U32),
    ("inv_q", F32),
    ("qf", F32),
    ("fill_q", F32),
    ("alpha0", F32),
    ("alpha1", F32),
    ("alpha2", F32),
    ("alpha3", F32),
    // Per-value baselines.
    ("group", U32),
    ("vbits", U32),
    ("off_levels", U32),
    ("off_thresholds", U32),
    ("nthresholds", U32),
    // Compatibility box codecs (64-bit values as low and high words).
    ("cblock", U32),
    ("box_q", U32),
    ("box_qf", F32),
    ("block_bits", U32),
    ("off_counts", U32),
    ("off_counts_half", U32),
    ("size_lo", U32),
    ("size_hi", U32),
    ("int_size_lo", U32),
    ("int_size_hi", U32),
    ("joint_limbs", U32),
];

/// Number of 32-bit words in the block.
pub(crate) const WORDS: usize = FIELDS.len();

/// Every field of the attention kernels' block, in layout order.
pub(crate) const ATTN_FIELDS: [(&str, Kind); 21] = [
    // Shape of the call.
    ("batch", U32),
    ("kv_heads", U32),
    ("q_heads", U32),
    ("group", U32),
    ("streams", U32),
    ("len", U32),
    ("scale", F32),
    ("rot_k", U32),
    ("rot_v", U32),
    // Pages: tokens per page, page-table row length, bytes between pages of each pool.
    ("page_tokens", U32),
    ("max_pages", U32),
    ("k_stride", U32),
    ("v_stride", U32),
    // Work split: tokens per range (one thread block), ranges per stream, tokens per staged
    // chunk, and the words of a staging buffer (K's first).
    ("split", U32),
    ("splits", U32),
    ("chunk", U32),
    ("k_words", U32),
    ("stage_words", U32),
    // Page writes: vectors per stream, first position, bits per vector.
    ("count", U32),
    ("start", U32),
    ("bits", U32),
];

/// Number of 32-bit words in the attention block.
pub(crate) const ATTN_WORDS: usize = ATTN_FIELDS.len();

fn field_index(fields: &[(&str, Kind)], name: &str, kind: Kind) -> usize {
    let i = fields
        .iter()
        .position(|f| f.0 == name)
        .unwrap_or_else(|| panic!("kernel parameter {name} does not exist"));
    assert_eq!(
        fields[i].1, kind,
        "kernel parameter {name} has another type"
    );
    i
}

/// The attention kernels' parameter block, passed by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct AttnParams {
    words: [u32; ATTN_WORDS],
}

impl AttnParams {
    /// All fields zero.
    pub(crate) fn zeroed() -> Self {
        Self {
            words: [0; ATTN_WORDS],
        }
    }

    /// Sets an integer field.
    ///
    /// # Panics
    /// If the field does not exist or holds a float (a bug of this crate).
    pub(crate) fn set(&mut self, name: &str, value: u32) {
        self.words[field_index(&ATTN_FIELDS, name, U32)] = value;
    }

    /// Sets a float field.
    ///
    /// # Panics
    /// If the field does not exist or holds an integer (a bug of this crate).
    pub(crate) fn set_f32(&mut self, name: &str, value: f32) {
        self.words[field_index(&ATTN_FIELDS, name, F32)] = value.to_bits();
    }

    /// Reads an integer field.
    ///
    /// # Panics
    /// If the field does not exist or holds a float (a bug of this crate).
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> u32 {
        self.words[field_index(&ATTN_FIELDS, name, U32)]
    }

    /// The block as the kernels see it, one word per field in layout order.
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}

/// A filled parameter block, passed to a kernel by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Params {
    words: [u32; WORDS],
}

impl Params {
    /// All fields zero.
    pub(crate) fn zeroed() -> Self {
        Self { words: [0; WORDS] }
    }

    fn index(name: &str, kind: Kind) -> usize {
        field_index(&FIELDS, name, kind)
    }

    /// Sets an integer field.
    ///
    /// # Panics
    /// If the field does not exist or holds a float (a bug of this crate).
    pub(crate) fn set(&mut self, name: &str, value: u32) {
        self.words[Self::index(name, U32)] = value;
    }

    /// Sets a float field.
    ///
    /// # Panics
    /// If the field does not exist or holds an integer (a bug of this crate).
    pub(crate) fn set_f32(&mut self, name: &str, value: f32) {
        self.words[Self::index(name, F32)] = value.to_bits();
    }

    /// Reads an integer field.
    ///
    /// # Panics
    /// If the field does not exist or holds a float (a bug of this crate).
    pub(crate) fn get(&self, name: &str) -> u32 {
        self.words[Self::index(name, U32)]
    }

    /// The block as the kernels see it, one word per field in layout order.
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}

/// The CUDA declarations of both blocks.
pub(crate) fn c_struct() -> String {
    let mut s = c_struct_of("Params", &FIELDS);
    s.push_str(&c_struct_of("AttnParams", &ATTN_FIELDS));
    s
}

fn c_struct_of(name: &str, fields: &[(&str, Kind)]) -> String {
    let mut s = format!("struct {name} {{\n");
    for &(name, kind) in fields {
        let ty = match kind {
            U32 => "unsigned int",
            F32 => "float",
        };
        s.push_str(&format!("    {ty} {name};\n"));
    }
    s.push_str("};\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_struct_lists_them_in_order() {
        let text = c_struct();
        let mut last = 0;
        for (i, (name, _)) in FIELDS.iter().enumerate() {
            assert!(
                FIELDS[..i].iter().all(|f| f.0 != *name),
                "{name} appears twice"
            );
            let at = text.find(&format!(" {name};")).expect("field declared");
            assert!(at > last, "{name} out of order");
            last = at;
        }
        assert_eq!(std::mem::size_of::<Params>(), 4 * WORDS);
        assert_eq!(std::mem::size_of::<AttnParams>(), 4 * ATTN_WORDS);
        let attn = text.find("struct AttnParams").expect("declared");
        let mut last = attn;
        for (i, (name, _)) in ATTN_FIELDS.iter().enumerate() {
            assert!(
                ATTN_FIELDS[..i].iter().all(|f| f.0 != *name),
                "{name} twice"
            );
            let at = text[attn..].find(&format!(" {name};")).expect("declared") + attn;
            assert!(at > last, "{name} out of order");
            last = at;
        }
    }

    #[test]
    fn fields_round_trip() {
        let mut p = Params::zeroed();
        p.set("q", 16);
        p.set_f32("fill_q", 5.25);
        assert_eq!(p.get("q"), 16);
        assert_eq!(p.words()[Params::index("fill_q", F32)], 5.25f32.to_bits());
    }

    #[test]
    #[should_panic(expected = "does not exist")]
    fn unknown_fields_are_bugs() {
        Params::zeroed().set("nope", 1);
    }
}
