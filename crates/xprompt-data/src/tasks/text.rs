//! Text ↔ image: text-to-image from cut-out captions and emoji names (a centred picture on white) and its
//! reverse, captioning (image → short noun phrase); rendering a word in a named font and its reverse,
//! reading the word. Difference descriptions are built by the builder.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Ctx, Pair, Spec};
use crate::manifest::{Family, Split, Target};

pub fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "render_text",
            family: Family::Text,
            target: Target::Rgb,
            palette: None,
            reverse: Some("read_text"),
            reverse_target: Target::Text,
            heldout: false,
            reverse_heldout: false,
            summary: "write a word in a named font, black on white",
            gen: render_text,
        },
        Spec {
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
        },
    ]
}

fn render_text(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let word = ctx.word(rng, split)?;
    let fonts: Vec<_> = ctx
        .src
        .fonts
        .iter()
        .filter(|f| crate::fonts::covers(&f.font, &word))
        .collect();
    let f = fonts.get(rng.random_range(0..fonts.len().max(1)))?;
    Some(Pair {
        a: None,
        b: crate::fonts::render_text(&f.font, &word, ctx.size)?,
        text_a: Some(word.clone()),
        instr: format!(
            "Write the word \"{word}\" in the {} typeface, black on white.",
            f.name
        ),
        instr_rev: Some("Which word is written in this image?".into()),
        desc: format!("The image shows the word \"{word}\" in {}.", f.name),
        desc_rev: word,
        sources: vec![f.rel.clone()],
    })
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
