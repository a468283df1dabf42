//! The sampling chain, in Lumina-mGPT's order (CHAMELEON_LUMINA.md §5.2): classifier-free
//! guidance → grammar constraint → top-k (image k inside images, text k outside) →
//! temperature → softmax → sample. Each processor is a pure function on a logits vector,
//! unit-tested on tiny inputs (STYLE.md §9). X-Prompt tokens are never sampled.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use xprompt_core::vocab::Vocabulary;

use crate::grammar::{Constraint, ImageGrammar};

/// Sampling settings; the defaults are Lumina-mGPT's `create_logits_processor` defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Guidance scale inside images; 1 disables the unconditional branch.
    pub cfg: f32,
    pub image_top_k: usize,
    pub text_top_k: usize,
    /// 0 means greedy (argmax).
    pub temperature: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            cfg: 3.0,
            image_top_k: 2000,
            text_top_k: 10,
            temperature: 1.0,
        }
    }
}

/// `ℓ = scale·(ℓ_cond − ℓ_uncond) + ℓ_uncond`, in place on `cond`.
pub fn classifier_free_guidance(cond: &mut [f32], uncond: &[f32], scale: f32) {
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = scale * (*c - u) + u;
    }
}

/// Sets every logit the grammar forbids to −∞ (X-Prompt ids always).
pub fn apply_constraint(logits: &mut [f32], grammar: &ImageGrammar, vocab: &Vocabulary) {
    match grammar.constraint() {
        Constraint::Forced(id) => {
            for (i, l) in logits.iter_mut().enumerate() {
                *l = if i as u32 == id {
                    0.0
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        Constraint::ImageCodes => {
            let r = vocab.image_id_range();
            for (i, l) in logits.iter_mut().enumerate() {
                if !r.contains(&(i as u32)) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        Constraint::Size(_) | Constraint::Text => {
            for (i, l) in logits.iter_mut().enumerate() {
                if !grammar.allows(i as u32) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// Keeps the `k` largest logits; entries strictly below the k-th largest become −∞ (ties at
/// the threshold are kept, as transformers' top-k warper does). `k = 0` keeps everything.
pub fn top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *kth;
    for l in logits.iter_mut() {
        if *l < threshold {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Divides by the temperature (no-op at 1 and at 0, which means greedy).
pub fn temperature(logits: &mut [f32], t: f32) {
    if t > 0.0 && t != 1.0 {
        for l in logits.iter_mut() {
            *l /= t;
        }
    }
}

/// Softmax + one multinomial draw; greedy when `greedy`.
pub fn sample(logits: &[f32], greedy: bool, rng: &mut ChaCha8Rng) -> u32 {
    let (argmax, max) =
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv {
                    (i, v)
                } else {
                    (bi, bv)
                }
            });
    if greedy || !max.is_finite() {
        return argmax as u32;
    }
    let weights: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if u < *w {
                return i as u32;
            }
            u -= w;
        }
    }
    argmax as u32
}

/// One full step of the chain on the conditional logits (and the unconditional ones when
/// CFG is active).
pub fn next_token(
    cond: &mut [f32],
    uncond: Option<&[f32]>,
    grammar: &ImageGrammar,
    vocab: &Vocabulary,
    cfg: &SamplerConfig,
    rng: &mut ChaCha8Rng,
) -> u32 {
    if let Some(u) = uncond {
        classifier_free_guidance(cond, u, cfg.cfg);
    }
    apply_constraint(cond, grammar, vocab);
    let k = if grammar.in_image() {
        cfg.image_top_k
    } else {
        cfg.text_top_k
    };
    top_k(cond, k);
    temperature(cond, cfg.temperature);
    sample(cond, cfg.temperature == 0.0, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cfg_formula_and_scale_one_is_identity() {
        let mut c = vec![1.0, 2.0, -1.0, 0.5];
        let u = [0.5, 2.5, -1.0, 1.0];
        classifier_free_guidance(&mut c, &u, 3.0);
        assert_eq!(c, vec![2.0, 1.0, -1.0, -0.5]);
        let mut c = vec![1.0, 2.0, -1.0, 0.5];
        classifier_free_guidance(&mut c, &u, 1.0);
        assert_eq!(c, vec![1.0, 2.0, -1.0, 0.5]);
    }

    #[test]
    fn top_k_keeps_ties_at_the_threshold() {
        let mut l = vec![0.1, 3.0, 2.0, 2.0];
        top_k(&mut l, 2);
        assert_eq!(l, vec![f32::NEG_INFINITY, 3.0, 2.0, 2.0]);
        let mut l = vec![0.1, 3.0, 2.0, 1.0];
        top_k(&mut l, 1);
        assert_eq!(l[1], 3.0);
        assert!(l.iter().filter(|v| v.is_finite()).count() == 1);
    }

    #[test]
    fn temperature_scales_and_zero_means_greedy() {
        let mut l = vec![1.0, 2.0, -2.0, 4.0];
        temperature(&mut l, 2.0);
        assert_eq!(l, vec![0.5, 1.0, -1.0, 2.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(sample(&[1.0, 2.0, -2.0, 4.0], true, &mut rng), 3);
    }

    #[test]
    fn sampling_follows_the_softmax_and_is_seeded() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY, 0.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[sample(&logits, false, &mut rng) as usize] += 1;
        }
        assert_eq!(counts[2], 0, "−∞ is never drawn");
        let p1 = counts[1] as f64 / 20000.0;
        assert!((p1 - 0.6).abs() < 0.02, "p(1) = {p1}, expected 0.6");
        let draw = |seed| {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample(&logits, false, &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
