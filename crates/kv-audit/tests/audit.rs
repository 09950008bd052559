//! The audit on data whose answer is known: Gaussian vectors must read as Gaussian, vectors
//! along one direction must not, and the committed real sample shows the structure its
//! README describes (outlier channels and a large mean in K, which the rotation flattens).

use kv_audit::audit::{AuditReport, GAUSSIAN_Z, Kind, audit, table};
use kv_audit::source::{KvSource, Segment, default_sample_path};

#[test]
fn gaussian_vectors_read_as_gaussian() {
    for seed in 0..6 {
        let source = KvSource::gaussian(256, 64, 100 + seed).unwrap();
        let report = audit(&source).unwrap();
        // K and V are the same segment of a Gaussian source.
        assert_eq!(report.heads.len(), 2);
        let h = &report.heads[0];
        assert!(h.gaussian, "seed {seed}: z = {}", h.w1_z);
        assert!(h.w1_z.abs() < GAUSSIAN_Z, "seed {seed}: z = {}", h.w1_z);
        let s = &h.stats;
        let r = &report.reference(256).mean;
        // Every statistic sits near its Gaussian reference.
        assert!(s.mean_energy_share < 0.02, "{s:?}");
        assert!(s.kurtosis_mean.abs() < 0.2, "{s:?}");
        assert!(
            (s.anisotropy / r.anisotropy - 1.0).abs() < 0.3,
            "{s:?} vs {r:?}"
        );
        assert!(
            (s.effective_rank / r.effective_rank - 1.0).abs() < 0.1,
            "{s:?} vs {r:?}"
        );
        assert!((s.norm_cv - r.norm_cv).abs() < 0.03, "{s:?} vs {r:?}");
    }
}

#[test]
fn vectors_along_one_direction_are_not_gaussian() {
    // Token t is (t − 8.5)·(1, 2, 0, …, 0): rank one, every rotated vector the same shape.
    let d = 64;
    let tokens = 16;
    let mut values = vec![0f32; tokens * d];
    for t in 0..tokens {
        values[t * d] = t as f32 - 8.5;
        values[t * d + 1] = 2.0 * (t as f32 - 8.5);
    }
    let mut source = KvSource::gaussian(tokens, d, 0).unwrap();
    source.values = values;
    let seg = Segment {
        name: "k.00".to_owned(),
        vectors: 0..tokens,
        heads: 1,
    };
    source.k = vec![seg.clone()];
    source.v = vec![Segment {
        name: "v.00".to_owned(),
        ..seg
    }];
    let report = audit(&source).unwrap();
    let h = &report.heads[0];
    assert!(!h.gaussian, "z = {}", h.w1_z);
    assert!(h.w1_z > 2.0 * GAUSSIAN_Z, "z = {}", h.w1_z);
    assert!((h.stats.effective_rank - 1.0).abs() < 1e-9, "{:?}", h.stats);
    assert_eq!(h.layer, "00");
    assert_eq!(h.kind, Kind::K);
}

fn sample_audit() -> AuditReport {
    audit(&KvSource::from_safetensors(default_sample_path()).unwrap()).unwrap()
}

#[test]
fn the_real_sample_shows_outlier_channels_that_the_rotation_flattens() {
    let report = sample_audit();
    assert_eq!(report.heads.len(), 2 * 30 * 3);
    let mean = |kind: Kind, f: fn(&kv_audit::audit::HeadAudit) -> f64| {
        let hs: Vec<_> = report.heads.iter().filter(|h| h.kind == kind).collect();
        hs.iter().map(|h| f(h)).sum::<f64>() / hs.len() as f64
    };
    let reference = report.reference(128).mean;
    // K: strongly anisotropic channels and a large common offset; V much less so.
    assert!(mean(Kind::K, |h| h.stats.anisotropy) > 10.0 * reference.anisotropy);
    assert!(mean(Kind::K, |h| h.stats.anisotropy) > 2.0 * mean(Kind::V, |h| h.stats.anisotropy));
    assert!(mean(Kind::K, |h| h.stats.mean_energy_share) > 0.3);
    assert!(mean(Kind::K, |h| h.stats.outlier_fraction) > 50.0 * report.gaussian_outlier_fraction);
    // The rotation brings every K head's anisotropy down (V, nearly isotropic already, only
    // on average), to within a factor of two of Gaussian data's.
    for h in report.heads.iter().filter(|h| h.kind == Kind::K) {
        assert!(
            h.stats.anisotropy_rotated < h.stats.anisotropy,
            "{} head {}",
            h.tensor,
            h.head
        );
    }
    for kind in [Kind::K, Kind::V] {
        let rotated = mean(kind, |h| h.stats.anisotropy_rotated);
        assert!(rotated < mean(kind, |h| h.stats.anisotropy));
        assert!(rotated < 2.0 * reference.anisotropy_rotated);
    }
    // V grows with depth.
    let norm = |layer: &str| {
        report
            .heads_of(layer, Kind::V)
            .map(|h| h.stats.mean_norm)
            .sum::<f64>()
    };
    assert!(norm("29") > 10.0 * norm("00"));
    assert_eq!(table(&report).lines().count(), 1 + 60 + 1);
}

#[test]
fn audit_table_snapshot() {
    let report = audit(&KvSource::gaussian(64, 16, 9).unwrap()).unwrap();
    insta::assert_snapshot!(table(&report));
}
