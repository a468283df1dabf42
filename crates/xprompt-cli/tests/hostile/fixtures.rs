//! The inputs of the bad-input suite, built once in a temporary directory: good files to
//! start from (the bundled model, images, a compiled task, a database, a task suite) and
//! damaged copies of each (truncated, flipped, garbage, wrong shapes, NaN weights, bombs).
//!
//! Damaged model directories share the unchanged files of the good one through symlinks, so
//! building them costs little and a command that wrote through a link would show up as a
//! change to the good model.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use xprompt_testkit::copy_dir;

/// Runs `xprompt args` in `dir` and panics with its error output if it fails: fixture setup.
pub fn xprompt_ok(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_xprompt"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fixture setup `xprompt {args:?}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A 64×64 (or `side`) RGB image with a pattern that depends on `seed`.
fn png(path: &Path, side: u32, seed: u8) {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([
            (x * 4) as u8 ^ seed,
            (y * 4) as u8,
            ((x + y) * 2) as u8 ^ seed,
        ])
    });
    img.save(path).unwrap();
}

/// Appends a PNG chunk (length, type, data, CRC).
fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
}

/// A well-formed PNG whose header claims `width × height` pixels but whose data holds 16
/// zero bytes: a decoder that trusts the header allocates the claimed size (a bomb).
fn png_header_only(path: &Path, width: u32, height: u32) {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
                                              // A zlib stream with one stored block of 16 zero bytes; Adler-32 of 16 zeros is 0x00100001.
    let mut idat = vec![0x78, 0x01, 0x01, 16, 0, 0xef, 0xff];
    idat.extend_from_slice(&[0; 16]);
    idat.extend_from_slice(&[0x00, 0x10, 0x00, 0x01]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut bytes, b"IHDR", &ihdr);
    png_chunk(&mut bytes, b"IDAT", &idat);
    png_chunk(&mut bytes, b"IEND", &[]);
    write(path, bytes);
}

/// A safetensors file split into its JSON header and its data.
struct Safetensors {
    header: serde_json::Map<String, Value>,
    data: Vec<u8>,
}

impl Safetensors {
    fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        Safetensors {
            header,
            data: bytes[8 + n..].to_vec(),
        }
    }

    fn write(&self, path: &Path) {
        let header = serde_json::to_vec(&self.header).unwrap();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&self.data);
        write(path, bytes);
    }

    fn data_range(&self, name: &str) -> std::ops::Range<usize> {
        let offsets = &self.header[name]["data_offsets"];
        offsets[0].as_u64().unwrap() as usize..offsets[1].as_u64().unwrap() as usize
    }
}

/// A model directory whose entries are links to `good`'s, except the ones `change` writes.
fn model_variant(fx: &Path, name: &str, change: impl FnOnce(&Path)) {
    let good = fx.join("model");
    let dir = fx.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&good).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
    }
    change(&dir);
}

/// Replaces the link `dir/file` by a file of its own with `bytes`.
fn own(dir: &Path, file: &str, bytes: impl AsRef<[u8]>) {
    let path = dir.join(file);
    std::fs::remove_file(&path).unwrap();
    write(&path, bytes);
}

fn edit_config(fx: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let mut config: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(fx.join("model/config.json")).unwrap()).unwrap();
    edit(&mut config);
    model_variant(fx, name, |d| {
        own(
            d,
            "config.json",
            serde_json::to_vec_pretty(&config).unwrap(),
        )
    });
}

fn edit_weights(fx: &Path, name: &str, edit: impl FnOnce(&mut Safetensors)) {
    let mut st = Safetensors::read(&fx.join("model/model.safetensors"));
    edit(&mut st);
    model_variant(fx, name, |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        st.write(&d.join("model.safetensors"));
    });
}

/// A copy of the model's `vqgan/` directory with `file` replaced by `bytes` (or removed).
fn vqgan_variant(fx: &Path, name: &str, file: &str, bytes: Option<&[u8]>) {
    model_variant(fx, name, |d| {
        std::fs::remove_file(d.join("vqgan")).unwrap();
        copy_dir(&fx.join("model/vqgan"), &d.join("vqgan"));
        let path = d.join("vqgan").join(file);
        match bytes {
            Some(b) => write(&path, b),
            None => std::fs::remove_file(path).unwrap(),
        }
    });
}

/// Every input the cases use, under `fx`.
pub fn build(fx: &Path) {
    std::fs::create_dir_all(fx).unwrap();
    images(fx);
    models(fx);
    tasks(fx);
    databases(fx);
    suites_and_configs(fx);
    tokenizers(fx);
    misc(fx);
}

fn images(fx: &Path) {
    png(&fx.join("img.png"), 64, 0);
    png(&fx.join("img2.png"), 64, 0x5a);
    png(&fx.join("small.png"), 16, 3);
    png(&fx.join("wide.png"), 96, 9); // square but larger than the model's 64 px
    png(&fx.join("odd.png"), 60, 5); // not a multiple of the VQGAN's downsampling
    let rgba = image::RgbaImage::from_fn(64, 64, |x, y| image::Rgba([x as u8, y as u8, 7, 128]));
    rgba.save(fx.join("rgba.png")).unwrap();
    let gray = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x ^ y) as u8]));
    gray.save(fx.join("gray.png")).unwrap();
    write(&fx.join("empty.png"), b"");
    write(&fx.join("text.png"), b"this is not an image\n");
    let good = std::fs::read(fx.join("img.png")).unwrap();
    write(&fx.join("trunc.png"), &good[..good.len() / 2]);
    png_header_only(&fx.join("bomb.png"), 100_000, 100_000);
    png_header_only(&fx.join("zero.png"), 0, 64);
    png_header_only(&fx.join("sliver.png"), 70_000, 1);
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        64,
        64,
        image::Rgb([9, 99, 199]),
    ))
    .write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    write(&fx.join("jpeg-named.png"), &jpeg);
    std::fs::create_dir_all(fx.join("adir")).unwrap();
    write(&fx.join("notes.txt"), b"hello\n");
}

fn models(fx: &Path) {
    copy_dir(&repo().join("models/default"), &fx.join("model"));
    model_variant(fx, "m-noconfig", |d| {
        std::fs::remove_file(d.join("config.json")).unwrap()
    });
    model_variant(fx, "m-badjson", |d| {
        own(d, "config.json", "{\"vocab_size\": 25")
    });
    edit_config(fx, "m-config-type", |c| {
        c.insert("hidden_size".into(), "big".into());
    });
    edit_config(fx, "m-config-zero", |c| {
        c.insert("num_attention_heads".into(), 0.into());
    });
    edit_config(fx, "m-config-heads", |c| {
        c.insert("num_attention_heads".into(), 3.into());
    });
    edit_config(fx, "m-config-shapes", |c| {
        c.insert("hidden_size".into(), 512.into());
    });
    edit_config(fx, "m-config-layers", |c| {
        c.insert("num_hidden_layers".into(), 7.into());
    });
    edit_config(fx, "m-config-huge", |c| {
        c.insert("vocab_size".into(), Value::from(1u64 << 40));
    });
    edit_config(fx, "m-config-longctx", |c| {
        c.insert("max_position_embeddings".into(), 100_000_000.into());
    });
    model_variant(fx, "m-noweights", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap()
    });
    let weights = std::fs::read(fx.join("model/model.safetensors")).unwrap();
    model_variant(fx, "m-trunc", |d| {
        own(d, "model.safetensors", &weights[..weights.len() / 2])
    });
    model_variant(fx, "m-empty-weights", |d| own(d, "model.safetensors", b""));
    let mut huge_header = (u64::MAX / 2).to_le_bytes().to_vec();
    huge_header.extend_from_slice(&weights[8..4096]);
    model_variant(fx, "m-hdr-huge", |d| {
        own(d, "model.safetensors", &huge_header)
    });
    let mut junk_header = weights.clone();
    for b in &mut junk_header[8..200] {
        *b = b'#';
    }
    model_variant(fx, "m-hdr-junk", |d| {
        own(d, "model.safetensors", &junk_header)
    });
    edit_weights(fx, "m-nan", |st| {
        for name in ["lm_head.weight", "model.norm.weight"] {
            let r = st.data_range(name);
            st.data[r].fill(0xff); // all-ones is NaN in f32, f16 and bf16
        }
    });
    edit_weights(fx, "m-missing-tensor", |st| {
        let entry = st.header.remove("model.norm.weight").unwrap();
        st.header.insert("model.nrom.weight".into(), entry);
    });
    edit_weights(fx, "m-shape", |st| {
        let shape = st.header["lm_head.weight"]["shape"].clone();
        let dims = [shape[1].clone(), shape[0].clone()];
        st.header["lm_head.weight"]["shape"] = Value::Array(dims.to_vec());
    });
    edit_weights(fx, "m-dtype", |st| {
        st.header["model.norm.weight"]["dtype"] = "I8".into();
    });
    edit_weights(fx, "m-offsets", |st| {
        st.header["model.norm.weight"]["data_offsets"] =
            Value::Array(vec![0.into(), Value::from(1u64 << 50)]);
    });
    model_variant(fx, "m-notok", |d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap()
    });
    model_variant(fx, "m-badtok", |d| {
        own(d, "tokenizer.json", "{\"model\": 3")
    });
    model_variant(fx, "m-novq", |d| {
        std::fs::remove_file(d.join("vqgan")).unwrap()
    });
    vqgan_variant(fx, "m-badyaml", "vqgan.yaml", Some(b"model: [unclosed"));
    vqgan_variant(fx, "m-vq-noweights", "vqgan.safetensors", None);
    let vq = std::fs::read(fx.join("model/vqgan/vqgan.safetensors")).unwrap();
    vqgan_variant(
        fx,
        "m-vq-trunc",
        "vqgan.safetensors",
        Some(&vq[..vq.len() - 1000]),
    );
    write(&fx.join("m-file"), b"a file, not a model directory\n");
    std::fs::create_dir_all(fx.join("m-emptydir")).unwrap();
    xprompt_ok(
        fx,
        &[
            "quantize",
            "--model",
            "model",
            "--out",
            "model-q8",
            "--check-tokens",
            "0",
        ],
    );
    let gguf_name = std::fs::read_dir(fx.join("model-q8"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".gguf"))
        .expect("quantize writes a .gguf file");
    let gguf = std::fs::read(fx.join("model-q8").join(&gguf_name)).unwrap();
    for (name, bytes) in [
        ("q-trunc", gguf[..gguf.len() / 2].to_vec()),
        ("q-junk", b"GGUF but not really".to_vec()),
    ] {
        let dir = fx.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(fx.join("model-q8")).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy() != gguf_name {
                std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        write(&dir.join(&gguf_name), bytes);
    }
}

fn tasks(fx: &Path) {
    xprompt_ok(
        fx,
        &[
            "compile-task",
            "--model",
            "model",
            "--example",
            "img.png=img2.png",
            "--out",
            "task.xpt",
        ],
    );
    let task = std::fs::read(fx.join("task.xpt")).unwrap();
    write(&fx.join("task-trunc.xpt"), &task[..task.len() / 2]);
    let mut flipped = task.clone();
    let mid = flipped.len() * 3 / 4;
    flipped[mid] ^= 0x40;
    write(&fx.join("task-flip.xpt"), flipped);
    write(&fx.join("task-empty.xpt"), b"");
    write(&fx.join("task-text.xpt"), b"not a task\n");
}

fn databases(fx: &Path) {
    xprompt_ok(fx, &["db", "create", "db"]);
    xprompt_ok(
        fx,
        &[
            "db",
            "add",
            "db",
            "--instruction",
            "make it brighter",
            "--task",
            "brighten",
            "--input",
            "img.png",
            "--output",
            "img2.png",
        ],
    );
    std::fs::create_dir_all(fx.join("db-junk")).unwrap();
    write(&fx.join("db-junk/log.xpl"), b"garbage garbage garbage");
    write(&fx.join("db-file"), b"not a database\n");
    let lines = [
        ("man-badjson.jsonl", "{\"task\": \"x\", \"instruction\": \n"),
        (
            "man-nofield.jsonl",
            "{\"task\": \"x\", \"input\": \"img.png\", \"output\": \"img2.png\"}\n",
        ),
        (
            "man-noimage.jsonl",
            "{\"task\": \"x\", \"instruction\": \"do it\", \"input\": \"missing.png\", \"output\": \"img2.png\"}\n",
        ),
        (
            "man-badimage.jsonl",
            "{\"task\": \"x\", \"instruction\": \"do it\", \"input\": \"trunc.png\", \"output\": \"img2.png\"}\n",
        ),
        (
            "man-types.jsonl",
            "{\"task\": 7, \"instruction\": [\"do it\"], \"input\": \"img.png\", \"output\": \"img2.png\"}\n",
        ),
        (
            "man-both-outputs.jsonl",
            "{\"task\": \"x\", \"instruction\": \"do it\", \"input\": \"img.png\", \"output\": \"img2.png\", \"output_text\": \"a\"}\n",
        ),
    ];
    for (name, text) in lines {
        write(&fx.join(name), text);
    }
    write(&fx.join("man-binary.jsonl"), [0u8, 159, 146, 150, 0xff, 10]);
}

fn suites_and_configs(fx: &Path) {
    let vqgan = crate::common::fixture_suite_and_store(fx);
    let good = format!(
        "[model]\nhidden_size = 32\nnum_hidden_layers = 1\nnum_attention_heads = 2\n\
         intermediate_size = 64\nxp_tokens = 2\ntext_vocab = 100\n\n[data]\n\
         manifest = \"suite/manifest.jsonl\"\nstore = \"store\"\nvqgan = \"{vqgan}\"\n\
         image_size = 16\n\n[train]\nsteps = 2\nbatch_samples = 2\ncontext_len = 1024\n"
    );
    write(&fx.join("t-good.toml"), &good);
    let variants = [
        ("t-syntax.toml", good.replace("steps = 2", "steps = = 2")),
        ("t-unknown.toml", good.replace("steps = 2", "stepz = 2")),
        (
            "t-neglr.toml",
            good.replace("steps = 2", "steps = 2\nlr = -0.1"),
        ),
        (
            "t-nanlr.toml",
            good.replace("steps = 2", "steps = 2\nlr = nan"),
        ),
        ("t-type.toml", good.replace("steps = 2", "steps = \"two\"")),
        (
            "t-heads.toml",
            good.replace("num_attention_heads = 2", "num_attention_heads = 3"),
        ),
        (
            "t-hidden0.toml",
            good.replace("hidden_size = 32", "hidden_size = 0"),
        ),
        (
            "t-batch0.toml",
            good.replace("batch_samples = 2", "batch_samples = 0"),
        ),
        (
            "t-ctx-short.toml",
            good.replace("context_len = 1024", "context_len = 16"),
        ),
        (
            "t-nomanifest.toml",
            good.replace("suite/manifest.jsonl", "nowhere/manifest.jsonl"),
        ),
        (
            "t-nostore.toml",
            good.replace("store = \"store\"", "store = \"nostore\""),
        ),
        ("t-novqgan.toml", good.replace(&vqgan, "/nonexistent/vqgan")),
        (
            "t-dropout.toml",
            good.replace("steps = 2", "steps = 2\ndropout = 1.5"),
        ),
        (
            "t-huge.toml",
            good.replace("hidden_size = 32", "hidden_size = 1048576"),
        ),
    ];
    for (name, text) in variants {
        write(&fx.join(name), text);
    }
    write(&fx.join("t-empty.toml"), "");
    let vq_good = "[model]\npreset = \"small\"\nch = 8\nch_mult = [1, 2]\nnum_res_blocks = 1\n\
                   resolution = 16\nnorm_groups = 4\n\n[train]\nsteps = 2\nbatch_size = 2\n\
                   crop = 16\nshort_side = 16\n";
    write(&fx.join("v-good.toml"), vq_good);
    for (name, text) in [
        ("v-syntax.toml", vq_good.replace("steps = 2", "steps 2")),
        (
            "v-neglr.toml",
            vq_good.replace("steps = 2", "steps = 2\nlr = -1.0"),
        ),
        ("v-crop.toml", vq_good.replace("crop = 16", "crop = 13")),
        (
            "v-groups.toml",
            vq_good.replace("norm_groups = 4", "norm_groups = 3"),
        ),
        (
            "v-unknown.toml",
            vq_good.replace("steps = 2", "steps = 2\nlearning = 1"),
        ),
        (
            "v-batch0.toml",
            vq_good.replace("batch_size = 2", "batch_size = 0"),
        ),
    ] {
        write(&fx.join(name), text);
    }
    write(&fx.join("images-missing.txt"), "does/not/exist.png\n");
    write(&fx.join("images-corrupt.txt"), "trunc.png\n");
    std::fs::create_dir_all(fx.join("noimages")).unwrap();
    std::fs::create_dir_all(fx.join("suite-bad")).unwrap();
    write(&fx.join("suite-bad/suite.json"), "{\"format\": ");
    write(&fx.join("suite-bad/manifest.jsonl"), "not json\n");
}

fn tokenizers(fx: &Path) {
    let vq = repo().join("tests/fixtures/vqgan/mid_attn");
    copy_dir(&vq, &fx.join("vq"));
    let ckpt = std::fs::read(vq.join("vqgan.ckpt")).unwrap();
    for (name, bytes) in [
        ("vq-ckpt-trunc", ckpt[..ckpt.len() / 2].to_vec()),
        ("vq-ckpt-junk", b"PK\x03\x04 but nothing else".to_vec()),
        ("vq-ckpt-empty", Vec::new()),
    ] {
        std::fs::create_dir_all(fx.join(name)).unwrap();
        std::fs::copy(vq.join("vqgan.yaml"), fx.join(name).join("vqgan.yaml")).unwrap();
        write(&fx.join(name).join("vqgan.ckpt"), bytes);
    }
    std::fs::create_dir_all(fx.join("vq-yaml-wrong")).unwrap();
    std::fs::copy(vq.join("vqgan.ckpt"), fx.join("vq-yaml-wrong/vqgan.ckpt")).unwrap();
    let yaml = std::fs::read_to_string(vq.join("vqgan.yaml")).unwrap();
    write(
        &fx.join("vq-yaml-wrong/vqgan.yaml"),
        yaml.replacen("ch:", "ch: 1024\n    unused_ch:", 1),
    );
    let codes = |n: usize, v: &str| format!("[{}]", vec![v; n].join(","));
    write(&fx.join("codes-bad.json"), "[1, 2, ");
    write(&fx.join("codes-range.json"), codes(64, "99999"));
    write(&fx.join("codes-neg.json"), codes(64, "-1"));
    write(&fx.join("codes-float.json"), codes(64, "0.5"));
    write(&fx.join("codes-short.json"), codes(3, "1"));
    write(&fx.join("codes-obj.json"), "{\"tokens\": [1, 2]}");
}

fn misc(fx: &Path) {
    copy_dir(&fx.join("model/demo"), &fx.join("demo-missing"));
    let first = std::fs::read_dir(fx.join("demo-missing"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .min()
        .unwrap();
    std::fs::remove_file(first).unwrap();
    std::fs::create_dir_all(fx.join("demo-bad")).unwrap();
    write(
        &fx.join("demo-bad/demo.json"),
        "{\"format\": \"xprompt-demo/1\", ",
    );
    std::fs::create_dir_all(fx.join("demo-format")).unwrap();
    write(
        &fx.join("demo-format/demo.json"),
        "{\"format\": \"xprompt-demo/99\", \"source\": \"\", \"entries\": []}",
    );
    write(&fx.join("long.txt"), "word ".repeat(20_000));
}
