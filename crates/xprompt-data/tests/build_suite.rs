//! End-to-end: build a suite from the committed miniature source set (tests/fixtures/data-sources), then
//! validate it, check determinism, the skip report, and the exactness of dense targets on disk.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use xprompt_data::manifest::{read_jsonl, Direction, Split, Target};
use xprompt_data::palette::{class_table, depth_palette_train, PaletteDecoder};
use xprompt_data::sources::Sources;
use xprompt_data::tasks::{dense, Ctx};
use xprompt_data::{build, validate_suite, BuildConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data-sources")
}

fn cfg(out: &Path, seed: u64) -> BuildConfig {
    BuildConfig {
        sources: fixtures(),
        out: out.into(),
        size: 32,
        seed,
        per_task: 10,
        only: None,
    }
}

#[test]
fn fixture_suite_builds_validates_and_reports_bad_sources() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    let summary = build(&cfg(&out, 7)).unwrap();
    assert!(summary.shortfalls.is_empty(), "{:?}", summary.shortfalls);
    let rep = validate_suite(&out).unwrap();
    assert!(rep.is_ok(), "validation errors: {:#?}", rep.errors);
    assert!(rep.warnings.is_empty(), "{:?}", rep.warnings);
    assert_eq!(rep.records, summary.records);

    let records = read_jsonl(&out.join("manifest.jsonl")).unwrap();
    let tasks: std::collections::BTreeSet<&str> = records.iter().map(|r| r.task.as_str()).collect();
    for t in [
        "derain",
        "add_rain",
        "denoise",
        "deblur",
        "dehaze",
        "low_light_enhance",
        "darken",
        "super_resolution",
        "jpeg_restore",
        "inpaint",
        "segmentation",
        "seg2img",
        "depth",
        "depth2img",
        "depth_new_palette",
        "normals",
        "edges",
        "add_object",
        "remove_object",
        "recolour_object",
        "move_object",
        "replace_object",
        "emoji_google_to_twitter",
        "colour_to_lineart",
        "colourise",
        "greyscale",
        "sepia",
        "text_to_image",
        "caption",
        "font_restyle",
        "render_text",
        "read_text",
        "describe_difference",
    ] {
        assert!(tasks.contains(t), "task {t} missing");
    }
    // held-out flags and splits
    for r in &records {
        let held = matches!(
            r.task.as_str(),
            "derain" | "low_light_enhance" | "add_object" | "remove_object" | "depth_new_palette"
        );
        assert_eq!(r.heldout, held, "{}", r.id);
    }
    assert!(records
        .iter()
        .any(|r| r.task == "derain" && r.split == Split::Test));
    // captions are text outputs, text-to-image has no input image
    let cap = records.iter().find(|r| r.task == "caption").unwrap();
    assert_eq!(cap.target, Target::Text);
    assert!(cap.output_text.as_ref().is_some_and(|t| !t.is_empty()));
    assert!(records
        .iter()
        .filter(|r| r.task == "text_to_image")
        .all(|r| r.inputs.is_empty()));
    // reverse records swap the files of their forward record
    let fwd = records.iter().find(|r| r.task == "denoise").unwrap();
    let rev = records
        .iter()
        .find(|r| r.task == "add_noise" && r.group == fwd.group)
        .unwrap();
    assert_eq!(rev.direction, Direction::Reverse);
    assert_eq!(rev.inputs[0], *fwd.output_image.as_ref().unwrap());
    assert_eq!(rev.output_image.as_ref().unwrap(), &fwd.inputs[0]);

    // bad sources are skipped with a reason, never a crash
    let skipped: Vec<String> = summary.skipped.iter().map(|s| s.path.clone()).collect();
    for bad in [
        "photos/skimage/broken.jpg",
        "photos/skimage/tiny.png",
        "cutouts/openclipart/plants/empty_leaf.png",
    ] {
        assert!(
            skipped.iter().any(|s| s == bad),
            "{bad} not reported: {skipped:?}"
        );
    }
    // a cut-out without a usable caption is kept for class-level tasks only, and counted
    let info = xprompt_data::manifest::read_suite_info(&out).unwrap();
    assert_eq!(info.uncaptioned_cutouts, 2); // 0001.png and empty_leaf.png
    for r in records
        .iter()
        .filter(|r| r.family == xprompt_data::Family::Editing)
    {
        assert!(
            !r.sources.iter().any(|s| s.ends_with("0001.png")),
            "{}",
            r.id
        );
    }
    let card = std::fs::read_to_string(out.join("CARD.md")).unwrap();
    assert!(card.contains("Held-out protocol") && card.contains("depth_new_palette"));
}

#[test]
fn builds_are_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let only = Some(vec![
        "derain".to_string(),
        "segmentation".into(),
        "depth".into(),
        "add_object".into(),
    ]);
    for (p, seed) in [(&a, 1), (&b, 1), (&c, 2)] {
        build(&BuildConfig {
            only: only.clone(),
            ..cfg(p, seed)
        })
        .unwrap();
    }
    let read = |p: &Path, f: &str| std::fs::read(p.join(f)).unwrap();
    assert_eq!(read(&a, "manifest.jsonl"), read(&b, "manifest.jsonl"));
    for f in [
        "images/derain/00003_a.png",
        "images/segmentation/00002_b.png",
        "images/add_object/00004_b.png",
    ] {
        assert_eq!(
            read(&a, f),
            read(&b, f),
            "{f} differs between identical builds"
        );
    }
    assert_ne!(
        read(&a, "images/derain/00003_a.png"),
        read(&c, "images/derain/00003_a.png")
    );
}

#[test]
fn segmentation_masks_on_disk_equal_alpha_derived_masks() {
    let src = Sources::open(&fixtures(), 32, 0).unwrap();
    let size = 48;
    let ctx = Ctx { src: &src, size };
    let dir = tempfile::tempdir().unwrap();
    let mut dec = PaletteDecoder::new(class_table(src.classes.len() + 1));
    for seed in 0..6 {
        let s =
            dense::segmentation_sample(&ctx, &mut ChaCha8Rng::seed_from_u64(seed), Split::Train)
                .unwrap();
        // independent reference: top-most object with alpha >= 0.5 wins
        let mut expect = vec![0usize; size * size];
        for (p, class) in &s.placed {
            for y in 0..p.obj.h {
                for x in 0..p.obj.w {
                    if p.obj.alpha[y * p.obj.w + x] >= 0.5 {
                        expect[(p.y + y) * size + p.x + x] = *class;
                    }
                }
            }
        }
        let path = dir.path().join(format!("seg{seed}.png"));
        dense::label_image(&s.labels, size)
            .to_rgb8()
            .save(&path)
            .unwrap();
        let back: Vec<usize> = image::open(&path)
            .unwrap()
            .to_rgb8()
            .pixels()
            .map(|p| dec.decode(p.0))
            .collect();
        assert_eq!(back, expect, "seed {seed}");
        assert!(
            expect.iter().any(|&c| c > 0),
            "seed {seed}: no object visible"
        );
    }
}

#[test]
fn depth_maps_on_disk_decode_to_the_rendered_depth_within_quantisation() {
    let pal = depth_palette_train();
    let table = pal.table();
    let mut dec = pal.decoder();
    let size = 32;
    let r = xprompt_data::render3d::Scene::random(&mut ChaCha8Rng::seed_from_u64(11))
        .render(size, size);
    let mut img = image::RgbImage::new(size as u32, size as u32);
    for (i, d) in r.depth.iter().enumerate() {
        img.put_pixel(
            (i % size) as u32,
            (i / size) as u32,
            image::Rgb(table[pal.level(*d)]),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.png");
    img.save(&path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    for (i, p) in back.pixels().enumerate() {
        let d = pal.level_depth(dec.decode(p.0));
        assert!(
            (d - r.depth[i]).abs() <= pal.quantisation_step() / 2.0 + 1e-4,
            "pixel {i}: {d} vs {}",
            r.depth[i]
        );
    }
}

#[test]
fn unusable_source_directories_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing = build(&BuildConfig {
        sources: dir.path().join("nope"),
        ..cfg(&dir.path().join("o1"), 0)
    });
    assert!(missing.unwrap_err().to_string().contains("not a directory"));
    std::fs::create_dir_all(dir.path().join("empty/photos")).unwrap();
    std::fs::write(dir.path().join("empty/photos/x.jpg"), b"garbage").unwrap();
    let empty = build(&BuildConfig {
        sources: dir.path().join("empty"),
        ..cfg(&dir.path().join("o2"), 0)
    });
    assert!(empty.unwrap_err().to_string().contains("no usable photos"));
    let bad_size = build(&BuildConfig {
        size: 50,
        ..cfg(&dir.path().join("o3"), 0)
    });
    assert!(bad_size.is_err());
}

#[test]
fn validator_catches_broken_suites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suite");
    build(&BuildConfig {
        only: Some(vec!["depth".into(), "denoise".into()]),
        ..cfg(&out, 3)
    })
    .unwrap();
    // corrupt a depth map with an off-palette colour, delete an input, add a garbage line
    let d = out.join("images/depth/00002_b.png");
    let mut img = image::open(&d).unwrap().to_rgb8();
    img.put_pixel(0, 0, image::Rgb([1, 2, 3]));
    img.save(&d).unwrap();
    std::fs::remove_file(out.join("images/denoise/00005_a.png")).unwrap();
    let mut m = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    m.push_str("{not json}\n");
    std::fs::write(out.join("manifest.jsonl"), m).unwrap();
    let rep = validate_suite(&out).unwrap();
    let all = rep.errors.join("\n");
    assert!(all.contains("not in palette depth-jet"), "{all}");
    assert!(all.contains("00005_a.png missing"), "{all}");
    assert!(all.contains("line"), "{all}");
}
