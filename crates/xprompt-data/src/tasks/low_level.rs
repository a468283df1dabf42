//! Low-level vision tasks on photo crops: each forward task restores the clean crop from a procedural
//! degradation, each reverse task applies it. Derain and low-light enhancement are held out (Table 4).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Ctx, Pair, Spec};
use crate::degrade::{self, Blur};
use crate::manifest::{Family, Split, Target};

fn spec(
    name: &'static str,
    reverse: &'static str,
    heldout: bool,
    summary: &'static str,
    gen: super::GenFn,
) -> Spec {
    Spec {
        name,
        family: Family::LowLevel,
        target: Target::Rgb,
        palette: None,
        reverse: Some(reverse),
        reverse_target: Target::Rgb,
        heldout,
        reverse_heldout: false,
        summary,
        gen,
    }
}

pub fn specs() -> Vec<Spec> {
    vec![
        spec(
            "derain",
            "add_rain",
            true,
            "remove procedural rain streaks",
            derain,
        ),
        spec(
            "denoise",
            "add_noise",
            false,
            "remove additive Gaussian noise",
            denoise,
        ),
        spec(
            "deblur",
            "add_blur",
            false,
            "remove Gaussian or linear motion blur",
            deblur,
        ),
        spec(
            "dehaze",
            "add_haze",
            false,
            "remove depth-aware haze (scene depth or ground-plane prior)",
            dehaze,
        ),
        spec(
            "low_light_enhance",
            "darken",
            true,
            "brighten a gamma-darkened, noisy image",
            low_light,
        ),
        spec(
            "super_resolution",
            "downsample",
            false,
            "restore detail lost to 2× or 4× downsampling",
            super_res,
        ),
        spec(
            "jpeg_restore",
            "jpeg_compress",
            false,
            "remove JPEG artefacts (quality 5–20)",
            jpeg,
        ),
        spec(
            "inpaint",
            "mask_regions",
            false,
            "fill grey rectangles",
            inpaint,
        ),
    ]
}

/// Build the pair with `a` = degraded, `b` = clean.
fn pair(
    degraded: crate::img::Img,
    clean: crate::img::Img,
    src: String,
    d: [&str; 4],
) -> Option<Pair> {
    Some(Pair {
        a: Some(degraded.quantised()),
        b: clean,
        text_a: None,
        instr: d[0].into(),
        instr_rev: Some(d[1].into()),
        desc: d[2].into(),
        desc_rev: d[3].into(),
        sources: vec![src],
    })
}

fn derain(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (rainy, p) = degrade::add_rain(&clean, rng);
    let fwd = "The second image is the first image with all rain streaks removed.".to_string();
    let rev = format!(
        "The second image is the first image with {} rain streaks added, slanted {:.0} degrees from vertical.",
        p.streaks, p.angle_deg
    );
    pair(
        rainy,
        clean,
        src,
        [
            "Remove the rain from this image.",
            "Add rain to this image.",
            &fwd,
            &rev,
        ],
    )
}

fn denoise(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (noisy, sigma) = degrade::add_noise(&clean, rng);
    let rev = format!(
        "The second image is the first image with Gaussian noise of standard deviation {:.0} grey levels added.",
        sigma * 255.0
    );
    pair(
        noisy,
        clean,
        src,
        [
            "Remove the noise from this image.",
            "Add Gaussian noise to this image.",
            "The second image is the first image with the noise removed.",
            &rev,
        ],
    )
}

fn deblur(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (blurred, b) = degrade::add_blur(&clean, rng);
    let rev = match b {
        Blur::Gaussian { sigma } => format!("The second image is the first image with a Gaussian blur of sigma {sigma:.1} pixels applied."),
        Blur::Motion { length, angle_deg } => {
            format!("The second image is the first image with motion blur of {length} pixels at {angle_deg:.0} degrees applied.")
        }
    };
    pair(
        blurred,
        clean,
        src,
        [
            "Deblur this image.",
            "Blur this image.",
            "The second image is the first image with the blur removed and sharp details restored.",
            &rev,
        ],
    )
}

/// 30 % of the pairs use a ray-cast scene and its exact depth, the rest a photo with the ground-plane prior.
fn dehaze(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src, depth) = if rng.random_bool(0.3) {
        let r = crate::render3d::Scene::random(rng).render(ctx.size, ctx.size);
        (r.rgb.quantised(), None, r.depth)
    } else {
        let (clean, src) = ctx.photo_crop(rng, split)?;
        let d = degrade::ground_depth(clean.w, clean.h);
        (clean, Some(src), d)
    };
    let (hazy, p) = degrade::add_haze(&clean, &depth, rng);
    let rev = format!(
        "The second image is the first image with haze added that thickens with distance (density {:.2}, airlight {:.2}).",
        p.beta, p.airlight
    );
    let mut out = pair(
        hazy,
        clean,
        src.clone().unwrap_or_default(),
        [
            "Remove the haze from this image.",
            "Add haze to this image.",
            "The second image is the first image with the haze removed.",
            &rev,
        ],
    )?;
    if src.is_none() {
        out.sources.clear(); // procedural scene
    }
    Some(out)
}

fn low_light(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (dark, p) = degrade::add_low_light(&clean, rng);
    let rev = format!(
        "The second image is a darker version of the first image (gain {:.2}, gamma {:.1}) with faint sensor noise.",
        p.gain, p.gamma
    );
    pair(
        dark,
        clean,
        src,
        [
            "Enhance this low-light image.",
            "Make this image look as if taken in low light.",
            "The second image is a brightened, normally exposed version of the first image.",
            &rev,
        ],
    )
}

fn super_res(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (low, f) = degrade::downsample(&clean, rng);
    let fwd =
        format!("The second image is a {f}x super-resolved, sharper version of the first image.");
    let rev = format!("The second image is the first image downsampled {f}x and upsampled back, losing fine detail.");
    pair(
        low,
        clean,
        src,
        [
            "Increase the resolution of this image.",
            "Reduce the resolution of this image.",
            &fwd,
            &rev,
        ],
    )
}

fn jpeg(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (j, q) = degrade::add_jpeg(&clean, rng).ok()?;
    let rev = format!(
        "The second image is the first image saved as JPEG at quality {q}, with block artefacts."
    );
    pair(
        j,
        clean,
        src,
        [
            "Remove the JPEG compression artefacts.",
            "Compress this image heavily as JPEG.",
            "The second image is the first image with the JPEG artefacts removed.",
            &rev,
        ],
    )
}

fn inpaint(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (clean, src) = ctx.photo_crop(rng, split)?;
    let (holed, boxes) = degrade::add_holes(&clean, rng);
    let n = boxes.len();
    let fwd = format!("The second image is the first image with the {n} grey rectangle(s) filled in with plausible content.");
    let rev = format!(
        "The second image is the first image with {n} grey rectangle(s) covering parts of it."
    );
    pair(
        holed,
        clean,
        src,
        [
            "Fill in the grey regions of this image.",
            "Cover parts of this image with grey rectangles.",
            &fwd,
            &rev,
        ],
    )
}
