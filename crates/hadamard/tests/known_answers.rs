//! Known-answer tests: frozen signs, frozen mixing tables, basis vectors.

use hadamard::{Fwht, Shape, SplitMix64, Tier, mixing_table, random_signs, sign_masks};

#[test]
fn splitmix64_reference_outputs() {
    // The first outputs of the public SplitMix64 reference code with state 0.
    let mut g = SplitMix64::new(0);
    assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    assert_eq!(g.next_u64(), 0x06C4_5D18_8009_454F);
    let mut g = SplitMix64::new(42);
    assert_eq!(g.next_u64(), 0xBDD7_3226_2FEB_6E95);
}

/// The signs of seed 42 are part of the file format: they must never change.
#[test]
fn signs_of_seed_42_are_frozen() {
    let mut s = vec![0.0f32; 200];
    random_signs(42, &mut s);
    let first: [f32; 16] = [
        -1., 1., -1., 1., -1., 1., 1., -1., 1., -1., -1., -1., 1., -1., -1., 1.,
    ];
    let word1: [f32; 16] = [
        -1., -1., 1., 1., 1., 1., 1., 1., -1., 1., 1., 1., -1., -1., -1., -1.,
    ];
    let word2: [f32; 16] = [
        1., -1., 1., 1., -1., 1., -1., 1., -1., -1., -1., -1., -1., 1., 1., -1.,
    ];
    assert_eq!(s[..16], first);
    assert_eq!(s[64..80], word1);
    assert_eq!(s[128..144], word2);

    let mut z = [0.0f32; 16];
    random_signs(0, &mut z);
    assert_eq!(
        z,
        [
            -1., -1., -1., -1., 1., -1., 1., -1., -1., 1., -1., -1., 1., 1., -1., -1.
        ]
    );
}

#[test]
fn shorter_sign_vectors_are_prefixes() {
    let mut long = vec![0.0f32; 300];
    random_signs(9, &mut long);
    for n in [1, 63, 64, 65, 128, 200] {
        let mut short = vec![0.0f32; n];
        random_signs(9, &mut short);
        assert_eq!(short, long[..n]);
        let masks = sign_masks(9, n);
        for (m, s) in masks.iter().zip(&short) {
            assert_eq!(*m, s.to_bits() & 0x8000_0000);
        }
    }
    let plan = Fwht::with_signs(96, 9).unwrap();
    assert_eq!(plan.signs().unwrap(), &long[..96]);
    assert_eq!(plan.seed(), Some(9));
    assert!(Fwht::new(96).unwrap().signs().is_none());
}

/// The f32 mixing tables are part of the output contract (a GPU backend uploads them).
#[test]
fn mixing_tables_are_frozen() {
    let bits = |len: usize| -> Vec<u32> {
        mixing_table(Shape::of(len).unwrap())
            .iter()
            .map(|x| x.to_bits())
            .collect()
    };
    let scale: Vec<(usize, u32)> = vec![
        (1, 0x3f80_0000),
        (2, 0x3f35_04f3),
        (4, 0x3f00_0000),
        (8, 0x3eb5_04f3),
        (64, 0x3e00_0000),
        (128, 0x3db5_04f3),
        (4096, 0x3c80_0000),
    ];
    for (n, b) in scale {
        assert_eq!(bits(n), [b], "scale of {n}");
    }
    assert_eq!(
        bits(96),
        [
            0x3dd105ec, 0x3dd105ec, 0x3dd105ec, 0x3dd105ec, 0x3d1903fb, 0xbe0ec3f4, 0x3dd105ec,
            0xbe0ec3f4, 0x3d1903fb
        ]
    );
    assert_eq!(
        bits(80),
        [
            0x3de4f92e, 0x3de4f92e, 0x3de4f92e, 0x3de4f92e, 0x3de4f92e, 0x3de4f92e, 0x3e1042fa,
            0xbcca9fec, 0xbe1fea4e, 0xbd93028c, 0x3de4f92e, 0xbcca9fec, 0xbd93028c, 0x3e1042fa,
            0xbe1fea4e, 0x3de4f92e, 0xbe1fea4e, 0x3e1042fa, 0xbd93028c, 0xbcca9fec, 0x3de4f92e,
            0xbd93028c, 0xbe1fea4e, 0xbcca9fec, 0x3e1042fa
        ]
    );
    assert_eq!(
        bits(112),
        [
            0x3dc1848f, 0x3dc1848f, 0x3dc1848f, 0x3dc1848f, 0x3dc1848f, 0x3dc1848f, 0x3dc1848f,
            0x3dc1848f, 0x3e07fa34, 0x3d919aaa, 0xbd34c751, 0xbe0128ac, 0xbde7ba49, 0xbc7522af,
            0x3dc1848f, 0x3d919aaa, 0xbe0128ac, 0xbc7522af, 0x3e07fa34, 0xbd34c751, 0xbde7ba49,
            0x3dc1848f, 0xbd34c751, 0xbc7522af, 0x3d919aaa, 0xbde7ba49, 0x3e07fa34, 0xbe0128ac,
            0x3dc1848f, 0xbe0128ac, 0x3e07fa34, 0xbde7ba49, 0x3d919aaa, 0xbc7522af, 0xbd34c751,
            0x3dc1848f, 0xbde7ba49, 0xbd34c751, 0x3e07fa34, 0xbc7522af, 0xbe0128ac, 0x3d919aaa,
            0x3dc1848f, 0xbc7522af, 0xbde7ba49, 0xbe0128ac, 0xbd34c751, 0x3d919aaa, 0x3e07fa34
        ]
    );
    assert_eq!(
        Fwht::new(96).unwrap().mixing_table(),
        mixing_table(Shape::of(96).unwrap())
    );
}

/// `e_0` maps to the constant `1/sqrt(n)` for every length (first column of `T`).
#[test]
fn first_basis_vector_gives_a_constant() {
    for tier in Tier::available() {
        for len in hadamard::supported_lengths(..) {
            let plan = Fwht::with_tier(len, None, tier).unwrap();
            let mut v = vec![0.0f32; len];
            v[0] = 1.0;
            plan.forward_inplace(&mut v);
            let want = plan.mixing_table()[0];
            assert_eq!(want, (1.0 / (len as f64).sqrt()) as f32);
            assert!(v.iter().all(|&x| x == want), "{tier} len {len}: {v:?}");
        }
    }
}

/// For `n = 4^k` every Hadamard entry is exactly `±2^-k`: `e_j` maps to the exact row
/// `(-1)^popcount(i & j) / sqrt(n)` in natural (Sylvester) order.
#[test]
fn basis_vectors_give_exact_sylvester_rows() {
    assert_eq!(
        {
            let mut v = [0.0, 1.0, 0.0, 0.0];
            Fwht::new(4).unwrap().forward_inplace(&mut v);
            v
        },
        [0.5, -0.5, 0.5, -0.5]
    );
    for tier in Tier::available() {
        for len in [4usize, 16, 64, 256, 1024, 4096] {
            let plan = Fwht::with_tier(len, None, tier).unwrap();
            let mag = 1.0 / (len as f32).sqrt();
            for j in [1, 2, 3, len / 2 + 1, len - 1] {
                let mut v = vec![0.0f32; len];
                v[j] = 1.0;
                plan.forward_inplace(&mut v);
                for (i, &x) in v.iter().enumerate() {
                    let want = if (i & j).count_ones() % 2 == 0 {
                        mag
                    } else {
                        -mag
                    };
                    assert_eq!(x, want, "{tier} len {len} e_{j} at {i}");
                }
            }
        }
    }
}

/// For `n = 2`, `T = [[1, 1], [1, -1]] / sqrt(2)` with the f32 constant `1/sqrt(2)`.
#[test]
fn length_one_and_two() {
    let mut v = [3.0f32];
    Fwht::new(1).unwrap().forward_inplace(&mut v);
    assert_eq!(v, [3.0]);
    let mut v = [1.0f32, 2.0];
    Fwht::new(2).unwrap().forward_inplace(&mut v);
    let r = std::f32::consts::FRAC_1_SQRT_2;
    assert_eq!(v, [r * 3.0, -r]);
}
