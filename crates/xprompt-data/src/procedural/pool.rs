//! Building a [`Pool`] from a task suite: its RGB images (inputs and outputs of RGB tasks) as
//! base images, and its segmentation and depth records as photos with grey-coded maps.

use std::collections::BTreeSet;

use super::Pool;
use crate::error::Result;
use crate::img::Img;
use crate::manifest::{Split, Suite, Target};
use crate::palette::{depth_palette_by_name, PaletteDecoder};

/// Every image in `split` of the suite's non-held-out records, each used once, in manifest order,
/// at most `max` per kind (plain, segmentation, depth). Images of another size than the suite's are
/// skipped (a suite has one size).
pub fn from_suite(suite: &Suite, split: Split, max: usize) -> Result<Pool> {
    let size = suite.info.size as usize;
    let load = |rel: &str| -> Result<Option<Img>> {
        let img = Img::from_rgb8(&suite.load_rgb(rel)?);
        Ok((img.w == size && img.h == size).then_some(img))
    };
    let mut classes = PaletteDecoder::new(
        suite
            .info
            .classes
            .iter()
            .map(|c| c.colour)
            .collect::<Vec<_>>(),
    );
    let mut seen = BTreeSet::new();
    let mut pool = Pool::default();
    for r in suite
        .records
        .iter()
        .filter(|r| r.split == split && !r.heldout)
    {
        let (Some(out), Some(input)) = (&r.output_image, r.inputs.first()) else {
            continue;
        };
        // Dense records forward only: the photo is the input, the map the output.
        match r.target {
            Target::Rgb => {
                for rel in [input, out] {
                    if pool.images.len() < max && seen.insert(rel.clone()) {
                        if let Some(img) = load(rel)? {
                            pool.images.push(img);
                            pool.image_licences.push(r.licences.clone());
                        }
                    }
                }
            }
            Target::Segmentation if !is_reverse(r) && pool.segmentation.len() < max => {
                if let (Some(photo), Some(map)) = (load(input)?, load(out)?) {
                    let grey = recode(&map, |c| classes.decode(c).min(255));
                    pool.segmentation.push((photo, grey));
                }
            }
            Target::Depth if !is_reverse(r) => {
                let Some(palette) = r.palette.as_deref().and_then(depth_palette_by_name) else {
                    continue;
                };
                if pool.depth.len() < max {
                    if let (Some(photo), Some(map)) = (load(input)?, load(out)?) {
                        let mut dec = palette.decoder();
                        let grey = recode(&map, |c| dec.decode(c));
                        pool.depth.push((photo, grey));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(pool)
}

/// A map image whose colours `level` turns into levels 0..=255, grey-coded.
fn recode(map: &Img, mut level: impl FnMut([u8; 3]) -> usize) -> Img {
    let mut out = map.clone();
    for px in out.data.chunks_exact_mut(3) {
        let c = [px[0], px[1], px[2]].map(crate::img::to_u8);
        px.fill(level(c) as f32 / 255.0);
    }
    out
}

fn is_reverse(r: &crate::manifest::Record) -> bool {
    r.direction == crate::manifest::Direction::Reverse
}
