use super::*;
use image::{Rgb, RgbImage};
use nalgebra::Matrix3;

#[test]
fn four_points_give_back_their_homography() {
    let h = Homography([[1.1, 0.2, 5.0], [-0.1, 0.9, 3.0], [1e-4, -2e-4, 1.0]]);
    let from = [[0.0, 0.0], [100.0, 0.0], [100.0, 80.0], [0.0, 80.0]];
    let mut to = [[0.0; 2]; 4];
    for (t, p) in to.iter_mut().zip(&from) {
        let (x, y) = h.apply(p[0], p[1]).unwrap();
        *t = [x, y];
    }
    let g = Homography::from_points(&from, &to).unwrap();
    for (a, b) in g.0.iter().flatten().zip(h.0.iter().flatten()) {
        assert!((a - b).abs() < 1e-9, "{g:?} vs {h:?}");
    }
    let inv = h.inverse().unwrap();
    let (x, y) = h.apply(37.0, 21.0).unwrap();
    let (bx, by) = inv.apply(x, y).unwrap();
    assert!((bx - 37.0).abs() < 1e-9 && (by - 21.0).abs() < 1e-9);
    let id = h.compose(&inv);
    assert!((id.matrix() / id.0[2][2] - Matrix3::identity()).abs().max() < 1e-12);
    assert!(Homography([[0.0; 3]; 3]).inverse().is_none());
}

#[test]
fn drawn_warps_keep_their_points_inside() {
    let cfg = WarpConfig {
        homography_probability: 0.5,
        ..WarpConfig::default()
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut kinds = [0usize; 2];
    for _ in 0..40 {
        let spec = draw_warp(&cfg, 120, 90, &mut rng).unwrap();
        kinds[usize::from(spec.kind == WarpKind::Homography)] += 1;
        assert!(spec.src_kps.len() >= 13 && spec.src_kps.len() <= 25);
        let (tw, th) = (f64::from(spec.trg_w), f64::from(spec.trg_h));
        for (s, t) in spec.src_kps.iter().zip(&spec.trg_kps) {
            let (x, y) = spec.h.apply(s[0], s[1]).unwrap();
            assert_eq!([x, y], *t);
            assert!(t[0] > 0.0 && t[0] < tw && t[1] > 0.0 && t[1] < th);
            assert_eq!(s[0].fract(), 0.5);
        }
        let [x1, y1, x2, y2] = spec.bbox;
        assert!(0.0 <= x1 && x1 < x2 && x2 <= tw && 0.0 <= y1 && y1 < y2 && y2 <= th);
    }
    assert!(kinds[0] > 5 && kinds[1] > 5, "{kinds:?}");
}

#[test]
fn rendering_follows_the_warp() {
    // A horizontal ramp shifted by 10 pixels.
    let src = RgbImage::from_fn(40, 20, |x, _| Rgb([(x * 5) as u8, 0, 0]));
    let h = Homography([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    let out = render_warp(&src, &h, 40, 20).unwrap();
    assert_eq!(out.get_pixel(15, 3).0, [25, 0, 0]);
    assert_eq!(out.get_pixel(5, 3).0, OUTSIDE_GREY);
    // Identity is exact.
    let same = render_warp(&src, &Homography::IDENTITY, 40, 20).unwrap();
    assert_eq!(same, src);
}
