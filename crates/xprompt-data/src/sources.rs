//! Reads the normalised source layout written by `scripts/fetch-data.sh` (photos/, cutouts/, pairs/,
//! licences.tsv), assigns deterministic splits, and records every skipped file with its reason.
//! Photos are decoded eagerly (few, reused by many tasks); cut-outs and pairs lazily, on use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::img::{coverage, Premul};
use crate::manifest::Split;

/// Longest side photos are kept at after loading (crops are resized to the suite size from this).
pub const PHOTO_MAX_SIDE: u32 = 512;
/// Longest side of a trimmed cut-out after loading.
pub const CUTOUT_MAX_SIDE: usize = 256;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skip {
    pub path: String,
    pub reason: String,
}

pub struct Photo {
    pub rel: String,
    pub img: RgbImage,
    pub split: Split,
}

#[derive(Clone, Debug)]
pub struct CutoutRef {
    pub rel: String,
    pub class: String,
    /// Noun phrase, e.g. "a brown slug"; None when the source has no usable caption (such cut-outs are
    /// used only by class-level tasks: segmentation, line art).
    pub caption: Option<String>,
    pub split: Split,
}

#[derive(Clone, Debug)]
pub struct PairRef {
    pub key: String,
    pub a_rel: String,
    pub b_rel: String,
    pub caption: Option<String>,
    pub split: Split,
}

pub struct PairSet {
    pub name: String,
    pub items: Vec<PairRef>,
}

pub struct Sources {
    pub root: PathBuf,
    pub photos: Vec<Photo>,
    pub cutouts: Vec<CutoutRef>,
    pub classes: Vec<String>,
    /// Cut-outs without a usable caption (kept for class-level tasks only).
    pub uncaptioned: usize,
    pub fonts: Vec<crate::fonts::LoadedFont>,
    /// Single words for text rendering (from captions; a built-in list when there are too few), with splits.
    pub words: Vec<(String, Split)>,
    pub pairs: Vec<PairSet>,
    licences: Vec<(String, String, String)>,
    pub skipped: std::sync::Mutex<Vec<Skip>>,
}

/// Hash-rank split: items are ordered by SHA-256 of (seed, key); the first 10 % are test, the next 10 %
/// validation, the rest train; at least one each when there are three or more items.
pub fn assign_splits(keys: &[String], seed: u64) -> Vec<Split> {
    let mut order: Vec<(Vec<u8>, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(k.as_bytes());
            (h.finalize().to_vec(), i)
        })
        .collect();
    order.sort();
    let n = keys.len();
    let mut n_test = n / 10;
    let mut n_val = n / 10;
    if n >= 3 {
        n_test = n_test.max(1);
        n_val = n_val.max(1);
    }
    let mut out = vec![Split::Train; n];
    for (rank, (_, i)) in order.iter().enumerate() {
        out[*i] = if rank < n_test {
            Split::Test
        } else if rank < n_test + n_val {
            Split::Val
        } else {
            Split::Train
        };
    }
    out
}

fn rel_of(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

fn list_files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(x) = p.extension().and_then(|x| x.to_str()) {
                if exts.iter().any(|e| e.eq_ignore_ascii_case(x)) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// "A brown slug." → "a brown slug"; "an_apple_01" → "an apple"; "Woodlouse" → "a woodlouse".
pub fn noun_phrase(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .replace(['_', '-'], " ")
        .chars()
        .filter(|c| c.is_alphabetic() || *c == ' ' || *c == '\'')
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let mut s = words
        .join(" ")
        .trim_end_matches(['.', '!', ','])
        .trim()
        .to_lowercase();
    if s.chars().filter(|c| c.is_alphabetic()).count() < 3 || !s.is_ascii() {
        return None;
    }
    let first = s.split(' ').next().unwrap_or("");
    if !matches!(first, "a" | "an" | "the" | "some") {
        let art = if s.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        s = format!("{art} {s}");
    }
    Some(s)
}

impl Sources {
    /// Scan `root`. Fails only when the directory itself is missing or holds no usable photos.
    pub fn open(root: &Path, min_side: u32, seed: u64) -> Result<Self> {
        if !root.is_dir() {
            return Err(DataError::Sources {
                path: root.into(),
                reason: "not a directory".into(),
            });
        }
        let mut skipped = Vec::new();
        let licences = read_licences(root, &mut skipped);

        // photos (decoded now, in parallel on two threads)
        let files = list_files(&root.join("photos"), &["png", "jpg", "jpeg"]);
        let decoded = decode_photos(&files, min_side);
        let mut photos = Vec::new();
        for (p, r) in files.iter().zip(decoded) {
            match r {
                Ok(img) => photos.push(Photo {
                    rel: rel_of(root, p),
                    img,
                    split: Split::Train,
                }),
                Err(reason) => skipped.push(Skip {
                    path: rel_of(root, p),
                    reason,
                }),
            }
        }
        if photos.is_empty() {
            return Err(DataError::Sources {
                path: root.join("photos"),
                reason: format!("no usable photos (need PNG/JPEG with a side ≥ {min_side})"),
            });
        }
        let splits = assign_splits(
            &photos.iter().map(|p| p.rel.clone()).collect::<Vec<_>>(),
            seed,
        );
        for (p, s) in photos.iter_mut().zip(splits) {
            p.split = s;
        }

        // cut-outs: cutouts/<source>/<class>/<name>.png (+ optional <name>.txt)
        let mut cutouts = Vec::new();
        let mut uncaptioned = 0;
        for p in list_files(&root.join("cutouts"), &["png"]) {
            let rel = rel_of(root, &p);
            let parts: Vec<&str> = rel.split('/').collect();
            if parts.len() < 4 {
                skipped.push(Skip {
                    path: rel,
                    reason: "not under cutouts/<source>/<class>/".into(),
                });
                continue;
            }
            let class = parts[2].to_lowercase();
            let txt = p.with_extension("txt");
            let caption = if txt.exists() {
                std::fs::read_to_string(&txt)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(noun_phrase))
            } else if parts[1] == "tuxpaint" {
                // Tux Paint stamps come with captions: a missing one is a broken source
                skipped.push(Skip {
                    path: rel,
                    reason: "missing caption (.txt)".into(),
                });
                continue;
            } else {
                // no caption file: file names are not captions (Openclipart names carry author names)
                None
            };
            if caption.is_none() {
                uncaptioned += 1;
            }
            cutouts.push(CutoutRef {
                rel,
                class,
                caption,
                split: Split::Train,
            });
        }
        let splits = assign_splits(
            &cutouts.iter().map(|c| c.rel.clone()).collect::<Vec<_>>(),
            seed,
        );
        for (c, s) in cutouts.iter_mut().zip(splits) {
            c.split = s;
        }
        let mut classes: Vec<String> = cutouts.iter().map(|c| c.class.clone()).collect();
        classes.sort();
        classes.dedup();

        // pairs/<name>/{a,b}/<file>.png (+ optional names.tsv: file <TAB> caption)
        let mut pairs = Vec::new();
        if let Ok(rd) = std::fs::read_dir(root.join("pairs")) {
            let mut dirs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
            for d in dirs {
                let name = d
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let mut names = BTreeMap::new();
                if let Ok(t) = std::fs::read_to_string(d.join("names.tsv")) {
                    for line in t.lines() {
                        if let Some((f, c)) = line.split_once('\t') {
                            names.insert(f.to_string(), c.to_string());
                        }
                    }
                }
                let mut items = Vec::new();
                for a in list_files(&d.join("a"), &["png"]) {
                    let file = a
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    let b = d.join("b").join(&file);
                    if !b.exists() {
                        skipped.push(Skip {
                            path: rel_of(root, &a),
                            reason: "no partner in b/".into(),
                        });
                        continue;
                    }
                    items.push(PairRef {
                        key: file.clone(),
                        a_rel: rel_of(root, &a),
                        b_rel: rel_of(root, &b),
                        caption: names.get(&file).and_then(|c| noun_phrase(c)),
                        split: Split::Train,
                    });
                }
                let splits = assign_splits(
                    &items.iter().map(|i| i.key.clone()).collect::<Vec<_>>(),
                    seed,
                );
                for (i, s) in items.iter_mut().zip(splits) {
                    i.split = s;
                }
                if !items.is_empty() {
                    pairs.push(PairSet { name, items });
                }
            }
        }
        // fonts/<source>/<File>.{ttf,otf}
        let mut fonts = Vec::new();
        for p in list_files(&root.join("fonts"), &["ttf", "otf"]) {
            let rel = rel_of(root, &p);
            match crate::fonts::load_font(root, &rel) {
                Ok(f) => fonts.push(f),
                Err(reason) => skipped.push(Skip { path: rel, reason }),
            }
        }
        let words = word_list(&cutouts, seed);
        tracing::info!(
            photos = photos.len(),
            fonts = fonts.len(),
            cutouts = cutouts.len(),
            uncaptioned,
            pairs = pairs.len(),
            skipped = skipped.len(),
            "sources scanned"
        );
        Ok(Self {
            root: root.into(),
            photos,
            cutouts,
            classes,
            uncaptioned,
            fonts,
            words,
            pairs,
            licences,
            skipped: std::sync::Mutex::new(skipped),
        })
    }

    pub fn skip(&self, path: &str, reason: impl Into<String>) {
        if let Ok(mut s) = self.skipped.lock() {
            if !s.iter().any(|k| k.path == path) {
                s.push(Skip {
                    path: path.into(),
                    reason: reason.into(),
                });
            }
        }
    }

    pub fn skipped(&self) -> Vec<Skip> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Licence and origin of a source path (longest matching prefix of licences.tsv).
    pub fn licence(&self, rel: &str) -> (String, String) {
        self.licences
            .iter()
            .filter(|(p, _, _)| rel.starts_with(p.as_str()))
            .max_by_key(|(p, _, _)| p.len())
            .map(|(_, l, o)| (l.clone(), o.clone()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()))
    }

    /// Class id of a cut-out class (0 is background).
    pub fn class_id(&self, class: &str) -> usize {
        self.classes
            .iter()
            .position(|c| c == class)
            .map(|i| i + 1)
            .unwrap_or(0)
    }

    /// Load a cut-out: RGBA, trimmed to its opaque box, at most CUTOUT_MAX_SIDE. `None` (and a skip record)
    /// when unreadable, too small or nearly empty.
    pub fn load_cutout(&self, c: &CutoutRef) -> Option<Premul> {
        let path = self.root.join(&c.rel);
        let img = match image::open(&path) {
            Ok(i) => i.to_rgba8(),
            Err(e) => {
                self.skip(&c.rel, format!("unreadable: {e}"));
                return None;
            }
        };
        if img.width() < 16 || img.height() < 16 {
            self.skip(
                &c.rel,
                format!("too small ({}x{})", img.width(), img.height()),
            );
            return None;
        }
        let Some(p) = Premul::from_rgba8(&img).trim(0.02) else {
            self.skip(&c.rel, "fully transparent");
            return None;
        };
        if p.w < 12 || p.h < 12 || coverage(&p) < 0.15 || p.w > 6 * p.h || p.h > 6 * p.w {
            self.skip(&c.rel, "opaque region too small, too thin or too sparse");
            return None;
        }
        let s = CUTOUT_MAX_SIDE as f32 / p.w.max(p.h) as f32;
        Some(if s < 1.0 {
            p.resize(
                ((p.w as f32 * s).round() as usize).max(1),
                ((p.h as f32 * s).round() as usize).max(1),
            )
        } else {
            p
        })
    }

    /// Load one side of a style pair as RGBA.
    pub fn load_rgba(&self, rel: &str) -> Option<Premul> {
        match image::open(self.root.join(rel)) {
            Ok(i) if i.width() >= 16 && i.height() >= 16 => Some(Premul::from_rgba8(&i.to_rgba8())),
            Ok(i) => {
                self.skip(rel, format!("too small ({}x{})", i.width(), i.height()));
                None
            }
            Err(e) => {
                self.skip(rel, format!("unreadable: {e}"));
                None
            }
        }
    }
}

/// Words for text tasks: the last word of each caption (ASCII letters, 3–9 long), deduplicated and split by
/// hash rank; a fixed list of common nouns when captions give fewer than 10.
pub fn word_list(cutouts: &[CutoutRef], seed: u64) -> Vec<(String, Split)> {
    let mut words: Vec<String> = cutouts
        .iter()
        .filter_map(|c| c.caption.as_deref())
        .filter_map(|c| c.split(' ').next_back())
        .filter(|w| (3..=9).contains(&w.len()) && w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_string)
        .collect();
    words.sort();
    words.dedup();
    if words.len() < 10 {
        words = [
            "apple", "house", "river", "garden", "bicycle", "window", "planet", "pencil", "turtle",
            "candle", "forest", "bridge", "rocket", "flower", "castle", "guitar", "orange",
            "dragon", "island", "lantern",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    let splits = assign_splits(&words, seed);
    words.into_iter().zip(splits).collect()
}

fn read_licences(root: &Path, skipped: &mut Vec<Skip>) -> Vec<(String, String, String)> {
    let path = root.join("licences.tsv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        skipped.push(Skip {
            path: "licences.tsv".into(),
            reason: "missing: licences recorded as unknown".into(),
        });
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn decode_photo(path: &Path, min_side: u32) -> std::result::Result<RgbImage, String> {
    let img = image::open(path).map_err(|e| format!("unreadable: {e}"))?;
    let (w, h) = (img.width(), img.height());
    if w.min(h) < min_side {
        return Err(format!("too small ({w}x{h}, need a side ≥ {min_side})"));
    }
    let s = PHOTO_MAX_SIDE as f32 / w.max(h) as f32;
    let img = if s < 1.0 {
        img.resize(
            ((w as f32 * s).round() as u32).max(min_side),
            ((h as f32 * s).round() as u32).max(min_side),
            image::imageops::FilterType::Triangle,
        )
    } else {
        img
    };
    Ok(img.to_rgb8())
}

fn decode_photos(files: &[PathBuf], min_side: u32) -> Vec<std::result::Result<RgbImage, String>> {
    let half = files.len().div_ceil(2);
    let (a, b) = files.split_at(half.min(files.len()));
    std::thread::scope(|s| {
        let ha = s.spawn(|| {
            a.iter()
                .map(|p| decode_photo(p, min_side))
                .collect::<Vec<_>>()
        });
        let mut rb: Vec<_> = b.iter().map(|p| decode_photo(p, min_side)).collect();
        let mut out = ha.join().unwrap_or_else(|_| {
            a.iter()
                .map(|_| Err("decoder thread panicked".into()))
                .collect()
        });
        out.append(&mut rb);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noun_phrases() {
        assert_eq!(
            noun_phrase("A brown slug.").as_deref(),
            Some("a brown slug")
        );
        assert_eq!(noun_phrase("an_apple_01").as_deref(), Some("an apple"));
        assert_eq!(noun_phrase("Woodlouse").as_deref(), Some("a woodlouse"));
        assert_eq!(noun_phrase("keycap: *").as_deref(), Some("a keycap"));
        assert_eq!(noun_phrase("01"), None);
    }

    #[test]
    fn tuxpaint_stamps_without_captions_are_skipped_and_other_cutouts_kept_uncaptioned() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("photos/x")).unwrap();
        image::RgbImage::new(40, 40)
            .save(r.join("photos/x/p.png"))
            .unwrap();
        for (rel, txt) in [
            ("cutouts/tuxpaint/animals/cat.png", Some("A cat.")),
            ("cutouts/tuxpaint/animals/dog.png", None),
            ("cutouts/openclipart/food/big_truck_01.png", None),
            (
                "cutouts/openclipart/food/acorn_jonathan_dietrich_01.png",
                None,
            ),
        ] {
            std::fs::create_dir_all(r.join(rel).parent().unwrap()).unwrap();
            image::RgbaImage::new(20, 20).save(r.join(rel)).unwrap();
            if let Some(t) = txt {
                std::fs::write(r.join(rel).with_extension("txt"), t).unwrap();
            }
        }
        let s = Sources::open(r, 32, 0).unwrap();
        let caps: Vec<Option<&str>> = s.cutouts.iter().map(|c| c.caption.as_deref()).collect();
        assert_eq!(caps, vec![None, None, Some("a cat")]);
        assert_eq!(s.uncaptioned, 2);
        assert!(s
            .skipped()
            .iter()
            .any(|k| k.path == "cutouts/tuxpaint/animals/dog.png" && k.reason.contains("caption")));
        assert_eq!(s.licence("photos/x/p.png").0, "unknown");
    }

    #[test]
    fn splits_are_deterministic_and_cover_all_three() {
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let a = assign_splits(&keys, 7);
        assert_eq!(a, assign_splits(&keys, 7));
        assert_eq!(a.iter().filter(|s| **s == Split::Test).count(), 5);
        assert_eq!(a.iter().filter(|s| **s == Split::Val).count(), 5);
        let three = assign_splits(&keys[..3], 7);
        for s in [Split::Train, Split::Val, Split::Test] {
            assert!(three.contains(&s));
        }
    }
}
