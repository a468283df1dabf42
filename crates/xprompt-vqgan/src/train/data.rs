//! Training images: a directory (searched recursively for .png/.jpg/.jpeg) or a text file
//! listing one path per line (relative paths are relative to the list; `#` comments). Images
//! are decoded once (alpha whitened as Lumina does), resized so the short side equals
//! `short_side` (Pillow bicubic), and kept in memory. Batches are a pure function of (seed, step):
//! an epoch-wise permutation, random crop offsets and horizontal flips, so resume is exact.
use crate::error::{Result, VqganError};
use crate::image_io::{load_image, U8Image};
use crate::preprocess::{to_tensor, whiten};
use crate::resize::{resize, Filter};
use crate::train::init::fnv1a;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| VqganError::io(dir, e))?;
    for entry in rd {
        let p = entry.map_err(|e| VqganError::io(dir, e))?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Image paths from a directory or a list file, sorted.
pub fn list_images(src: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if src.is_dir() {
        walk(src, &mut out)?;
    } else {
        let text = std::fs::read_to_string(src).map_err(|e| VqganError::io(src, e))?;
        let base = src.parent().unwrap_or(Path::new("."));
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let p = PathBuf::from(l);
            out.push(if p.is_absolute() { p } else { base.join(p) });
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(VqganError::Train(format!(
            "no .png/.jpg images found in {}",
            src.display()
        )));
    }
    Ok(out)
}

/// Training and held-out images, short side resized to the crop.
pub struct Dataset {
    pub train: Vec<U8Image>,
    pub holdout: Vec<U8Image>,
    pub skipped: Vec<String>,
}

fn prepare(path: &Path, crop: usize, short: usize, max_pixels: u64) -> Result<U8Image> {
    let img = whiten(&load_image(path, max_pixels)?.image);
    let s = short as f64 / img.width.min(img.height) as f64;
    let w = ((img.width as f64 * s).round_ties_even() as usize).max(crop);
    let h = ((img.height as f64 * s).round_ties_even() as usize).max(crop);
    if w as u64 * h as u64 > max_pixels {
        return Err(VqganError::image(
            path,
            format!("resizing to {w}x{h} exceeds the pixel budget"),
        ));
    }
    Ok(resize(&img, w, h, Filter::Bicubic))
}

impl Dataset {
    /// Load images; a seeded shuffle puts the first `holdout` in the held-out set. Unreadable
    /// images are skipped and reported in `skipped`.
    pub fn load(
        paths: &[PathBuf],
        crop: usize,
        short_side: usize,
        holdout: usize,
        seed: u64,
        max_pixels: u64,
    ) -> Result<Self> {
        let mut order: Vec<&PathBuf> = paths.iter().collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ fnv1a(b"holdout")));
        let mut train = Vec::new();
        let mut held = Vec::new();
        let mut skipped = Vec::new();
        for p in order {
            match prepare(p, crop, short_side.max(crop), max_pixels) {
                Ok(img) if held.len() < holdout => held.push(img),
                Ok(img) => train.push(img),
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", p.display());
                    skipped.push(e.to_string());
                }
            }
        }
        if train.is_empty() {
            return Err(VqganError::Train(format!(
                "no training images left ({} usable, {} held out, {} unreadable)",
                held.len(),
                held.len(),
                skipped.len()
            )));
        }
        Ok(Self {
            train,
            holdout: held,
            skipped,
        })
    }

    /// The batch for `step`: `(B, 3, crop, crop)` in [-1, 1].
    pub fn batch(
        &self,
        step: u64,
        batch_size: usize,
        crop: usize,
        seed: u64,
        dev: &Device,
    ) -> Result<Tensor> {
        let n = self.train.len() as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ fnv1a(b"batch") ^ step.wrapping_mul(0x9e3779b97f4a7c15),
        );
        let mut perm_epoch = u64::MAX;
        let mut perm: Vec<usize> = Vec::new();
        let mut xs = Vec::with_capacity(batch_size);
        for b in 0..batch_size as u64 {
            let k = step * batch_size as u64 + b;
            let epoch = k / n;
            if epoch != perm_epoch {
                perm = (0..n as usize).collect();
                perm.shuffle(&mut ChaCha8Rng::seed_from_u64(
                    seed ^ fnv1a(b"epoch") ^ epoch.wrapping_mul(0x2545f4914f6cdd1d),
                ));
                perm_epoch = epoch;
            }
            let img = &self.train[perm[(k % n) as usize]];
            let left = rng.random_range(0..=img.width - crop);
            let top = rng.random_range(0..=img.height - crop);
            let mut c = img.crop(left, top, crop, crop);
            if rng.random_bool(0.5) {
                flip_h(&mut c);
            }
            xs.push(to_tensor(&c, dev)?);
        }
        Ok(Tensor::cat(&xs, 0)?)
    }

    /// Centre crops of the held-out images.
    pub fn holdout_crops(&self, crop: usize) -> Vec<U8Image> {
        self.holdout
            .iter()
            .map(|img| img.crop((img.width - crop) / 2, (img.height - crop) / 2, crop, crop))
            .collect()
    }
}

fn flip_h(img: &mut U8Image) {
    let c = img.channels;
    for row in img.data.chunks_exact_mut(img.width * c) {
        let w = row.len() / c;
        for x in 0..w / 2 {
            for ch in 0..c {
                row.swap(x * c + ch, (w - 1 - x) * c + ch);
            }
        }
    }
}
