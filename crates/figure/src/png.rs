//! The workspace's one PNG writer: figures, charts, the app's exports and
//! screenshots, and the CLI's pictures are all encoded here.

use image::RgbImage;

/// `img` as PNG bytes.
pub fn encode(img: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(bytes)
}
