//! Procedural task families with hidden per-sample parameters: the long tail of tasks that makes
//! in-context learning necessary. A task is a transform whose parameters are drawn once per task
//! instance and never named in text, so its output cannot be predicted without reading the
//! example pairs (the argument of SegGPT, arXiv 2304.03284, and of the task-diversity studies:
//! Raventós et al. 2023, arXiv 2306.15063; Kirsch et al. 2022, arXiv 2212.04458).
//!
//! - `colour.rs`: colour matrices with bias, channel permutations, curves, hue rotation, palette
//!   quantisation;
//! - `geometry.rs`: flips and rotations, wrapped shifts, crops-and-zooms, zoom-outs;
//! - `filter.rs`: blur, sharpen, random 3×3 kernels, pixelation, noise;
//! - `spatial.rs`: gradients, vignettes, filled boxes, sprites composited at a fixed place;
//! - `dense.rs`: segmentation and depth maps painted in a palette drawn per task;
//! - `heldout.rs`: transform types that never appear in training, in any family or composition.
//!
//! Which types train and which are held out is a property of this registry ([`Selection`]);
//! trainers and evaluators only choose a selection.

pub mod colour;
pub mod dense;
pub mod filter;
pub mod geometry;
pub mod heldout;
pub mod pool;
pub mod spatial;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::img::Img;

/// A pixel transform with its parameters fixed. `pair_seed` feeds transforms that draw per pair
/// (noise); every other transform ignores it, so all pairs of a task share one mapping.
pub trait Transform: Send + Sync + std::fmt::Debug {
    fn apply(&self, img: &Img, pair_seed: u64) -> Img;
}

/// Which part of a family's parameter space to draw from. Trained families keep a slice of
/// their range out of training (`HeldOutRange`) to test interpolation beyond what was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    Train,
    HeldOut,
}

/// How a family's task is built from the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Any image of the pool → the transformed image.
    Image,
    /// A photo with its class map → the map in a palette drawn per task.
    Segmentation,
    /// A photo with its depth map → the map in a colour ramp drawn per task.
    Depth,
}

/// One transform type.
pub struct Family {
    pub name: &'static str,
    /// Never used in training, alone or composed.
    pub heldout_type: bool,
    /// Has a held-out parameter range (drawn with [`Range::HeldOut`]).
    pub has_heldout_range: bool,
    pub input: Input,
    pub draw: fn(&mut ChaCha8Rng, Range) -> Box<dyn Transform>,
}

/// The registry, in a fixed order.
pub fn families() -> &'static [Family] {
    &FAMILIES
}

static FAMILIES: [Family; 25] = [
    fam("colour_matrix", false, false, colour::draw_matrix),
    fam("channel_mix", false, false, colour::draw_channel_mix),
    fam("curves", false, true, colour::draw_curves),
    fam("hue_rotate", false, true, colour::draw_hue),
    fam(
        "palette_quantise",
        false,
        true,
        colour::draw_palette_quantise,
    ),
    fam("dihedral", false, false, geometry::draw_dihedral),
    fam("shift", false, true, geometry::draw_shift),
    fam("crop_zoom", false, false, geometry::draw_crop_zoom),
    fam("zoom_out", false, false, geometry::draw_zoom_out),
    fam("blur", false, true, filter::draw_blur),
    fam("sharpen", false, false, filter::draw_sharpen),
    fam("kernel", false, false, filter::draw_kernel),
    fam("pixelate", false, false, filter::draw_pixelate),
    fam("noise", false, false, filter::draw_noise),
    fam("gradient", false, false, spatial::draw_gradient),
    fam("box_fill", false, false, spatial::draw_box),
    fam("sprite", false, false, spatial::draw_sprite),
    Family {
        name: "segmentation_palette",
        heldout_type: false,
        has_heldout_range: false,
        input: Input::Segmentation,
        draw: dense::draw_class_palette,
    },
    Family {
        name: "depth_palette",
        heldout_type: false,
        has_heldout_range: false,
        input: Input::Depth,
        draw: dense::draw_depth_ramp,
    },
    fam("solarize", true, false, heldout::draw_solarize),
    fam("tile", true, false, heldout::draw_tile),
    fam("mirror_half", true, false, heldout::draw_mirror_half),
    fam("wave", true, false, heldout::draw_wave),
    fam("stripes", true, false, heldout::draw_stripes),
    fam("checker_invert", true, false, heldout::draw_checker_invert),
];

const fn fam(
    name: &'static str,
    heldout_type: bool,
    has_heldout_range: bool,
    draw: fn(&mut ChaCha8Rng, Range) -> Box<dyn Transform>,
) -> Family {
    Family {
        name,
        heldout_type,
        has_heldout_range,
        input: Input::Image,
        draw,
    }
}

fn all_families() -> impl Iterator<Item = &'static Family> {
    FAMILIES.iter()
}

pub fn family(name: &str) -> Option<&'static Family> {
    all_families().find(|f| f.name == name)
}

/// Names of the trained families (the ones `Selection::Train` draws from).
pub fn train_family_names() -> Vec<&'static str> {
    all_families()
        .filter(|f| !f.heldout_type)
        .map(|f| f.name)
        .collect()
}

/// Names of the held-out transform types.
pub fn heldout_type_names() -> Vec<&'static str> {
    all_families()
        .filter(|f| f.heldout_type)
        .map(|f| f.name)
        .collect()
}

/// What to draw tasks from.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Families allowed (by name); must not mix held-out types with trained ones for training.
    pub families: Vec<&'static str>,
    pub range: Range,
    /// Probability that a task is two image transforms in sequence (trained families only).
    pub p_compose: f64,
}

impl Selection {
    /// Training: every trained family over its training range, composed with probability
    /// `p_compose`.
    pub fn train(p_compose: f64) -> Self {
        Self {
            families: train_family_names(),
            range: Range::Train,
            p_compose,
        }
    }

    /// One family alone, over `range`.
    pub fn only(name: &'static str, range: Range) -> Self {
        Self {
            families: vec![name],
            range,
            p_compose: 0.0,
        }
    }
}

/// One task instance: a transform whose parameters were drawn once.
#[derive(Debug)]
pub struct Task {
    /// Family name, or `a+b` for a composition.
    pub label: String,
    pub input: Input,
    steps: Vec<Box<dyn Transform>>,
}

impl Task {
    /// The task that changes nothing: its examples show output = input, so the answer is the
    /// query's own codes. Mixed into training it rewards copying the query, the skill every
    /// image-to-image task builds on.
    pub fn identity() -> Self {
        Self {
            label: "identity".into(),
            input: Input::Image,
            steps: Vec::new(),
        }
    }

    /// Applies the task to one image: a photo for an image task, the grey-coded map of a dense
    /// task (see [`Pool`]).
    pub fn apply(&self, img: &Img, pair_seed: u64) -> Img {
        let mut out = img.clone();
        for (i, s) in self.steps.iter().enumerate() {
            out = s.apply(&out, pair_seed.wrapping_add(i as u64));
        }
        out
    }

    /// `n` distinct (input, output) pairs from the pool (fewer when the pool is smaller).
    pub fn pairs(&self, pool: &Pool, n: usize, rng: &mut ChaCha8Rng) -> Vec<(Img, Img)> {
        self.outputs(pool, n, rng)
            .into_iter()
            .map(|(i, out)| (pool.input(self.input, i).clone(), out))
            .collect()
    }

    /// Like [`Task::pairs`], but the inputs as indices for [`Pool::input`] (so their
    /// encodings can be cached).
    pub fn outputs(&self, pool: &Pool, n: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, Img)> {
        let len = pool.input_count(self.input);
        pick_distinct(len, n, rng)
            .into_iter()
            .map(|i| {
                let out = match self.input {
                    Input::Image => self.apply(&pool.images[i], rng.random()),
                    Input::Segmentation => self.apply(&pool.segmentation[i].1, 0),
                    Input::Depth => self.apply(&pool.depth[i].1, 0),
                };
                (i, out.quantised())
            })
            .collect()
    }
}

/// Draws one task. Errors only when the selection names no usable family.
pub fn draw_task(sel: &Selection, pool: &Pool, rng: &mut ChaCha8Rng) -> Result<Task, String> {
    let usable: Vec<&'static Family> = sel
        .families
        .iter()
        .filter_map(|n| family(n))
        .filter(|f| pool.supports(f.input))
        .filter(|f| sel.range == Range::Train || f.has_heldout_range || f.heldout_type)
        .collect();
    let first = *usable
        .choose(rng)
        .ok_or_else(|| format!("no usable family among {:?}", sel.families))?;
    let mut steps = vec![(first.draw)(rng, sel.range)];
    let mut label = first.name.to_string();
    if first.input == Input::Image && !first.heldout_type && rng.random::<f64>() < sel.p_compose {
        let others: Vec<&&Family> = usable
            .iter()
            .filter(|f| f.name != first.name && f.input == Input::Image && !f.heldout_type)
            .collect();
        if let Some(second) = others.choose(rng) {
            steps.push((second.draw)(rng, sel.range));
            label = format!("{}+{}", first.name, second.name);
        }
    }
    Ok(Task {
        label,
        input: first.input,
        steps,
    })
}

/// Base images the tasks transform. Dense maps are grey-coded: a class map holds
/// `class / 255` in every channel, a depth map `level / 255` (level 0 nearest, 255 farthest),
/// so a palette transform is an ordinary image transform of the map.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    pub images: Vec<Img>,
    /// Licences of each plain image's sources (same order; empty when unknown).
    pub image_licences: Vec<Vec<String>>,
    /// (photo, class map) pairs.
    pub segmentation: Vec<(Img, Img)>,
    /// (photo, depth map) pairs.
    pub depth: Vec<(Img, Img)>,
}

impl Pool {
    /// Whether tasks of this input kind can be drawn (at least two bases: one example, one query).
    pub fn supports(&self, input: Input) -> bool {
        self.input_count(input) >= 2
    }

    /// Number of input images of tasks of this kind.
    pub fn input_count(&self, input: Input) -> usize {
        match input {
            Input::Image => self.images.len(),
            Input::Segmentation => self.segmentation.len(),
            Input::Depth => self.depth.len(),
        }
    }

    /// Input image `i` of tasks of this kind (the photo for dense tasks).
    pub fn input(&self, input: Input, i: usize) -> &Img {
        match input {
            Input::Image => &self.images[i],
            Input::Segmentation => &self.segmentation[i].0,
            Input::Depth => &self.depth[i].0,
        }
    }
}

/// `n` distinct indices below `len` (all of them, shuffled, when `len <= n`).
fn pick_distinct(len: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    rand::seq::index::sample(rng, len, n.min(len)).into_vec()
}

/// Uniform in `[lo, hi)`, the shared helper of the draw functions.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// A random colour with every channel in [0, 1].
pub(crate) fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.random(), rng.random(), rng.random()]
}

#[cfg(test)]
mod tests;
