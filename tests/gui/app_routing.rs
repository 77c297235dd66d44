//! Events go to the part of the app whose request they answer: image B and
//! a gallery target are decoded at once (the same kind of event, two
//! owners), then the main pair's column and the target ask for features
//! of the same mode, and each gets what it asked for.

use std::path::Path;

use cleandift::app::View;
use cleandift::features::extract::Mode;
use cleandift::worker::{ImageSource, Side};

use crate::kittest_common::{harness_with, opts, wait, wait_settled};

#[test]
fn events_go_to_the_part_of_the_app_whose_request_they_answer() {
    let mut h = harness_with(opts());
    wait_settled(&mut h);
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    // Both decodes are sent before the app reads any event.
    {
        let app = h.state_mut();
        app.load_image(Side::B, ImageSource::Path(assets.join("coffee.png")));
        app.add_targets(vec![ImageSource::Path(assets.join("chelsea.png"))]);
        assert!(app.gallery().targets()[0].is_loading());
        assert_eq!(app.image(Side::B).expect("B").name, "grace_hopper.jpg");
    }
    wait(&mut h, "B and the gallery target", 60, |app| {
        app.image(Side::B).is_some_and(|s| s.name == "coffee.png")
            && app
                .gallery()
                .targets()
                .first()
                .is_some_and(|t| t.image.is_some())
    });
    {
        let app = h.state();
        let t = &app.gallery().targets()[0];
        assert_eq!(t.name, "chelsea.png");
        let dims = |p: &str| {
            let img = image::open(assets.join(p)).expect("asset").to_rgb8();
            img.dimensions()
        };
        let shown = |s: &cleandift::app::ImageSlot| (s.image.width, s.image.height);
        assert_eq!(
            shown(t.image.as_ref().expect("target")),
            dims("chelsea.png")
        );
        assert_eq!(shown(app.image(Side::B).expect("B")), dims("coffee.png"));
        assert_eq!(app.gallery().targets().len(), 1);
    }
    wait_settled(&mut h);

    // The correspondence view asks for naive features of (A, B); in the
    // next frame the gallery asks for naive features of (A, target).
    h.state_mut().settings.features.mode = Mode::Naive;
    h.step();
    h.state_mut().settings.view = View::Gallery;
    h.step();
    assert!(
        h.state().gallery().targets()[0]
            .slot(Mode::Naive)
            .is_pending(),
        "the target's request is in flight"
    );
    wait(&mut h, "both naive extractions", 120, |app| {
        app.features_current(Mode::Naive) && app.gallery_current(0, Mode::Naive)
    });

    let app = h.state();
    let hash = |side: Side| app.image(side).expect("image").image.hash;
    let target_hash = app.gallery().targets()[0]
        .image
        .as_ref()
        .expect("target image")
        .image
        .hash;
    assert_ne!(hash(Side::B), target_hash);
    let main = app.features_of(Mode::Naive).expect("main features");
    assert_eq!(
        main.sides.each_ref().map(|s| s.image_hash),
        [hash(Side::A), hash(Side::B)]
    );
    let gallery = app.gallery().targets()[0]
        .features(Mode::Naive)
        .expect("target features");
    assert_eq!(
        gallery.sides.each_ref().map(|s| s.image_hash),
        [hash(Side::A), target_hash]
    );
    assert_ne!(main.generation, gallery.generation);
}
