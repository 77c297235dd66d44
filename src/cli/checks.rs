//! Values the command line refuses before any work: numbers out of range or
//! not finite (clap value parsers, so the message names the option), and
//! picture outputs whose file name promises a format this does not write.

use std::path::Path;

use anyhow::bail;

/// A finite number in `[lo, hi]`, else what to give instead.
fn finite_in(v: &str, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|e| format!("{v:?} is not a number ({e}); {what}"))?;
    if !x.is_finite() || x < lo || x > hi {
        return Err(format!("{x} is out of range: {what}"));
    }
    Ok(x)
}

/// `--opacity`: 0 (the photo) to 1 (colours only).
pub(super) fn opacity(v: &str) -> Result<f32, String> {
    finite_in(v, 0.0, 1.0, "use 0 (the photo only) to 1 (colours only)").map(|x| x as f32)
}

/// `--t`: a diffusion timestep, 0 to 999.
pub(super) fn timestep(v: &str) -> Result<f64, String> {
    finite_in(v, 0.0, 999.0, "use a timestep from 0 to 999")
}

/// `--fusion-weight`: 0 to 1.
pub(super) fn unit_weight(v: &str) -> Result<f32, String> {
    finite_in(
        v,
        0.0,
        1.0,
        "use 0 (DINOv2 only) to 1 (diffusion only); 0.5 weighs both equally",
    )
    .map(|x| x as f32)
}

/// `--tolerance`: pixels, 0 or more.
pub(super) fn tolerance(v: &str) -> Result<f32, String> {
    finite_in(v, 0.0, 1e6, "use a distance in pixels, 0 or more").map(|x| x as f32)
}

/// `--tolerance-cells`: 0 to 10 feature cells (the app's range).
pub(super) fn tolerance_cells(v: &str) -> Result<f32, String> {
    finite_in(v, 0.0, 10.0, "use 0 to 10 feature cells").map(|x| x as f32)
}

/// `--figure-scale`: 1 to 4.
pub(super) fn figure_scale(v: &str) -> Result<f32, String> {
    finite_in(v, 1.0, 4.0, "use 1 to 4").map(|x| x as f32)
}

/// `--lr`: above 0, at most 1.
pub(super) fn learning_rate(v: &str) -> Result<f64, String> {
    let x = finite_in(v, 0.0, 1.0, "use a positive rate up to 1, e.g. 1e-5")?;
    if x == 0.0 {
        return Err("0 does not train: use a positive rate up to 1, e.g. 1e-5".into());
    }
    Ok(x)
}

/// A PCK alpha (`--alpha` items, `--sweep-alpha`): above 0, at most 1.
pub(super) fn alpha(v: &str) -> Result<f64, String> {
    let x = finite_in(
        v,
        0.0,
        1.0,
        "a PCK alpha is a fraction of the box or image size above 0 and at most 1, e.g. 0.1",
    )?;
    if x == 0.0 {
        return Err("0: a PCK alpha must be above 0, e.g. 0.1".into());
    }
    Ok(x)
}

/// The picture formats an output can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Picture {
    Png,
    Jpeg,
    Svg,
}

/// The format `path` asks for by its extension: `.png` (or none: a FIFO,
/// `/dev/stdout`), `.jpg`/`.jpeg`, `.svg` where `svg` is supported; any
/// other extension is refused naming `option`.
pub(super) fn picture_format(option: &str, path: &Path, svg: bool) -> anyhow::Result<Picture> {
    let Some(ext) = path.extension() else {
        return Ok(Picture::Png);
    };
    let ext = ext.to_string_lossy().to_ascii_lowercase();
    match ext.as_str() {
        "png" => Ok(Picture::Png),
        "jpg" | "jpeg" => Ok(Picture::Jpeg),
        "svg" if svg => Ok(Picture::Svg),
        _ => bail!(
            "{option} {}: .{ext} is not a picture format this writes; use .png or .jpg/.jpeg{}",
            path.display(),
            if svg { " or .svg" } else { "" }
        ),
    }
}

/// `img` encoded as `fmt` (PNG or JPEG at quality 95).
pub(super) fn encode(img: &image::RgbImage, fmt: Picture) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match fmt {
        Picture::Png => bytes = crate::png::encode(img)?,
        Picture::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(img)?
        }
        Picture::Svg => bail!("internal: a raster picture cannot be written as SVG"),
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_formats() {
        assert_eq!(opacity("0.5"), Ok(0.5));
        for bad in ["NaN", "nan", "-1", "1.5", "inf", "x"] {
            assert!(opacity(bad).is_err(), "{bad}");
        }
        assert!(timestep("1000").is_err() && timestep("999").is_ok());
        assert!(learning_rate("0").is_err() && learning_rate("1e-5").is_ok());
        assert!(alpha("0").is_err() && alpha("NaN").is_err() && alpha("0.1").is_ok());
        let p = |s: &str| picture_format("--out", Path::new(s), true);
        assert_eq!(p("a.JPG").ok(), Some(Picture::Jpeg));
        assert_eq!(p("a").ok(), Some(Picture::Png));
        assert_eq!(p("a.svg").ok(), Some(Picture::Svg));
        let e = p("f.txt").expect_err("txt");
        assert!(e.to_string().contains("--out f.txt: .txt"), "{e}");
        assert!(picture_format("--out", Path::new("a.svg"), false).is_err());
    }
}
