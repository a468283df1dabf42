//! Colour codes for dense targets, shared by the builder (encode) and the evaluator (decode):
//! depth palettes (one for training, a new one held out for the Table-4 protocol), the per-class
//! segmentation palette and the surface-normal code. Each encoder has an exact decoder.

use serde::{Deserialize, Serialize};

/// Depth range covered by the depth palettes, in scene units (metres for the renderer).
pub const DEPTH_MIN: f32 = 1.0;
pub const DEPTH_MAX: f32 = 10.0;
/// Number of depth levels (one palette entry per level).
pub const DEPTH_LEVELS: usize = 256;

/// A depth palette: piecewise-linear colour stops over the 256 depth levels.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DepthPalette {
    pub name: String,
    /// (level, colour) stops; level 0 and 255 must be present, levels increasing.
    pub stops: Vec<(usize, [u8; 3])>,
    pub depth_min: f32,
    pub depth_max: f32,
}

/// The training palette: a jet-like blue → cyan → green → yellow → dark red ramp.
pub fn depth_palette_train() -> DepthPalette {
    DepthPalette {
        name: "depth-jet".into(),
        stops: vec![
            (0, [0, 0, 128]),
            (64, [0, 128, 255]),
            (128, [128, 255, 128]),
            (192, [255, 192, 0]),
            (255, [128, 0, 0]),
        ],
        depth_min: DEPTH_MIN,
        depth_max: DEPTH_MAX,
    }
}

/// The held-out palette ("new spectrum"): dark purple → magenta → salmon → pale yellow → cyan.
pub fn depth_palette_heldout() -> DepthPalette {
    DepthPalette {
        name: "depth-dusk".into(),
        stops: vec![
            (0, [40, 0, 60]),
            (64, [200, 40, 160]),
            (128, [255, 160, 120]),
            (192, [255, 255, 200]),
            (255, [120, 255, 255]),
        ],
        depth_min: DEPTH_MIN,
        depth_max: DEPTH_MAX,
    }
}

pub fn depth_palette_by_name(name: &str) -> Option<DepthPalette> {
    [depth_palette_train(), depth_palette_heldout()]
        .into_iter()
        .find(|p| p.name == name)
}

impl DepthPalette {
    /// The 256 colours, one per level.
    pub fn table(&self) -> Vec<[u8; 3]> {
        let mut out = Vec::with_capacity(DEPTH_LEVELS);
        for level in 0..DEPTH_LEVELS {
            let k = self
                .stops
                .windows(2)
                .position(|w| level >= w[0].0 && level <= w[1].0)
                .unwrap_or(self.stops.len() - 2);
            let ((l0, c0), (l1, c1)) = (self.stops[k], self.stops[k + 1]);
            let t = (level - l0) as f32 / (l1 - l0).max(1) as f32;
            let mut c = [0u8; 3];
            for i in 0..3 {
                c[i] = (c0[i] as f32 + t * (c1[i] as f32 - c0[i] as f32)).round() as u8;
            }
            out.push(c);
        }
        out
    }

    /// Depth value → level (clamped to the palette range).
    pub fn level(&self, depth: f32) -> usize {
        let t = (depth - self.depth_min) / (self.depth_max - self.depth_min);
        ((t.clamp(0.0, 1.0) * (DEPTH_LEVELS - 1) as f32).round()) as usize
    }

    /// The depth a level stands for.
    pub fn level_depth(&self, level: usize) -> f32 {
        self.depth_min
            + level as f32 / (DEPTH_LEVELS - 1) as f32 * (self.depth_max - self.depth_min)
    }

    /// Largest error of encode → decode for in-range depths (half a level).
    pub fn quantisation_step(&self) -> f32 {
        (self.depth_max - self.depth_min) / (DEPTH_LEVELS - 1) as f32
    }

    pub fn decoder(&self) -> PaletteDecoder {
        PaletteDecoder::new(self.table())
    }
}

/// Nearest-colour decoding against a fixed colour table (exact for palette colours, robust to noise).
#[derive(Clone, Debug)]
pub struct PaletteDecoder {
    table: Vec<[u8; 3]>,
    cache: std::collections::HashMap<[u8; 3], usize>,
}

impl PaletteDecoder {
    pub fn new(table: Vec<[u8; 3]>) -> Self {
        let mut cache = std::collections::HashMap::new();
        for (i, c) in table.iter().enumerate() {
            cache.entry(*c).or_insert(i);
        }
        Self { table, cache }
    }

    /// Index of the nearest table colour (squared RGB distance; ties → lowest index).
    pub fn decode(&mut self, c: [u8; 3]) -> usize {
        if let Some(&i) = self.cache.get(&c) {
            return i;
        }
        let mut best = (u32::MAX, 0);
        for (i, t) in self.table.iter().enumerate() {
            let d: u32 = (0..3)
                .map(|k| (c[k] as i32 - t[k] as i32).pow(2) as u32)
                .sum();
            if d < best.0 {
                best = (d, i);
            }
        }
        self.cache.insert(c, best.1);
        best.1
    }

    pub fn contains(&self, c: [u8; 3]) -> bool {
        self.table.contains(&c)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Segmentation colour of class `id` (0 = background = black). Bit-interleaved like the PASCAL VOC map:
/// distinct for ids < 256.
pub fn class_colour(id: usize) -> [u8; 3] {
    let mut c = [0u8; 3];
    let mut v = id;
    let mut shift = 7i32;
    while v > 0 && shift >= 0 {
        for (k, ch) in c.iter_mut().enumerate() {
            *ch |= (((v >> k) & 1) as u8) << shift;
        }
        v >>= 3;
        shift -= 1;
    }
    c
}

/// The class palette for `n` classes (including background 0).
pub fn class_table(n: usize) -> Vec<[u8; 3]> {
    (0..n).map(class_colour).collect()
}

/// Surface normal (camera frame: x right, y up, z towards the viewer; unit length) → colour.
pub fn encode_normal(n: [f32; 3]) -> [u8; 3] {
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = ((n[k].clamp(-1.0, 1.0) * 0.5 + 0.5) * 255.0).round() as u8;
    }
    c
}

/// Colour → unit normal (renormalised; a zero vector decodes to (0, 0, 1)).
pub fn decode_normal(c: [u8; 3]) -> [f32; 3] {
    let v = [0, 1, 2].map(|k| c[k] as f32 / 255.0 * 2.0 - 1.0);
    let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if len < 1e-6 {
        [0.0, 0.0, 1.0]
    } else {
        v.map(|x| x / len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_palettes_are_injective_and_differ() {
        let a = depth_palette_train().table();
        let b = depth_palette_heldout().table();
        for t in [&a, &b] {
            let set: std::collections::HashSet<_> = t.iter().collect();
            assert_eq!(set.len(), DEPTH_LEVELS, "palette has repeated colours");
        }
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            shared <= 2,
            "held-out palette shares {shared} colours with the training one"
        );
    }

    #[test]
    fn depth_decode_inverts_encode_within_quantisation() {
        for pal in [depth_palette_train(), depth_palette_heldout()] {
            let table = pal.table();
            let mut dec = pal.decoder();
            let step = pal.quantisation_step();
            let mut d = DEPTH_MIN;
            while d <= DEPTH_MAX {
                let level = pal.level(d);
                let back = pal.level_depth(dec.decode(table[level]));
                assert!(
                    (back - d).abs() <= step / 2.0 + 1e-5,
                    "{}: {d} -> {back}",
                    pal.name
                );
                d += 0.0137;
            }
        }
    }

    #[test]
    fn nearest_colour_decoding_tolerates_small_noise() {
        let pal = depth_palette_train();
        let table = pal.table();
        let mut dec = pal.decoder();
        let c = table[100];
        let noisy = [c[0].saturating_add(1), c[1].saturating_sub(1), c[2]];
        assert!((dec.decode(noisy) as i32 - 100).abs() <= 2);
    }

    #[test]
    fn class_colours_are_distinct_and_background_black() {
        let t = class_table(256);
        assert_eq!(t[0], [0, 0, 0]);
        let set: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(class_colour(1), [128, 0, 0]);
        assert_eq!(class_colour(2), [0, 128, 0]);
    }

    #[test]
    fn normal_code_round_trips() {
        for n in [[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [-0.48, 0.6, 0.64]] {
            let back = decode_normal(encode_normal(n));
            let dot: f32 = (0..3).map(|k| back[k] * n[k]).sum();
            assert!(dot.clamp(-1.0, 1.0).acos().to_degrees() < 0.5);
        }
    }
}
