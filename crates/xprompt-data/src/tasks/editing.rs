//! Instruction editing with exact before/after composites of cut-outs on photo crops: add / remove
//! (both held out, Table 4), recolour, move and replace an object. Instructions use the cut-out captions.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Ctx, Pair, Spec};
use crate::compose::{bare_noun, composite, position_phrase, position_place, Placed};
use crate::img::{hsv_to_rgb, rgb_to_hsv, Premul};
use crate::manifest::{Family, Split, Target};

pub fn specs() -> Vec<Spec> {
    let e = |name, reverse, heldout, summary, gen| Spec {
        name,
        family: Family::Editing,
        target: Target::Rgb,
        palette: None,
        reverse: Some(reverse),
        reverse_target: Target::Rgb,
        heldout,
        reverse_heldout: heldout,
        summary,
        gen,
    };
    vec![
        e(
            "add_object",
            "remove_object",
            true,
            "paste a captioned cut-out at a named position",
            add as super::GenFn,
        ),
        e(
            "recolour_object",
            "restore_colour",
            false,
            "shift an object's hue to a named colour",
            recolour,
        ),
        e(
            "move_object",
            "move_object",
            false,
            "move an object to another named position",
            move_obj,
        ),
        e(
            "replace_object",
            "replace_object",
            false,
            "swap an object for another one, same place and size",
            replace,
        ),
    ]
}

const COLOURS: [(&str, f32); 8] = [
    ("red", 0.0),
    ("orange", 30.0),
    ("yellow", 58.0),
    ("green", 120.0),
    ("cyan", 185.0),
    ("blue", 225.0),
    ("purple", 275.0),
    ("pink", 325.0),
];

fn add(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (bg, bg_src) = ctx.photo_crop(rng, split)?;
    let (obj, r, cap) = ctx.named_cutout(rng, split)?;
    let p = Placed::random(&obj, ctx.size, 0.35..0.65, rng);
    let (cx, cy) = p.centre(ctx.size);
    let pos = position_phrase(cx, cy);
    let noun = bare_noun(&cap);
    Some(Pair {
        b: composite(&bg, &p).quantised(),
        a: Some(bg),
        text_a: None,
        instr: format!("Add {} {pos}.", cap),
        instr_rev: Some(format!("Remove the {noun}.")),
        desc: format!("The second image is the first image with {} added {pos}; nothing else changed.", cap),
        desc_rev: format!("The second image is the first image with the {noun} {pos} removed; nothing else changed."),
        sources: vec![bg_src, r.rel],
    })
}

/// Hue set to the named colour, saturation raised to at least 0.45, value kept.
pub fn recolour_premul(obj: &Premul, hue: f32) -> Premul {
    obj.map_colour(|c| {
        let [_, s, v] = rgb_to_hsv(c);
        hsv_to_rgb([hue, s.max(0.45), v.max(0.15)])
    })
}

fn recolour(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (bg, bg_src) = ctx.photo_crop(rng, split)?;
    let (obj, r, cap) = ctx.named_cutout(rng, split)?;
    let (name, hue) = *COLOURS.choose(rng)?;
    let p = Placed::random(&obj, ctx.size, 0.4..0.7, rng);
    let q = Placed {
        obj: recolour_premul(&p.obj, hue),
        ..p.clone()
    };
    let noun = bare_noun(&cap);
    Some(Pair {
        a: Some(composite(&bg, &p).quantised()),
        b: composite(&bg, &q).quantised(),
        text_a: None,
        instr: format!("Make the {noun} {name}."),
        instr_rev: Some(format!("Give the {name} {noun} its original colours back.")),
        desc: format!("The second image is the first image with the {noun} recoloured {name}; nothing else changed."),
        desc_rev: format!("The second image is the first image with the {name} {noun} shown in its original colours."),
        sources: vec![bg_src, r.rel],
    })
}

fn move_obj(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (bg, bg_src) = ctx.photo_crop(rng, split)?;
    let (obj, r, cap) = ctx.named_cutout(rng, split)?;
    let p = Placed::random(&obj, ctx.size, 0.3..0.5, rng);
    let (w, h) = (p.obj.w, p.obj.h);
    let (cx, cy) = p.centre(ctx.size);
    let from = position_place(cx, cy);
    for _ in 0..20 {
        let q = p.moved(
            rng.random_range(0..=ctx.size - w),
            rng.random_range(0..=ctx.size - h),
        );
        let (qx, qy) = q.centre(ctx.size);
        let to = position_place(qx, qy);
        if to == from || (qx - cx).abs().max((qy - cy).abs()) < 0.25 {
            continue;
        }
        let noun = bare_noun(&cap);
        return Some(Pair {
            a: Some(composite(&bg, &p).quantised()),
            b: composite(&bg, &q).quantised(),
            text_a: None,
            instr: format!("Move the {noun} from the {from} to the {to}."),
            instr_rev: Some(format!("Move the {noun} from the {to} to the {from}.")),
            desc: format!(
                "The second image is the first image with the {noun} moved from the {from} to the {to}."
            ),
            desc_rev: format!(
                "The second image is the first image with the {noun} moved from the {to} to the {from}."
            ),
            sources: vec![bg_src, r.rel],
        });
    }
    None
}

fn replace(ctx: &Ctx, rng: &mut ChaCha8Rng, split: Split) -> Option<Pair> {
    let (bg, bg_src) = ctx.photo_crop(rng, split)?;
    let (o1, r1, cap1) = ctx.named_cutout(rng, split)?;
    // a second, different object of the same split; tiny source sets may have one per split, then train
    let (o2, r2, cap2) = (0..8)
        .filter_map(|k| ctx.named_cutout(rng, if k < 4 { split } else { Split::Train }))
        .find(|(_, _, c)| *c != cap1)?;
    let p = Placed::random(&o1, ctx.size, 0.4..0.65, rng);
    let frac = p.obj.w.max(p.obj.h) as f32 / ctx.size as f32;
    let q0 = Placed::new(&o2, ctx.size, frac, 0, 0);
    // same centre, clamped inside the canvas
    let (cx, cy) = (p.x + p.obj.w / 2, p.y + p.obj.h / 2);
    let q = q0.moved(
        cx.saturating_sub(q0.obj.w / 2).min(ctx.size - q0.obj.w),
        cy.saturating_sub(q0.obj.h / 2).min(ctx.size - q0.obj.h),
    );
    let (n1, n2) = (bare_noun(&cap1), bare_noun(&cap2));
    Some(Pair {
        a: Some(composite(&bg, &p).quantised()),
        b: composite(&bg, &q).quantised(),
        text_a: None,
        instr: format!("Replace the {n1} with {}.", cap2),
        instr_rev: Some(format!("Replace the {n2} with {}.", cap1)),
        desc: format!(
            "The second image is the first image with the {n1} replaced by {}.",
            cap2
        ),
        desc_rev: format!(
            "The second image is the first image with the {n2} replaced by {}.",
            cap1
        ),
        sources: vec![bg_src, r1.rel, r2.rel],
    })
}
