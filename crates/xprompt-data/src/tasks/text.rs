//! Text ↔ image: text-to-image from cut-out captions and emoji names (a centred picture on white), and
//! its reverse, captioning (image → short noun phrase). Difference descriptions are built by the builder.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Ctx, Pair, Spec};
use crate::manifest::{Family, Split, Target};

pub fn specs() -> Vec<Spec> {
    vec![Spec {
        name: "text_to_image",
        family: Family::Text,
        target: Target::Rgb,
        palette: None,
        reverse: Some("caption"),
        reverse_target: Target::Text,
        heldout: false,
        reverse_heldout: false,
        summary: "draw a captioned object or named emoji on white",
        gen: text_to_image,
    }]
}

fn text_to_image(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let use_emoji = !ctx.src.pairs.is_empty() && rng.random_bool(0.3);
    let (img, caption, sources) = if use_emoji {
        let (_, item) = ctx.style_pair(rng, split)?;
        let caption = item.caption.clone()?;
        let p = ctx.src.load_rgba(&item.a_rel)?;
        (
            super::style::on_white(&p, ctx.size, 0.9),
            format!("{caption} emoji"),
            vec![item.a_rel],
        )
    } else {
        let (obj, r, cap) = ctx.named_cutout(rng, split)?;
        (
            super::style::on_white(&obj, ctx.size, 0.85),
            cap,
            vec![r.rel],
        )
    };
    Some(Pair {
        a: None,
        b: img,
        text_a: Some(caption.clone()),
        instr: format!("Draw {caption} on a white background."),
        instr_rev: Some("What does this picture show? Answer with a short phrase.".into()),
        desc: format!("The image shows {caption} on a white background."),
        desc_rev: caption,
        sources,
    })
}
