//! The app's worker on its own: request ids, superseded requests skipped,
//! cancel (queued and running), errors with what to do, notify after every
//! event, and a dead worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cleandift::app::sample_source;
use cleandift::features::extract::{ExtractSettings, Mode};
use cleandift::features::fusion::{DinoSettings, FusionSettings};
use cleandift::features::preprocess::{LoadedImage, SizeSpec};
use cleandift::features::source::Source;
use cleandift::model::FeatureKey;
use cleandift::worker::{
    BackboneChoice, Event, ExtractJob, ImageSource, Job, Request, RequestId, SOURCE_LAYER, Side,
    WorkerGone, WorkerHandle,
};

fn spawn() -> (WorkerHandle, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let w = WorkerHandle::spawn(Arc::new(move || {
        c.fetch_add(1, Ordering::Relaxed);
    }))
    .expect("worker");
    (w, n)
}

/// Events until `stop` says so (or panics after `secs`).
fn collect(w: &WorkerHandle, secs: u64, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(e) = w.recv_timeout(Duration::from_millis(50)) {
            let done = stop(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }
    panic!("timed out; events so far: {out:#?}");
}

fn tiny() -> BackboneChoice {
    BackboneChoice {
        model: "tiny-sd21".into(),
        student: None,
        device: "cpu".into(),
        dtype: None,
    }
}

/// Loads the tiny backbone and waits until it is ready; its request id.
fn load_tiny(w: &mut WorkerHandle) -> RequestId {
    let bb = w.next_id();
    w.send(Request::LoadBackbone {
        id: bb,
        choice: tiny(),
    })
    .expect("send");
    collect(w, 60, |e| matches!(e, Event::BackboneReady { .. }));
    bb
}

fn images(w: &mut WorkerHandle) -> [Arc<LoadedImage>; 2] {
    let mut out = Vec::new();
    for side in Side::BOTH {
        let id = w.next_id();
        w.send(Request::LoadImage {
            id,
            side,
            source: sample_source(side),
        })
        .expect("send");
        let evs = collect(
            w,
            30,
            |e| matches!(e, Event::ImageLoaded { id: i, .. } if *i == id),
        );
        match evs.last() {
            Some(Event::ImageLoaded { image, .. }) => out.push(image.clone()),
            other => panic!("{other:?}"),
        }
    }
    [out[0].clone(), out[1].clone()]
}

fn settings(mode: Mode, size: u32, ensemble: usize) -> ExtractSettings {
    ExtractSettings {
        mode,
        ensemble,
        layers: FeatureKey::ALL.to_vec(),
        size: SizeSpec::Fixed(size, size),
        max_batch: Some(1),
        ..ExtractSettings::default()
    }
}

fn extract(
    w: &mut WorkerHandle,
    backbone: RequestId,
    imgs: &[Arc<LoadedImage>; 2],
    s: ExtractSettings,
) -> RequestId {
    let id = w.next_id();
    w.send(Request::Extract {
        job: ExtractJob {
            id,
            backbone,
            images: imgs.clone(),
            settings: s,
            thumb_side: 64,
        },
        previous_student: false,
    })
    .expect("send");
    id
}

#[test]
fn superseded_requests_are_skipped_and_ids_name_the_answers() {
    let (mut w, notified) = spawn();
    let imgs = images(&mut w);
    let bb = w.next_id();
    w.send(Request::LoadBackbone {
        id: bb,
        choice: tiny(),
    })
    .expect("send");
    // Both queued behind the backbone: only the newer clean request runs.
    let first = extract(&mut w, bb, &imgs, settings(Mode::Clean, 128, 1));
    let second = extract(&mut w, bb, &imgs, settings(Mode::Clean, 192, 1));
    let evs = collect(&w, 60, |e| matches!(e, Event::Features { .. }));
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::BackboneReady { id, .. } if *id == bb)),
        "{evs:#?}"
    );
    match evs.last() {
        Some(Event::Features { id, features }) => {
            assert_eq!(*id, second);
            assert_eq!(features.side(Side::A).geometry.model_w, 192);
            assert_eq!(features.layers().len(), 11);
            // Both images were extracted (timed) by this job.
            assert!(
                features
                    .extract_secs
                    .iter()
                    .all(|s| s.is_some_and(|s| s > 0.0)),
                "{:?}",
                features.extract_secs
            );
        }
        other => panic!("{other:?}"),
    }
    // The same features prepared again (another thumbnail side) come from
    // the feature cache: nothing extracted, nothing timed.
    let again = w.next_id();
    w.send(Request::Extract {
        job: ExtractJob {
            id: again,
            backbone: bb,
            images: imgs.clone(),
            settings: settings(Mode::Clean, 192, 1),
            thumb_side: 32,
        },
        previous_student: false,
    })
    .expect("send");
    let more = collect(
        &w,
        60,
        |e| matches!(e, Event::Features { id, .. } | Event::Failed { id, .. } if *id == again),
    );
    match more.last() {
        Some(Event::Features { features, .. }) => {
            assert_eq!(features.extract_secs, [None, None])
        }
        other => panic!("{other:?}"),
    }
    assert!(
        evs.iter().all(|e| e.id() != Some(first)),
        "the superseded request produced events: {evs:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Progress { id, .. } if *id == second)),
        "progress events name the request"
    );
    // notify ran for every event.
    assert!(notified.load(Ordering::Relaxed) >= evs.len());
}

#[test]
fn cancel_stops_a_running_extraction_and_skips_a_queued_one() {
    let (mut w, _) = spawn();
    let imgs = images(&mut w);
    let bb = load_tiny(&mut w);
    let long = extract(&mut w, bb, &imgs, settings(Mode::Noisy, 512, 64));
    // A queued request of another kind, cancelled before it runs.
    let queued = extract(&mut w, bb, &imgs, settings(Mode::Clean, 128, 1));
    w.cancel(queued);
    collect(
        &w,
        60,
        |e| matches!(e, Event::Progress { id, progress } if *id == long && progress.to_string().contains("UNet")),
    );
    w.cancel(long);
    let evs = collect(
        &w,
        60,
        |e| matches!(e, Event::Cancelled { id, .. } if *id == queued),
    );
    let cancelled: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Cancelled { id, job } => Some((*id, *job)),
            _ => None,
        })
        .collect();
    assert_eq!(
        cancelled,
        vec![
            (long, Job::Features(Mode::Noisy)),
            (queued, Job::Features(Mode::Clean))
        ]
    );
    assert!(
        !evs.iter().any(|e| matches!(e, Event::Features { .. })),
        "{evs:#?}"
    );
}

/// A noisy ensemble run in batches of 8 members, cancelled once its UNet
/// started, answers `Cancelled` and no features; its progress counts
/// members (0 of 64 before the first pass). That the cancel lands inside a
/// pass is tested without threads in crates/core/tests/numerics/engine.rs.
#[test]
fn a_batched_noisy_ensemble_is_cancelled() {
    let (mut w, _) = spawn();
    let imgs = images(&mut w);
    let bb = load_tiny(&mut w);
    let mut s = settings(Mode::Noisy, 512, 64);
    s.max_batch = Some(8);
    let long = extract(&mut w, bb, &imgs, s);
    let evs = collect(
        &w,
        60,
        |e| matches!(e, Event::Progress { id, progress } if *id == long && progress.to_string().contains("UNet")),
    );
    match evs.last() {
        Some(Event::Progress { progress, .. }) => {
            assert_eq!(progress.to_string(), "A: UNet 0/64")
        }
        other => panic!("{other:?}"),
    }
    w.cancel(long);
    let evs = collect(
        &w,
        60,
        |e| matches!(e, Event::Cancelled { id, .. } | Event::Features { id, .. } | Event::Failed { id, .. } if *id == long),
    );
    match evs.last() {
        Some(Event::Cancelled { id, job }) => {
            assert_eq!((*id, *job), (long, Job::Features(Mode::Noisy)))
        }
        other => panic!("{other:?}"),
    }
}

fn extract_source(
    w: &mut WorkerHandle,
    backbone: RequestId,
    imgs: &[Arc<LoadedImage>; 2],
    s: ExtractSettings,
    source: Source,
    dino_model: &str,
) -> RequestId {
    let id = w.next_id();
    w.send(Request::ExtractSource {
        job: ExtractJob {
            id,
            backbone,
            images: imgs.clone(),
            settings: s,
            thumb_side: 64,
        },
        source,
        fusion: FusionSettings {
            dino: DinoSettings {
                model: dino_model.into(),
                ..DinoSettings::default()
            },
            ..FusionSettings::default()
        },
    })
    .expect("send");
    id
}

#[test]
fn dino_and_fused_sources_extract_cancel_and_explain_a_bad_model() {
    let (mut w, _) = spawn();
    let imgs = images(&mut w);
    let bb = load_tiny(&mut w);

    // DINOv2 (loaded on first need): one prepared layer.
    let id = extract_source(
        &mut w,
        bb,
        &imgs,
        settings(Mode::Clean, 128, 1),
        Source::Dino,
        "tiny-dino",
    );
    let evs = collect(&w, 120, |e| {
        matches!(e, Event::Features { .. } | Event::Failed { .. })
    });
    match evs.last() {
        Some(Event::Features { id: i, features }) => {
            assert_eq!(*i, id);
            assert_eq!(features.layers(), vec![SOURCE_LAYER]);
            assert!(
                features.label.contains("DINOv2 tiny-dino"),
                "{}",
                features.label
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Progress { id: i, progress }
            if *i == id && progress.to_string().contains("DINOv2"))),
        "{evs:#?}"
    );

    // A long fused extraction is cancelled while its UNet runs.
    let long = extract_source(
        &mut w,
        bb,
        &imgs,
        settings(Mode::Noisy, 512, 64),
        Source::Fused(Mode::Noisy),
        "tiny-dino",
    );
    collect(
        &w,
        60,
        |e| matches!(e, Event::Progress { id, progress } if *id == long && progress.to_string().contains("UNet")),
    );
    w.cancel(long);
    let evs = collect(&w, 60, |e| {
        matches!(
            e,
            Event::Cancelled { .. } | Event::Features { .. } | Event::Failed { .. }
        )
    });
    match evs.last() {
        Some(Event::Cancelled { id, job }) => assert_eq!((*id, *job), (long, Job::Fused)),
        other => panic!("{other:?}"),
    }

    // A DINOv2 model that does not exist: the hint names tiny-dino.
    let id = extract_source(
        &mut w,
        bb,
        &imgs,
        settings(Mode::Clean, 128, 1),
        Source::Dino,
        "no-such-dino",
    );
    let evs = collect(&w, 60, |e| {
        matches!(e, Event::Failed { .. } | Event::Features { .. })
    });
    match evs.last() {
        Some(Event::Failed { id: i, job, error }) => {
            assert_eq!((*i, *job), (id, Job::Dino));
            assert!(error.message.contains("no-such-dino"), "{error}");
            assert!(error.hint.contains("tiny-dino"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_say_what_to_do() {
    let (mut w, _) = spawn();
    let id = w.next_id();
    w.send(Request::LoadImage {
        id,
        side: Side::B,
        source: ImageSource::Bytes {
            label: "notes.txt".into(),
            bytes: Arc::from(&b"just some text, no image"[..]),
        },
    })
    .expect("send");
    let evs = collect(&w, 30, |e| matches!(e, Event::Failed { .. }));
    match evs.last() {
        Some(Event::Failed { id: i, job, error }) => {
            assert_eq!((*i, *job), (id, Job::Image(Side::B)));
            assert!(error.message.contains("notes.txt"), "{error}");
            assert!(error.hint.contains("B is unchanged"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let id = w.next_id();
    w.send(Request::LoadBackbone {
        id,
        choice: BackboneChoice {
            device: "tpu".into(),
            ..tiny()
        },
    })
    .expect("send");
    let evs = collect(&w, 30, |e| matches!(e, Event::Failed { .. }));
    match evs.last() {
        Some(Event::Failed { error, .. }) => assert!(error.message.contains("tpu"), "{error}"),
        other => panic!("{other:?}"),
    }
    // Features without a backbone: a clear error, no panic.
    let imgs = images(&mut w);
    extract(&mut w, 999, &imgs, settings(Mode::Clean, 128, 1));
    let evs = collect(&w, 30, |e| matches!(e, Event::Failed { .. }));
    match evs.last() {
        Some(Event::Failed { error, .. }) => {
            assert!(error.message.contains("no backbone"), "{error}");
            assert!(error.hint.contains("tiny-sd21"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dead_worker_says_so() {
    let (mut w, _) = spawn();
    let id = w.next_id();
    w.send(Request::Crash { id }).expect("send");
    let evs = collect(&w, 30, |e| matches!(e, Event::Died { .. }));
    assert!(matches!(evs.last(), Some(Event::Died { message }) if message.contains("crash")));
    assert!(!w.is_alive());
    let id = w.next_id();
    assert_eq!(
        w.send(Request::LoadBackbone { id, choice: tiny() }),
        Err(WorkerGone)
    );
}

/// The sweep view's steps (issue 14): one answer per t with the t asked
/// for; a step cancelled while it runs answers `Cancelled` as a sweep job
/// and no point; a variance step answers its layers' fits.
#[test]
fn sweep_and_variance_steps_answer_per_t_and_cancel() {
    let (mut w, _) = spawn();
    let imgs = images(&mut w);
    let bb = load_tiny(&mut w);
    let mut s = settings(Mode::Noisy, 128, 1);
    s.layers = vec![FeatureKey::Us6];
    let step = |w: &mut WorkerHandle, s: &ExtractSettings, t: f64| {
        let id = w.next_id();
        w.send(Request::SweepStep {
            id,
            backbone: bb,
            images: imgs.clone(),
            settings: s.clone(),
            layer: FeatureKey::Us6,
            query: (Side::A, 100.5, 120.5),
            t,
        })
        .expect("send");
        id
    };
    for t in [0.0, 400.0] {
        let id = step(&mut w, &s, t);
        let evs = collect(
            &w,
            60,
            |e| matches!(e, Event::SweepPoint { id: i, .. } | Event::Failed { id: i, .. } if *i == id),
        );
        match evs.last() {
            Some(Event::SweepPoint { point, .. }) => {
                assert_eq!(point.t, t);
                assert!(point.cosine.is_finite());
            }
            other => panic!("{other:?}"),
        }
    }
    // A long step (a large ensemble) cancelled once its UNet runs.
    let mut long = s.clone();
    long.ensemble = 64;
    long.size = SizeSpec::Fixed(512, 512);
    let id = step(&mut w, &long, 700.0);
    collect(
        &w,
        60,
        |e| matches!(e, Event::Progress { id: i, progress } if *i == id && progress.to_string().contains("UNet")),
    );
    w.cancel(id);
    let evs = collect(
        &w,
        60,
        |e| matches!(e, Event::Cancelled { id: i, .. } if *i == id),
    );
    assert!(matches!(
        evs.last(),
        Some(Event::Cancelled {
            job: Job::Sweep,
            ..
        })
    ));
    assert!(!evs.iter().any(|e| matches!(e, Event::SweepPoint { .. })));

    let id = w.next_id();
    let mut v = s.clone();
    v.layers = vec![FeatureKey::Us3, FeatureKey::Us6];
    w.send(Request::VarianceStep {
        id,
        backbone: bb,
        image: imgs[0].clone(),
        settings: v,
        t: 500.0,
    })
    .expect("send");
    let evs = collect(
        &w,
        60,
        |e| matches!(e, Event::VariancePoint { id: i, .. } | Event::Failed { id: i, .. } if *i == id),
    );
    match evs.last() {
        Some(Event::VariancePoint { point, .. }) => {
            assert_eq!(point.t, 500.0);
            let layers: Vec<FeatureKey> = point.fits.iter().map(|(k, _)| *k).collect();
            assert_eq!(layers, [FeatureKey::Us3, FeatureKey::Us6]);
            for (_, f) in &point.fits {
                assert!((f.sum() - 1.0).abs() < 1e-6, "{f:?}");
            }
        }
        other => panic!("{other:?}"),
    }
}

/// Loading a model that does not exist while a backbone is loaded keeps
/// the loaded one (issue #20, item 2): the answer names it, and features
/// asked of it come.
#[test]
fn a_load_that_fails_early_keeps_the_loaded_backbone() {
    let (mut w, _) = spawn();
    let bb = load_tiny(&mut w);
    let id = w.next_id();
    w.send(Request::LoadBackbone {
        id,
        choice: BackboneChoice {
            model: "/nonexistent/diffusers-folder".into(),
            ..tiny()
        },
    })
    .expect("send");
    let evs = collect(&w, 30, |e| {
        matches!(
            e,
            Event::BackboneKept { .. } | Event::Failed { .. } | Event::BackboneReady { .. }
        )
    });
    match evs.last() {
        Some(Event::BackboneKept {
            id: i,
            error,
            running,
            info,
        }) => {
            assert_eq!((*i, *running), (id, bb));
            assert!(error.message.contains("/nonexistent"), "{error}");
            assert_eq!(info.choice.model, "tiny-sd21");
        }
        other => panic!("{other:?}"),
    }
    let imgs = images(&mut w);
    let ex = extract(&mut w, bb, &imgs, settings(Mode::Naive, 64, 1));
    let evs = collect(
        &w,
        60,
        |e| matches!(e, Event::Features { id: i, .. } | Event::Failed { id: i, .. } if *i == ex),
    );
    assert!(
        matches!(evs.last(), Some(Event::Features { .. })),
        "{:?}",
        evs.last()
    );
}
