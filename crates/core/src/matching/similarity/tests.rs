//! Tests of the similarity maps (kept beside the code they test).

use std::f32::consts::PI;

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

fn map_from(
    c: usize,
    h: usize,
    w: usize,
    mut f: impl FnMut(usize, usize, usize) -> f32,
) -> FeatureMap {
    let mut data = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            data.extend((0..w).map(|x| f(ch, y, x)));
        }
    }
    FeatureMap::new(c, h, w, data).unwrap()
}

/// Channels cos/sin(pi k u), cos/sin(pi k v), k = 1..3, of the cell
/// centre (u, v) in [0, 1]: a unique, smooth code of the position.
fn position_map(h: usize, w: usize) -> FeatureMap {
    map_from(12, h, w, |ch, y, x| {
        let (u, v) = ((x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32);
        let k = (ch / 4 + 1) as f32;
        let t = if ch % 4 < 2 { u } else { v };
        if ch % 2 == 0 {
            (PI * k * t).cos()
        } else {
            (PI * k * t).sin()
        }
    })
}

fn random_map(seed: u64, c: usize, h: usize, w: usize) -> FeatureMap {
    let mut rng = StdRng::seed_from_u64(seed);
    map_from(c, h, w, |_, _, _| rng.random_range(-1.0..1.0))
}

/// Reference: upsample every channel (independent bilinear code),
/// normalise each pixel, dot with the normalised source.
fn naive_similarity(src: &[f32], map: &FeatureMap, out_w: usize, out_h: usize) -> Vec<f32> {
    let axis = |o: usize, out: usize, n: usize| {
        let g = ((o as f64 + 0.5) * n as f64 / out as f64 - 0.5).max(0.0);
        let i0 = (g.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, g - i0 as f64)
    };
    let unit = |v: Vec<f64>| {
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        v.into_iter().map(|a| a / n).collect::<Vec<_>>()
    };
    let s = unit(src.iter().map(|&v| f64::from(v)).collect());
    let mut out = Vec::new();
    for oy in 0..out_h {
        let (y0, y1, fy) = axis(oy, out_h, map.h);
        for ox in 0..out_w {
            let (x0, x1, fx) = axis(ox, out_w, map.w);
            let v: Vec<f64> = (0..map.c)
                .map(|c| {
                    let at = |y: usize, x: usize| f64::from(map.data[(c * map.h + y) * map.w + x]);
                    (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x1))
                        + fy * ((1.0 - fx) * at(y1, x0) + fx * at(y1, x1))
                })
                .collect();
            let v = unit(v);
            out.push(s.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>() as f32);
        }
    }
    out
}

#[test]
fn bilinear_is_exact_on_a_linear_ramp() {
    // value = 2 gx + 3 gy + 10 c at cell centres, image 40x30 over 8x6 cells
    let map = map_from(2, 6, 8, |c, y, x| {
        2.0 * x as f32 + 3.0 * y as f32 + 10.0 * c as f32
    });
    for &(x, y) in &[
        (0.0, 0.0),
        (2.5, 2.5),
        (13.3, 7.9),
        (20.0, 15.0),
        (37.4, 29.0),
        (40.0, 30.0),
    ] {
        let v = sample_vector(&map, 40, 30, x, y).unwrap();
        let gx = (x * 8.0 / 40.0 - 0.5).clamp(0.0, 7.0);
        let gy = (y * 6.0 / 30.0 - 0.5).clamp(0.0, 5.0);
        for (c, got) in v.iter().enumerate() {
            let want = 2.0 * gx + 3.0 * gy + 10.0 * c as f32;
            assert!(
                (got - want).abs() < 1e-5,
                "({x}, {y}) c{c}: {got} vs {want}"
            );
        }
    }
    // the centre of cell (3, 2) is image point ((3 + 0.5) * 5, (2 + 0.5) * 5)
    assert_eq!(
        sample_vector(&map, 40, 30, 17.5, 12.5).unwrap(),
        vec![12.0, 22.0]
    );
}

#[test]
fn points_outside_the_image_are_named() {
    let map = random_map(1, 3, 4, 4);
    for (x, y) in [(-0.1, 5.0), (5.0, 32.5), (64.01, 0.0), (f32::NAN, 1.0)] {
        match sample_vector(&map, 64, 32, x, y) {
            Err(MatchError::PointOutside {
                x: ex,
                y: ey,
                img_w: 64,
                img_h: 32,
            }) => {
                assert!(ex.to_bits() == x.to_bits() && ey == y);
            }
            other => panic!("({x}, {y}): {other:?}"),
        }
    }
    let e = sample_vector(&map, 64, 32, 70.0, 3.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(70, 3)") && e.contains("64x32"), "{e}");
}

#[test]
fn fast_similarity_equals_upsample_normalise_dot() {
    let cases = [
        (7, 5, 6, 40, 31),
        (16, 4, 4, 17, 29),
        (5, 1, 6, 24, 3),
        (9, 8, 9, 6, 5),
        (3, 3, 1, 1, 10),
    ];
    for (seed, &(c, h, w, ow, oh)) in cases.iter().enumerate() {
        let map = random_map(seed as u64, c, h, w);
        let src = random_map(100 + seed as u64, c, 1, 1).data;
        let fast = similarity_map(&src, &map, ow, oh).unwrap();
        let naive = naive_similarity(&src, &map, ow, oh);
        assert_eq!((fast.w, fast.h), (ow, oh));
        let err = fast
            .data
            .iter()
            .zip(&naive)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-5, "case {seed}: max error {err}");
    }
}

#[test]
fn best_match_equals_argmax_of_the_full_map() {
    for seed in 0..6 {
        let prepared = PreparedTarget::new(random_map(seed, 8, 6, 7), 45, 38).unwrap();
        let mut rng = StdRng::seed_from_u64(seed + 50);
        let queries: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..8).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let batch = prepared.best_matches(&queries).unwrap();
        for (q, b) in queries.iter().zip(batch) {
            let full = prepared.similarity(q).unwrap().best().unwrap();
            assert_eq!(prepared.best_match(q).unwrap(), full);
            assert!(
                (b.x, b.y) == (full.x, full.y) && (b.score - full.score).abs() < 1e-6,
                "{b:?} vs {full:?}"
            );
        }
    }
}

#[test]
fn position_map_finds_itself_and_its_flips() {
    let (h, w, img) = (24, 24, 96);
    let map = position_map(h, w);
    let flip = map_from(12, h, w, |c, y, x| map.data[(c * h + y) * w + (w - 1 - x)]);
    let transpose = map_from(12, h, w, |c, y, x| map.data[(c * h + x) * w + y]);
    let same = PreparedTarget::new(map.clone(), img, img).unwrap();
    let flip = PreparedTarget::new(flip, img, img).unwrap();
    let transpose = PreparedTarget::new(transpose, img, img).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..40 {
        let (x, y) = (
            rng.random_range(1.0..95.0f32),
            rng.random_range(1.0..95.0f32),
        );
        let q = sample_vector(&map, img, img, x, y).unwrap();
        let near = |m: Match, ex: f32, ey: f32| (m.x - ex).abs() <= 1.0 && (m.y - ey).abs() <= 1.0;
        let m = same.similarity(&q).unwrap().best().unwrap();
        assert!(near(m, x, y) && m.score > 0.999, "self ({x}, {y}) -> {m:?}");
        let m = flip.best_match(&q).unwrap();
        assert!(near(m, 96.0 - x, y), "flip ({x}, {y}) -> {m:?}");
        let m = transpose.best_match(&q).unwrap();
        assert!(near(m, y, x), "transpose ({x}, {y}) -> {m:?}");
    }
}

#[test]
fn constant_map_ties_go_to_the_first_pixel() {
    let map = map_from(4, 5, 6, |_, _, _| 0.5);
    let prepared = PreparedTarget::new(map, 30, 25).unwrap();
    let sim = prepared.similarity(&[2.0, 2.0, 2.0, 2.0]).unwrap();
    assert!(sim.data.iter().all(|&s| s == sim.data[0]), "scores differ");
    let first = Match {
        x: 0.5,
        y: 0.5,
        score: sim.data[0],
    };
    assert_eq!(sim.best().unwrap(), first);
    assert_eq!(prepared.best_match(&[1.0; 4]).unwrap(), first);
    let top: Vec<(f32, f32)> = sim
        .top_k(4, 10.0)
        .unwrap()
        .iter()
        .map(|m| (m.x, m.y))
        .collect();
    // row 0 is used up by the first three; (29, 5) is the first pixel
    // at least 10 away from all of them
    assert_eq!(top, vec![(0.5, 0.5), (10.5, 0.5), (20.5, 0.5), (29.5, 5.5)]);
    assert_eq!(
        sim.top_k(3, 0.0)
            .unwrap()
            .iter()
            .map(|m| m.x)
            .collect::<Vec<_>>(),
        vec![0.5, 1.5, 2.5]
    );
}

#[test]
fn top_k_picks_distinct_places_best_first() {
    let map = position_map(12, 12);
    let q = sample_vector(&map, 48, 48, 20.0, 30.0).unwrap();
    let sim = similarity_map(&q, &map, 48, 48).unwrap();
    let top = sim.top_k(5, 6.0).unwrap();
    assert_eq!(top.len(), 5);
    assert_eq!(top[0], sim.best().unwrap());
    for (i, a) in top.iter().enumerate() {
        assert!(i == 0 || a.score <= top[i - 1].score);
        for b in &top[i + 1..] {
            assert!((a.x - b.x).hypot(a.y - b.y) >= 6.0, "{a:?} vs {b:?}");
        }
    }
    // a 2x2 image with separation 5 holds a single match
    let tiny = SimilarityMap {
        w: 2,
        h: 2,
        data: vec![0.1, 0.4, 0.3, 0.2],
    };
    assert_eq!(
        tiny.top_k(3, 5.0).unwrap(),
        vec![Match {
            x: 1.5,
            y: 0.5,
            score: 0.4
        }]
    );
    assert_eq!(tiny.top_k(0, 1.0), Err(MatchError::ZeroK));
}

#[test]
fn soft_argmax_weights_the_window() {
    let sim = SimilarityMap {
        w: 4,
        h: 1,
        data: vec![0.9, 0.0, 1.0, 0.5],
    };
    let m = sim.soft_argmax(1, 0.5).unwrap();
    let (a, b) = ((-2.0f64).exp(), (-1.0f64).exp());
    let want = (1.5 * a + 2.5 + 3.5 * b) / (a + 1.0 + b);
    assert!(
        (f64::from(m.x) - want).abs() < 1e-6 && m.y == 0.5 && m.score == 1.0,
        "{m:?}"
    );
    // radius 0 is the argmax itself; a cold temperature nearly so
    assert_eq!(
        sim.soft_argmax(0, 0.5).unwrap(),
        Match {
            x: 2.5,
            y: 0.5,
            score: 1.0
        }
    );
    assert!((sim.soft_argmax(3, 1e-3).unwrap().x - 2.5).abs() < 1e-6);
    assert!(matches!(
        sim.soft_argmax(1, 0.0),
        Err(MatchError::InvalidParameter {
            name: "temperature",
            ..
        })
    ));
}

#[test]
fn mutual_nn_holds_for_positions_and_fails_when_constructed_to() {
    let map = position_map(16, 16);
    let a = PreparedTarget::new(map.clone(), 64, 64).unwrap();
    let b = PreparedTarget::new(map, 64, 64).unwrap();
    for (x, y) in [(10.5, 20.5), (40.5, 3.5), (63.5, 63.5)] {
        let m = mutual_nn(&a, &b, x, y, 1.5).unwrap();
        assert!(m.mutual, "({x}, {y}): {m:?}");
    }
    // A: left half a0 = (1, 0), right half a1 = (0.8, 0.6); B: b = (0.6, 0.8)
    // everywhere. a0's best in B is some pixel holding b, whose best in A
    // lies in the pure a1 region (x >= 18): far from the query.
    let a = map_from(2, 4, 8, |c, _, x| {
        [[1.0, 0.0], [0.8, 0.6]][usize::from(x >= 4)][c]
    });
    let b = map_from(2, 4, 8, |c, _, _| [0.6, 0.8][c]);
    let (a, b) = (
        PreparedTarget::new(a, 32, 16).unwrap(),
        PreparedTarget::new(b, 32, 16).unwrap(),
    );
    let m = mutual_nn(&a, &b, 2.5, 8.5, 2.0).unwrap();
    assert!(!m.mutual, "{m:?}");
    assert!(
        m.back.x >= 18.0 && (m.back.score - 0.96).abs() < 1e-6,
        "{m:?}"
    );
    assert!(mutual_nn(&a, &b, 2.5, 8.5, -1.0).is_err());
}

#[test]
fn dense_matches_on_itself_are_mutual_and_in_place() {
    let map = position_map(8, 10);
    let a = PreparedTarget::new(map.clone(), 40, 32).unwrap();
    let b = PreparedTarget::new(map, 40, 32).unwrap();
    let dense = dense_matches(&a, &b, 8, 1.0).unwrap();
    assert_eq!(dense.len(), 5 * 4);
    assert_eq!((dense[0].x, dense[0].y, dense[1].x), (4.5, 4.5, 12.5));
    for d in &dense {
        assert!(
            d.mutual && (d.target.x - d.x).abs() <= 1.0 && (d.target.y - d.y).abs() <= 1.0,
            "{d:?}"
        );
    }
    assert!(dense_matches(&a, &b, 0, 1.0).is_err());
}

#[test]
fn bad_inputs_are_named() {
    let map = random_map(3, 4, 2, 2);
    assert_eq!(
        similarity_map(&[1.0; 3], &map, 8, 8),
        Err(MatchError::ChannelMismatch {
            what: "source vector",
            expected: 4,
            got: 3
        })
    );
    assert!(matches!(
        similarity_map(&[1.0; 4], &map, 0, 8),
        Err(MatchError::EmptyImage { w: 0, h: 8, .. })
    ));
    assert!(matches!(
        PreparedTarget::new(map.clone(), 8, 100_000),
        Err(MatchError::ImageTooLarge { h: 100_000, .. })
    ));
    assert!(matches!(
        FeatureMap::new(2, 2, 2, vec![0.0; 7]),
        Err(MatchError::DataLength {
            expected: 8,
            got: 7,
            ..
        })
    ));
    assert!(matches!(
        FeatureMap::new(0, 2, 2, vec![]),
        Err(MatchError::EmptyMap { c: 0, .. })
    ));
    assert!(matches!(
        FeatureMap::new(1, 1, 2, vec![0.0, f32::NAN]),
        Err(MatchError::NonFinite { index: 1, .. })
    ));
}

/// The one-pass top-k equals the repeated-scan one: random maps, a map
/// of few distinct values (ties everywhere), NaN holes, separations from
/// 0 to several pixels.
#[test]
fn top_k_one_pass_equals_the_scans() {
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    for (w, h, levels, nan) in [(97, 83, 0, false), (120, 64, 3, false), (80, 80, 0, true)] {
        let data: Vec<f32> = (0..w * h)
            .map(|_| {
                let v = next();
                if nan && v < 0.05 {
                    f32::NAN
                } else if levels > 0 {
                    (v * levels as f32).floor() / levels as f32
                } else {
                    v
                }
            })
            .collect();
        let sim = SimilarityMap { w, h, data };
        for (k, sep) in [
            (1, 0.0f32),
            (5, 0.0),
            (5, 1.0),
            (5, 3.5),
            (12, 6.0),
            (3, 2.0),
        ] {
            let r2 = sep * sep;
            let reach = sep.ceil() as usize;
            let scan = sim.top_k_scan(k, r2, reach);
            let disc = removed_per_pick(reach, r2);
            let one = sim.top_k_among_best(k, k * (disc + 1), r2);
            assert_eq!(scan.len(), one.len(), "{w}x{h} k{k} sep{sep}");
            for (a, b) in scan.iter().zip(&one) {
                assert_eq!((a.x, a.y), (b.x, b.y), "{w}x{h} k{k} sep{sep}");
                assert_eq!(a.score.to_bits(), b.score.to_bits());
            }
            assert_eq!(sim.top_k(k, sep).expect("top_k").len(), scan.len());
        }
    }
}
