//! The app's file choosing and exports under egui_kittest (wgpu, software
//! Vulkan in CI), with tiny-sd21 and the sample pair: with no desktop
//! portal and no zenity, File > Open shows the in-app chooser and a file
//! chosen there loads; S saves a screenshot of the window's size; E writes
//! the figure as PNG (colour bar and markers checked by pixel), SVG (titles,
//! layer, colour bar checked as text) and JSON.

use std::path::Path;

use cleandift::app::dialogs::DialogKind;
use cleandift::app::native_dialog::ProbeEnv;
use cleandift::app::{CleanDiftApp, LaunchOptions, View};
use cleandift::render::Colormap;
use cleandift::worker::Side;
use egui::accesskit::Role;
use egui::{Key, Pos2, Rect};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

use crate::kittest_common;

use kittest_common::{SIZE, click_image, harness_with, messages, opts, settled, wait};

fn harness(export: &Path) -> Harness<'static, CleanDiftApp> {
    harness_with(LaunchOptions {
        export_dir: Some(export.to_path_buf()),
        ..opts()
    })
}

fn click_label(h: &mut Harness<'_, CleanDiftApp>, label: &str) {
    let screen = Rect::from_min_size(Pos2::ZERO, SIZE.into());
    let node = h.get_by_label(label);
    if screen.contains_rect(node.rect()) {
        node.click();
    } else {
        node.click_accesskit();
    }
    h.step();
}

/// File > `item`: the menu opens on a click and shows a frame later.
fn open_menu_item(h: &mut Harness<'_, CleanDiftApp>, item: &str) {
    h.get_by_label("File").click();
    for _ in 0..3 {
        h.step();
    }
    h.get_by_label(item).click();
    h.step();
}

/// No desktop portal (no session bus) and no zenity on PATH.
fn bare_env(empty_bin: &Path) -> ProbeEnv {
    ProbeEnv {
        force: None,
        path: Some(empty_bin.as_os_str().to_owned()),
        session_bus: None,
        runtime_dir: None,
    }
}

#[test]
fn without_portal_or_zenity_file_open_uses_the_in_app_chooser() {
    let export = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    let pics = tempfile::tempdir().expect("tempdir");
    let chosen = pics.path().join("cat.png");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.png"),
        &chosen,
    )
    .expect("copy");
    std::fs::write(pics.path().join("notes.txt"), "not an image").expect("write");

    let mut h = harness(export.path());
    wait(&mut h, "images", 120, settled);
    h.state_mut().set_dialog_env(bare_env(bin.path()));

    open_menu_item(&mut h, "Open image A…");
    h.step();
    {
        let b = h
            .state()
            .file_browser()
            .expect("the in-app chooser is open");
        assert_eq!(b.title, "Open image A");
    }
    assert!(
        messages(h.state()).contains("in-app"),
        "the fallback is said on screen: {}",
        messages(h.state())
    );
    h.get_by_label("Open image A");
    // Go to the folder through the path field (Enter), pick the image.
    h.state_mut().file_browser_mut().expect("chooser").path_text =
        pics.path().display().to_string();
    h.get_by_role_and_label(Role::TextInput, "Path:").focus();
    h.step();
    h.key_press(Key::Enter);
    h.step();
    h.step();
    {
        let b = h.state().file_browser().expect("still open");
        assert_eq!(b.dir, pics.path());
        // The text file is filtered out.
        let names: Vec<_> = b.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["cat.png"]);
    }
    click_label(&mut h, "cat.png");
    click_label(&mut h, "Open");
    h.step();
    assert!(h.state().file_browser().is_none(), "closed after choosing");
    wait(&mut h, "image A from the chooser", 120, |app| {
        app.image(Side::A)
            .is_some_and(|s| s.path.as_deref() == Some(chosen.as_path()))
    });
    let a = &h.state().image(Side::A).expect("A").image;
    assert_eq!((a.width, a.height), (451, 300), "chelsea.png's size");

    // Escape cancels; a folder chooser falls back the same way.
    open_menu_item(&mut h, "Open image B…");
    assert!(h.state().file_browser().is_some());
    h.key_press(Key::Escape);
    h.step();
    h.step();
    assert!(h.state().file_browser().is_none(), "Escape closes");
    h.state_mut().open_dialog(DialogKind::ExportDir);
    h.step();
    assert_eq!(
        h.state().file_browser().map(|b| b.title.clone()).as_deref(),
        Some("Choose the export folder")
    );
    h.state_mut()
        .file_browser_mut()
        .expect("chooser")
        .navigate(pics.path());
    click_label(&mut h, "Choose this folder");
    h.step();
    assert_eq!(h.state().export_dir(), pics.path());
}

#[test]
fn s_saves_the_window_and_e_exports_the_figure() {
    let export = tempfile::tempdir().expect("tempdir");
    let mut h = harness(export.path());
    wait(&mut h, "features", 120, settled);
    click_image(&mut h, Side::A, 256.5, 256.5);
    h.remove_cursor();
    wait(&mut h, "answer", 60, settled);

    // S: exactly the window, at its native resolution.
    h.key_press(Key::S);
    wait(&mut h, "screenshot", 60, |app| {
        app.last_export
            .as_ref()
            .is_some_and(|p| p.extension().is_some_and(|e| e == "png"))
    });
    let shot = h.state().last_export.clone().expect("screenshot");
    assert_eq!(shot.parent(), Some(export.path()));
    let img = image::open(&shot).expect("PNG").to_rgb8();
    // The harness renders one pixel per window unit.
    assert_eq!(img.dimensions(), (SIZE[0] as u32, SIZE[1] as u32));
    let text = messages(h.state());
    assert!(
        text.contains(&shot.display().to_string()),
        "the full path is shown: {text}"
    );
    h.get_by_label("Open folder");

    // E: the figure at 2x as PNG, SVG and JSON under one name.
    h.state_mut().settings.export.figure_scale = 2;
    let fig = cleandift::app::figure_view::view_figure(h.state_mut()).expect("figure");
    let layout = fig.layout().expect("layout");
    h.key_press(Key::E);
    h.step();
    let png = h.state().last_export.clone().expect("figure written");
    assert_eq!(png.extension().and_then(|e| e.to_str()), Some("png"));
    let svg = png.with_extension("svg");
    let json = png.with_extension("json");
    let svg_text = std::fs::read_to_string(&svg).expect("SVG");
    for want in [
        ">Correspondence</text>",
        "layer us6",
        "t=",
        "cosine similarity",
        ">Q</text>",
        ">1</text>",
        "cos ",
        "data:image/png;base64,",
    ] {
        assert!(svg_text.contains(want), "SVG lacks {want:?}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON")).expect("json");
    assert_eq!(v["layer"], "us6");
    let fig_png = image::open(&png).expect("PNG").to_rgb8();
    assert_eq!(
        fig_png.dimensions(),
        (
            (layout.width * 2.0).round() as u32,
            (layout.height * 2.0).round() as u32
        )
    );
    // The colour bar's ends are the colormap's ends.
    let bar = layout.bar_rect().expect("colour bar");
    let y = ((bar.y + bar.h / 2.0) * 2.0) as u32;
    let x0 = (bar.x * 2.0).round() as u32;
    let x1 = ((bar.x + bar.w) * 2.0).round() as u32 - 1;
    let cmap = h.state().settings.display.colormap;
    let want = |v: f32| Colormap::rgb(cmap, v).map(|c| (c * 255.0).round() as u8);
    let close = |a: [u8; 3], b: [u8; 3]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= 3)
    };
    assert!(close(fig_png.get_pixel(x0, y).0, want(0.0)));
    assert!(close(fig_png.get_pixel(x1, y).0, want(1.0)));

    // A second E never overwrites: a numbered name.
    h.key_press(Key::E);
    h.step();
    let png2 = h.state().last_export.clone().expect("second figure");
    assert_ne!(png2, png);
    assert!(png.exists() && png2.exists());

    // Compare: every column has its title in the SVG.
    h.state_mut().settings.view = View::Compare;
    wait(&mut h, "compare features", 120, settled);
    let fig = cleandift::app::figure_view::view_figure(h.state_mut()).expect("figure");
    let svg = fig.to_svg().expect("svg");
    for col in ["clean", "noisy"] {
        assert!(
            fig.panels.iter().any(|p| p.title.starts_with(col)),
            "no {col} column"
        );
        assert!(svg.contains(&format!(">{col}")), "SVG lacks {col}");
    }
    // Only finished files: atomic writes leave no temporary files.
    let names: Vec<_> = std::fs::read_dir(export.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
