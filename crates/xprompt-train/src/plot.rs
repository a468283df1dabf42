//! A dependency-free loss-curve PNG: training CE (blue) and validation CE (red) against steps,
//! on a log-scaled y axis with light grid lines at each power of ten; below it, when the run
//! measures it, the ICL gap (nats per answer token; X-Prompt mask green, causal mask orange)
//! on a linear axis with the zero line in grey.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Result, TrainError};

const W: u32 = 720;
const H: u32 = 360;
const MARGIN: u32 = 30;
/// Height of the ICL-gap panel.
const GAP_H: u32 = 220;

/// A series of the ICL-gap panel: `(step, gap with the X-Prompt mask, gap with the causal mask)`.
pub type GapPoint = (u64, f32, f32);

/// Draws `train` and `val` `(step, loss)` series, and the `gaps` panel when not empty, to `path`.
pub fn loss_curve(
    train: &[(u64, f32)],
    val: &[(u64, f32)],
    gaps: &[GapPoint],
    path: &Path,
) -> Result<()> {
    let height = if gaps.is_empty() { H } else { H + GAP_H };
    let mut img = RgbImage::from_pixel(W, height, Rgb([255, 255, 255]));
    let all: Vec<&(u64, f32)> = train
        .iter()
        .chain(val)
        .filter(|(_, l)| l.is_finite() && *l > 0.0)
        .collect();
    if all.is_empty() {
        return Err(TrainError::Data("no finite losses to plot".into()));
    }
    let max_step = all.iter().map(|(s, _)| *s).max().unwrap_or(1).max(1) as f32;
    let lo = all
        .iter()
        .map(|(_, l)| l.log10())
        .fold(f32::INFINITY, f32::min)
        .floor();
    let hi = all
        .iter()
        .map(|(_, l)| l.log10())
        .fold(f32::NEG_INFINITY, f32::max)
        .ceil()
        .max(lo + 1.0);
    let (pw, ph) = ((W - 2 * MARGIN) as f32, (H - 2 * MARGIN) as f32);
    let to_px = |s: u64, l: f32| -> (i64, i64) {
        let x = MARGIN as f32 + s as f32 / max_step * pw;
        let y = MARGIN as f32 + (hi - l.log10()) / (hi - lo) * ph;
        (x as i64, y as i64)
    };
    // Grid at powers of ten, and the axes.
    let mut decade = lo;
    while decade <= hi {
        let y = (MARGIN as f32 + (hi - decade) / (hi - lo) * ph) as i64;
        line(
            &mut img,
            (MARGIN as i64, y),
            ((W - MARGIN) as i64, y),
            Rgb([225, 225, 225]),
        );
        decade += 1.0;
    }
    line(
        &mut img,
        (MARGIN as i64, MARGIN as i64),
        (MARGIN as i64, (H - MARGIN) as i64),
        Rgb([0, 0, 0]),
    );
    line(
        &mut img,
        (MARGIN as i64, (H - MARGIN) as i64),
        ((W - MARGIN) as i64, (H - MARGIN) as i64),
        Rgb([0, 0, 0]),
    );
    for (series, colour) in [(train, Rgb([40, 90, 200])), (val, Rgb([210, 50, 40]))] {
        let pts: Vec<(i64, i64)> = series
            .iter()
            .filter(|(_, l)| l.is_finite() && *l > 0.0)
            .map(|&(s, l)| to_px(s, l))
            .collect();
        for w in pts.windows(2) {
            line(&mut img, w[0], w[1], colour);
        }
        for &p in &pts {
            for d in -1..=1 {
                put(&mut img, p.0 + d, p.1, colour);
                put(&mut img, p.0, p.1 + d, colour);
            }
        }
    }
    if !gaps.is_empty() {
        gap_panel(&mut img, gaps, max_step);
    }
    img.save(path)
        .map_err(|e| TrainError::Data(format!("cannot write {}: {e}", path.display())))
}

/// The ICL-gap panel under the loss plot, sharing its step axis.
fn gap_panel(img: &mut RgbImage, gaps: &[GapPoint], max_step: f32) {
    let finite = gaps
        .iter()
        .flat_map(|&(_, a, b)| [a, b])
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((0f32, 0f32), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let hi = if hi - lo < 1e-3 { lo + 1e-3 } else { hi };
    let (top, bottom) = (H + MARGIN / 2, H + GAP_H - MARGIN);
    let pw = (W - 2 * MARGIN) as f32;
    let to_px = |s: u64, v: f32| -> (i64, i64) {
        let x = MARGIN as f32 + s as f32 / max_step * pw;
        let y = top as f32 + (hi - v) / (hi - lo) * (bottom - top) as f32;
        (x as i64, y as i64)
    };
    let zero = to_px(0, 0.0).1;
    line(
        img,
        (MARGIN as i64, zero),
        ((W - MARGIN) as i64, zero),
        Rgb([160, 160, 160]),
    );
    line(
        img,
        (MARGIN as i64, top as i64),
        (MARGIN as i64, bottom as i64),
        Rgb([0, 0, 0]),
    );
    for (pick, colour) in [(0usize, Rgb([30, 150, 60])), (1, Rgb([230, 130, 20]))] {
        let pts: Vec<(i64, i64)> = gaps
            .iter()
            .map(|&(s, a, b)| (s, if pick == 0 { a } else { b }))
            .filter(|(_, v)| v.is_finite())
            .map(|(s, v)| to_px(s, v))
            .collect();
        for w in pts.windows(2) {
            line(img, w[0], w[1], colour);
        }
        for &p in &pts {
            for d in -1..=1 {
                put(img, p.0 + d, p.1, colour);
                put(img, p.0, p.1 + d, colour);
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Bresenham line.
fn line(img: &mut RgbImage, a: (i64, i64), b: (i64, i64), c: Rgb<u8>) {
    let (mut x, mut y) = a;
    let (dx, dy) = ((b.0 - a.0).abs(), -(b.1 - a.1).abs());
    let (sx, sy) = (
        if a.0 < b.0 { 1 } else { -1 },
        if a.1 < b.1 { 1 } else { -1 },
    );
    let mut err = dx + dy;
    loop {
        put(img, x, y, c);
        if (x, y) == b {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}
