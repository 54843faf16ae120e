//! A contact sheet: every frame as a half-size thumbnail on one PNG grid.

use std::path::Path;

use anyhow::{Context, bail};

struct Rgb {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn decode(bytes: &[u8]) -> anyhow::Result<Rgb> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().context("not a PNG")?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader.next_frame(&mut buf).context("undecodable PNG")?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        other => bail!("unsupported PNG colour type {other:?}"),
    };
    let mut pixels = Vec::with_capacity(width * height * 3);
    for px in buf[..width * height * channels].chunks_exact(channels) {
        match channels {
            1 | 2 => pixels.extend_from_slice(&[px[0], px[0], px[0]]),
            _ => pixels.extend_from_slice(&px[..3]),
        }
    }
    Ok(Rgb {
        width,
        height,
        pixels,
    })
}

/// Writes `frames` (PNG bytes, in order) as a grid of `columns` half-size
/// thumbnails to `path`.
pub fn write(frames: &[Vec<u8>], columns: usize, path: &Path) -> anyhow::Result<()> {
    let images = frames
        .iter()
        .map(|b| decode(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let Some(first) = images.first() else {
        bail!("no frames for a contact sheet");
    };
    let (tw, th) = ((first.width / 2).max(1), (first.height / 2).max(1));
    let columns = columns.clamp(1, images.len());
    let rows = images.len().div_ceil(columns);
    let gap = 4;
    let (sheet_w, sheet_h) = (columns * (tw + gap) + gap, rows * (th + gap) + gap);
    let mut sheet = vec![24u8; sheet_w * sheet_h * 3];
    for (i, image) in images.iter().enumerate() {
        let (ox, oy) = (
            gap + (i % columns) * (tw + gap),
            gap + (i / columns) * (th + gap),
        );
        for y in 0..th {
            for x in 0..tw {
                // A 2×2 box filter (clamped at odd edges).
                let mut sum = [0u32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let sx = (2 * x + dx).min(image.width - 1);
                    let sy = (2 * y + dy).min(image.height - 1);
                    let p = (sy * image.width + sx) * 3;
                    for (c, total) in sum.iter_mut().enumerate() {
                        *total += u32::from(image.pixels[p + c]);
                    }
                }
                let q = ((oy + y) * sheet_w + ox + x) * 3;
                for (c, total) in sum.iter().enumerate() {
                    sheet[q + c] = (total / 4) as u8;
                }
            }
        }
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(
        std::io::BufWriter::new(file),
        sheet_w as u32,
        sheet_h as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&sheet)?;
    writer.finish()?;
    Ok(())
}
