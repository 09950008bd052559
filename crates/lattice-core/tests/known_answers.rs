//! Known answers, pinned as insta snapshots: decoder outputs for hand-picked inputs (ties
//! included) and the exact sizes and index widths of the published codebooks.

use std::fmt::Write;

use lattice_core::{Codebook, D4, D4Box, E8, E8Box, Lattice, MixedRadix, VoronoiCodebook};

#[test]
fn closest_points() {
    let inputs4: [[f32; 4]; 5] = [
        [0.5, 0.5, 0.5, 0.5],
        [1.5, -0.5, 0.2, 0.0],
        [0.9, 0.1, 0.0, 0.0],
        [-2.6, 3.4, 0.5, -0.49],
        [100.25, -7.75, 3.5, 2.5],
    ];
    let inputs8: [[f32; 8]; 5] = [
        [0.25; 8],
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4],
        [1.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.4],
        [-0.7, 0.3, 2.2, -1.9, 0.0, 0.5, -0.5, 1.1],
        [10.2, -3.3, 0.75, 0.25, -0.25, 5.5, 6.5, -7.5],
    ];
    let mut out = String::new();
    for x in &inputs4 {
        writeln!(out, "D4 {x:?} -> {:?}", D4::closest_point(x)).unwrap();
    }
    for x in &inputs8 {
        writeln!(out, "E8 {x:?} -> {:?}", E8::closest_point(x)).unwrap();
    }
    let e8 = E8Box::new(1).unwrap();
    for x in &inputs8 {
        let p = e8.quantize(x);
        writeln!(out, "E8 box Q=1 {x:?} -> {p:?} #{}", e8.encode(x)).unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn published_codebook_sizes() {
    let mut out = String::from(
        "codebook        points                     bits/block  joint bits at d=128\n",
    );
    for q in [10u32, 38, 152] {
        let book = D4Box::new(q).unwrap();
        let joint = MixedRadix::uniform(u64::try_from(book.size()).unwrap(), 32).unwrap();
        writeln!(
            out,
            "D4 box Q={q:<5} {:<26} {:<11} {}",
            book.size(),
            book.index_bits(),
            joint.bits()
        )
        .unwrap();
    }
    for q in [2u32, 4, 10, 38] {
        let book = E8Box::new(q).unwrap();
        let joint = MixedRadix::uniform(u64::try_from(book.size()).unwrap(), 16).unwrap();
        writeln!(
            out,
            "E8 box Q={q:<5} {:<26} {:<11} {}",
            book.size(),
            book.index_bits(),
            joint.bits()
        )
        .unwrap();
    }
    for q in [3u32, 4, 16] {
        let book = VoronoiCodebook::<E8, 8>::new(q).unwrap();
        let joint = MixedRadix::uniform(u64::try_from(book.size()).unwrap(), 16).unwrap();
        writeln!(
            out,
            "E8/{q}E8{:<6} {:<26} {:<11} {}",
            "",
            book.size(),
            book.index_bits(),
            joint.bits()
        )
        .unwrap();
    }
    insta::assert_snapshot!(out);
}
