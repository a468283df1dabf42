//! Dense-prediction metrics on decoded values:
//! - segmentation: a confusion matrix accumulated over a task; mIoU = mean over classes with a non-empty
//!   union (in ground truth or prediction) of TP / (TP + FP + FN); background (class 0) is a class;
//! - depth: over pixels with ground truth > 0: RMSE, AbsRel = mean |d − g| / g, δ1 = share of
//!   max(d/g, g/d) < 1.25 (predictions ≤ 0 count as failures for δ1 and are clamped to 1e-6 for AbsRel);
//! - normals: per-pixel angle between unit vectors in degrees: mean and share below 11.25°;
//! - edges: precision = share of predicted edge pixels within `tol` pixels (Chebyshev) of a true edge,
//!   recall = share of true edge pixels within `tol` of a predicted one, F = 2PR / (P + R); both maps empty
//!   → P = R = F = 1, exactly one empty → F = 0.

use crate::error::{EvalError, Result};

#[derive(Clone, Debug)]
pub struct Confusion {
    pub n: usize,
    /// `m[gt * n + pred]`
    pub m: Vec<u64>,
}

impl Confusion {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            m: vec![0; n * n],
        }
    }

    pub fn add(&mut self, gt: &[usize], pred: &[usize]) -> Result<()> {
        if gt.len() != pred.len() {
            return Err(EvalError::Metric {
                metric: "miou",
                reason: format!("{} vs {} pixels", gt.len(), pred.len()),
            });
        }
        for (g, p) in gt.iter().zip(pred) {
            if *g >= self.n || *p >= self.n {
                return Err(EvalError::Metric {
                    metric: "miou",
                    reason: format!("class {g}/{p} outside 0..{}", self.n),
                });
            }
            self.m[g * self.n + p] += 1;
        }
        Ok(())
    }

    /// IoU per class (None when the class appears in neither ground truth nor prediction).
    pub fn ious(&self) -> Vec<Option<f64>> {
        (0..self.n)
            .map(|c| {
                let tp = self.m[c * self.n + c];
                let gt: u64 = (0..self.n).map(|p| self.m[c * self.n + p]).sum();
                let pr: u64 = (0..self.n).map(|g| self.m[g * self.n + c]).sum();
                let union = gt + pr - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    pub fn miou(&self) -> f64 {
        let v: Vec<f64> = self.ious().into_iter().flatten().collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.m.iter().sum();
        let tp: u64 = (0..self.n).map(|c| self.m[c * self.n + c]).sum();
        if total == 0 {
            0.0
        } else {
            tp as f64 / total as f64
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepthMetrics {
    pub rmse: f64,
    pub absrel: f64,
    pub delta1: f64,
}

pub fn depth_metrics(pred: &[f32], gt: &[f32]) -> Result<DepthMetrics> {
    if pred.len() != gt.len() {
        return Err(EvalError::Metric {
            metric: "depth",
            reason: format!("{} vs {} pixels", pred.len(), gt.len()),
        });
    }
    let (mut se, mut rel, mut good, mut n) = (0.0f64, 0.0f64, 0usize, 0usize);
    for (d, g) in pred.iter().zip(gt) {
        if *g <= 0.0 {
            continue;
        }
        let (d, g) = (*d as f64, *g as f64);
        se += (d - g).powi(2);
        rel += (d - g).abs() / g;
        if d > 0.0 && (d / g).max(g / d) < 1.25 {
            good += 1;
        }
        n += 1;
    }
    if n == 0 {
        return Err(EvalError::Metric {
            metric: "depth",
            reason: "no valid ground-truth pixels".into(),
        });
    }
    Ok(DepthMetrics {
        rmse: (se / n as f64).sqrt(),
        absrel: rel / n as f64,
        delta1: good as f64 / n as f64,
    })
}

/// (mean angle in degrees, share of pixels below 11.25°) between unit normals.
pub fn normal_angles(pred: &[[f32; 3]], gt: &[[f32; 3]]) -> Result<(f64, f64)> {
    if pred.len() != gt.len() || gt.is_empty() {
        return Err(EvalError::Metric {
            metric: "normals",
            reason: format!("{} vs {} pixels", pred.len(), gt.len()),
        });
    }
    let mut sum = 0.0f64;
    let mut within = 0usize;
    for (p, g) in pred.iter().zip(gt) {
        let dot: f64 = (0..3).map(|k| p[k] as f64 * g[k] as f64).sum();
        let a = dot.clamp(-1.0, 1.0).acos().to_degrees();
        sum += a;
        if a < 11.25 {
            within += 1;
        }
    }
    Ok((sum / gt.len() as f64, within as f64 / gt.len() as f64))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdgeScore {
    pub precision: f64,
    pub recall: f64,
    pub f: f64,
}

fn near(map: &[bool], w: usize, h: usize, x: usize, y: usize, tol: usize) -> bool {
    let (x0, x1) = (x.saturating_sub(tol), (x + tol).min(w - 1));
    let (y0, y1) = (y.saturating_sub(tol), (y + tol).min(h - 1));
    (y0..=y1).any(|yy| (x0..=x1).any(|xx| map[yy * w + xx]))
}

pub fn edge_f_score(
    pred: &[bool],
    gt: &[bool],
    w: usize,
    h: usize,
    tol: usize,
) -> Result<EdgeScore> {
    if pred.len() != w * h || gt.len() != w * h {
        return Err(EvalError::Metric {
            metric: "edges",
            reason: format!("maps of {} and {} for {w}x{h}", pred.len(), gt.len()),
        });
    }
    let np = pred.iter().filter(|v| **v).count();
    let ng = gt.iter().filter(|v| **v).count();
    if np == 0 || ng == 0 {
        let v = if np == 0 && ng == 0 { 1.0 } else { 0.0 };
        return Ok(EdgeScore {
            precision: if np == 0 { 1.0 } else { 0.0 },
            recall: if ng == 0 { 1.0 } else { 0.0 },
            f: v,
        });
    }
    let mut tp_p = 0usize;
    let mut tp_g = 0usize;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if pred[i] && near(gt, w, h, x, y, tol) {
                tp_p += 1;
            }
            if gt[i] && near(pred, w, h, x, y, tol) {
                tp_g += 1;
            }
        }
    }
    let precision = tp_p as f64 / np as f64;
    let recall = tp_g as f64 / ng as f64;
    let f = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Ok(EdgeScore {
        precision,
        recall,
        f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miou_hand_value() {
        // gt:   0 0 1 1   pred: 0 1 1 1
        // class 0: tp 1, union 2 → 0.5; class 1: tp 2, union 3 → 2/3; mIoU = 7/12
        let mut c = Confusion::new(3);
        c.add(&[0, 0, 1, 1], &[0, 1, 1, 1]).unwrap();
        assert!((c.miou() - 7.0 / 12.0).abs() < 1e-12);
        assert_eq!(c.ious()[2], None, "absent class is not averaged");
        assert!((c.pixel_accuracy() - 0.75).abs() < 1e-12);
        assert!(c.add(&[3], &[0]).is_err());
    }

    #[test]
    fn depth_hand_values() {
        // errors 0, 1, -1, 2 on gt 1, 2, 4, 4 (one invalid pixel ignored)
        let m = depth_metrics(&[1.0, 3.0, 3.0, 6.0, 9.0], &[1.0, 2.0, 4.0, 4.0, 0.0]).unwrap();
        assert!((m.rmse - (6.0f64 / 4.0).sqrt()).abs() < 1e-9);
        assert!((m.absrel - (0.0 + 0.5 + 0.25 + 0.5) / 4.0).abs() < 1e-9);
        // ratios 1, 1.5, 1.333, 1.5 → only the first is below 1.25
        assert!((m.delta1 - 0.25).abs() < 1e-12);
        assert!(depth_metrics(&[1.0], &[0.0]).is_err());
    }

    #[test]
    fn normal_angle_hand_values() {
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let (mean, within) = normal_angles(
            &[[0.0, 0.0, 1.0], [s, 0.0, s]],
            &[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
        assert!((mean - 22.5).abs() < 1e-4);
        assert!((within - 0.5).abs() < 1e-12);
    }

    #[test]
    fn edge_f_score_with_tolerance() {
        // gt: vertical line at x = 2; pred: line at x = 3 (one pixel off) plus a stray pixel at (0, 0)
        let (w, h) = (5, 4);
        let mut gt = vec![false; w * h];
        let mut pred = vec![false; w * h];
        for y in 0..h {
            gt[y * w + 2] = true;
            pred[y * w + 3] = true;
        }
        pred[0] = true;
        let exact = edge_f_score(&pred, &gt, w, h, 0).unwrap();
        assert_eq!(exact.f, 0.0);
        let tol = edge_f_score(&pred, &gt, w, h, 1).unwrap();
        assert!((tol.precision - 4.0 / 5.0).abs() < 1e-12);
        assert!((tol.recall - 1.0).abs() < 1e-12);
        assert!((tol.f - 2.0 * 0.8 / 1.8).abs() < 1e-12);
        let none = edge_f_score(&vec![false; w * h], &vec![false; w * h], w, h, 1).unwrap();
        assert_eq!(none.f, 1.0);
    }
}
