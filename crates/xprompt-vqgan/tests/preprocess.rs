//! Lumina-mGPT preprocessing against Pillow 10.4 (fixtures from
//! tools/reference/vqgan_fixtures.py): resizes must be pixel-exact, the crop pipeline too.
use std::path::{Path, PathBuf};
use xprompt_vqgan::image_io::{load_image, U8Image};
use xprompt_vqgan::preprocess::{
    crop_size_list, lumina_crop_sizes, preprocess, select_crop_size, CropOffset, PreprocessOptions,
};
use xprompt_vqgan::resize::{resize, Filter};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vqgan/preprocess")
}

fn load(p: &Path) -> U8Image {
    load_image(p, 1 << 24).unwrap().image
}

fn max_diff(a: &U8Image, b: &U8Image) -> i32 {
    assert_eq!(
        (a.width, a.height, a.channels),
        (b.width, b.height, b.channels)
    );
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .max()
        .unwrap_or(0)
}

#[derive(serde::Deserialize)]
struct Case {
    kind: String,
    src: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    target: usize,
    width: usize,
    height: usize,
    expected: String,
}

#[derive(serde::Deserialize)]
struct Cases {
    crop_list_lengths: std::collections::HashMap<String, usize>,
    cases: Vec<Case>,
}

fn cases() -> Cases {
    serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap()
}

#[test]
fn pillow_resize_is_pixel_exact() {
    let mut n = 0;
    for c in cases().cases.iter().filter(|c| c.kind == "resize") {
        let src = load(&dir().join(&c.src));
        let f = if c.filter == "box" {
            Filter::Box
        } else {
            Filter::Bicubic
        };
        let ours = resize(&src, c.width, c.height, f);
        let want = load(&dir().join(&c.expected));
        assert_eq!(max_diff(&ours, &want), 0, "{} -> {}", c.src, c.expected);
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn lumina_pipeline_is_pixel_exact() {
    let mut n = 0;
    for c in cases().cases.iter().filter(|c| c.kind == "lumina") {
        let loaded = load_image(&dir().join(&c.src), 1 << 24).unwrap();
        let opts = PreprocessOptions {
            target_size: Some(c.target),
            offset: CropOffset::Center,
            ..Default::default()
        };
        let ours = preprocess(&loaded, &opts).unwrap();
        assert_eq!(
            (ours.width, ours.height),
            (c.width, c.height),
            "{}",
            c.expected
        );
        let want = load(&dir().join(&c.expected));
        assert_eq!(max_diff(&ours, &want), 0, "{} (target {})", c.src, c.target);
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn crop_lists_match_lumina() {
    let cs = cases();
    for t in [512usize, 768, 1024] {
        assert_eq!(
            lumina_crop_sizes(t).len(),
            cs.crop_list_lengths[&t.to_string()]
        );
    }
    assert_eq!(lumina_crop_sizes(512).len(), 49);
    assert_eq!(
        crop_size_list(4, 32, 4.0),
        vec![
            (128, 32),
            (96, 32),
            (64, 32),
            (64, 64),
            (32, 64),
            (32, 96),
            (32, 128)
        ]
    );
    // Square image -> square crop; ties go to the larger size.
    assert_eq!(
        select_crop_size(1000, 1000, &lumina_crop_sizes(512)),
        Some((512, 512))
    );
    assert_eq!(
        select_crop_size(1000, 500, &lumina_crop_sizes(512)),
        Some((704, 352))
    );
}

#[test]
fn random_offset_is_seeded() {
    let loaded = load_image(&dir().join("src_big.png"), 1 << 24).unwrap();
    let o = |s| PreprocessOptions {
        target_size: Some(64),
        offset: CropOffset::Random(s),
        ..Default::default()
    };
    let a = preprocess(&loaded, &o(1)).unwrap();
    let b = preprocess(&loaded, &o(1)).unwrap();
    assert_eq!(a, b);
    let differs = (2..10).any(|s| preprocess(&loaded, &o(s)).unwrap() != a);
    assert!(differs);
}
