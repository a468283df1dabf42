//! Dense prediction: segmentation of cut-outs composited on photos (class palette), depth (training
//! palette, and a new held-out palette) and surface normals of ray-cast scenes, Canny-like edges of photo
//! crops. Reverse tasks generate the image from the dense map (seg2img, depth2img, normal2img, edge2img).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Ctx, Pair, Spec};
use crate::compose::{composite, Placed};
use crate::img::Img;
use crate::manifest::{Family, Split, Target};
use crate::palette::{
    class_colour, depth_palette_heldout, depth_palette_train, encode_normal, DepthPalette,
};
use crate::render3d::Scene;

pub fn specs() -> Vec<Spec> {
    let d = |name, target, palette, reverse: Option<&'static str>, heldout, summary, gen| Spec {
        name,
        family: Family::Dense,
        target,
        palette,
        reverse,
        reverse_target: Target::Rgb,
        heldout,
        reverse_heldout: false,
        summary,
        gen,
    };
    vec![
        d(
            "segmentation",
            Target::Segmentation,
            Some("classes"),
            Some("seg2img"),
            false,
            "class map of cut-outs pasted on a photo",
            segmentation as super::GenFn,
        ),
        d(
            "depth",
            Target::Depth,
            Some("depth-jet"),
            Some("depth2img"),
            false,
            "depth of a ray-cast scene, jet palette",
            depth_train,
        ),
        d(
            "depth_new_palette",
            Target::Depth,
            Some("depth-dusk"),
            None,
            true,
            "depth in a new, unseen palette",
            depth_new,
        ),
        d(
            "normals",
            Target::Normals,
            None,
            Some("normal2img"),
            false,
            "camera-frame surface normals of a ray-cast scene",
            normals,
        ),
        d(
            "edges",
            Target::Edges,
            None,
            Some("edge2img"),
            false,
            "Canny-like edges of a photo crop",
            edges,
        ),
    ]
}

/// A segmentation sample: the composite, the label map and the placements it came from.
pub struct SegSample {
    pub image: Img,
    pub labels: Vec<usize>,
    pub placed: Vec<(Placed, usize)>,
    pub captions: Vec<String>,
    pub sources: Vec<String>,
}

/// Label of a pixel = class of the top-most object whose alpha there is ≥ 0.5; 0 = background.
pub fn labels_from_placements(placed: &[(Placed, usize)], size: usize) -> Vec<usize> {
    let mut labels = vec![0usize; size * size];
    for (p, class) in placed {
        for (i, a) in p.alpha_full(size).iter().enumerate() {
            if *a >= 0.5 {
                labels[i] = *class;
            }
        }
    }
    labels
}

pub fn label_image(labels: &[usize], size: usize) -> Img {
    let mut img = Img::new(size, size, [0.0; 3]);
    for (i, l) in labels.iter().enumerate() {
        let c = class_colour(*l);
        img.set(i % size, i / size, c.map(|v| v as f32 / 255.0));
    }
    img
}

pub fn segmentation_sample(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<SegSample> {
    let (mut image, bg_src) = ctx.photo_crop(rng, split)?;
    let n = rng.random_range(1..=3);
    let mut placed = Vec::new();
    let mut captions = Vec::new();
    let mut sources = vec![bg_src];
    for _ in 0..n * 3 {
        if placed.len() == n {
            break;
        }
        let (obj, r) = ctx.cutout(rng, split)?;
        let class = ctx.src.class_id(&r.class);
        if placed.iter().any(|(_, c)| *c == class) {
            continue;
        }
        let p = Placed::random(&obj, ctx.size, 0.35..0.7, rng);
        image = composite(&image, &p);
        placed.push((p, class));
        captions.push(match &r.caption {
            Some(c) => format!("{c} ({})", r.class),
            None => format!("an object of class {}", r.class),
        });
        sources.push(r.rel);
    }
    let labels = labels_from_placements(&placed, ctx.size);
    Some(SegSample {
        image: image.quantised(),
        labels,
        placed,
        captions,
        sources,
    })
}

fn segmentation(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let s = segmentation_sample(ctx, rng, split)?;
    let list = s.captions.join(", ");
    Some(Pair {
        a: Some(s.image),
        b: label_image(&s.labels, ctx.size),
        text_a: None,
        instr: "Segment this image: paint each object in its class colour and the background black.".into(),
        instr_rev: Some("Generate a photo-like image that matches this segmentation map.".into()),
        desc: format!("The second image is the segmentation map of the first image, with classes coloured: {list}."),
        desc_rev: format!("The second image is a picture whose objects ({list}) fill the coloured regions of the first image."),
        sources: s.sources,
    })
}

fn depth_image(depth: &[f32], size: usize, pal: &DepthPalette) -> Img {
    let table = pal.table();
    let mut img = Img::new(size, size, [0.0; 3]);
    for (i, d) in depth.iter().enumerate() {
        img.set(
            i % size,
            i / size,
            table[pal.level(*d)].map(|v| v as f32 / 255.0),
        );
    }
    img
}

fn depth_pair(ctx: &Ctx, rng: &mut ChaCha8Rng, pal: &DepthPalette, colours: &str) -> Option<Pair> {
    let r = Scene::random(rng).render(ctx.size, ctx.size);
    let (near, far) = r
        .depth
        .iter()
        .fold((f32::MAX, 0.0f32), |(a, b), d| (a.min(*d), b.max(*d)));
    Some(Pair {
        a: Some(r.rgb.quantised()),
        b: depth_image(&r.depth, ctx.size, pal),
        text_a: None,
        instr: format!("Estimate the depth of this image as a {colours} depth map."),
        instr_rev: Some("Generate an image of a scene with this depth map.".into()),
        desc: format!(
            "The second image is the depth map of the first image in the {} palette ({colours}); depths range from {near:.1} to {far:.1} metres.",
            pal.name
        ),
        desc_rev: format!("The second image is a rendered scene whose depth matches the {} depth map in the first image.", pal.name),
        sources: vec![],
    })
}

fn depth_train(ctx: &Ctx, rng: &mut ChaCha8Rng, _split: Split) -> Option<Pair> {
    depth_pair(
        ctx,
        rng,
        &depth_palette_train(),
        "blue is near, dark red is far",
    )
}

fn depth_new(ctx: &Ctx, rng: &mut ChaCha8Rng, _split: Split) -> Option<Pair> {
    depth_pair(
        ctx,
        rng,
        &depth_palette_heldout(),
        "dark purple is near, cyan is far",
    )
}

fn normals(ctx: &Ctx, rng: &mut ChaCha8Rng, _split: Split) -> Option<Pair> {
    let r = Scene::random(rng).render(ctx.size, ctx.size);
    let mut b = Img::new(ctx.size, ctx.size, [0.0; 3]);
    for (i, n) in r.normals.iter().enumerate() {
        b.set(
            i % ctx.size,
            i / ctx.size,
            encode_normal(*n).map(|v| v as f32 / 255.0),
        );
    }
    Some(Pair {
        a: Some(r.rgb.quantised()),
        b,
        text_a: None,
        instr: "Estimate the surface normals of this image.".into(),
        instr_rev: Some("Generate an image of a scene with these surface normals.".into()),
        desc: "The second image is the surface-normal map of the first image: red = right, green = up, blue = towards the viewer.".into(),
        desc_rev: "The second image is a rendered scene whose surfaces have the normals shown in the first image.".into(),
        sources: vec![],
    })
}

fn edges(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (img, src) = ctx.photo_crop(rng, split)?;
    let e = crate::edges::canny(&img);
    let frac = e.iter().filter(|v| **v).count() as f32 / e.len() as f32;
    Some(Pair {
        b: crate::edges::edge_image(img.w, img.h, &e),
        a: Some(img),
        text_a: None,
        instr: "Detect the edges in this image.".into(),
        instr_rev: Some("Generate a photo whose edges match this edge map.".into()),
        desc: format!("The second image is the Canny edge map of the first image, white edges on black ({:.0}% of pixels).", frac * 100.0),
        desc_rev: "The second image is a photo whose edges are the white lines of the first image.".into(),
        sources: vec![src],
    })
}
