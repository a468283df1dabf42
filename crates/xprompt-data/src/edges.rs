//! Canny-like edge maps computed exactly from the (8-bit quantised) source: Gaussian smoothing (σ = 1),
//! Sobel gradients, non-maximum suppression along the quantised gradient direction and hysteresis between
//! two fixed thresholds. Output: a binary map (`true` = edge).

use crate::img::{grey_to_img, Img};

/// Thresholds on the Sobel magnitude of a [0, 1] luma image (max possible ≈ 5.7).
pub const LOW: f32 = 0.15;
pub const HIGH: f32 = 0.35;

pub fn canny(img: &Img) -> Vec<bool> {
    let (w, h) = (img.w, img.h);
    let smooth = crate::degrade::gaussian_blur(&grey_to_img(w, h, &img.luma()), 1.0);
    let g = |x: isize, y: isize| smooth.get_clamped(x, y)[0];
    let mut mag = vec![0.0f32; w * h];
    let mut dir = vec![0u8; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let gx = (g(x + 1, y - 1) + 2.0 * g(x + 1, y) + g(x + 1, y + 1))
                - (g(x - 1, y - 1) + 2.0 * g(x - 1, y) + g(x - 1, y + 1));
            let gy = (g(x - 1, y + 1) + 2.0 * g(x, y + 1) + g(x + 1, y + 1))
                - (g(x - 1, y - 1) + 2.0 * g(x, y - 1) + g(x + 1, y - 1));
            let i = y as usize * w + x as usize;
            mag[i] = (gx * gx + gy * gy).sqrt();
            let a = gy.atan2(gx).to_degrees().rem_euclid(180.0);
            dir[i] = if !(22.5..157.5).contains(&a) {
                0
            } else if a < 67.5 {
                1
            } else if a < 112.5 {
                2
            } else {
                3
            };
        }
    }
    let at = |x: isize, y: isize| -> f32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0.0
        } else {
            mag[y as usize * w + x as usize]
        }
    };
    // 0 = none, 1 = weak, 2 = strong
    let mut class = vec![0u8; w * h];
    for y in 0..h as isize {
        for x in 0..w as isize {
            let i = y as usize * w + x as usize;
            let m = mag[i];
            if m < LOW {
                continue;
            }
            let (dx, dy) = match dir[i] {
                0 => (1, 0),
                1 => (1, 1),
                2 => (0, 1),
                _ => (-1, 1),
            };
            if m >= at(x + dx, y + dy) && m > at(x - dx, y - dy) {
                class[i] = if m >= HIGH { 2 } else { 1 };
            }
        }
    }
    // hysteresis: keep weak pixels 8-connected to a strong one
    let mut out = vec![false; w * h];
    let mut stack: Vec<usize> = (0..w * h).filter(|&i| class[i] == 2).collect();
    for &i in &stack {
        out[i] = true;
    }
    while let Some(i) = stack.pop() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if !out[j] && class[j] == 1 {
                    out[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    out
}

/// White edges on black, as stored in the suite.
pub fn edge_image(w: usize, h: usize, edges: &[bool]) -> Img {
    let v: Vec<f32> = edges.iter().map(|&e| if e { 1.0 } else { 0.0 }).collect();
    grey_to_img(w, h, &v)
}

/// Black lines on white (line art).
pub fn line_art(w: usize, h: usize, edges: &[bool]) -> Img {
    let v: Vec<f32> = edges.iter().map(|&e| if e { 0.0 } else { 1.0 }).collect();
    grey_to_img(w, h, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertical_step_gives_a_thin_vertical_edge() {
        let mut im = Img::new(20, 12, [0.0; 3]);
        for y in 0..12 {
            for x in 10..20 {
                im.set(x, y, [1.0; 3]);
            }
        }
        let e = canny(&im);
        for y in 0..12 {
            let row: Vec<usize> = (0..20).filter(|&x| e[y * 20 + x]).collect();
            assert_eq!(row.len(), 1, "row {y}: {row:?}");
            assert!(row[0] == 9 || row[0] == 10);
        }
    }

    #[test]
    fn flat_image_has_no_edges() {
        assert!(canny(&Img::new(16, 16, [0.4; 3])).iter().all(|e| !e));
    }
}
