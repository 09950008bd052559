//! The planner on the committed real sample (its first layers, to keep the debug-build test
//! quick): predictions checked against a real encode of every token, the two objectives, and
//! layers left uncompressed when nothing else serves.

use kv_audit::Error;
use kv_audit::metrics::snr_db;
use kv_audit::plan::{LayerSensitivity, Objective, Sensitivity, candidate_codecs, plan, verify};
use kv_audit::source::{KvSource, default_sample_path};
use kv_codec::CodecSpec;
use kv_codec::cache::{CachePlan as Plan, Protection};

const RATES: [f64; 5] = [2.5, 3.0, 4.0, 5.0, 6.0];

/// The default codec at [`RATES`].
fn codecs() -> Vec<CodecSpec> {
    candidate_codecs(&RATES, 64).unwrap()
}
const PROBE_TOKENS: usize = 32;

/// The committed sample cut to its first four layers.
fn sample() -> KvSource {
    let mut s = KvSource::from_safetensors(default_sample_path()).unwrap();
    s.k.truncate(4);
    s.v.truncate(4);
    // Copy the kept tensors into a buffer of their own, so that the totals (bits per value,
    // f16 bytes) count only them.
    let mut values = Vec::new();
    let mut segs = Vec::new();
    for g in s.k.iter().chain(&s.v) {
        let start = values.len() / s.head_dim;
        values.extend_from_slice(s.segment_values(g));
        let mut g = g.clone();
        g.vectors = start..values.len() / s.head_dim;
        segs.push(g);
    }
    s.v = segs.split_off(4);
    s.k = segs;
    s.values = values;
    s
}

#[test]
fn target_snr_plan_meets_its_prediction_in_a_real_run() {
    let source = sample();
    let objective = Objective::TargetSnrDb(20.0);
    let planned = plan(&source, objective, &codecs(), PROBE_TOKENS, None).unwrap();
    assert_eq!(planned.plan.layers.len(), 4);
    let measured = verify(&source, &planned.plan, objective, PROBE_TOKENS).unwrap();
    let p = &planned.prediction;
    // Bytes are exact: the packed format stores the advertised bits.
    assert_eq!(p.total_bytes, measured.total_bytes);
    assert_eq!(p.f16_bytes, 2 * source.values.len());
    for (a, b) in p.layers.iter().zip(&measured.layers) {
        for (x, y) in [(&a.k, &b.k), (&a.v, &b.v)] {
            assert_eq!(x.codec, y.codec);
            assert_eq!(x.bytes, y.bytes);
            // The probe sees a quarter of the tokens; its SNR holds to a fraction of a dB.
            assert!((x.snr_db - y.snr_db).abs() < 0.4, "{x:?} vs {y:?}");
            assert!(y.snr_db > 19.5, "{y:?}");
            assert!(x.snr_db >= 20.0, "{x:?}");
        }
    }
    // The cheapest codec that reaches 20 dB is compressed well below f16.
    assert!(p.bits_per_value < 5.0, "{p:?}");
    assert_eq!(p.uncompressed, 0);
}

#[test]
fn each_layer_gets_the_cheapest_codec_that_reaches_the_target() {
    let source = sample();
    let planned = plan(
        &source,
        Objective::TargetSnrDb(20.0),
        &codecs(),
        PROBE_TOKENS,
        None,
    )
    .unwrap();
    for probe in &planned.probes {
        let chosen = planned
            .prediction
            .layers
            .iter()
            .find(|l| l.layer == probe.layer)
            .unwrap();
        let chosen = match probe.kind {
            kv_audit::audit::Kind::K => &chosen.k,
            kv_audit::audit::Kind::V => &chosen.v,
        };
        let i = probe
            .candidates
            .iter()
            .position(|c| c.codec == chosen.codec)
            .unwrap();
        assert!(snr_db(probe.candidates[i].rel_mse) >= 20.0);
        for cheaper in &probe.candidates[..i] {
            assert!(
                snr_db(cheaper.rel_mse) < 20.0,
                "{cheaper:?} was cheaper and good enough"
            );
        }
    }
}

#[test]
fn an_unreachable_target_keeps_layers_uncompressed() {
    let source = sample();
    let planned = plan(
        &source,
        Objective::TargetSnrDb(60.0),
        &codecs(),
        PROBE_TOKENS,
        None,
    )
    .unwrap();
    // No codec of the grid reaches 60 dB; f16 storage of f16 data is exact.
    assert!(
        planned
            .plan
            .layers
            .iter()
            .all(|l| l.k.is_none() && l.v.is_none())
    );
    assert_eq!(planned.prediction.uncompressed, 8);
    assert_eq!(planned.prediction.total_bytes, planned.prediction.f16_bytes);
    assert_eq!(planned.prediction.min_snr_db, f64::INFINITY);
}

#[test]
fn budget_plans_spend_within_the_budget_and_improve_with_it() {
    let source = sample();
    let mut last_error = f64::INFINITY;
    for budget in [2.7, 3.5, 4.5, 6.0] {
        let objective = Objective::BudgetBpv(budget);
        let planned = plan(&source, objective, &codecs(), PROBE_TOKENS, None).unwrap();
        let p = &planned.prediction;
        assert!(
            p.bits_per_value <= budget + 1e-9,
            "{budget}: {}",
            p.bits_per_value
        );
        let error: f64 = p.layers.iter().map(|l| l.k.rel_mse + l.v.rel_mse).sum();
        assert!(error < last_error, "{budget}: {error} ≥ {last_error}");
        last_error = error;
        let measured = verify(&source, &planned.plan, objective, PROBE_TOKENS).unwrap();
        assert_eq!(measured.total_bytes, p.total_bytes);
    }
    assert!(matches!(
        plan(
            &source,
            Objective::BudgetBpv(1.0),
            &codecs(),
            PROBE_TOKENS,
            None
        ),
        Err(Error::BudgetTooSmall { .. })
    ));
}

#[test]
fn the_plan_serialises_to_the_schema_the_cache_reads() {
    let plan: Plan = serde_json::from_str(
        r#"{"layers":[{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q13-s2"},{"k":null,"v":"bf16"}]}"#,
    )
    .unwrap();
    assert_eq!(
        plan.layers[0].k,
        Some("voronoi-e8-q16-s4".parse::<CodecSpec>().unwrap())
    );
    assert_eq!(plan.layers[1].k, None);
    assert_eq!(plan.layers[1].v, Some(CodecSpec::Bf16));
    assert_eq!(
        serde_json::to_string(&plan).unwrap(),
        r#"{"layers":[{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q13-s2"},{"k":null,"v":"bf16"}]}"#
    );
    let source = sample();
    let short = Plan {
        layers: plan.layers.clone(),
    };
    assert!(matches!(
        verify(&source, &short, Objective::TargetSnrDb(1.0), 1),
        Err(Error::PlanMismatch {
            plan: 2,
            source_layers: 4
        })
    ));
}

#[test]
fn plan_table_snapshot() {
    use kv_audit::plan::{LayerOutcome, Outcome, Prediction, table};
    let outcome = |codec: Option<&str>, bpv: f64, snr: f64| Outcome {
        codec: codec.map(|c| c.parse().unwrap()),
        bits_per_value: bpv,
        bytes: (bpv * 64.0 * 384.0 / 8.0) as usize,
        rel_mse: 10f64.powf(-snr / 10.0),
        snr_db: snr,
    };
    let predicted = Prediction {
        objective: Objective::TargetSnrDb(20.0),
        probe_tokens: 64,
        head_dim: 64,
        layers: vec![
            LayerOutcome {
                layer: "00".to_owned(),
                k: outcome(Some("voronoi-e8-q13-s2"), 4.0, 21.19),
                v: outcome(None, 16.0, f64::INFINITY),
            },
            LayerOutcome {
                layer: "01".to_owned(),
                k: outcome(Some("voronoi-e8-q9-s2"), 3.46875, 20.02),
                v: outcome(Some("voronoi-e8-q13-s2"), 4.0, 21.15),
            },
        ],
        total_bytes: 66_816,
        f16_bytes: 196_608,
        bits_per_value: 5.4375,
        min_snr_db: 20.02,
        uncompressed: 1,
        predicted_kl: None,
    };
    let mut measured = predicted.clone();
    measured.layers[1].k.snr_db = 19.97;
    measured.min_snr_db = 19.97;
    insta::assert_snapshot!("plan_table", table(&predicted, None));
    insta::assert_snapshot!("plan_table_measured", table(&predicted, Some(&measured)));
}

/// A sensitivity for the four-layer sample in which layer 2's keys matter a hundred times
/// more than anything else.
fn one_sensitive_layer() -> Sensitivity {
    let mut layers = vec![LayerSensitivity { k: 1e-4, v: 1e-4 }; 4];
    layers[2].k = 1e-2;
    Sensitivity {
        probe: "voronoi-e8-q9-s2".parse().unwrap(),
        protection: Protection {
            sink_tokens: 4,
            recent_tokens: 16,
            key_centre_tokens: 64,
            ..Protection::NONE
        },
        layers,
    }
}

#[test]
fn a_sensitivity_sends_bits_where_the_model_notices_them() {
    let source = sample();
    let s = one_sensitive_layer();
    let objective = Objective::BudgetBpv(3.5);
    let planned = plan(&source, objective, &codecs(), PROBE_TOKENS, Some(&s)).unwrap();
    let p = &planned.prediction;
    assert!(p.bits_per_value <= 3.5 + 1e-9, "{}", p.bits_per_value);
    // Every layer coded, with the protection the sensitivity was measured under.
    assert_eq!(p.uncompressed, 0);
    assert!(
        planned
            .plan
            .layers
            .iter()
            .all(|l| l.protection == s.protection)
    );
    // The sensitive keys get the most bits; the others share what is left.
    let k2 = p.layers[2].k.bits_per_value;
    for (i, l) in p.layers.iter().enumerate() {
        assert!(l.v.bits_per_value < k2, "layer {i}: {l:?}");
        if i != 2 {
            assert!(l.k.bits_per_value < k2, "layer {i}: {l:?}");
        }
    }
    // The predicted KL is the weighted sum of the chosen candidates' errors, and each
    // weight is the tensor's KL per unit of the probe codec's rel-MSE.
    let predicted = p.predicted_kl.unwrap();
    let sum: f64 = planned
        .probes
        .iter()
        .zip(p.layers.iter().flat_map(|l| [&l.k, &l.v]))
        .map(|(probe, o)| probe.weight * o.rel_mse)
        .sum();
    assert!(
        (predicted - sum).abs() <= 1e-12 * sum,
        "{predicted} vs {sum}"
    );
    assert!(
        planned
            .probes
            .iter()
            .all(|p| p.candidates.iter().all(|c| c.codec.is_some()))
    );
    // The unweighted plan of the same budget is predicted worse under these weights.
    let flat = plan(&source, objective, &codecs(), PROBE_TOKENS, None).unwrap();
    let flat_kl: f64 = planned
        .probes
        .iter()
        .zip(flat.prediction.layers.iter().flat_map(|l| [&l.k, &l.v]))
        .map(|(probe, o)| {
            let c = probe
                .candidates
                .iter()
                .find(|c| c.codec == o.codec)
                .unwrap();
            probe.weight * c.rel_mse
        })
        .sum();
    assert!(predicted < flat_kl, "{predicted} vs {flat_kl}");
}

#[test]
fn a_sensitivity_of_another_model_is_refused() {
    let source = sample();
    let mut s = one_sensitive_layer();
    s.layers.pop();
    assert!(matches!(
        plan(
            &source,
            Objective::BudgetBpv(3.5),
            &codecs(),
            PROBE_TOKENS,
            Some(&s)
        ),
        Err(Error::SensitivityMismatch {
            sensitivity: 3,
            source_layers: 4
        })
    ));
}

#[test]
fn sensitivity_reports_are_read_and_checked() {
    let dir = std::env::temp_dir().join(format!("kv-audit-sensitivity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = one_sensitive_layer();
    let good = dir.join("good.json");
    let report = serde_json::json!({ "tool": "kv-eval sensitivity", "sensitivity": s });
    std::fs::write(&good, report.to_string()).unwrap();
    assert_eq!(Sensitivity::load(&good).unwrap(), s);
    let mut negative = report.clone();
    negative["sensitivity"]["layers"][1]["v"] = serde_json::json!(-1.0);
    let bad = dir.join("bad.json");
    for text in [negative.to_string(), "{}".to_owned(), "not json".to_owned()] {
        std::fs::write(&bad, text).unwrap();
        assert!(matches!(
            Sensitivity::load(&bad),
            Err(Error::BadSensitivity { .. })
        ));
    }
    assert!(matches!(
        Sensitivity::load(&dir.join("absent.json")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
