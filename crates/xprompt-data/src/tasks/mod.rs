//! The task registry: one `Spec` per forward task (with its reverse task, target kind and held-out flags)
//! and the generator that draws one exact (input, output) pair for it. Families live in their own files:
//! `low_level`, `dense`, `editing`, `style`, `text`. Difference descriptions (text answers) are derived
//! from the generated pairs by the builder.

pub mod dense;
pub mod editing;
pub mod low_level;
pub mod style;
pub mod text;

use image::imageops;
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::degrade::mean_luma;
use crate::img::{Img, Premul};
use crate::manifest::{Family, Split, Target};
use crate::sources::{CutoutRef, PairRef, Sources};

/// One generated pair. Forward task: `a` (or `text_a` when `a` is None) → `b`; reverse: `b` → `a`/`text_a`.
pub struct Pair {
    pub a: Option<Img>,
    pub b: Img,
    pub text_a: Option<String>,
    pub instr: String,
    pub instr_rev: Option<String>,
    /// How `b` differs from `a` (exact: built from the drawn parameters).
    pub desc: String,
    /// How `a` differs from `b`.
    pub desc_rev: String,
    pub sources: Vec<String>,
}

pub type GenFn = fn(&Ctx, &mut ChaCha8Rng, Split) -> Option<Pair>;

pub struct Spec {
    pub name: &'static str,
    pub family: Family,
    pub target: Target,
    pub palette: Option<&'static str>,
    /// Reverse task name (may equal `name` when the reverse is the same kind of task, e.g. move).
    pub reverse: Option<&'static str>,
    pub reverse_target: Target,
    pub heldout: bool,
    pub reverse_heldout: bool,
    pub summary: &'static str,
    pub gen: GenFn,
}

/// What generators may draw from.
pub struct Ctx<'a> {
    pub src: &'a Sources,
    pub size: usize,
}

impl Ctx<'_> {
    fn pick_split<'b, T>(
        &self,
        items: &'b [T],
        split: Split,
        of: impl Fn(&T) -> Split,
        rng: &mut ChaCha8Rng,
    ) -> Option<&'b T> {
        let pool: Vec<&T> = items.iter().filter(|t| of(t) == split).collect();
        if pool.is_empty() {
            // tiny source sets: fall back to any split rather than fail (documented in the card)
            return items.choose(rng);
        }
        pool.choose(rng).copied()
    }

    /// A random square crop of a photo of the split, resized to the suite size; rejects near-flat,
    /// near-black and near-white crops.
    pub fn photo_crop(&self, rng: &mut ChaCha8Rng, split: Split) -> Option<(Img, String)> {
        for _ in 0..8 {
            let p = self.pick_split(&self.src.photos, split, |p| p.split, rng)?;
            let (w, h) = (p.img.width(), p.img.height());
            let side = ((rng.random_range(0.35..1.0) * w.min(h) as f32) as u32)
                .max(self.size as u32)
                .min(w.min(h));
            let x = rng.random_range(0..=w - side);
            let y = rng.random_range(0..=h - side);
            let crop = imageops::crop_imm(&p.img, x, y, side, side).to_image();
            let img = Img::from_rgb8(&crop)
                .resize(self.size, self.size)
                .quantised();
            let l = mean_luma(&img);
            let var = img.luma().iter().map(|v| (v - l) * (v - l)).sum::<f32>()
                / (self.size * self.size) as f32;
            if (0.08..0.92).contains(&l) && var > 0.002 {
                return Some((img, p.rel.clone()));
            }
        }
        None
    }

    /// Any cut-out of the split (captioned or not), loaded.
    pub fn cutout(&self, rng: &mut ChaCha8Rng, split: Split) -> Option<(Premul, CutoutRef)> {
        for _ in 0..8 {
            let c = self.pick_split(&self.src.cutouts, split, |c| c.split, rng)?;
            if let Some(p) = self.src.load_cutout(c) {
                return Some((p, c.clone()));
            }
        }
        None
    }

    /// A captioned cut-out of the split, loaded; returns the caption too.
    pub fn named_cutout(
        &self,
        rng: &mut ChaCha8Rng,
        split: Split,
    ) -> Option<(Premul, CutoutRef, String)> {
        let named: Vec<CutoutRef> = self
            .src
            .cutouts
            .iter()
            .filter(|c| c.caption.is_some())
            .cloned()
            .collect();
        for _ in 0..8 {
            let c = self.pick_split(&named, split, |c| c.split, rng)?;
            if let (Some(p), Some(cap)) = (self.src.load_cutout(c), c.caption.clone()) {
                return Some((p, c.clone(), cap));
            }
        }
        None
    }

    /// A word of the split for text rendering.
    pub fn word(&self, rng: &mut ChaCha8Rng, split: Split) -> Option<String> {
        self.pick_split(&self.src.words, split, |w| w.1, rng)
            .map(|w| w.0.clone())
    }

    /// Two different fonts that both cover `word`.
    pub fn font_pair(
        &self,
        rng: &mut ChaCha8Rng,
        word: &str,
    ) -> Option<(&crate::fonts::LoadedFont, &crate::fonts::LoadedFont)> {
        let ok: Vec<&crate::fonts::LoadedFont> = self
            .src
            .fonts
            .iter()
            .filter(|f| crate::fonts::covers(&f.font, word))
            .collect();
        if ok.len() < 2 {
            return None;
        }
        let a = rng.random_range(0..ok.len());
        let b = (a + rng.random_range(1..ok.len())) % ok.len();
        Some((ok[a], ok[b]))
    }

    pub fn style_pair(&self, rng: &mut ChaCha8Rng, split: Split) -> Option<(String, PairRef)> {
        let set = self.src.pairs.choose(rng)?;
        let item = self.pick_split(&set.items, split, |i| i.split, rng)?;
        Some((set.name.clone(), item.clone()))
    }
}

/// Every task, in card order.
pub fn registry() -> Vec<Spec> {
    let mut v = low_level::specs();
    v.extend(dense::specs());
    v.extend(editing::specs());
    v.extend(style::specs());
    v.extend(text::specs());
    v
}

/// The text-answer task derived from all non-held-out image → image pairs.
pub const DESCRIBE_TASK: &str = "describe_difference";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_are_unique_and_reverse_names_do_not_clash_with_other_forward_tasks() {
        let specs = registry();
        let mut names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        for s in &specs {
            if let Some(r) = s.reverse {
                if r != s.name {
                    names.push(r);
                }
            }
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(n, names.len(), "duplicate task names");
        assert!(!names.contains(&DESCRIBE_TASK));
    }

    #[test]
    fn the_table4_subtasks_are_held_out() {
        let specs = registry();
        let held: Vec<&str> = specs
            .iter()
            .flat_map(|s| {
                let mut h = vec![];
                if s.heldout {
                    h.push(s.name);
                }
                if s.reverse_heldout {
                    h.extend(s.reverse);
                }
                h
            })
            .collect();
        for t in [
            "derain",
            "low_light_enhance",
            "add_object",
            "remove_object",
            "depth_new_palette",
        ] {
            assert!(held.contains(&t), "{t} must be held out");
        }
        assert!(
            !held.contains(&"add_rain"),
            "only the forward derain direction is held out"
        );
    }
}
