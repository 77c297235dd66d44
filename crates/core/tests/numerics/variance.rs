//! The variance-vs-timestep decomposition (src/analysis/variance.rs) against
//! a numpy reference (tests/fixtures/variance/make_variance_reference.py,
//! numbers committed in reference.json).

use cleandift_core::analysis::fit_variance;
use cleandift_core::matching::FeatureMap;

fn fixture(name: &str) -> serde_json::Value {
    let p = crate::common::repo_root()
        .join("tests/fixtures/variance")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).expect("read fixture")).expect("fixture JSON")
}

#[test]
fn matches_the_numpy_reference_and_sums_to_one() {
    let f = fixture("features.json");
    let r = fixture("reference.json");
    let dim = |k: &str| f[k].as_u64().expect("dimension") as usize;
    let (c, h, w) = (dim("c"), dim("h"), dim("w"));
    let map = |t: &str| {
        let data: Vec<f32> = f["maps"][t]
            .as_array()
            .expect("map values")
            .iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect();
        FeatureMap::new(c, h, w, data).expect("a valid map")
    };
    let (f0, f9) = (map("0"), map("999"));
    let fits = r["fits"].as_object().expect("fits");
    assert_eq!(fits.len(), 3);
    for (t, want) in fits {
        let got = fit_variance(&map(t), &f0, &f9).expect("fit");
        let got_v = serde_json::to_value(&got).expect("serialise");
        for (key, want) in want.as_object().expect("one fit") {
            let want = want.as_f64().expect("a number");
            let have = got_v[key].as_f64().unwrap_or(f64::NAN);
            assert!(
                (have - want).abs() <= 1e-6 * want.abs().max(1.0),
                "t={t} {key}: ours {have}, numpy {want}"
            );
        }
        assert!((got.sum() - 1.0).abs() <= 1e-6, "t={t}: sum {}", got.sum());
        assert!(
            got.frac_residual > 0.01,
            "t={t}: the fixture has a residual"
        );
    }
    // The endpoints decompose into themselves.
    let at0 = fit_variance(&f0, &f0, &f9).expect("fit at 0");
    assert!((at0.frac_x0 - 1.0).abs() < 1e-9 && at0.frac_residual < 1e-9);
    let at999 = fit_variance(&f9, &f0, &f9).expect("fit at 999");
    assert!((at999.frac_eps - 1.0).abs() < 1e-9 && at999.frac_residual < 1e-9);
}
