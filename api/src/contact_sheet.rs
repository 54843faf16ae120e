//! A contact sheet (every frame as a half-size thumbnail on one PNG
//! grid) and single-frame thumbnails for the monitor.

use std::path::Path;

use anyhow::{Context, bail};

struct Rgb {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn decode(bytes: &[u8]) -> anyhow::Result<Rgb> {
    // Outputs were checked on upload; the limit still keeps a decode
    // bounded whatever the file claims.
    let limits = png::Limits {
        bytes: 512 * 1024 * 1024,
    };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
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

/// A frame scaled down (by averaging boxes of pixels) so that neither side
/// exceeds `max_side`, as PNG bytes; a smaller frame keeps its size.
pub fn thumbnail(bytes: &[u8], max_side: usize) -> anyhow::Result<Vec<u8>> {
    let image = decode(bytes)?;
    let (w, h) = (image.width.max(1), image.height.max(1));
    let scale = (w.max(h) as f64 / max_side.max(1) as f64).max(1.0);
    let (tw, th) = (
        ((w as f64 / scale).round() as usize).max(1),
        ((h as f64 / scale).round() as usize).max(1),
    );
    let mut out = vec![0u8; tw * th * 3];
    for y in 0..th {
        let (y0, y1) = (y * h / th, ((y + 1) * h / th).max(y * h / th + 1));
        for x in 0..tw {
            let (x0, x1) = (x * w / tw, ((x + 1) * w / tw).max(x * w / tw + 1));
            let mut sum = [0u64; 3];
            for sy in y0..y1.min(h) {
                for sx in x0..x1.min(w) {
                    let p = (sy * w + sx) * 3;
                    for (c, total) in sum.iter_mut().enumerate() {
                        *total += u64::from(image.pixels[p + c]);
                    }
                }
            }
            let n = ((y1.min(h) - y0) * (x1.min(w) - x0)).max(1) as u64;
            let q = (y * tw + x) * 3;
            for (c, total) in sum.iter().enumerate() {
                out[q + c] = (total / n) as u8;
            }
        }
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, tw as u32, th as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&out)?;
    writer.finish()?;
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&pixel(x, y));
            }
        }
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&data).unwrap();
        writer.finish().unwrap();
        bytes
    }

    #[test]
    fn a_thumbnail_keeps_the_aspect_and_averages_pixels() {
        // Left half black, right half white.
        let frame = png_of(640, 360, |x, _| if x < 320 { [0; 3] } else { [255; 3] });
        let thumb = decode(&thumbnail(&frame, 64).unwrap()).unwrap();
        assert_eq!((thumb.width, thumb.height), (64, 36));
        let at = |x: usize, y: usize| thumb.pixels[(y * 64 + x) * 3];
        assert_eq!(at(0, 10), 0);
        assert_eq!(at(63, 10), 255);
        // A small frame keeps its size.
        let small = decode(&thumbnail(&png_of(20, 10, |_, _| [9, 8, 7]), 64).unwrap()).unwrap();
        assert_eq!((small.width, small.height), (20, 10));
        assert_eq!(&small.pixels[..3], &[9, 8, 7]);
        assert!(thumbnail(b"not a png", 64).is_err());
    }
}
