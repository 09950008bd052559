//! The metrics on tiny hand-made inputs, how a sweep resolves its codec settings and
//! combines them, and the printed table (an `insta` snapshot of fixed numbers).

use kv_audit::metrics::{ErrorEnergy, db_per_bit, rel_mse, shannon_gap_db, snr_db};
use kv_audit::rd::{
    DEFAULT_RATES, FAMILIES, RdResult, Setting, family_settings, resolve_settings, run_codec,
};
use kv_audit::report::table;
use kv_audit::source::KvSource;
use kv_codec::codecs::voronoi::default_for_rate;
use kv_codec::{CodecConfig, CodecSpec};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

#[test]
fn rel_mse_and_snr_of_hand_made_vectors() {
    // ‖x‖² = 1 + 4 + 4 = 9 and ‖x − y‖² = 1.
    let x = [1.0f32, 2.0, 2.0];
    let y = [1.0f32, 2.0, 1.0];
    assert_eq!(
        ErrorEnergy::of(&x, &y),
        ErrorEnergy {
            error: 1.0,
            energy: 9.0
        }
    );
    assert!(close(rel_mse(&x, &y), 1.0 / 9.0));
    assert!(close(snr_db(rel_mse(&x, &y)), 10.0 * 9f64.log10()));
    assert_eq!(rel_mse(&x, &x), 0.0);
    assert_eq!(snr_db(0.0), f64::INFINITY);
    assert!(close(snr_db(0.01), 20.0));
    assert!(close(snr_db(0.1), 10.0));
    assert!(close(snr_db(1.0), 0.0));
}

#[test]
fn parts_combine_as_a_ratio_of_sums() {
    // Part a is lost completely (rel-MSE 1), part b is exact; pooled it is 1 / (1 + 9), not the
    // mean of the two ratios.
    let mut total = ErrorEnergy::of(&[1.0], &[0.0]);
    total.merge(ErrorEnergy::of(&[3.0], &[3.0]));
    assert!(close(total.rel_mse(), 0.1));
}

#[test]
fn shannon_gap_uses_twenty_log10_two() {
    assert!(close(db_per_bit(), 6.020_599_913_279_624));
    assert!(close(
        shannon_gap_db(4.0, 20.0),
        4.0 * 6.020_599_913_279_624 - 20.0
    ));
    // A source at the Gaussian bound, D = 2^(−2R), sits at gap 0.
    for r in [1.0, 3.0, 4.75] {
        let snr = snr_db(2f64.powf(-2.0 * r));
        assert!(shannon_gap_db(r, snr).abs() < 1e-9, "{r}");
    }
}

#[test]
fn settings_resolve_in_order_without_repeats() {
    let d = 64;
    let defaults = resolve_settings(&[], &[], d).unwrap();
    assert_eq!(defaults.len(), DEFAULT_RATES.len());
    for (s, r) in defaults.iter().zip(DEFAULT_RATES) {
        assert_eq!(
            *s,
            Setting {
                spec: default_for_rate(r, d).unwrap(),
                from_bpv: Some(r)
            }
        );
    }

    let d4: CodecSpec = "compat-d4-q10".parse().unwrap();
    let at4 = default_for_rate(4.0, d).unwrap();
    let got = resolve_settings(&[d4, at4, d4], &[4.0, 3.0], d).unwrap();
    let want = vec![
        Setting {
            spec: d4,
            from_bpv: None,
        },
        Setting {
            spec: at4,
            from_bpv: None,
        },
        Setting {
            spec: default_for_rate(3.0, d).unwrap(),
            from_bpv: Some(3.0),
        },
    ];
    assert_eq!(got, want);

    // Explicit codecs alone bring no default rates.
    assert_eq!(resolve_settings(&[d4], &[], d).unwrap().len(), 1);
    assert!(matches!(
        resolve_settings(&[], &[0.01], d),
        Err(kv_audit::Error::Codec { .. })
    ));
}

#[test]
fn a_gaussian_source_is_counted_as_k_and_as_v() {
    let source = KvSource::gaussian(256, 64, 3).unwrap();
    let spec = "compat-d4-q10".parse().unwrap();
    let r = run_codec(
        &source,
        &Setting {
            spec,
            from_bpv: None,
        },
    )
    .unwrap();
    assert_eq!(r.vectors, 256);
    assert_eq!(r.bytes, 256 * 38);
    assert_eq!(r.rel_mse_k, r.rel_mse_v);
    assert_eq!(r.rel_mse_k_layers, vec![r.rel_mse_k]);
    assert!(r.rel_mse_k > 0.0 && r.rel_mse_k < 0.05);
}

#[test]
fn table_snapshot() {
    let row = |codec: &str, bpv: f64, k: f64, v: f64| RdResult {
        codec: codec.to_owned(),
        from_bpv: None,
        bits_per_value: bpv,
        bits_per_vector: (bpv * 64.0) as u32,
        bytes: 0,
        head_dim: 64,
        vectors: 1000,
        rel_mse_k: k,
        rel_mse_v: v,
        snr_db_k: snr_db(k),
        snr_db_v: snr_db(v),
        shannon_gap_db: (shannon_gap_db(bpv, snr_db(k)) + shannon_gap_db(bpv, snr_db(v))) / 2.0,
        encode_mvec_s: 1.25,
        decode_mvec_s: 12.5,
        encode_s: 0.0008,
        decode_s: 0.00008,
        threads: 2,
        rel_mse_k_layers: vec![k],
        rel_mse_v_layers: vec![v],
    };
    let results = [
        row("compat-d4-q10", 4.75, 6.6e-3, 7.3e-3),
        row("voronoi-e8-q12-s2", 4.0, 9.15e-3, 9.2e-3),
    ];
    insta::assert_snapshot!(table(&results));
}

#[test]
fn every_family_sweeps_its_settings_nearest_each_rate() {
    let d = 64;
    let rates = [3.0, 4.0, 8.0];
    let settings = family_settings(&rates, d).unwrap();
    for s in &settings {
        let bpv = CodecConfig::new(s.spec, d)
            .build()
            .unwrap()
            .bits_per_value();
        let rate = s.from_bpv.unwrap();
        assert!(
            (bpv - rate).abs() <= 0.5,
            "{} at {bpv} for rate {rate}",
            s.spec
        );
    }
    let names: Vec<String> = settings.iter().map(|s| s.spec.to_string()).collect();
    // Every family but the fixed-rate ones far from all rates shows up; int4 (4.25 bpv at
    // d = 64) is nearer 4 than int3 (3.25) and q8_0 (8.5) joins only near 8.
    for family in FAMILIES {
        let prefix = family.trim_end_matches("-e4m3");
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "{family} missing: {names:?}"
        );
    }
    assert!(names.contains(&"int4".to_string()));
    assert!(names.contains(&"q8_0".to_string()));
    assert_eq!(names.iter().filter(|n| *n == "q4_0").count(), 1);
}
