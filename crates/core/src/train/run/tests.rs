use super::*;
use candle_core::Device;

#[test]
fn every_epoch_visits_every_image_once() {
    let n = 5;
    let order: Vec<usize> = (0..5)
        .flat_map(|step| batch_indices(n, 3, step, 0, 1, 2))
        .collect();
    // Ten samples: two whole epochs.
    for epoch in order.chunks(n) {
        let mut e = epoch.to_vec();
        e.sort();
        assert_eq!(e, vec![0, 1, 2, 3, 4]);
    }
    assert_ne!(&order[..n], &order[n..], "epochs are shuffled afresh");
    assert_eq!(
        batch_indices(n, 3, 2, 0, 1, 2),
        batch_indices(n, 3, 2, 0, 1, 2)
    );
    // Accumulation walks the same sequence in micro-batches.
    let micro: Vec<usize> = (0..2)
        .flat_map(|m| batch_indices(n, 3, 1, m, 2, 2))
        .collect();
    assert_eq!(micro, order[4..8].to_vec());
}

#[test]
fn listing_order_cuts_each_epoch_into_consecutive_batches() {
    // Five images, batch 2: [0, 1], [2, 3], [4], then the next epoch.
    let batches: Vec<Vec<usize>> = (0..4)
        .map(|step| draw_indices(DataOrder::Listing, 5, 9, step, 0, 1, 2))
        .collect();
    assert_eq!(batches, vec![vec![0, 1], vec![2, 3], vec![4], vec![0, 1]]);
    // The seed plays no part; shuffled draws are batch_indices'.
    assert_eq!(draw_indices(DataOrder::Listing, 5, 1, 2, 0, 1, 2), vec![4]);
    assert_eq!(
        draw_indices(DataOrder::Shuffled, 5, 3, 2, 0, 1, 2),
        batch_indices(5, 3, 2, 0, 1, 2)
    );
}

#[test]
fn warmup_from_zero_starts_at_rate_zero() {
    let mut cfg = TrainConfig::new(100, "x");
    cfg.hyper.lr = 1e-4;
    cfg.hyper.warmup = 4;
    cfg.hyper.warmup_form = Warmup::FromZero;
    let lrs: Vec<f64> = (0..6).map(|s| cfg.lr_at(s)).collect();
    for (got, want) in lrs.iter().zip([0.0, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4]) {
        assert!((got - want).abs() < 1e-12, "{lrs:?}");
    }
    // Settings saved before the field existed read as the old form.
    let json = serde_json::to_value(&cfg.hyper).expect("json");
    let mut obj = json.as_object().expect("object").clone();
    obj.remove("warmup_form");
    obj.remove("order");
    let old: TrainHyper = serde_json::from_value(obj.into()).expect("old settings");
    assert_eq!(old.warmup_form, Warmup::FromOne);
    assert_eq!(old.order, DataOrder::Shuffled);
}

#[test]
fn warmup_is_linear_then_constant() {
    let mut cfg = TrainConfig::new(100, "x");
    cfg.hyper.lr = 1e-4;
    cfg.hyper.warmup = 4;
    let lrs: Vec<f64> = (0..6).map(|s| cfg.lr_at(s)).collect();
    for (got, want) in lrs.iter().zip([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4]) {
        assert!((got - want).abs() < 1e-12, "{lrs:?}");
    }
    cfg.hyper.warmup = 0;
    assert_eq!(cfg.lr_at(0), 1e-4);
    assert_eq!(default_warmup(50), 5);
    assert_eq!(default_warmup(1_000_000), 2000);
    let mut bad = TrainConfig::new(0, "x");
    assert!(bad.validate().is_err());
    bad.steps = 1;
    bad.hyper.keys.clear();
    assert!(bad.validate().is_err());
}

#[test]
fn adam_matches_its_formula() {
    let dev = Device::Cpu;
    let p = Var::new(&[1f32, -2.0], &dev).expect("var");
    let params = vec![("p".to_string(), p.clone())];
    let mut adam = Adam::new(0.9, 0.999, 1e-8);
    let g1 = Tensor::new(&[0.5f32, -3.0], &dev).expect("g");
    let g2 = Tensor::new(&[0.1f32, 1.0], &dev).expect("g");
    let mut grads = HashMap::new();
    grads.insert("p".to_string(), g1);
    adam.step(&params, &grads, 0.1).expect("step");
    // First step: lr * g / |g| (bias-corrected moments).
    let v = p.as_tensor().to_vec1::<f32>().expect("v");
    assert!(
        (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6,
        "{v:?}"
    );
    grads.insert("p".to_string(), g2);
    adam.step(&params, &grads, 0.1).expect("step");
    let expect = |p0: f64, a: f64, b: f64| {
        let m = 0.9 * 0.1 * a + 0.1 * b;
        let v = 0.999 * 0.001 * a * a + 0.001 * b * b;
        let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
        p0 - 0.1 * mh / (vh.sqrt() + 1e-8)
    };
    let v = p.as_tensor().to_vec1::<f32>().expect("v");
    assert!(
        (f64::from(v[0]) - expect(0.9, 0.5, 0.1)).abs() < 1e-5,
        "{v:?}"
    );
    assert!(
        (f64::from(v[1]) - expect(-1.9, -3.0, 1.0)).abs() < 1e-5,
        "{v:?}"
    );
    // Saved and restored moments continue identically.
    let saved: HashMap<String, Tensor> = adam.named_state().expect("state").into_iter().collect();
    let mut other = Adam::new(0.9, 0.999, 1e-8);
    other.load(&saved, adam.t);
    assert_eq!(other.t, 2);

    // The fused host path (CPU f32) and the tensor path (here: f64
    // parameters) agree, and a restored state continues identically.
    let p64 = Var::new(&[1f64, -2.0], &dev).expect("var");
    let params64 = vec![("p".to_string(), p64.clone())];
    let mut adam64 = Adam::new(0.9, 0.999, 1e-8);
    let mut g = HashMap::new();
    g.insert(
        "p".to_string(),
        Tensor::new(&[0.5f64, -3.0], &dev).expect("g"),
    );
    adam64.step(&params64, &g, 0.1).expect("step");
    g.insert(
        "p".to_string(),
        Tensor::new(&[0.1f64, 1.0], &dev).expect("g"),
    );
    adam64.step(&params64, &g, 0.1).expect("step");
    let v64 = p64.as_tensor().to_vec1::<f64>().expect("v");
    let v32 = p.as_tensor().to_vec1::<f32>().expect("v");
    for (a, b) in v64.iter().zip(&v32) {
        assert!((a - f64::from(*b)).abs() < 1e-5, "{v64:?} vs {v32:?}");
    }
    let q = Var::new(v32.as_slice(), &dev).expect("var");
    let qp = vec![("p".to_string(), q.clone())];
    let mut g = HashMap::new();
    g.insert(
        "p".to_string(),
        Tensor::new(&[-0.7f32, 0.2], &dev).expect("g"),
    );
    other.step(&qp, &g, 0.1).expect("step");
    adam.step(&params, &g, 0.1).expect("step");
    assert_eq!(
        q.as_tensor().to_vec1::<f32>().expect("q"),
        p.as_tensor().to_vec1::<f32>().expect("p")
    );
    assert_eq!(other.named_state().expect("state").len(), 2);
    assert_eq!(other.len(), 1);
}
