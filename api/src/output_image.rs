//! Checking an uploaded frame before it counts: a PNG that decodes
//! completely (every row, every checksum, up to its end chunk), of the
//! resolution the render asked for when it asked for one.

use std::io::BufReader;
use std::path::Path;

/// The most pixels a frame of a render without a set resolution may have
/// (16384 × 16384): decoding is bounded even when the size is not known.
pub const MAX_FRAME_PIXELS: u64 = 1 << 28;

/// Why an uploaded frame is refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputImageError {
    /// Not a PNG, or one that does not decode to its end.
    #[error("the frame is not a complete PNG image: {0}")]
    NotPng(String),
    /// A PNG of another size than the render's resolution.
    #[error(
        "the frame is {width}x{height}, the render asked for {expected_width}x{expected_height}"
    )]
    WrongSize {
        /// The image's width.
        width: u32,
        /// The image's height.
        height: u32,
        /// The render's width.
        expected_width: u32,
        /// The render's height.
        expected_height: u32,
    },
    /// Larger than [`MAX_FRAME_PIXELS`].
    #[error("the frame is {width}x{height}, over the limit of {MAX_FRAME_PIXELS} pixels")]
    TooManyPixels {
        /// The image's width.
        width: u32,
        /// The image's height.
        height: u32,
    },
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes the PNG in `path` completely, one row at a time (memory stays a
/// few rows), and answers its (width, height). Blocking: call it from
/// `spawn_blocking`.
pub fn check_png(
    path: &Path,
    expected: Option<(u32, u32)>,
) -> Result<(u32, u32), OutputImageError> {
    let not_png = |e: png::DecodingError| OutputImageError::NotPng(e.to_string());
    let file = std::fs::File::open(path)?;
    let mut options = png::DecodeOptions::default();
    options.set_ignore_checksums(false);
    options.set_skip_ancillary_crc_failures(false);
    let mut decoder = png::Decoder::new_with_options(BufReader::new(file), options);
    let (width, height) = decoder.read_header_info().map_err(not_png)?.size();
    if let Some((expected_width, expected_height)) = expected
        && (width, height) != (expected_width, expected_height)
    {
        return Err(OutputImageError::WrongSize {
            width,
            height,
            expected_width,
            expected_height,
        });
    }
    if u64::from(width) * u64::from(height) > MAX_FRAME_PIXELS {
        return Err(OutputImageError::TooManyPixels { width, height });
    }
    let mut reader = decoder.read_info().map_err(not_png)?;
    let mut rows = 0u64;
    while reader.next_row().map_err(not_png)?.is_some() {
        rows += 1;
    }
    if rows == 0 {
        return Err(OutputImageError::NotPng("no image rows".into()));
    }
    reader.finish().map_err(not_png)?;
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
        writer.write_image_data(&pixels).unwrap();
        writer.finish().unwrap();
        out
    }

    fn check(bytes: &[u8], expected: Option<(u32, u32)>) -> Result<(u32, u32), OutputImageError> {
        let path = std::env::temp_dir().join(format!("flatrender-png-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, bytes).unwrap();
        let result = check_png(&path, expected);
        std::fs::remove_file(path).unwrap();
        result
    }

    #[test]
    fn a_complete_png_of_the_right_size_is_accepted() {
        let png = png_of(32, 18);
        assert_eq!(check(&png, None).unwrap(), (32, 18));
        assert_eq!(check(&png, Some((32, 18))).unwrap(), (32, 18));
    }

    #[test]
    fn a_png_of_another_size_is_refused() {
        assert!(matches!(
            check(&png_of(32, 18), Some((320, 180))),
            Err(OutputImageError::WrongSize { width: 32, .. })
        ));
    }

    #[test]
    fn a_signature_alone_garbage_or_a_truncated_or_corrupted_png_is_refused() {
        let png = png_of(32, 18);
        let mut garbage = png[..8].to_vec();
        garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        let mut flipped = png.clone();
        let middle = png.len() / 2;
        flipped[middle] ^= 0x40;
        for (what, bytes) in [
            ("signature alone", png[..8].to_vec()),
            ("signature and random bytes", garbage),
            ("truncated", png[..png.len() - 20].to_vec()),
            ("header only", png[..33].to_vec()),
            ("one bit flipped", flipped),
            ("empty", Vec::new()),
        ] {
            assert!(
                matches!(check(&bytes, None), Err(OutputImageError::NotPng(_))),
                "{what} was accepted"
            );
        }
    }
}
