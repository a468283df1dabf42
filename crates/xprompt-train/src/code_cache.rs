//! The VQ codes of the procedural pools' input images, kept in the run directory between
//! starts: encoding a few thousand base images is most of a run's start-up, paid again on every
//! `--resume` (the 4× in-context run on two cores: 60–85 s to its first step without the cache,
//! 5 s with it).
//!
//! A cache file is used only when it was written for the same images (a hash of their pixels)
//! and the same tokenizer (the first image, encoded again now, must give the cached codes);
//! otherwise the codes are encoded and the file rewritten. Reading or writing it never fails a
//! run: a damaged or unwritable cache is reported and the codes encoded.

use std::path::Path;

use serde::{Deserialize, Serialize};
use xprompt_core::sequence::ImageGrid;
use xprompt_data::img::Img;

use crate::error::Result;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    /// FNV-1a over every image's size and pixel bits, in order.
    pixels: String,
    /// Per image: `[rows, cols, code…]`.
    grids: Vec<Vec<u32>>,
}

/// Codes of `imgs`: from `path` when it holds them, else from `encode` (which also refreshes
/// `path`). `encode` is called on every image at once, or on the first one only to check the
/// tokenizer.
pub fn load_or_encode(
    path: Option<&Path>,
    imgs: &[&Img],
    encode: impl Fn(&[&Img]) -> Result<Vec<ImageGrid>>,
) -> Result<Vec<ImageGrid>> {
    let Some(path) = path else {
        return encode(imgs);
    };
    let pixels = format!("{:016x}", pixel_hash(imgs));
    if let Some(grids) = read(path, &pixels, imgs.len()) {
        // Same images; the same tokenizer if it still gives the first image's codes.
        let same_vqgan = match imgs.first() {
            Some(first) => encode(&[first])?.first() == grids.first(),
            None => true,
        };
        if same_vqgan {
            return Ok(grids);
        }
    }
    let grids = encode(imgs)?;
    let file = CacheFile {
        version: VERSION,
        pixels,
        grids: grids
            .iter()
            .map(|g| {
                [g.rows as u32, g.cols as u32]
                    .into_iter()
                    .chain(g.codes.iter().copied())
                    .collect()
            })
            .collect(),
    };
    let written = serde_json::to_vec(&file)
        .map_err(std::io::Error::other)
        .and_then(|bytes| xprompt_core::safe_fs::write_atomic(path, &bytes));
    if let Err(e) = written {
        eprintln!(
            "warning: could not keep the base images' codes in {} ({e}); the next start encodes them again",
            path.display()
        );
    }
    Ok(grids)
}

/// The cached grids when the file exists, parses, and was written for these pixels.
fn read(path: &Path, pixels: &str, count: usize) -> Option<Vec<ImageGrid>> {
    let bytes = std::fs::read(path).ok()?;
    let file: CacheFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warning: ignoring {} ({e}); encoding the base images again",
                path.display()
            );
            return None;
        }
    };
    if file.version != VERSION || file.pixels != pixels || file.grids.len() != count {
        return None;
    }
    file.grids
        .into_iter()
        .map(|g| match g.as_slice() {
            [rows, cols, codes @ ..] => {
                ImageGrid::new(*rows as usize, *cols as usize, codes.to_vec()).ok()
            }
            _ => None,
        })
        .collect()
}

fn pixel_hash(imgs: &[&Img]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |v: u64| {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(PRIME);
        }
    };
    for img in imgs {
        feed(img.w as u64);
        feed(img.h as u64);
        for &v in &img.data {
            feed(v.to_bits() as u64);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn img(seed: f32) -> Img {
        Img {
            w: 2,
            h: 2,
            data: (0..12).map(|i| (seed + i as f32) / 20.0).collect(),
        }
    }

    /// A stand-in tokenizer: codes from the pixels plus `offset`, counting the images it saw.
    fn encoder<'a>(
        offset: u32,
        seen: &'a Cell<usize>,
    ) -> impl Fn(&[&Img]) -> Result<Vec<ImageGrid>> + 'a {
        move |imgs: &[&Img]| {
            seen.set(seen.get() + imgs.len());
            Ok(imgs
                .iter()
                .map(|i| {
                    ImageGrid::new(1, 2, vec![(i.data[0] * 100.0) as u32 + offset, offset]).unwrap()
                })
                .collect())
        }
    }

    #[test]
    fn codes_are_reused_only_for_the_same_images_and_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.json");
        let (a, b, c) = (img(1.0), img(2.0), img(3.0));
        let seen = Cell::new(0);
        let first = load_or_encode(Some(&path), &[&a, &b], encoder(0, &seen)).unwrap();
        assert_eq!(seen.get(), 2);
        // Same images, same tokenizer: one image encoded to check it, the rest from the file.
        let again = load_or_encode(Some(&path), &[&a, &b], encoder(0, &seen)).unwrap();
        assert_eq!((again, seen.get()), (first.clone(), 3));
        // Another tokenizer: everything encoded again.
        let other = load_or_encode(Some(&path), &[&a, &b], encoder(7, &seen)).unwrap();
        assert_eq!(seen.get(), 6);
        assert_ne!(other, first);
        // Other images: encoded again.
        load_or_encode(Some(&path), &[&a, &c], encoder(7, &seen)).unwrap();
        assert_eq!(seen.get(), 8);
        // A damaged file is ignored and replaced.
        std::fs::write(&path, b"{ not json").unwrap();
        let fresh = load_or_encode(Some(&path), &[&a, &b], encoder(0, &seen)).unwrap();
        assert_eq!((fresh, seen.get()), (first, 10));
        let reused = load_or_encode(Some(&path), &[&a, &b], encoder(0, &seen)).unwrap();
        assert_eq!((reused.len(), seen.get()), (2, 11));
    }
}
