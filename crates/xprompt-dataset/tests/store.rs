//! Pre-tokenization and the shard store, with the random 2×-downsampling VQGAN fixture
//! (tests/fixtures/vqgan/mid_attn): codes equal a direct encode, reruns reuse, additions encode
//! only the new image, crashes mid-run and garbage temp files leave the previous state intact,
//! corrupt images are reported, settings never mix, verify finds damage.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::Device;
use xprompt_dataset::index::{shard_name, Index};
use xprompt_dataset::{
    pretokenize, pretokenize_with, read_manifest, FlushPolicy, PretokenizeOptions, ShardStore,
    TrainRecord,
};
use xprompt_vqgan::image_io::DEFAULT_MAX_PIXELS;
use xprompt_vqgan::preprocess::{preprocess_for_unit, to_tensor, CropOffset};
use xprompt_vqgan::{load_image, Vqgan};

fn vqgan() -> Vqgan {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vqgan/mid_attn");
    xprompt_vqgan::load_dir(&dir, &Device::Cpu).unwrap()
}

const OPTS: PretokenizeOptions = PretokenizeOptions {
    size: 16,
    unit: 4,
    batch: 3,
};

/// A PNG with a pattern that depends on `seed`.
fn png(path: &Path, w: u32, h: u32, seed: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 37 + y * 11 + seed * 101) ^ (x * y + seed);
        image::Rgb([
            (v % 251) as u8,
            ((v / 3 + seed * 40) % 256) as u8,
            ((x + y) * 9) as u8,
        ])
    })
    .save(path)
    .unwrap();
}

/// Direct encode of one image with the same preprocessing.
fn direct(v: &Vqgan, path: &Path, opts: &PretokenizeOptions) -> (usize, usize, Vec<u32>) {
    let loaded = load_image(path, DEFAULT_MAX_PIXELS).unwrap();
    let img = preprocess_for_unit(
        &loaded,
        opts.size,
        opts.unit,
        CropOffset::Center,
        DEFAULT_MAX_PIXELS,
    )
    .unwrap();
    let g = v.encode(&to_tensor(&img, &Device::Cpu).unwrap()).unwrap();
    (g.height, g.width, g.codes)
}

/// Manifest with one image → image record per pair of images (`img/{i}.png` → `img/{i+1}.png`).
fn write_manifest(dir: &Path, n_images: usize) -> Vec<TrainRecord> {
    let mut text = String::new();
    for i in (0..n_images).step_by(2) {
        let j = (i + 1).min(n_images - 1);
        text.push_str(&format!(
            "{{\"task\":\"t\",\"instruction\":\"x\",\"inputs\":[\"img/{i}.png\"],\"output_image\":\"img/{j}.png\"}}\n"
        ));
    }
    let m = dir.join("m.jsonl");
    std::fs::write(&m, text).unwrap();
    let rep = read_manifest(&m).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    rep.records
}

fn images(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    for i in 0..n {
        // Mixed sizes: most square (8x8 codes at 16 px / unit 4), two wide ones (another grid).
        let (w, h) = if i % 4 == 3 {
            (40, 20)
        } else {
            (20 + i as u32, 20 + i as u32)
        };
        png(&dir.join(format!("img/{i}.png")), w, h, i as u32);
    }
}

fn check_all(store: &ShardStore, v: &Vqgan, records: &[TrainRecord]) {
    for r in records {
        for p in r.images() {
            let c = store
                .get(p)
                .unwrap_or_else(|| panic!("{} not in store", p.display()));
            let (h, w, codes) = direct(v, p, &OPTS);
            assert_eq!((c.rows, c.cols), (h, w), "{}", p.display());
            let got: Vec<u32> = c.codes.iter().map(|&x| x as u32).collect();
            assert_eq!(got, codes, "{}", p.display());
        }
    }
}

#[test]
fn codes_match_direct_encode_and_reruns_are_incremental() {
    let v = vqgan();
    let dir = tempfile::tempdir().unwrap();
    images(dir.path(), 7);
    let records = write_manifest(dir.path(), 7);
    let out = dir.path().join("store");
    let mut calls = Vec::new();
    let rep = pretokenize(&records, &v, &out, &OPTS, &mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!((rep.encoded, rep.reused, rep.images), (7, 0, 7));
    assert!(rep.failed.is_empty(), "{:?}", rep.failed);
    assert_eq!(calls.first(), Some(&(0, 7)));
    assert_eq!(calls.last(), Some(&(7, 7)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));

    let store = ShardStore::open(&out).unwrap();
    assert_eq!(store.len(), 7);
    check_all(&store, &v, &records);
    // Two grids: square images and the 2:1 ones.
    assert_eq!(store.grid(), None);
    assert_eq!(
        store.get(&records[0].inputs[0]).map(|c| (c.rows, c.cols)),
        Some((8, 8))
    );
    let wide = store.get(&dir.path().join("img/3.png")).unwrap();
    assert!(wide.cols > wide.rows, "{}x{}", wide.rows, wide.cols);
    // Relative / non-canonical spellings resolve too.
    let odd = dir.path().join("img/../img/0.png");
    assert_eq!(store.get(&odd), store.get(&records[0].inputs[0]));
    assert!(store.get(&dir.path().join("img/none.png")).is_none());
    assert!(store.verify().unwrap().is_ok());
    drop(store);

    // Rerun: everything reused, nothing written.
    let index_before = std::fs::read(out.join("index.json")).unwrap();
    let rep = pretokenize(&records, &v, &out, &OPTS, &mut |_, _| {}).unwrap();
    assert_eq!((rep.encoded, rep.reused, rep.shards_written), (0, 7, 0));
    assert_eq!(std::fs::read(out.join("index.json")).unwrap(), index_before);

    // One new image (and a copy of an old one under a new name): exactly one encode.
    png(&dir.path().join("img/7.png"), 24, 24, 99);
    std::fs::copy(
        dir.path().join("img/0.png"),
        dir.path().join("img/copy.png"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.jsonl"),
        std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap()
            + "{\"task\":\"t\",\"instruction\":\"x\",\"inputs\":[\"img/7.png\"],\"output_image\":\"img/copy.png\"}\n",
    )
    .unwrap();
    let records = read_manifest(&dir.path().join("m.jsonl")).unwrap().records;
    let rep = pretokenize(&records, &v, &out, &OPTS, &mut |_, _| {}).unwrap();
    assert_eq!((rep.encoded, rep.reused, rep.images), (1, 8, 9));
    let store = ShardStore::open(&out).unwrap();
    assert_eq!((store.len(), store.unique_contents()), (9, 8));
    check_all(&store, &v, &records);

    // Only the square images: one common grid.
    let square: Vec<TrainRecord> = records[..1].to_vec();
    let out2 = dir.path().join("store2");
    pretokenize(&square, &v, &out2, &OPTS, &mut |_, _| {}).unwrap();
    assert_eq!(ShardStore::open(&out2).unwrap().grid(), Some((8, 8)));
}

#[test]
fn batched_and_single_encodes_agree() {
    let v = vqgan();
    let dir = tempfile::tempdir().unwrap();
    images(dir.path(), 8);
    let records = write_manifest(dir.path(), 8);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    pretokenize(
        &records,
        &v,
        &a,
        &PretokenizeOptions { batch: 1, ..OPTS },
        &mut |_, _| {},
    )
    .unwrap();
    pretokenize(
        &records,
        &v,
        &b,
        &PretokenizeOptions { batch: 8, ..OPTS },
        &mut |_, _| {},
    )
    .unwrap();
    let (a, b) = (ShardStore::open(&a).unwrap(), ShardStore::open(&b).unwrap());
    for p in a.paths() {
        assert_eq!(a.get(p), b.get(p), "{}", p.display());
    }
    assert_eq!(a.len(), 8);
}

#[test]
fn a_crash_mid_run_keeps_the_previous_state_and_the_rerun_finishes() {
    let v = vqgan();
    let dir = tempfile::tempdir().unwrap();
    images(dir.path(), 10);
    let records = write_manifest(dir.path(), 10);
    let out = dir.path().join("store");
    let opts = PretokenizeOptions { batch: 2, ..OPTS };
    let flush = FlushPolicy {
        every_images: 2,
        every_secs: 1e9,
    };
    // "Kill" the run when the 6th image is done (after the batch, before its flush).
    let crashed = catch_unwind(AssertUnwindSafe(|| {
        pretokenize_with(&records, &v, &out, &opts, &flush, &mut |d, _| {
            if d >= 6 {
                panic!("simulated kill");
            }
        })
    }));
    assert!(crashed.is_err());
    let store = ShardStore::open(&out).unwrap();
    let after_crash = store.len();
    assert!(
        (2..=6).contains(&after_crash),
        "{after_crash} images survived"
    );
    assert!(store.verify().unwrap().is_ok());
    let index = Index::load(&out).unwrap();
    drop(store);

    // What a kill during a write leaves: a half-written index temp file, an orphan shard renamed
    // into place before its index, a half-written shard temp file.
    std::fs::write(
        out.join(".index.json.tmp-424242"),
        b"{\"format\": \"xprompt-co",
    )
    .unwrap();
    std::fs::write(out.join(shard_name(index.shards.len())), b"garbage!").unwrap();
    std::fs::write(out.join(".shard-000099.bin.tmp-7"), b"xx").unwrap();
    let store = ShardStore::open(&out).unwrap();
    assert_eq!(store.len(), after_crash);
    check_all_present(&store, &v);
    drop(store);

    let rep = pretokenize_with(&records, &v, &out, &opts, &flush, &mut |_, _| {}).unwrap();
    assert_eq!(rep.encoded + rep.reused, 10);
    assert_eq!(rep.reused, after_crash);
    assert_eq!(rep.stale_temps_removed, 2);
    assert!(!out.join(".index.json.tmp-424242").exists());
    let store = ShardStore::open(&out).unwrap();
    assert_eq!(store.len(), 10);
    check_all(&store, &v, &records);
    assert!(store.verify().unwrap().is_ok());
}

fn check_all_present(store: &ShardStore, v: &Vqgan) {
    let paths: Vec<PathBuf> = store.paths().map(Path::to_path_buf).collect();
    for p in paths {
        let c = store.get(&p).unwrap();
        let (_, _, codes) = direct(v, &p, &OPTS);
        assert_eq!(c.codes.iter().map(|&x| x as u32).collect::<Vec<_>>(), codes);
    }
}

#[test]
fn corrupt_images_are_reported_and_skipped() {
    let v = vqgan();
    let dir = tempfile::tempdir().unwrap();
    images(dir.path(), 4);
    // 1.png: PNG signature then garbage; 2.png: a real PNG cut in half.
    std::fs::write(
        dir.path().join("img/1.png"),
        b"\x89PNG\r\n\x1a\nthis is not a png",
    )
    .unwrap();
    let full = std::fs::read(dir.path().join("img/2.png")).unwrap();
    std::fs::write(dir.path().join("img/2.png"), &full[..full.len() / 2]).unwrap();
    let records = write_manifest(dir.path(), 4);
    let out = dir.path().join("store");
    let rep = pretokenize(&records, &v, &out, &OPTS, &mut |_, _| {}).unwrap();
    assert_eq!(rep.encoded, 2);
    let mut failed: Vec<String> = rep
        .failed
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["1.png", "2.png"], "{:?}", rep.failed);
    assert!(rep
        .failed
        .iter()
        .all(|(p, why)| !why.is_empty() && p.is_absolute()));
    let store = ShardStore::open(&out).unwrap();
    assert_eq!(store.len(), 2);
    assert!(store.get(&dir.path().join("img/1.png")).is_none());

    // Fixing the file later encodes just it.
    png(&dir.path().join("img/1.png"), 20, 20, 5);
    let rep = pretokenize(&records, &v, &out, &OPTS, &mut |_, _| {}).unwrap();
    assert_eq!((rep.encoded, rep.reused, rep.failed.len()), (1, 2, 1));
}

#[test]
fn other_settings_are_refused_and_verify_finds_damage() {
    let v = vqgan();
    let dir = tempfile::tempdir().unwrap();
    images(dir.path(), 3);
    let records = write_manifest(dir.path(), 3);
    let out = dir.path().join("store");
    pretokenize(&records, &v, &out, &OPTS, &mut |_, _| {}).unwrap();

    let e = pretokenize(
        &records,
        &v,
        &out,
        &PretokenizeOptions { size: 32, ..OPTS },
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("another --out"), "{e}");
    let e = pretokenize(
        &records,
        &v,
        &out,
        &PretokenizeOptions { unit: 3, ..OPTS },
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("downsampling factor 2"), "{e}");
    // Another tokenizer (same config, different codebook) is refused too.
    let mut other = v.clone();
    other.quantize.embedding = (&other.quantize.embedding * 2.0).unwrap();
    let e = pretokenize(&records, &other, &out, &OPTS, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another VQGAN"), "{e}");
    let e = ShardStore::open(&dir.path().join("img"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a shard store"), "{e}");

    // A changed source image and a flipped shard byte.
    png(&dir.path().join("img/0.png"), 20, 20, 77);
    let shard = out.join(shard_name(0));
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[3] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let rep = ShardStore::open(&out).unwrap().verify().unwrap();
    assert_eq!(rep.bad_shards.len(), 1);
    assert_eq!(rep.changed.len(), 1);
    assert!(rep.changed[0].ends_with("img/0.png"));
    // A truncated shard is refused on open.
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let e = ShardStore::open(&out).err().unwrap().to_string();
    assert!(e.contains("bytes") && e.contains("shard-000000.bin"), "{e}");
    // A truncated index is refused with its path.
    let idx = std::fs::read(out.join("index.json")).unwrap();
    std::fs::write(out.join("index.json"), &idx[..idx.len() / 2]).unwrap();
    let e = ShardStore::open(&out).err().unwrap().to_string();
    assert!(e.contains("index") && e.contains("store"), "{e}");
}

/// Property tests: a damaged store index, a damaged shard or a damaged manifest is an error
/// (or reported damage), never a panic or an allocation without bound (the allocator refuses
/// single allocations over 256 MiB, aborting the test).
mod damaged_files {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;
    use xprompt_testkit::{copy_dir, damaged_file_config, mutated, CapAllocator};

    #[global_allocator]
    static ALLOC: CapAllocator = CapAllocator::new(256 << 20);

    /// A store of five images and the manifest that made it, built once.
    fn valid() -> &'static Path {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        DIR.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            images(dir.path(), 5);
            let records = write_manifest(dir.path(), 5);
            pretokenize(
                &records,
                &vqgan(),
                &dir.path().join("store"),
                &OPTS,
                &mut |_, _| {},
            )
            .unwrap();
            dir
        })
        .path()
    }

    fn shard_file() -> PathBuf {
        std::fs::read_dir(valid().join("store"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("shard")
            })
            .expect("the store has a shard")
    }

    /// Opens a copy of the store with `file` replaced, reads every image's codes and
    /// verifies.
    fn exercise(file: &str, bytes: &[u8]) {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        copy_dir(&valid().join("store"), &store);
        std::fs::write(store.join(file), bytes).unwrap();
        if let Ok(s) = ShardStore::open(&store) {
            let paths: Vec<PathBuf> = s.paths().map(Path::to_path_buf).collect();
            for p in paths {
                let _ = s.get(&p).map(|c| c.codes.len());
            }
            let _ = s.verify();
        }
    }

    proptest! {
        #![proptest_config(damaged_file_config(96))]

        #[test]
        fn a_damaged_index_is_an_error(bytes in mutated(std::fs::read(valid().join("store/index.json")).unwrap())) {
            exercise("index.json", &bytes);
        }

        #[test]
        fn a_damaged_shard_is_an_error(bytes in mutated(std::fs::read(shard_file()).unwrap())) {
            exercise(&shard_file().file_name().unwrap().to_string_lossy(), &bytes);
        }

        #[test]
        fn a_damaged_manifest_is_reported(bytes in mutated(std::fs::read(valid().join("m.jsonl")).unwrap())) {
            let t = tempfile::tempdir().unwrap();
            let m = t.path().join("m.jsonl");
            std::fs::write(&m, &bytes).unwrap();
            let _ = read_manifest(&m);
        }
    }
}
