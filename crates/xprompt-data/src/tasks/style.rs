//! Style and translation: emoji vendor ↔ vendor (paired sources), colour ↔ line art of cut-outs,
//! colourisation ↔ greyscale, and global transforms (sepia, colour inversion, horizontal mirror).

use rand_chacha::ChaCha8Rng;

use super::{Ctx, Pair, Spec};
use crate::compose::{composite, Placed};
use crate::degrade;
use crate::img::{Img, Premul};
use crate::manifest::{Family, Split, Target};

pub fn specs() -> Vec<Spec> {
    let s = |name, reverse, summary, gen| Spec {
        name,
        family: Family::Style,
        target: Target::Rgb,
        palette: None,
        reverse,
        reverse_target: Target::Rgb,
        heldout: false,
        reverse_heldout: false,
        summary,
        gen,
    };
    vec![
        s(
            "emoji_google_to_twitter",
            Some("emoji_twitter_to_google"),
            "redraw an emoji in the other vendor's style (Google → Twitter)",
            emoji as super::GenFn,
        ),
        s(
            "colour_to_lineart",
            Some("lineart_to_colour"),
            "Canny line art of a cut-out on white",
            lineart,
        ),
        s(
            "colourise",
            Some("greyscale"),
            "colourise a greyscale photo",
            colourise,
        ),
        s(
            "font_restyle",
            Some("font_restyle"),
            "set the same word in another named font",
            font_restyle,
        ),
        s("sepia", None, "sepia-tone a photo", sepia),
        s("invert_colours", None, "invert all colours", invert),
        s("mirror", None, "mirror the image left to right", mirror),
    ]
}

/// A premultiplied picture flattened on white, at `frac` of the canvas, centred.
pub fn on_white(obj: &Premul, size: usize, frac: f32) -> Img {
    let p = Placed::new(obj, size, frac, 0, 0);
    let (x, y) = ((size - p.obj.w) / 2, (size - p.obj.h) / 2);
    composite(&Img::new(size, size, [1.0; 3]), &p.moved(x, y)).quantised()
}

fn emoji(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (set, item) = ctx.style_pair(rng, split)?;
    let a = ctx.src.load_rgba(&item.a_rel)?;
    let b = ctx.src.load_rgba(&item.b_rel)?;
    let what = item.caption.clone().unwrap_or_else(|| "this emoji".into());
    Some(Pair {
        a: Some(on_white(&a, ctx.size, 0.9)),
        b: on_white(&b, ctx.size, 0.9),
        text_a: None,
        instr: "Redraw this emoji in the Twitter (Twemoji) style.".into(),
        instr_rev: Some("Redraw this emoji in the Google (Noto) style.".into()),
        desc: format!("The second image shows the same emoji ({what}) as the first, drawn in the Twemoji style instead of Noto ({set})."),
        desc_rev: format!("The second image shows the same emoji ({what}) as the first, drawn in the Noto style instead of Twemoji ({set})."),
        sources: vec![item.a_rel, item.b_rel],
    })
}

fn lineart(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (obj, r) = ctx.cutout(rng, split)?;
    let what = r
        .caption
        .clone()
        .unwrap_or_else(|| format!("an object from the {} category", r.class));
    let a = on_white(&obj, ctx.size, 0.85);
    let e = crate::edges::canny(&a);
    Some(Pair {
        b: crate::edges::line_art(a.w, a.h, &e),
        a: Some(a),
        text_a: None,
        instr: "Turn this picture into black-and-white line art.".into(),
        instr_rev: Some("Colour this line drawing.".into()),
        desc: format!("The second image is a black-on-white line drawing of {what} in the first image."),
        desc_rev: format!("The second image is a full-colour picture of {what} drawn from the lines of the first image."),
        sources: vec![r.rel],
    })
}

fn font_restyle(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let word = ctx.word(rng, split)?;
    let (fa, fb) = ctx.font_pair(rng, &word)?;
    Some(Pair {
        a: Some(crate::fonts::render_text(&fa.font, &word, ctx.size)?),
        b: crate::fonts::render_text(&fb.font, &word, ctx.size)?,
        text_a: None,
        instr: format!("Set this word in the {} typeface.", fb.name),
        instr_rev: Some(format!("Set this word in the {} typeface.", fa.name)),
        desc: format!(
            "The second image shows the same word \"{word}\" set in {} instead of {}.",
            fb.name, fa.name
        ),
        desc_rev: format!(
            "The second image shows the same word \"{word}\" set in {} instead of {}.",
            fa.name, fb.name
        ),
        sources: vec![fa.rel.clone(), fb.rel.clone()],
    })
}

fn colourise(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (img, src) = ctx.photo_crop(rng, split)?;
    Some(Pair {
        a: Some(degrade::greyscale(&img).quantised()),
        b: img,
        text_a: None,
        instr: "Colourise this black-and-white photo.".into(),
        instr_rev: Some("Convert this photo to black and white.".into()),
        desc: "The second image is a full-colour version of the greyscale first image.".into(),
        desc_rev: "The second image is the first image converted to greyscale.".into(),
        sources: vec![src],
    })
}

fn global(
    ctx: &Ctx,
    rng: &mut ChaCha8Rng,
    split: Split,
    f: fn(&Img) -> Img,
    what: [&str; 2],
) -> Option<Pair> {
    let (img, src) = ctx.photo_crop(rng, split)?;
    Some(Pair {
        b: f(&img).quantised(),
        a: Some(img),
        text_a: None,
        instr: what[0].into(),
        instr_rev: None,
        desc: what[1].into(),
        desc_rev: String::new(),
        sources: vec![src],
    })
}

fn sepia(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    global(
        ctx,
        rng,
        split,
        degrade::sepia,
        [
            "Give this photo a sepia tone.",
            "The second image is the first image in sepia tones.",
        ],
    )
}

fn invert(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    global(
        ctx,
        rng,
        split,
        degrade::invert,
        [
            "Invert the colours of this image.",
            "The second image is the colour negative of the first image.",
        ],
    )
}

fn mirror(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    global(
        ctx,
        rng,
        split,
        |i| i.hflip(),
        [
            "Mirror this image horizontally.",
            "The second image is the first image mirrored left to right.",
        ],
    )
}
