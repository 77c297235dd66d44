//! The evaluation room: oracle features give PCK 1, random features stay at
//! chance, SPair-71k folders load (and fail) as expected, reports serialise.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::path::PathBuf;

use cleandift_core::eval::{
    Dataset, EvalOptions, EvalReport, FeatureSource, Homography, PairEvaluator, PairOutcome,
    RunCounts, SourceError, WarpConfig, WarpDataset, build_report, evaluate, select_pairs,
};
use cleandift_core::features::preprocess::{Fit, Geometry, LoadedImage};
use cleandift_core::matching::FeatureMap;
use cleandift_core::matching::PckAccumulator;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------
// Feature sources

/// Where an image's pixels come from, in the coordinates of the image whose
/// position the features encode.
#[derive(Clone, Copy)]
enum Role {
    /// Features of the image's own positions.
    Own,
    /// A warped image: its pixel `p` came from `to_src(p)` of a
    /// `src_w x src_h` source.
    Warped {
        to_src: Homography,
        src_w: f64,
        src_h: f64,
    },
}

/// Features that encode true positions: Fourier features of the (source)
/// position, normalised by the source size, at a few frequencies; zero
/// vectors where a pixel has no source (padding, grey outside the warp).
pub(crate) struct Oracle {
    roles: HashMap<[u8; 32], Role>,
    /// Unknown images are treated as `Own` when set.
    default_own: bool,
    stride: u32,
    /// `None`: stretch at the original size; `Some(side)`: letterbox into a
    /// `side x side` model input.
    pub(crate) letterbox: Option<u32>,
    calls: usize,
}

const FREQS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 3.0];

fn fourier(u: f64, v: f64) -> Vec<f32> {
    let mut f = Vec::with_capacity(FREQS.len() * 4);
    for k in FREQS {
        for t in [u, v] {
            f.push((2.0 * PI * k * t).cos() as f32);
            f.push((2.0 * PI * k * t).sin() as f32);
        }
    }
    f
}

impl Oracle {
    pub(crate) fn identity() -> Self {
        Self {
            roles: HashMap::new(),
            default_own: true,
            stride: 8,
            letterbox: None,
            calls: 0,
        }
    }

    /// Learns every image of a warp set from its pairs.
    pub(crate) fn for_warps(ds: &WarpDataset) -> Self {
        let mut roles = HashMap::new();
        for i in 0..ds.len() {
            let p = ds.pair(i).expect("pair");
            let to_src = p.warp.expect("warp").inverse().expect("invertible");
            roles.insert(p.src.hash, Role::Own);
            roles.insert(
                p.trg.hash,
                Role::Warped {
                    to_src,
                    src_w: f64::from(p.src.width),
                    src_h: f64::from(p.src.height),
                },
            );
        }
        Self {
            roles,
            default_own: false,
            stride: 8,
            letterbox: None,
            calls: 0,
        }
    }
}

impl FeatureSource for Oracle {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        self.calls += 1;
        let role = match self.roles.get(&img.hash) {
            Some(r) => *r,
            None if self.default_own => Role::Own,
            None => return Err(format!("oracle does not know {}", img.source).into()),
        };
        let (iw, ih) = (img.width, img.height);
        let geometry = match self.letterbox {
            None => Geometry::new(iw, ih, iw, ih, Fit::Stretch),
            Some(side) => Geometry::new(iw, ih, side, side, Fit::Letterbox),
        };
        let (mw, mh) = (geometry.model_w, geometry.model_h);
        let (w, h) = (
            mw.div_ceil(self.stride) as usize,
            mh.div_ceil(self.stride) as usize,
        );
        let c = FREQS.len() * 4;
        let mut data = vec![0f32; c * w * h];
        for gy in 0..h {
            for gx in 0..w {
                let mx = (gx as f64 + 0.5) * f64::from(mw) / w as f64;
                let my = (gy as f64 + 0.5) * f64::from(mh) / h as f64;
                let (x, y) = geometry.to_orig(mx, my);
                if !(0.0..=f64::from(iw)).contains(&x) || !(0.0..=f64::from(ih)).contains(&y) {
                    continue;
                }
                let (u, v) = match role {
                    Role::Own => (x / f64::from(iw), y / f64::from(ih)),
                    Role::Warped {
                        to_src,
                        src_w,
                        src_h,
                    } => match to_src.apply(x, y) {
                        Some((sx, sy))
                            if (0.0..=src_w).contains(&sx) && (0.0..=src_h).contains(&sy) =>
                        {
                            (sx / src_w, sy / src_h)
                        }
                        _ => continue,
                    },
                };
                for (k, f) in fourier(u, v).into_iter().enumerate() {
                    data[k * w * h + gy * w + gx] = f;
                }
            }
        }
        Ok((FeatureMap::new(c, h, w, data)?, geometry))
    }

    fn describe(&self) -> String {
        format!(
            "oracle (stride {}, letterbox {:?})",
            self.stride, self.letterbox
        )
    }
}

/// Seeded noise per image: knows nothing.
struct Noise {
    seed: u64,
}

impl FeatureSource for Noise {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        let mut first = [0u8; 8];
        first.copy_from_slice(&img.hash[..8]);
        let mut rng = StdRng::seed_from_u64(self.seed ^ u64::from_le_bytes(first));
        let (w, h, c) = (
            img.width.div_ceil(8) as usize,
            img.height.div_ceil(8) as usize,
            16,
        );
        let data = (0..c * w * h)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let geometry = Geometry::new(img.width, img.height, img.width, img.height, Fit::Stretch);
        Ok((FeatureMap::new(c, h, w, data)?, geometry))
    }

    fn describe(&self) -> String {
        format!("noise (seed {})", self.seed)
    }
}

// ---------------------------------------------------------------------------
// Fixtures

fn assets() -> PathBuf {
    crate::common::repo_root().join("assets")
}

/// A folder with the four sample images, a corrupt PNG and a text file.
pub(crate) fn warp_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "grace_hopper.jpg",
    ] {
        std::fs::copy(assets().join(name), dir.path().join(name)).expect("copy asset");
    }
    std::fs::write(
        dir.path().join("broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"not an image").expect("write");
    dir
}

pub(crate) fn warp_config() -> WarpConfig {
    WarpConfig {
        warps_per_image: 3,
        seed: 11,
        points_per_pair: 20,
        max_side: Some(224),
        ..WarpConfig::default()
    }
}

pub(crate) fn no_progress() -> impl FnMut(usize, usize) {
    |_, _| {}
}

pub(crate) fn pck(r: &EvalReport, alpha_index: usize) -> (f64, f64, f64, f64) {
    let at = r.pck.overall.at[alpha_index];
    (
        at.bbox.per_point,
        at.bbox.per_image,
        at.image.per_point,
        at.image.per_image,
    )
}

// ---------------------------------------------------------------------------
// Warp set

#[test]
fn warp_set_is_deterministic_and_counts_unreadable_images() {
    let dir = warp_folder();
    let ds = WarpDataset::open(dir.path(), warp_config()).expect("open");
    assert_eq!(ds.images().len(), 4);
    assert_eq!(ds.unreadable().len(), 1, "{:?}", ds.unreadable());
    assert!(ds.unreadable()[0].0.ends_with("broken.png"));
    assert_eq!(ds.len(), 12);
    assert_eq!(ds.category(0).unwrap(), "astronaut");
    assert_eq!(ds.category(11).unwrap(), "grace_hopper");
    let again = WarpDataset::open(dir.path(), warp_config()).expect("open");
    for i in [0, 5, 11] {
        let (a, b) = (ds.pair(i).unwrap(), again.pair(i).unwrap());
        assert_eq!(a.trg.hash, b.trg.hash);
        assert_eq!(a.trg_kps, b.trg_kps);
        assert_eq!(a.warp, b.warp);
        assert!(a.src.width.max(a.src.height) <= 224);
        assert!(a.src_kps.len() >= 10, "{}", a.src_kps.len());
        // ground truth is the warp
        let h = a.warp.unwrap();
        for (s, t) in a.src_kps.iter().zip(&a.trg_kps) {
            let (x, y) = h.apply(s[0], s[1]).unwrap();
            assert!((x - t[0]).abs() < 1e-9 && (y - t[1]).abs() < 1e-9);
        }
    }
    // a different seed gives different warps
    let other = WarpDataset::open(
        dir.path(),
        WarpConfig {
            seed: 12,
            ..warp_config()
        },
    )
    .unwrap();
    assert_ne!(other.pair(0).unwrap().warp, ds.pair(0).unwrap().warp);
    // folders without images are errors
    let empty = tempfile::tempdir().unwrap();
    let e = WarpDataset::open(empty.path(), warp_config()).unwrap_err();
    assert!(e.to_string().contains("no images"), "{e}");
    assert!(WarpDataset::open(&empty.path().join("nope"), warp_config()).is_err());
}

#[test]
fn oracle_features_give_perfect_pck_on_warps() {
    let dir = warp_folder();
    let ds = WarpDataset::open(dir.path(), warp_config()).expect("open");
    let mut oracle = Oracle::for_warps(&ds);
    let mut seen = Vec::new();
    let report = evaluate(&ds, &mut oracle, &EvalOptions::default(), &mut |d, t| {
        seen.push((d, t))
    })
    .expect("evaluate");
    println!("{}", report.table());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.pairs_evaluated, 12);
    assert_eq!(report.pck.per_category.len(), 4);
    let (bb, bb_img, im, im_img) = pck(&report, 1);
    assert_eq!((bb, bb_img, im, im_img), (1.0, 1.0, 1.0, 1.0));
    let (bb05, _, im05, _) = pck(&report, 0);
    assert!(bb05 >= 0.99 && im05 >= 0.99, "{bb05} {im05}");
    // 4 sources + 12 targets, each extracted once; sources reused.
    assert_eq!(report.feature_maps_computed, 16);
    assert_eq!(oracle.calls, 16);
    assert_eq!(report.cache_hits, 8);
    assert_eq!(seen.first(), Some(&(0, 12)));
    assert_eq!(seen.last(), Some(&(12, 12)));
    assert_eq!(seen.len(), 13);
}

#[test]
fn oracle_through_letterbox_geometry_is_still_right() {
    let dir = warp_folder();
    let ds = WarpDataset::open(dir.path(), warp_config()).expect("open");
    let mut oracle = Oracle::for_warps(&ds);
    oracle.letterbox = Some(256);
    let opts = EvalOptions {
        categories: Some(vec!["chelsea".into(), "coffee".into()]),
        ..EvalOptions::default()
    };
    let report = evaluate(&ds, &mut oracle, &opts, &mut no_progress()).expect("evaluate");
    assert_eq!(report.pairs_evaluated, 6);
    assert_eq!(
        report.pck.per_category.keys().collect::<Vec<_>>(),
        ["chelsea", "coffee"]
    );
    let (bb, _, im, _) = pck(&report, 1);
    assert!(bb >= 0.99 && im >= 0.99, "{}", report.table());
}

/// The report lists every pair with its predictions and its own PCK; the
/// totals summed again from those records (shuffled, after a JSON round
/// trip, or evaluated pair by pair with `PairEvaluator`) are the run's to
/// the last bit.
#[test]
fn pair_records_rebuild_the_totals_exactly() {
    let dir = warp_folder();
    let ds = WarpDataset::open(dir.path(), warp_config()).expect("open");
    let opts = EvalOptions::default();
    let report = evaluate(&ds, &mut Noise { seed: 5 }, &opts, &mut no_progress()).expect("eval");
    assert_eq!(report.pairs.len(), report.pairs_evaluated);
    let indices: Vec<usize> = report.pairs.iter().map(|r| r.index).collect();
    assert_eq!(indices, (0..ds.len()).collect::<Vec<_>>());
    // Each pair's own PCK is what one pair alone counts, and it is not all
    // 0 or all 1 (random features: the check can tell pairs apart).
    let scorer = PckAccumulator::new(&opts.alphas).expect("alphas");
    let mut fractions = Vec::new();
    for r in &report.pairs {
        assert_eq!(r.keypoints.pred.len(), r.src_kps.len());
        let alone = scorer.pair_scores(&r.keypoints).expect("scores");
        assert_eq!(alone, r.pck);
        let ok = PckAccumulator::correct(&r.keypoints, opts.alphas[2], false);
        let frac = ok.iter().filter(|&&c| c).count() as f64 / ok.len() as f64;
        assert_eq!(frac, r.pck.at[2].bbox.per_point, "{}", r.keypoints.name);
        fractions.push(frac);
    }
    assert!(fractions.iter().any(|&f| f > 0.0) && fractions.iter().any(|&f| f < 1.0));
    // Shuffled and round-tripped through JSON: the same totals, bit for bit.
    let json = serde_json::to_string(&report).expect("json");
    let back: EvalReport = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, report);
    let mut records = back.pairs.clone();
    records.reverse();
    records.rotate_left(5);
    let counts = RunCounts {
        pairs_selected: report.pairs_selected,
        feature_maps_computed: report.feature_maps_computed,
        cache_hits: report.cache_hits,
        wall_time_s: report.wall_time_s,
    };
    let rebuilt = build_report(
        report.dataset.clone(),
        report.extractor.clone(),
        &opts,
        records,
        Vec::new(),
        counts,
    )
    .expect("rebuild");
    assert_eq!(rebuilt, report);
    // Pair by pair, in reverse order, with a fresh evaluator: same records.
    let (selected, skipped) = select_pairs(&ds, &opts).expect("select");
    assert!(skipped.is_empty());
    let mut ev = PairEvaluator::new(&opts).expect("evaluator");
    let mut noise = Noise { seed: 5 };
    for &i in selected.iter().rev() {
        match ev.pair(&ds, i, &mut noise).expect("pair") {
            PairOutcome::Evaluated(r) => assert_eq!(r, report.pairs[i]),
            PairOutcome::Skipped(s) => panic!("skipped {s:?}"),
        }
    }
}

#[test]
fn random_features_stay_near_chance() {
    let dir = warp_folder();
    let ds = WarpDataset::open(dir.path(), warp_config()).expect("open");
    let report = evaluate(
        &ds,
        &mut Noise { seed: 3 },
        &EvalOptions::default(),
        &mut no_progress(),
    )
    .expect("evaluate");
    println!("{}", report.table());
    // Chance: the fraction of target pixels within the threshold of the
    // ground truth, averaged over keypoints.
    let (mut chance, mut n) = (0.0, 0usize);
    for i in 0..ds.len() {
        let p = ds.pair(i).unwrap();
        let [x1, y1, x2, y2] = p.trg_bbox;
        let r = 0.1 * (x2 - x1).max(y2 - y1);
        let (w, h) = (p.trg.width, p.trg.height);
        for g in &p.trg_kps {
            let mut inside = 0usize;
            for y in 0..h {
                let dy = f64::from(y) + 0.5 - g[1];
                if dy.abs() > r {
                    continue;
                }
                for x in 0..w {
                    let dx = f64::from(x) + 0.5 - g[0];
                    if dx * dx + dy * dy <= r * r {
                        inside += 1;
                    }
                }
            }
            chance += inside as f64 / f64::from(w * h);
            n += 1;
        }
    }
    let chance = chance / n as f64;
    let (bb, _, _, _) = pck(&report, 1);
    println!("random PCK@0.1 bbox {bb:.4}, chance {chance:.4}");
    assert!(bb < 0.3, "{bb}");
    assert!(
        bb < 3.0 * chance + 0.05 && bb > chance / 5.0,
        "{bb} vs chance {chance}"
    );
    let (oracle_bb, ..) = pck(
        &evaluate(
            &ds,
            &mut Oracle::for_warps(&ds),
            &EvalOptions::default(),
            &mut no_progress(),
        )
        .unwrap(),
        1,
    );
    assert!(oracle_bb > bb + 0.5);
}

// ---------------------------------------------------------------------------
// SPair-71k
