//! Bad and unusual image input: each case is handled (with the documented conversion) or
//! refused with a message naming the file and the problem; nothing panics.
use std::path::{Path, PathBuf};
use xprompt_vqgan::image_io::load_image;
use xprompt_vqgan::preprocess::{preprocess, whiten, PreprocessOptions};
use xprompt_vqgan::U8Image;

fn png_with_ihdr(path: &Path, w: u32, h: u32) {
    // Signature + IHDR (CRC not checked before the dimensions are read) + nothing else.
    let mut b = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    b.extend_from_slice(b"IHDR");
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&b[12..]);
    b.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(path, b).unwrap();
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &x in data {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    (d, p)
}

#[test]
fn huge_dimensions_refused_before_decoding() {
    let (_d, p) = tmp("huge.png");
    png_with_ihdr(&p, 100_000, 90_000);
    let e = load_image(&p, 64 << 20).unwrap_err().to_string();
    assert!(e.contains("huge.png") && e.contains("pixel budget"), "{e}");
}

#[test]
fn zero_size_refused() {
    let (_d, p) = tmp("zero.png");
    png_with_ihdr(&p, 0, 10);
    let e = load_image(&p, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("zero.png"), "{e}");
}

#[test]
fn corrupt_png_and_jpeg_refused() {
    let (d, p) = tmp("corrupt.png");
    let img = U8Image::new(20, 20, 3, (0..1200).map(|i| (i % 251) as u8).collect()).unwrap();
    img.save_png(&p).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    for b in &mut bytes[60..n - 20] {
        *b ^= 0x5a;
    }
    std::fs::write(&p, &bytes).unwrap();
    let e = load_image(&p, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("corrupt.png"), "{e}");

    let j = d.path().join("cut.jpg");
    image::save_buffer(&j, &img.data, 20, 20, image::ExtendedColorType::Rgb8).unwrap();
    assert!(load_image(&j, 1 << 20).is_ok(), "a valid JPEG loads");
    let bytes = std::fs::read(&j).unwrap();
    std::fs::write(&j, &bytes[..bytes.len() / 3]).unwrap();
    let e = load_image(&j, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("cut.jpg"), "{e}");

    let t = d.path().join("text.png");
    std::fs::write(&t, b"hello").unwrap();
    let e = load_image(&t, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("text.png"), "{e}");
}

#[test]
fn one_pixel_wide_images_are_cropped_or_refused_by_budget() {
    let (d, p) = tmp("thin.png");
    U8Image::new(1, 300, 3, vec![128; 900])
        .unwrap()
        .save_png(&p)
        .unwrap();
    let loaded = load_image(&p, 1 << 20).unwrap();
    let out = preprocess(
        &loaded,
        &PreprocessOptions {
            target_size: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((out.width, out.height), (32, 128));
    assert!(out.data.iter().all(|&v| v == 128));
    // An extreme aspect ratio whose Lumina resize would explode is refused.
    let q = d.path().join("thinner.png");
    U8Image::new(1, 20000, 3, vec![7; 60000])
        .unwrap()
        .save_png(&q)
        .unwrap();
    let loaded = load_image(&q, 1 << 20).unwrap();
    let opts = PreprocessOptions {
        target_size: Some(512),
        max_pixels: 1 << 20,
        ..Default::default()
    };
    let e = preprocess(&loaded, &opts).unwrap_err().to_string();
    assert!(e.contains("pixel budget"), "{e}");
}

#[test]
fn sixteen_bit_keeps_high_byte() {
    let (_d, p) = tmp("deep.png");
    let buf: image::ImageBuffer<image::Rgb<u16>, Vec<u16>> =
        image::ImageBuffer::from_fn(4, 3, |x, y| {
            image::Rgb([0x1234 * (x as u16 + 1), 0xff00, 0x00ff + y as u16])
        });
    buf.save(&p).unwrap();
    let l = load_image(&p, 1 << 20).unwrap();
    assert_eq!(l.image.channels, 3);
    assert_eq!(&l.image.data[..3], &[0x12, 0xff, 0x00]);
    assert!(l.source_kind.contains("16-bit"));
    let (_d2, g) = tmp("gray16.png");
    let gb: image::ImageBuffer<image::Luma<u16>, Vec<u16>> =
        image::ImageBuffer::from_fn(2, 2, |_, _| image::Luma([0xabcd]));
    gb.save(&g).unwrap();
    assert_eq!(
        &load_image(&g, 1 << 20).unwrap().image.data[..3],
        &[0xab, 0xab, 0xab]
    );
}

#[test]
fn grayscale_palette_and_alpha() {
    let (_d, p) = tmp("gray.png");
    image::save_buffer(&p, &[10, 200, 30, 40], 2, 2, image::ExtendedColorType::L8).unwrap();
    let l = load_image(&p, 1 << 20).unwrap();
    assert_eq!(l.image.channels, 3);
    assert_eq!(&l.image.data[3..6], &[200, 200, 200]);
    assert!(!l.nearest_only);

    let pal = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/vqgan/preprocess/src_palette.png");
    let l = load_image(&pal, 1 << 20).unwrap();
    assert!(
        l.nearest_only,
        "palette PNGs resample with NEAREST as in Pillow"
    );

    // Alpha over white, truncated: (1 - 128/255)*255 + (128/255)*100 = 177.19 -> 177.
    let rgba = U8Image::new(2, 1, 4, vec![100, 50, 0, 128, 1, 2, 3, 255]).unwrap();
    let w = whiten(&rgba);
    assert_eq!(w.data, vec![177, 152, 127, 1, 2, 3]);
    // Fully opaque RGBA just drops alpha.
    let opaque = U8Image::new(1, 1, 4, vec![9, 8, 7, 255]).unwrap();
    assert_eq!(whiten(&opaque).data, vec![9, 8, 7]);
}
