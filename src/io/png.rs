//! PNG (8- and 16-bit; grey, grey+alpha, RGB, RGBA; palette and 1/2/4-bit
//! grey arrive expanded to 8-bit) and JPEG, through the `image` crate, into a
//! [`DecodedImage`] in [0, 1], channel-first. Alpha is dropped: a scan's
//! transparency carries no diagnosis. The format is taken from the file's
//! content, not its name, so a PNG saved as `.jpg` still decodes; content that
//! is neither is an error naming the file.
//!
//! Images over a pixel limit are refused after reading only the header, before
//! any pixel buffer exists, so a small file claiming 60000×60000 pixels (a
//! decompression bomb) costs nothing. Channels and size are adapted to the
//! model by `preprocess.rs`, differentiably.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::error::DecodeError;

/// A decoded image, channel-first, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    /// The file it came from, so later errors can name it.
    pub path: PathBuf,
    /// 1 (grey) or 3 (RGB), after dropping alpha.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `channels × height × width`, row-major: 8-bit values divided by 255,
    /// 16-bit values by 65535.
    pub data: Vec<f32>,
    /// Bits per sample of the decoded buffer: 8 or 16 (PNGs of 1, 2 or 4 bits
    /// are expanded to 8 by the decoder). Quantisation after an attack rounds
    /// to this many bits.
    pub bit_depth: u8,
    /// Channels in the file, alpha included: 1, 2, 3 or 4.
    pub source_channels: usize,
}

/// Decode a PNG or JPEG file. Refuses images with more than `max_pixels`
/// pixels (see [`crate::io::DEFAULT_MAX_PIXELS`]) before decoding pixel data.
/// Never panics on bad bytes: every failure is a [`DecodeError`] naming `path`.
pub fn decode(path: &Path, max_pixels: u64) -> Result<DecodedImage, DecodeError> {
    let io_err = |source| DecodeError::Io { path: path.to_path_buf(), source };
    let corrupt = |reason: String| DecodeError::Corrupt { path: path.to_path_buf(), reason };

    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(DecodeError::Unsupported { path: path.to_path_buf(), reason: "is a folder, not an image".into() });
    }
    if meta.len() == 0 {
        return Err(corrupt("the file is empty (0 bytes)".into()));
    }

    // `open` guesses the format from the extension; the content's signature
    // overrides it when recognised. The file is streamed: only the header is
    // read before the pixel limit is checked.
    let reader = ImageReader::open(path).map_err(io_err)?.with_guessed_format().map_err(io_err)?;
    decode_reader(reader, path, max_pixels)
}

/// [`decode`] on the bytes of a file; `path` names it in errors and, through
/// its extension, gives the format when the content's signature does not.
/// The fuzz targets (`fuzz/`) enter here.
pub fn decode_bytes(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<DecodedImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: "the file is empty (0 bytes)".into() });
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes));
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let reader = reader.with_guessed_format().map_err(|source| DecodeError::Io { path: path.to_path_buf(), source })?;
    decode_reader(reader, path, max_pixels)
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
    max_pixels: u64,
) -> Result<DecodedImage, DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt { path: path.to_path_buf(), reason };
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(DecodeError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("the content is {other:?}; advscan reads PNG and JPEG"),
            });
        }
        None => return Err(corrupt("the content is neither PNG nor JPEG (unrecognised signature)".into())),
    }

    // Header first, without limits (the image crate's own allocation limit
    // would otherwise reject a bomb with a less specific message); our pixel
    // limit is checked before any pixel buffer is allocated, then the
    // decoder's allocation limit is set to what an image of that size needs.
    reader.limits(Limits::no_limits());
    let mut decoder = reader.into_decoder().map_err(|e| corrupt(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let (width, height) = (u64::from(w), u64::from(h));
    let pixels = width * height;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            frames: 1,
            pixels,
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(corrupt(format!("the header declares an empty image ({width}×{height})")));
    }
    let mut limits = Limits::default();
    // 8 bytes per pixel covers RGBA16, the widest output, plus decoder scratch.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(limits).map_err(|e| corrupt(e.to_string()))?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(e.to_string()))?;

    let (w, h) = (w as usize, h as usize);
    let (data, channels, source_channels, bit_depth) = match &img {
        DynamicImage::ImageLuma8(b) => (planar(b.as_raw(), 1, 1, w, h, 255.0), 1, 1, 8),
        DynamicImage::ImageLumaA8(b) => (planar(b.as_raw(), 2, 1, w, h, 255.0), 1, 2, 8),
        DynamicImage::ImageRgb8(b) => (planar(b.as_raw(), 3, 3, w, h, 255.0), 3, 3, 8),
        DynamicImage::ImageRgba8(b) => (planar(b.as_raw(), 4, 3, w, h, 255.0), 3, 4, 8),
        DynamicImage::ImageLuma16(b) => (planar(b.as_raw(), 1, 1, w, h, 65535.0), 1, 1, 16),
        DynamicImage::ImageLumaA16(b) => (planar(b.as_raw(), 2, 1, w, h, 65535.0), 1, 2, 16),
        DynamicImage::ImageRgb16(b) => (planar(b.as_raw(), 3, 3, w, h, 65535.0), 3, 3, 16),
        DynamicImage::ImageRgba16(b) => (planar(b.as_raw(), 4, 3, w, h, 65535.0), 3, 4, 16),
        other => {
            return Err(DecodeError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("pixel type {:?} is not an 8- or 16-bit grey or RGB image", other.color()),
            });
        }
    };
    Ok(DecodedImage { path: path.to_path_buf(), channels, height: h, width: w, data, bit_depth, source_channels })
}

/// Interleaved `src_channels` samples per pixel → the first `keep` channels,
/// channel-first, divided by `max`. Division (not multiplication by 1/max)
/// keeps 128/255 bit-identical to what a reference computes.
fn planar<T: Copy + Into<f32>>(raw: &[T], src_channels: usize, keep: usize, w: usize, h: usize, max: f32) -> Vec<f32> {
    let plane = w * h;
    let mut out = vec![0.0f32; keep * plane];
    for (i, px) in raw.chunks_exact(src_channels).enumerate() {
        for c in 0..keep {
            out[c * plane + i] = px[c].into() / max;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn write<P: image::Pixel<Subpixel = S> + image::PixelWithColorType, S: image::Primitive>(
        dir: &Path,
        name: &str,
        w: u32,
        h: u32,
        raw: Vec<S>,
    ) -> PathBuf
    where
        [S]: image::EncodableLayout,
    {
        let path = dir.join(name);
        ImageBuffer::<P, Vec<S>>::from_raw(w, h, raw).unwrap().save(&path).unwrap();
        path
    }

    const BIG: u64 = crate::io::DEFAULT_MAX_PIXELS;

    #[test]
    fn grey_8_and_16_bit_values_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p8 = write::<Luma<u8>, u8>(dir.path(), "g8.png", 2, 1, vec![128, 255]);
        let img = decode(&p8, BIG).unwrap();
        assert_eq!((img.channels, img.height, img.width, img.bit_depth, img.source_channels), (1, 1, 2, 8, 1));
        assert_eq!(img.data, vec![128.0 / 255.0, 1.0]);

        let p16 = write::<Luma<u16>, u16>(dir.path(), "g16.png", 3, 1, vec![0, 1000, 65535]);
        let img = decode(&p16, BIG).unwrap();
        assert_eq!((img.channels, img.bit_depth, img.source_channels), (1, 16, 1));
        assert_eq!(img.data, vec![0.0, 1000.0 / 65535.0, 1.0]);

        let pga = write::<LumaA<u16>, u16>(dir.path(), "ga16.png", 1, 1, vec![65535, 7]);
        let img = decode(&pga, BIG).unwrap();
        assert_eq!((img.channels, img.source_channels, img.bit_depth), (1, 2, 16));
        assert_eq!(img.data, vec![1.0]);
    }

    #[test]
    fn rgb_and_rgba_become_chw_without_alpha() {
        let dir = tempfile::tempdir().unwrap();
        // Two pixels: (10, 20, 30) and (40, 50, 60); CHW puts each channel's plane together.
        let p = write::<Rgb<u8>, u8>(dir.path(), "rgb8.png", 2, 1, vec![10, 20, 30, 40, 50, 60]);
        let img = decode(&p, BIG).unwrap();
        assert_eq!((img.channels, img.source_channels, img.bit_depth), (3, 3, 8));
        let want: Vec<f32> = [10, 40, 20, 50, 30, 60].iter().map(|&v| v as f32 / 255.0).collect();
        assert_eq!(img.data, want);

        let p = write::<Rgba<u8>, u8>(dir.path(), "rgba8.png", 1, 1, vec![1, 2, 3, 0]);
        let img = decode(&p, BIG).unwrap();
        assert_eq!((img.channels, img.source_channels), (3, 4));
        assert_eq!(img.data, vec![1.0 / 255.0, 2.0 / 255.0, 3.0 / 255.0]);

        let p = write::<Rgba<u16>, u16>(dir.path(), "rgba16.png", 1, 1, vec![65535, 0, 32768, 65535]);
        let img = decode(&p, BIG).unwrap();
        assert_eq!((img.channels, img.source_channels, img.bit_depth), (3, 4, 16));
        assert_eq!(img.data, vec![1.0, 0.0, 32768.0 / 65535.0]);

        let p = write::<Rgb<u16>, u16>(dir.path(), "rgb16.png", 1, 1, vec![65535, 1, 2]);
        let img = decode(&p, BIG).unwrap();
        assert_eq!(img.data, vec![1.0, 1.0 / 65535.0, 2.0 / 65535.0]);
    }

    #[test]
    fn jpeg_decodes_and_content_wins_over_extension() {
        let dir = tempfile::tempdir().unwrap();
        let p = write::<Luma<u8>, u8>(dir.path(), "flat.jpg", 8, 8, vec![200; 64]);
        let img = decode(&p, BIG).unwrap();
        assert_eq!((img.channels, img.height, img.width, img.bit_depth), (1, 8, 8, 8));
        // A flat block survives JPEG within a grey level or two.
        assert!(img.data.iter().all(|v| (v - 200.0 / 255.0).abs() <= 2.0 / 255.0), "{:?}", img.data);

        // PNG bytes under a .jpg name decode as the PNG they are.
        let png = write::<Luma<u8>, u8>(dir.path(), "g.png", 1, 1, vec![7]);
        let misnamed = dir.path().join("really_png.jpg");
        std::fs::copy(&png, &misnamed).unwrap();
        assert_eq!(decode(&misnamed, BIG).unwrap().data, vec![7.0 / 255.0]);
    }

    fn assert_names_file(err: DecodeError, path: &Path) -> String {
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "message does not name the file: {msg}");
        msg
    }

    #[test]
    fn bad_bytes_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let noise: Vec<u8> = (0..64 * 64).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let good = write::<Luma<u8>, u8>(dir.path(), "noise.png", 64, 64, noise.clone());
        let bytes = std::fs::read(&good).unwrap();

        let truncated = dir.path().join("truncated.png");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let msg = assert_names_file(decode(&truncated, BIG).unwrap_err(), &truncated);
        assert!(msg.contains("not a decodable image"), "{msg}");

        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let msg = assert_names_file(decode(&empty, BIG).unwrap_err(), &empty);
        assert!(msg.contains("empty"), "{msg}");

        let random = dir.path().join("random.png");
        std::fs::write(&random, &noise).unwrap();
        assert!(matches!(decode(&random, BIG), Err(DecodeError::Corrupt { .. })));
        assert_names_file(decode(&random, BIG).unwrap_err(), &random);

        // Random bytes under a name no decoder claims.
        let random_txt = dir.path().join("random.txt");
        std::fs::write(&random_txt, &noise).unwrap();
        let msg = assert_names_file(decode(&random_txt, BIG).unwrap_err(), &random_txt);
        assert!(msg.contains("neither PNG nor JPEG"), "{msg}");

        // Through the format dispatch, an unsupported extension is refused outright.
        let wrong_ext = dir.path().join("scan.bmp");
        std::fs::copy(&good, &wrong_ext).unwrap();
        let msg = assert_names_file(crate::io::decode(&wrong_ext, BIG).unwrap_err(), &wrong_ext);
        assert!(msg.contains("unsupported file extension"), "{msg}");

        let missing = dir.path().join("missing.png");
        assert!(matches!(decode(&missing, BIG), Err(DecodeError::Io { .. })));
        assert!(matches!(decode(dir.path(), BIG), Err(DecodeError::Unsupported { .. })));
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn pixel_limit_refuses_a_bomb_header_before_decoding() {
        // A 60-byte file claiming 60000×60000 RGBA16: decoding it would need
        // 28.8 GB. Refusing it must come from the header alone.
        let dir = tempfile::tempdir().unwrap();
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&60000u32.to_be_bytes());
        ihdr.extend_from_slice(&60000u32.to_be_bytes());
        ihdr.extend_from_slice(&[16, 6, 0, 0, 0]); // depth 16, RGBA, deflate, adaptive filter, no interlace
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
        chunk(&mut png, b"IEND", &[]);
        let path = dir.path().join("bomb_60000x60000.png");
        std::fs::write(&path, &png).unwrap();
        let err = decode(&path, BIG).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLarge { width: 60000, height: 60000, limit: BIG, .. }),
            "expected TooLarge, got {err}"
        );
        assert_names_file(err, &path);

        // The limit is a parameter: a 4×4 image is refused under a 15-pixel limit.
        let small = write::<Luma<u8>, u8>(dir.path(), "small.png", 4, 4, vec![0; 16]);
        assert!(matches!(decode(&small, 15), Err(DecodeError::TooLarge { pixels: 16, limit: 15, .. })));
        assert!(decode(&small, 16).is_ok());
    }
}
