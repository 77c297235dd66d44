//! Settings: their persisted form, the flat layout's migration, the
//! Fine-tune panel's older form.

use std::path::{Path, PathBuf};

use eframe::Storage as _;

use super::*;
use crate::app::ColumnSource;
use crate::app::settings_file::{Restored, restore};
use crate::train::{TrainChoices, Trainable};

#[test]
fn train_settings_round_trip_with_the_library_choices() {
    let t = TrainSettings {
        size: 128,
        run: TrainChoices {
            steps: 40,
            lr: Some(3e-4),
            trainable: Trainable::Decoder,
            ..TrainChoices::default()
        },
        ..TrainSettings::default()
    };
    let json = serde_json::to_string(&t).expect("serialise");
    let back: TrainSettings = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, t);
}

#[test]
fn flat_train_settings_of_older_files_still_load() {
    let old = r#"{"source":"Folder","folder":"imgs","steps":7,"size":64,
        "lr":0.001,"trainable":"decoder","seed":3,"out_dir":"runs"}"#;
    let t: TrainSettings = serde_json::from_str(old).expect("old form");
    assert_eq!(t.source, TrainSource::Folder);
    assert_eq!(t.folder, Some(PathBuf::from("imgs")));
    assert_eq!(t.size, 64);
    assert_eq!(t.run.steps, 7);
    assert_eq!(t.run.lr, Some(0.001));
    assert_eq!(t.run.trainable, Trainable::Decoder);
    assert_eq!(t.run.seed, 3);
    assert_eq!(t.run.out_dir, Some(PathBuf::from("runs")));
    let empty: TrainSettings = serde_json::from_str("{}").expect("empty");
    assert_eq!(empty, TrainSettings::default());
}

#[test]
fn settings_round_trip_through_ron_and_old_flat_train_settings_load() {
    let mut s = Settings::default();
    s.train.size = 128;
    s.train.run.steps = 40;
    s.train.run.lr = Some(3e-4);
    s.train.run.out_dir = Some(PathBuf::from("runs"));
    let mut storage = crate::app::settings_file::MemoryStore::default();
    eframe::set_value(&mut storage, "app", &s);
    let back = storage
        .get_string("app")
        .map(|v| decode(&v).expect("decodes"));
    assert_eq!(back, Some(s));

    // What the flat TrainSettings wrote before TrainChoices.
    storage.set_string(
        "old",
        r#"(source:Folder,folder:Some("imgs"),steps:7,size:64,lr:Some(0.001),trainable:decoder,seed:3,out_dir:Some("runs"))"#
            .into(),
    );
    let old: TrainSettings = eframe::get_value(&storage, "old").expect("old form loads");
    assert_eq!(old.source, TrainSource::Folder);
    assert_eq!(old.size, 64);
    assert_eq!(old.run.steps, 7);
    assert_eq!(old.run.lr, Some(0.001));
    assert_eq!(old.run.trainable, Trainable::Decoder);
    assert_eq!(old.run.seed, 3);
    assert_eq!(old.run.out_dir, Some(PathBuf::from("runs")));
}

/// What `tests/fixtures/settings/flat-app.ron` holds, nested: the store
/// the flat layout's code wrote (every field off its default, the query
/// point at B (12.5, 40)).
fn flat_fixture_nested() -> Settings {
    let mut fusion = FusionChoice {
        dino_model: "dinov2-small".into(),
        layers: vec![FeatureKey::Us3, FeatureKey::Us6],
        sd_weight: 0.25,
        dino_size: 448,
        ..FusionChoice::default()
    };
    fusion.pca_dims.insert(FeatureKey::Us3, 64);
    Settings {
        image_paths: [
            Some(PathBuf::from("/data/a.png")),
            Some(PathBuf::from("/data/b.jpg")),
        ],
        view: View::Compare,
        backbone: BackboneSettings {
            preset: ModelPreset::Folder,
            folder: "/models/sd".into(),
            student: "/models/student.safetensors".into(),
            device: "cpu".into(),
            dtype: "f16".into(),
        },
        features: FeatureSettings {
            mode: Mode::Noisy,
            t: 321.0,
            ensemble: 3,
            seed: 11,
            prompt: "a photo".into(),
            layer: FeatureKey::Us3,
            size: SizeChoice::Square(512),
            letterbox: true,
        },
        display: DisplaySettings {
            colormap: Colormap::Viridis,
            opacity: 0.4,
            range: RangeMode::Fixed,
            lo: 0.2,
            hi: 0.9,
        },
        matching: MatchSettings {
            top_k: 7,
            show_top_k: false,
            tolerance_cells: 2.0,
            hover_preview: false,
        },
        compare: CompareSettings {
            naive: true,
            previous: false,
            dino: true,
            fused: true,
            show_strip: false,
        },
        pca: PcaSettings {
            opacity: 0.5,
            joint: false,
            source: ColumnSource::Fused,
        },
        fusion,
        gallery: GallerySettings { both: true },
        export: ExportSettings {
            dir: Some(PathBuf::from("/exports")),
            figure_scale: 3,
            builtin_file_dialog: true,
        },
        train: TrainSettings {
            source: TrainSource::Folder,
            folder: Some(PathBuf::from("/train")),
            size: 128,
            run: TrainChoices {
                steps: 9,
                lr: Some(0.002),
                trainable: Trainable::Decoder,
                seed: 5,
                out_dir: Some(PathBuf::from("/runs")),
                // The flat layout predates recipes and the benchmark view:
                // their defaults.
                recipe: None,
            },
        },
        sweep: SweepSettings {
            tab: SweepTab::Variance,
            start: 100,
            end: 500,
            step: 20,
            ensemble: 2,
            var_start: 50,
            var_end: 600,
            var_step: 25,
            var_ensemble: 3,
            var_layers: vec![FeatureKey::Us3, FeatureKey::Us6],
            var_shown: FeatureKey::Us3,
        },
        benchmark: BenchmarkSettings::default(),
    }
}

#[test]
fn a_flat_settings_file_loads_into_the_nested_layout_with_every_value() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/settings/flat-app.ron");
    let text = std::fs::read_to_string(&fixture).expect("fixture");
    // It is the flat layout: no nested group in it.
    assert!(
        text.contains("compare_naive:true") && !text.contains("backbone:"),
        "{text}"
    );
    let Restored::Loaded(s) = restore(&fixture) else {
        panic!("the flat fixture did not load");
    };
    let want = flat_fixture_nested();
    assert_eq!(*s, want);
    // Every group of it differs from the defaults: a value lost on the way
    // (left at its default) cannot pass.
    let d = Settings::default();
    assert_ne!(want.image_paths, d.image_paths);
    assert_ne!(want.view, d.view);
    assert_ne!(want.backbone, d.backbone);
    assert_ne!(want.features, d.features);
    assert_ne!(want.display, d.display);
    assert_ne!(want.matching, d.matching);
    assert_ne!(want.compare, d.compare);
    assert_ne!(want.pca, d.pca);
    assert_ne!(want.fusion, d.fusion);
    assert_ne!(want.gallery, d.gallery);
    assert_ne!(want.export, d.export);
    assert_ne!(want.train, d.train);
    assert_ne!(want.sweep, d.sweep);

    // Saved again, it is the nested layout and reads back the same.
    let mut storage = crate::app::settings_file::MemoryStore::default();
    eframe::set_value(&mut storage, eframe::APP_KEY, &*s);
    let saved = storage.get_string(eframe::APP_KEY).expect("saved");
    assert!(
        saved.contains("backbone:") && !saved.contains("compare_naive"),
        "{saved}"
    );
    assert_eq!(decode(&saved).expect("nested"), want);

    // What came after the flat layout (a recipe, the benchmark's choices)
    // is kept by the nested one.
    let mut later = want.clone();
    later.train.run.recipe = Some(crate::train::Recipe::CleandiftSd21);
    later.benchmark = BenchmarkSettings {
        dataset: "spair:/data/SPair-71k".into(),
        split: "val".into(),
        category: "dog".into(),
        flag: Some(2),
        sort: BenchSort::CleanMinusNoisy,
        alpha: 0,
    };
    assert_ne!(later.benchmark, d.benchmark);
    eframe::set_value(&mut storage, eframe::APP_KEY, &later);
    let saved = storage.get_string(eframe::APP_KEY).expect("saved");
    assert_eq!(decode(&saved).expect("nested"), later);
}

#[test]
fn partial_files_of_either_layout_keep_the_other_defaults() {
    let flat =
        decode("(mode: naive, top_k: 9, query: Some((side: A, x: 1.0, y: 2.0)))").expect("flat");
    assert_eq!(flat.features.mode, Mode::Naive);
    assert_eq!(flat.matching.top_k, 9);
    assert_eq!(flat.display, DisplaySettings::default());
    let nested = decode("(matching: (top_k: 9))").expect("nested");
    assert_eq!(nested.matching.top_k, 9);
    assert_eq!(nested.features, FeatureSettings::default());
    assert_eq!(decode("()").expect("empty"), Settings::default());
}
