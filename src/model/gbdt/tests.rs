//! The GBDT's tests: exactness on simple functions, missing values, weights, serialization,
//! determinism and the histogram identities the speed-ups rely on.

use super::*;

/// Column-major matrix from per-feature columns.
fn col_major(cols: &[Vec<f64>]) -> Vec<f64> {
    cols.concat()
}

fn mae(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - b).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn fits_a_noiseless_step_function() {
    // 100 distinct x values: one bin each, so the steps fall exactly on bin edges.
    let n = 2000;
    let x: Vec<f64> = (0..n).map(|i| (i % 100) as f64 / 100.0).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|&v| {
            if v < 0.3 {
                1.0
            } else if v < 0.7 {
                5.0
            } else {
                -2.0
            }
        })
        .collect();
    let params = GbdtParams {
        num_trees: 200,
        ..Default::default()
    };
    let model = Gbdt::fit(&params, &x, n, 1, &y, None).unwrap();
    let pred = model.predict(&x, n, 1);
    assert!(mae(&pred, &y) < 1e-3, "mae {}", mae(&pred, &y));
    // Between the training points too.
    let probe = [0.1, 0.29, 0.31, 0.5, 0.69, 0.71, 0.95, -1.0, 7.0];
    let want = [1.0, 1.0, 5.0, 5.0, 5.0, -2.0, -2.0, 1.0, -2.0];
    let got = model.predict(&probe, probe.len(), 1);
    assert!(mae(&got, &want) < 1e-3, "{got:?}");
}

#[test]
fn missing_values_follow_the_learned_default_direction() {
    // Feature 0 is NaN exactly when y is high; feature 1 is noise.
    let n = 1000;
    let mut rng = SplitMix64(7);
    let high: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    let f0: Vec<f64> = high
        .iter()
        .map(|&h| if h { f64::NAN } else { rng.next_f64() })
        .collect();
    let f1: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
    let y: Vec<f64> = high.iter().map(|&h| if h { 10.0 } else { 0.0 }).collect();
    let x = col_major(&[f0, f1]);
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 2, &y, None).unwrap();
    let pred = model.predict(&x, n, 2);
    assert!(mae(&pred, &y) < 0.01, "mae {}", mae(&pred, &y));
    let imp = model.importances();
    assert!(imp[0] > 100.0 * imp[1], "{imp:?}");
    // Unseen rows: NaN -> high, any value -> low.
    let probe = col_major(&[vec![f64::NAN, 0.5, 2.0], vec![0.5, 0.5, 0.5]]);
    let got = model.predict(&probe, 3, 2);
    assert!(
        (got[0] - 10.0).abs() < 0.01 && got[1].abs() < 0.01 && got[2].abs() < 0.01,
        "{got:?}"
    );
}

#[test]
fn all_nan_and_constant_columns_do_not_crash() {
    let n = 500;
    let all_nan = vec![f64::NAN; n];
    let constant = vec![3.0; n];
    let signal: Vec<f64> = (0..n).map(|i| (i % 10) as f64).collect();
    let y: Vec<f64> = signal.iter().map(|v| v * 2.0).collect();
    let x = col_major(&[all_nan.clone(), constant.clone(), signal]);
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 3, &y, None).unwrap();
    let imp = model.importances();
    assert_eq!(imp[0], 0.0);
    assert_eq!(imp[1], 0.0);
    assert!(imp[2] > 0.0);
    assert!(mae(&model.predict(&x, n, 3), &y) < 0.05);

    // Only useless features: the model is the mean, and predicting NaN anywhere works.
    let x = col_major(&[all_nan, constant]);
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 2, &y, None).unwrap();
    let mean = y.iter().sum::<f64>() / n as f64;
    let pred = model.predict(&[f64::NAN, f64::NAN, 1.0, f64::NAN], 2, 2);
    assert!(pred.iter().all(|p| (p - mean).abs() < 1e-9), "{pred:?}");
}

#[test]
fn logloss_gives_probabilities_that_rank_a_separable_problem() {
    let n = 1000;
    // 100 distinct values (one bin each), shuffled; y = 1 from 40 up.
    let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % n / 10) as f64).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|&v| if v >= 40.0 { 1.0 } else { 0.0 })
        .collect();
    let params = GbdtParams {
        objective: Objective::LogLoss,
        ..Default::default()
    };
    let model = Gbdt::fit(&params, &x, n, 1, &y, None).unwrap();
    let p = model.predict(&x, n, 1);
    assert!(p.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let min_pos = (0..n)
        .filter(|&i| y[i] == 1.0)
        .map(|i| p[i])
        .fold(f64::INFINITY, f64::min);
    let max_neg = (0..n)
        .filter(|&i| y[i] == 0.0)
        .map(|i| p[i])
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(
        min_pos > max_neg,
        "positives {min_pos} vs negatives {max_neg}"
    );
    assert!(min_pos > 0.9 && max_neg < 0.1);
}

#[test]
fn serde_round_trip_predicts_identically() {
    let n = 800;
    let mut rng = SplitMix64(3);
    let f0: Vec<f64> = (0..n)
        .map(|_| {
            if rng.next_f64() < 0.1 {
                f64::NAN
            } else {
                rng.next_f64()
            }
        })
        .collect();
    let f1: Vec<f64> = (0..n).map(|_| rng.next_f64() * 100.0).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| f0[i].max(0.2).sin() + f1[i] / 50.0)
        .collect();
    let x = col_major(&[f0, f1]);
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 2, &y, None).unwrap();
    let json = serde_json::to_string(&model).unwrap();
    let back: Gbdt = serde_json::from_str(&json).unwrap();
    let (a, b) = (model.predict(&x, n, 2), back.predict(&x, n, 2));
    assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()));
    // Importances are plain f64s (they do not affect predictions): equal up to JSON parsing.
    for (a, b) in model.importances().iter().zip(back.importances()) {
        assert!((a - b).abs() <= 1e-12 * a.abs());
    }
}

#[test]
fn weights_pull_predictions() {
    // Two targets for the same inputs: the heavily weighted rows should win.
    // Rows come in pairs with the same x, one with y = 0 and one with y = 10 (weight 9).
    let n = 400;
    let x: Vec<f64> = (0..n).map(|i| ((i / 2) % 4) as f64).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| if i % 2 == 0 { 0.0 } else { 10.0 })
        .collect();
    let w: Vec<f64> = (0..n).map(|i| if i % 2 == 1 { 9.0 } else { 1.0 }).collect();
    let p = GbdtParams::default();
    let plain = Gbdt::fit(&p, &x, n, 1, &y, None)
        .unwrap()
        .predict(&[1.0], 1, 1)[0];
    let weighted = Gbdt::fit(&p, &x, n, 1, &y, Some(&w))
        .unwrap()
        .predict(&[1.0], 1, 1)[0];
    assert!((plain - 5.0).abs() < 0.01, "unweighted {plain}");
    assert!((weighted - 9.0).abs() < 0.01, "weighted {weighted}");

    // Class weights for LogLoss: upweighting the positives raises P(y = 1).
    let yb: Vec<f64> = (0..n).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect();
    let lp = GbdtParams {
        objective: Objective::LogLoss,
        ..Default::default()
    };
    let wb: Vec<f64> = yb
        .iter()
        .map(|&y| if y == 1.0 { 4.0 } else { 1.0 })
        .collect();
    let p_plain = Gbdt::fit(&lp, &x, n, 1, &yb, None)
        .unwrap()
        .predict(&[1.0], 1, 1)[0];
    let p_weighted = Gbdt::fit(&lp, &x, n, 1, &yb, Some(&wb))
        .unwrap()
        .predict(&[1.0], 1, 1)[0];
    assert!(p_weighted > p_plain + 0.2, "{p_plain} -> {p_weighted}");
}

#[test]
fn model_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Gbdt>();
    assert_send_sync::<GbdtParams>();
}

#[test]
fn bins_match_prediction_thresholds() {
    // Many distinct values: quantile bins; every training value must bin the way a threshold
    // comparison on the raw value would send it.
    let mut rng = SplitMix64(11);
    let values: Vec<f64> = (0..5000)
        .map(|_| (rng.next_f64() * 1000.0).round() / 7.0)
        .collect();
    let fb = FeatureBins::from_sample(values.clone(), 255);
    assert!(fb.upper.len() <= 255 && fb.upper.len() > 200);
    for &v in &values {
        let b = fb.bin(v) as usize;
        assert!(v <= fb.upper[b]);
        assert!(b == 0 || v > fb.upper[b - 1]);
    }
    // Few distinct values: one bin each.
    let fb = FeatureBins::from_sample(vec![1.0, 2.0, 2.0, 3.0, f64::NAN], 255);
    assert_eq!(fb.upper.len(), 3);
    assert_eq!(
        (fb.bin(1.0), fb.bin(2.0), fb.bin(3.0), fb.bin(f64::NAN)),
        (0, 1, 2, 3)
    );
    // Edges are midpoints, inclusive on the left: 2.5 goes with 2, 2.6 with 3.
    assert_eq!(
        (fb.bin(-5.0), fb.bin(2.5), fb.bin(2.6), fb.bin(99.0)),
        (0, 1, 2, 2)
    );
}

#[test]
fn rejects_bad_input() {
    let p = GbdtParams::default();
    assert!(Gbdt::fit(&p, &[1.0, 2.0], 2, 1, &[1.0], None).is_err());
    assert!(Gbdt::fit(&p, &[1.0, 2.0], 2, 1, &[1.0, f64::NAN], None).is_err());
    let lp = GbdtParams {
        objective: Objective::LogLoss,
        ..Default::default()
    };
    assert!(Gbdt::fit(&lp, &[1.0, 2.0], 2, 1, &[0.0, 2.0], None).is_err());
    let bad_bins = GbdtParams {
        max_bins: 256,
        ..Default::default()
    };
    assert!(Gbdt::fit(&bad_bins, &[1.0, 2.0], 2, 1, &[0.0, 1.0], None).is_err());
}

#[test]
fn partition_is_stable_in_parallel_and_sequentially() {
    let n = 100_000;
    let column: Vec<u8> = (0..n).map(|i| (i * 31 % 7) as u8).collect();
    let table = left_table(6, 2, true); // bins 0..=2 and the "NaN" bin 6 go left
    for len in [1000, n] {
        let mut idx: Vec<u32> = (0..len as u32).collect();
        let mut scratch = vec![0; len];
        let n_left = partition(&mut idx, &mut scratch, &column, &table);
        let want_left: Vec<u32> = (0..len as u32)
            .filter(|&r| table[column[r as usize] as usize])
            .collect();
        let want_right: Vec<u32> = (0..len as u32)
            .filter(|&r| !table[column[r as usize] as usize])
            .collect();
        assert_eq!(&idx[..n_left], &want_left[..]);
        assert_eq!(&idx[n_left..], &want_right[..]);
    }
    // Everything to one side, both ways.
    for all_left in [true, false] {
        let table = [all_left; 256];
        let mut idx: Vec<u32> = (0..n as u32).collect();
        let mut scratch = vec![0; n];
        let n_left = partition(&mut idx, &mut scratch, &column, &table);
        assert_eq!(n_left, if all_left { n } else { 0 });
        assert!(idx.iter().enumerate().all(|(i, &r)| r as usize == i));
    }
}

/// A smooth-ish target on a few features, some values missing.
fn synthetic(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = SplitMix64(seed);
    let cols: Vec<Vec<f64>> = (0..4)
        .map(|c| {
            (0..n)
                .map(|_| {
                    if c == 3 && rng.next_f64() < 0.2 {
                        f64::NAN
                    } else {
                        rng.next_f64()
                    }
                })
                .collect()
        })
        .collect();
    let y = (0..n)
        .map(|i| {
            let x3 = if cols[3][i].is_nan() { 0.5 } else { cols[3][i] };
            3.0 * cols[0][i] + (6.0 * cols[1][i]).sin() + cols[2][i] * x3 + 0.1 * rng.next_f64()
        })
        .collect();
    (col_major(&cols), y)
}

/// The synthetic data of `n` rows binned with the default parameters, and its unweighted base
/// score: the setup of the tests that fit from gradients directly.
struct Binned {
    x: Vec<f64>,
    y: Vec<f64>,
    params: GbdtParams,
    data: BinnedData,
    base: f64,
}

fn binned(n: usize, seed: u64) -> Binned {
    let (x, y) = synthetic(n, seed);
    let params = GbdtParams::default();
    let data = BinnedData::new(&x, n, 4, params.max_bins, params.seed);
    let base = base_score(params.objective, &y, None);
    Binned {
        x,
        y,
        params,
        data,
        base,
    }
}

/// One tree grown on `grad` with histograms of `kind`, the gradients moved on by it, then the
/// next root derived from its leaves and the same root built from the rows.
fn derived_and_built_roots<K: Hist>(
    data: &BinnedData,
    params: &GbdtParams,
    y: &[f64],
    weights: Option<&[f64]>,
    grad: &mut Gradients,
    kind: K,
) -> (Vec<K::Bin>, Vec<K::Bin>) {
    let mut grower = Grower::new(data, params, kind);
    let mut imp = vec![0.0; data.cols()];
    grower.grow(grad, kind, &mut imp);
    grad.add_tree(params.objective, y, weights, &grower.leaf_rows());
    let mut derived = vec![K::Bin::default(); kind.len(data.total_bins)];
    grower.root_from_last_tree(&mut derived);
    let mut built = derived.clone();
    let all: Vec<u32> = (0..data.rows as u32).collect();
    build_histogram(kind, data, &all, grad, &mut built);
    (derived, built)
}

#[test]
fn squared_error_root_histogram_from_last_tree_matches_the_rows() {
    // The shortcut (next root = last tree's leaf histograms shifted by the leaf values) must
    // agree with a histogram built from the updated gradients: exactly in fixed point (no
    // weights), to rounding in floating point (weights).
    let n = 20_000;
    let Binned {
        y,
        params,
        data,
        base,
        ..
    } = binned(n, 5);
    let mut grad = Gradients::new(params.objective, base, &y, None);
    let kind = grad
        .fixed
        .as_ref()
        .expect("unweighted squared error")
        .kind();
    let (derived, built) = derived_and_built_roots(&data, &params, &y, None, &mut grad, kind);
    assert_eq!(derived, built);
    assert!(built.iter().any(|&b| b >> COUNT_BITS != 0));

    let w: Vec<f64> = (0..n).map(|i| 1.0 + (i % 3) as f64).collect();
    let weights = Some(&w[..]);
    let base = base_score(params.objective, &y, weights);
    let mut grad = Gradients::new(params.objective, base, &y, weights);
    assert!(grad.fixed.is_none());
    let kind = Float::new(&grad);
    let (derived, built) = derived_and_built_roots(&data, &params, &y, weights, &mut grad, kind);
    assert_float_roots_agree(&derived, &built, kind.stride);
}

/// f64 root histograms agree: row counts exactly, sums to rounding.
fn assert_float_roots_agree(derived: &[f64], built: &[f64], stride: usize) {
    for (d, b) in derived.chunks_exact(stride).zip(built.chunks_exact(stride)) {
        assert_eq!(
            d[stride - 1],
            b[stride - 1],
            "row counts must match exactly"
        );
        for (d, b) in d.iter().zip(b) {
            assert!((d - b).abs() <= 1e-3 + 1e-6 * b.abs(), "{d} vs {b}");
        }
    }
}

#[test]
fn unweighted_floating_root_from_last_tree_matches_the_rows() {
    // The f64 histograms without hessians ([g, n] bins), which unweighted squared error uses
    // when fixed point cannot (a constant target, 2^24 rows or more).
    let Binned {
        y,
        params,
        data,
        base,
        ..
    } = binned(20_000, 6);
    let mut grad = Gradients::floating(params.objective, base, &y, None);
    let kind = Float::new(&grad);
    assert_eq!(kind.stride, 2);
    let (derived, built) = derived_and_built_roots(&data, &params, &y, None, &mut grad, kind);
    assert_float_roots_agree(&derived, &built, 2);
}

#[test]
fn a_fixed_point_fit_predicts_what_the_floating_point_fit_does() {
    // The same data fitted with fixed-point gradients (the default here) and with f32 ones:
    // the targets' rounding is far below the model's error, so the two models agree to a small
    // fraction of it (measured 1.4%: a near tie between two splits may go either way).
    let n = 30_000;
    let Binned {
        x,
        y,
        params,
        data,
        base,
    } = binned(n, 11);
    let fit = |grad| Gbdt::fit_gradients(&params, &data, &y, None, base, grad);
    let fixed = fit(Gradients::new(params.objective, base, &y, None));
    let floating = fit(Gradients::floating(params.objective, base, &y, None));
    let (a, b) = (fixed.predict(&x, n, 4), floating.predict(&x, n, 4));
    let error = mae(&b, &y);
    assert!(error < 0.2 * mae(&vec![base; n], &y), "the fit learned");
    assert!(
        mae(&a, &b) < 0.05 * error,
        "{} vs error {error}",
        mae(&a, &b)
    );
}

#[test]
fn fixed_point_gradients_are_the_residuals_and_halve_past_their_limit() {
    let y: Vec<f64> = (0..1000).map(|i| (i % 17) as f64 * 0.37 - 2.0).collect();
    let base = y.iter().sum::<f64>() / y.len() as f64;
    let mut fixed = FixedGrad::new(base, &y).expect("fixed point");
    for (q, v) in fixed.q.iter().zip(&y) {
        assert!((f64::from(*q) * fixed.unit - (base - v)).abs() <= fixed.unit / 2.0);
    }
    // One leaf over every row whose value is far past the limit: every gradient moves by it,
    // then all are halved until they fit, and still equal score - y to within the new unit.
    let limit = FixedGrad::limit_for(y.len());
    let value = (4 * limit) as f64 * fixed.unit;
    let indices: Vec<u32> = (0..y.len() as u32).collect();
    let unit = fixed.unit;
    fixed.add_tree(&LeafRows {
        indices: &indices,
        leaves: vec![(0, y.len(), value)],
    });
    assert!(fixed.unit > unit);
    assert!(fixed.q.iter().all(|q| i64::from(q.unsigned_abs()) <= limit));
    for (q, v) in fixed.q.iter().zip(&y) {
        let residual = base + value - v;
        assert!(
            (f64::from(*q) * fixed.unit - residual).abs() <= fixed.unit,
            "{q} {v}"
        );
    }
    // A constant target has nothing to fit: it stays in floating point.
    assert!(FixedGrad::new(1.0, &[1.0, 1.0]).is_none());
}

#[test]
fn fits_are_deterministic_across_runs_and_thread_counts() {
    let n = 100_000; // large enough for the parallel paths
    let (x, y) = synthetic(n, 9);
    let params = GbdtParams {
        num_trees: 20,
        ..Default::default()
    };
    let a = Gbdt::fit(&params, &x, n, 4, &y, None).unwrap();
    let b = Gbdt::fit(&params, &x, n, 4, &y, None).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c = pool.install(|| Gbdt::fit(&params, &x, n, 4, &y, None).unwrap());
    let (pa, pb, pc) = (
        a.predict(&x, n, 4),
        b.predict(&x, n, 4),
        c.predict(&x, n, 4),
    );
    assert!(pa.iter().zip(&pb).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(pa.iter().zip(&pc).all(|(a, c)| a.to_bits() == c.to_bits()));
    // And it learned something: training MAE far below the target's spread.
    assert!(mae(&pa, &y) < 0.2, "mae {}", mae(&pa, &y));
}

#[test]
fn max_depth_limits_every_tree() {
    let n = 5_000;
    let (x, y) = synthetic(n, 2);
    let params = GbdtParams {
        max_depth: 3,
        num_trees: 10,
        ..Default::default()
    };
    let model = Gbdt::fit(&params, &x, n, 4, &y, None).unwrap();
    assert!(
        model.tree_depths.iter().all(|&d| d <= 3),
        "{:?}",
        model.tree_depths
    );
    assert!(model.tree_depths.contains(&3));
    // 31 leaves need depth 5 at least: with max_depth 3 a tree has at most 8 leaves.
    let leaves = model
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| n.left as usize == *i)
        .count();
    assert!(leaves <= 8 * model.num_trees());
}

#[test]
fn nan_at_prediction_for_a_feature_never_missing_in_training() {
    // x < 0.2 (a fifth of the rows) is high: NaN was never seen, so it follows the majority.
    let n = 1000;
    let x: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|&v| if v < 0.2 { 10.0 } else { 0.0 })
        .collect();
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 1, &y, None).unwrap();
    let got = model.predict(&[f64::NAN, 0.1, 0.9], 3, 1);
    assert!(
        got[0].abs() < 0.01 && (got[1] - 10.0).abs() < 0.01 && got[2].abs() < 0.01,
        "{got:?}"
    );
}

#[test]
fn params_deserialize_with_defaults() {
    let p: GbdtParams =
        serde_json::from_str(r#"{"objective": "LogLoss", "num_trees": 7}"#).unwrap();
    assert_eq!(p.objective, Objective::LogLoss);
    assert_eq!(p.num_trees, 7);
    assert_eq!(p.num_leaves, 31);
    assert_eq!(p.max_bins, 255);
}

#[test]
fn wide_rows_take_the_generic_histogram_loop() {
    // 20 features (more than the unrolled widths): only feature 17 carries the signal.
    let n = 3000;
    let mut rng = SplitMix64(4);
    let cols: Vec<Vec<f64>> = (0..20)
        .map(|_| (0..n).map(|_| rng.next_f64()).collect())
        .collect();
    let y: Vec<f64> = cols[17]
        .iter()
        .map(|&v| if v < 0.5 { -1.0 } else { 1.0 })
        .collect();
    let x = col_major(&cols);
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 20, &y, None).unwrap();
    assert!(mae(&model.predict(&x, n, 20), &y) < 0.05);
    let imp = model.importances();
    let top = (0..20).max_by(|&a, &b| imp[a].total_cmp(&imp[b])).unwrap();
    assert_eq!(top, 17);
}

#[test]
fn block_prediction_matches_row_by_row() {
    // Blocks with and without NaN take different step functions; both must agree with
    // predicting each row on its own, across block boundaries.
    let n = 1000;
    let (x, y) = synthetic(n, 12);
    let model = Gbdt::fit(&GbdtParams::default(), &x, n, 4, &y, None).unwrap();
    let mut probe = x.clone();
    for r in (0..n).filter(|r| (r / PREDICT_BLOCK).is_multiple_of(2)) {
        probe[3 * n + r] = 0.5; // even blocks: no NaN at all
    }
    let all = model.predict(&probe, n, 4);
    for r in 0..n {
        let row: Vec<f64> = (0..4).map(|c| probe[c * n + r]).collect();
        assert_eq!(
            model.predict(&row, 1, 4)[0].to_bits(),
            all[r].to_bits(),
            "row {r}"
        );
    }
}
