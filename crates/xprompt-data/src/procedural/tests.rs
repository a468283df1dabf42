use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// A deterministic test picture with structure in every direction and colour.
fn picture(seed: u64) -> Img {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (a, b): ([f32; 3], [f32; 3]) = (random_colour(&mut rng), random_colour(&mut rng));
    let mut img = Img::new(64, 64, [0.0; 3]);
    for y in 0..64 {
        for x in 0..64 {
            let t = (x as f32 / 63.0 + (y as f32 / 9.0).sin() * 0.2).clamp(0.0, 1.0);
            let mut p = [0, 1, 2].map(|c| a[c] * (1.0 - t) + b[c] * t);
            if (x / 16 + y / 16) % 2 == 0 {
                p[(x * 3 / 64) % 3] = y as f32 / 63.0;
            }
            img.set(x, y, p);
        }
    }
    img
}

fn grey_map(seed: u64, levels: u32) -> Img {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut img = Img::new(64, 64, [0.0; 3]);
    let split: usize = rng.random_range(8..56);
    for y in 0..64 {
        for x in 0..64 {
            let l = if levels == 256 {
                (y * 4) as f32
            } else {
                ((x > split) as u32 + (y > 32) as u32 * 2) as f32
            };
            img.set(x, y, [l / 255.0; 3]);
        }
    }
    img
}

fn pool() -> Pool {
    Pool {
        images: (0..6).map(picture).collect(),
        image_licences: Vec::new(),
        segmentation: (0..4).map(|s| (picture(s + 10), grey_map(s, 4))).collect(),
        depth: (0..4)
            .map(|s| (picture(s + 20), grey_map(s, 256)))
            .collect(),
    }
}

#[test]
fn every_family_draws_and_keeps_images_in_range() {
    let pool = pool();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for f in families() {
        for range in [Range::Train, Range::HeldOut] {
            let task = draw_task(&Selection::only(f.name, range), &pool, &mut rng);
            if range == Range::HeldOut && !f.has_heldout_range && !f.heldout_type {
                assert!(task.is_err(), "{} has no held-out range", f.name);
                continue;
            }
            let task = task.unwrap();
            let pairs = task.pairs(&pool, 3, &mut rng);
            assert_eq!(pairs.len(), 3, "{}", f.name);
            for (a, b) in &pairs {
                assert_eq!((a.w, a.h, b.w, b.h), (64, 64, 64, 64), "{}", f.name);
                assert!(b.data.iter().all(|v| (0.0..=1.0).contains(v)), "{}", f.name);
                assert_ne!(a, b, "{} changed nothing", f.name);
            }
        }
    }
}

#[test]
fn training_selection_never_draws_a_heldout_type_even_composed() {
    let pool = pool();
    let heldout = heldout_type_names();
    assert!(
        heldout.len() >= 6,
        "at least six held-out types: {heldout:?}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let sel = Selection::train(0.5);
    let mut seen = HashSet::new();
    for _ in 0..3000 {
        let t = draw_task(&sel, &pool, &mut rng).unwrap();
        for part in t.label.split('+') {
            assert!(!heldout.contains(&part), "drew held-out {part}");
            seen.insert(part.to_string());
        }
    }
    assert_eq!(
        seen.len(),
        train_family_names().len(),
        "all trained families drawn"
    );
}

#[test]
fn tasks_are_hidden_per_instance_and_shared_across_their_pairs() {
    // Two draws of one family give different outputs on the same image, while one task maps
    // the same image the same way every time (noise aside).
    let pool = pool();
    let img = picture(99);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for f in families().iter().filter(|f| f.input == Input::Image) {
        let sel = Selection::only(f.name, Range::Train);
        let t1 = draw_task(&sel, &pool, &mut rng).unwrap();
        let mut t2 = draw_task(&sel, &pool, &mut rng).unwrap();
        // The 7 symmetries of dihedral can repeat: draw until different.
        for _ in 0..20 {
            if t1.apply(&img, 0).quantised() != t2.apply(&img, 0).quantised() {
                break;
            }
            t2 = draw_task(&sel, &pool, &mut rng).unwrap();
        }
        assert_ne!(
            t1.apply(&img, 0).quantised(),
            t2.apply(&img, 0).quantised(),
            "{}",
            f.name
        );
        assert_eq!(t1.apply(&img, 5), t1.apply(&img, 5), "{}", f.name);
    }
}

#[test]
fn every_family_but_the_square_symmetries_has_far_more_than_2_pow_15_settings() {
    // Distinct outputs on one image over 2048 draws per family: ≥ 90 % distinct means the
    // parameter space is far larger than the draws (continuous parameters). The dihedral
    // family is the 7 symmetries of the square by definition; it gains variety in composition.
    let pool = pool();
    let img = picture(7);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for f in families().iter().filter(|f| !f.heldout_type) {
        let sel = Selection::only(f.name, Range::Train);
        let mut distinct = HashSet::new();
        let n = 2048;
        for _ in 0..n {
            let t = draw_task(&sel, &pool, &mut rng).unwrap();
            let src = match t.input {
                Input::Image => &img,
                Input::Segmentation => &pool.segmentation[0].1,
                Input::Depth => &pool.depth[0].1,
            };
            distinct.insert(t.apply(src, 0).to_rgb8().into_raw());
        }
        if f.name == "dihedral" {
            assert_eq!(distinct.len(), 7, "the 7 non-identity symmetries");
        } else {
            assert!(
                distinct.len() * 10 >= n * 9,
                "{}: {} distinct of {n}",
                f.name,
                distinct.len()
            );
        }
    }
}

#[test]
fn dense_palettes_paint_maps_not_photos() {
    let pool = pool();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let t = draw_task(
        &Selection::only("segmentation_palette", Range::Train),
        &pool,
        &mut rng,
    )
    .unwrap();
    for (photo, out) in t.pairs(&pool, 2, &mut rng) {
        let colours: HashSet<Vec<u8>> = out.to_rgb8().pixels().map(|p| p.0.to_vec()).collect();
        assert!(colours.len() <= 4, "a 4-class map gives at most 4 colours");
        assert!(pool.segmentation.iter().any(|(p, _)| *p == photo));
    }
}

#[test]
fn the_identity_task_returns_its_input() {
    let pool = pool();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for (a, b) in Task::identity().pairs(&pool, 3, &mut rng) {
        assert_eq!(a.quantised(), b);
    }
}
