//! Our SPair evaluation against DIFT's own `eval_spair.py`
//! (`tests/fixtures/dift_pck/`, made by `make_dift_pck.py` from a checkout
//! of Tsingularity/dift at 9421eb2 with the same feature maps): every
//! predicted pixel and every printed PCK number (per category and overall,
//! per point and per image, bbox threshold `<=`) must be DIFT's. The ground
//! truth sits on, just inside and just outside the thresholds of DIFT's
//! predictions, and some maps have repeated cells (tied maxima).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cleandift_core::eval::{
    EvalOptions, FeatureSource, SourceError, SpairDataset, SpairOptions, evaluate,
};
use cleandift_core::features::preprocess::{Fit, Geometry, LoadedImage};
use cleandift_core::matching::FeatureMap;

use crate::common::repo_root;
use crate::eval::no_progress;

fn dir() -> PathBuf {
    repo_root().join("tests/fixtures/dift_pck")
}

/// The fixture's feature map of each image, stretched over the whole image
/// (DIFT upsamples it to the image's size).
struct Fixed(HashMap<String, (usize, usize, usize, Vec<f32>)>);

impl FeatureSource for Fixed {
    fn features(&mut self, img: &LoadedImage) -> Result<(FeatureMap, Geometry), SourceError> {
        let name = Path::new(&img.source)
            .file_name()
            .and_then(|n| n.to_str())
            .expect("image name");
        let (c, h, w, data) = self.0.get(name).expect("a fixture map").clone();
        let (iw, ih) = img.rgb.dimensions();
        Ok((
            FeatureMap::new(c, h, w, data)?,
            Geometry::new(iw, ih, (w * 16) as u32, (h * 16) as u32, Fit::Stretch),
        ))
    }

    fn describe(&self) -> String {
        "dift_pck fixture maps".into()
    }
}

fn maps() -> Fixed {
    let t = candle_core::safetensors::load(
        dir().join("features.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("features.safetensors");
    Fixed(
        t.into_iter()
            .map(|(k, v)| {
                let (_, c, h, w) = v.dims4().expect("(1, C, h, w)");
                let data = v
                    .flatten_all()
                    .and_then(|v| v.to_vec1::<f32>())
                    .expect("f32");
                (k, (c, h, w, data))
            })
            .collect(),
    )
}

#[test]
fn every_prediction_and_number_equals_dift_eval_spair() {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("dift.json")).expect("dift.json"))
            .expect("json");
    let ds = SpairDataset::open(&dir(), SpairOptions::default()).expect("the fixture set");
    let opts = EvalOptions {
        alphas: vec![0.1],
        ..EvalOptions::default()
    };
    let r = evaluate(&ds, &mut maps(), &opts, &mut no_progress()).expect("evaluate");

    let preds = want["predictions"].as_object().expect("predictions");
    assert_eq!(r.pairs.len(), preds.len());
    let mut points = 0;
    for rec in &r.pairs {
        let file = Path::new(&rec.keypoints.name)
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name");
        let theirs = preds[file].as_array().expect("a pair of DIFT's");
        assert_eq!(theirs.len(), rec.keypoints.pred.len(), "{file}");
        for (i, (ours, theirs)) in rec.keypoints.pred.iter().zip(theirs).enumerate() {
            // Ours are pixel centres, DIFT's pixel indices.
            let ours = [ours[0] - 0.5, ours[1] - 0.5];
            let theirs = [
                theirs[0].as_f64().expect("x") as f32,
                theirs[1].as_f64().expect("y") as f32,
            ];
            assert_eq!(ours, theirs, "{file} keypoint {i}");
            points += 1;
        }
    }
    assert!(points >= 25, "{points} keypoints");

    let pck = want["pck"].as_object().expect("pck");
    let mut numbers = 0;
    for (key, value) in pck {
        let (scope, kind) = key.split_once('/').expect("scope/kind");
        let scores = if scope == "All" {
            &r.pck.overall
        } else {
            &r.pck.per_category[scope]
        };
        let v = scores.at[0].bbox;
        let ours = if kind == "point" {
            v.per_point
        } else {
            v.per_image
        };
        let printed = value.as_f64().expect("number");
        assert_eq!(
            format!("{:.2}", ours * 100.0),
            format!("{printed:.2}"),
            "{key}"
        );
        numbers += 1;
    }
    assert_eq!(
        numbers, 6,
        "per category and overall, per point and per image"
    );
}
