//! Writing a shard store: every unique image of a set of training records is VQ-encoded once
//! (Lumina crop policy via `preprocess_for_unit`, then `Vqgan::encode` on batches of same-size
//! images). Incremental (content hashes already in the index are reused), resumable (a new
//! immutable shard and then the index are written atomically every flush), and robust (unreadable
//! or corrupt images are reported and skipped).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use xprompt_vqgan::image_io::DEFAULT_MAX_PIXELS;
use xprompt_vqgan::preprocess::{preprocess_for_unit, to_tensor, CropOffset};
use xprompt_vqgan::{load_image, Vqgan};

use crate::error::{DatasetError, Result};
use crate::index::{
    remove_stale_temps, sha256_hex, shard_name, write_atomic, Entry, Index, ShardInfo,
    StoreSettings, INDEX_NAME,
};
use crate::manifest::TrainRecord;

/// Tokenization settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PretokenizeOptions {
    /// Image side in pixels (crop list for `(size/unit)²` units).
    pub size: usize,
    /// Pixels per size token; a multiple of the VQGAN's downsampling factor (Lumina: 32 = 16 × 2).
    pub unit: usize,
    /// Images per encoder call (same-size images are stacked into one `(B, 3, H, W)` tensor).
    pub batch: usize,
}

/// When to make progress durable.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushPolicy {
    /// Write a shard and the index after this many newly encoded images...
    pub every_images: usize,
    /// ...or when this many seconds passed since the last flush, whichever comes first.
    pub every_secs: f64,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            every_images: 1024,
            every_secs: 60.0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PretokenizeReport {
    /// Images VQ-encoded in this run.
    pub encoded: usize,
    /// Images whose content was already in the store (or repeated the content of another image).
    pub reused: usize,
    /// Images that could not be read, decoded, preprocessed or encoded, with why.
    pub failed: Vec<(PathBuf, String)>,
    /// Unique image paths among the records.
    pub images: usize,
    /// Shard files written in this run.
    pub shards_written: usize,
    /// Temporary files of an interrupted earlier run that were removed.
    pub stale_temps_removed: usize,
}

/// SHA-256 over the VQGAN's config, codebook and `quant_conv`: two stores built with different
/// tokenizers never mix.
pub fn vqgan_fingerprint(vqgan: &Vqgan) -> Result<String> {
    let mut bytes = vqgan.config().to_yaml_string().into_bytes();
    for t in [
        &vqgan.quantize.embedding,
        &vqgan.quant_conv.weight,
        &vqgan.quant_conv.bias,
    ] {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(sha256_hex(&bytes))
}

/// [`pretokenize_with`] with the default [`FlushPolicy`].
pub fn pretokenize(
    records: &[TrainRecord],
    vqgan: &Vqgan,
    out: &Path,
    opts: &PretokenizeOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PretokenizeReport> {
    pretokenize_with(records, vqgan, out, opts, &FlushPolicy::default(), progress)
}

/// Encode every image of `records` not yet in the store at `out` (created if needed).
///
/// `progress(done, total)` counts the images that need encoding (after content hashing, which
/// finds the reusable ones): it is called once with `done == 0`, then after every batch.
/// Only one writer may work on a store at a time.
pub fn pretokenize_with(
    records: &[TrainRecord],
    vqgan: &Vqgan,
    out: &Path,
    opts: &PretokenizeOptions,
    flush: &FlushPolicy,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PretokenizeReport> {
    let cfg = vqgan.config();
    let f = cfg.downsample_factor();
    if opts.batch == 0 {
        return Err(DatasetError::Options("batch must be at least 1".into()));
    }
    if opts.unit == 0 || !opts.unit.is_multiple_of(f) {
        return Err(DatasetError::Options(format!(
            "unit {} px is not a positive multiple of the VQGAN's downsampling factor {f}",
            opts.unit
        )));
    }
    if opts.size < opts.unit || !opts.size.is_multiple_of(opts.unit) {
        return Err(DatasetError::Options(format!(
            "size {} px is not a positive multiple of the {}-px unit",
            opts.size, opts.unit
        )));
    }
    if cfg.n_embed > 1 << 16 {
        return Err(DatasetError::Options(format!(
            "the VQGAN has {} codes; the store keeps u16 codes (at most 65536)",
            cfg.n_embed
        )));
    }
    let settings = StoreSettings {
        size: opts.size,
        unit: opts.unit,
        downsample: f,
        n_embed: cfg.n_embed,
        vqgan: vqgan_fingerprint(vqgan)?,
    };

    std::fs::create_dir_all(out).map_err(|e| DatasetError::io(out, e))?;
    let mut report = PretokenizeReport {
        stale_temps_removed: remove_stale_temps(out)?,
        ..Default::default()
    };
    let mut index = if out.join(INDEX_NAME).exists() {
        let index = Index::load(out)?;
        if index.settings != settings {
            return Err(DatasetError::store(
                out,
                format!(
                    "built with {:?}, this run asks for {:?}; use another --out for other settings or another VQGAN",
                    index.settings, settings
                ),
            ));
        }
        check_shard_files(out, &index)?;
        index
    } else {
        Index::new(settings)
    };
    let known = index.by_hash();

    // Unique image paths, in order of first appearance.
    let mut seen = HashSet::new();
    let mut paths: Vec<&Path> = Vec::new();
    for r in records {
        for p in r.images() {
            if seen.insert(p) {
                paths.push(p);
            }
        }
    }
    report.images = paths.len();

    // Hash every image; known contents are reused, new ones queued once per content.
    let mut dirty = false;
    let mut todo: Vec<(PathBuf, String, String)> = Vec::new(); // (path, key, hash)
    let mut aliases: HashMap<String, Vec<String>> = HashMap::new(); // hash -> later paths
    for p in paths {
        let canon = match std::fs::canonicalize(p) {
            Ok(c) => c,
            Err(e) => {
                report
                    .failed
                    .push((p.to_path_buf(), format!("cannot resolve: {e}")));
                continue;
            }
        };
        let Some(key) = canon.to_str().map(str::to_owned) else {
            report
                .failed
                .push((p.to_path_buf(), "path is not valid UTF-8".into()));
            continue;
        };
        let bytes = match std::fs::read(&canon) {
            Ok(b) => b,
            Err(e) => {
                report
                    .failed
                    .push((p.to_path_buf(), format!("cannot read: {e}")));
                continue;
            }
        };
        let hash = sha256_hex(&bytes);
        if known.contains_key(&hash) {
            report.reused += 1;
            if index.images.get(&key) != Some(&hash) {
                index.images.insert(key, hash);
                dirty = true;
            }
        } else if let Some(a) = aliases.get_mut(&hash) {
            report.reused += 1;
            a.push(key);
        } else {
            aliases.insert(hash.clone(), Vec::new());
            todo.push((canon, key, hash));
        }
    }

    let total = todo.len();
    let mut writer = Writer {
        out,
        index: &mut index,
        pending: Vec::new(),
        entries: Vec::new(),
        images: BTreeMap::new(),
        last_flush: Instant::now(),
        shards_written: 0,
    };
    progress(0, total);
    let dev = vqgan.device().clone();
    let mut buckets: BTreeMap<(usize, usize), Vec<Prepared>> = BTreeMap::new();
    let mut done = 0usize;
    for (path, key, hash) in todo {
        let img = load_image(&path, DEFAULT_MAX_PIXELS).and_then(|loaded| {
            preprocess_for_unit(
                &loaded,
                opts.size,
                opts.unit,
                CropOffset::Center,
                DEFAULT_MAX_PIXELS,
            )
        });
        let img = match img.and_then(|img| to_tensor(&img, &dev)) {
            Ok(t) => t,
            Err(e) => {
                fail(&mut report, &aliases, path, &hash, e.to_string());
                done += 1;
                continue;
            }
        };
        let (_, _, h, w) = img.dims4()?;
        let bucket = buckets.entry((h, w)).or_default();
        bucket.push(Prepared {
            path,
            key,
            hash,
            pixels: img,
        });
        if bucket.len() >= opts.batch {
            let batch = std::mem::take(bucket);
            done += batch.len();
            encode_batch(vqgan, batch, &aliases, &mut writer, &mut report)?;
            progress(done, total);
            if writer.entries.len() >= flush.every_images
                || writer.last_flush.elapsed().as_secs_f64() >= flush.every_secs
            {
                writer.flush()?;
            }
        }
    }
    for (_, batch) in std::mem::take(&mut buckets) {
        if batch.is_empty() {
            continue;
        }
        done += batch.len();
        encode_batch(vqgan, batch, &aliases, &mut writer, &mut report)?;
        progress(done, total);
    }
    if total > 0 && done != total {
        progress(total, total);
    }
    let wrote = writer.flush()?;
    report.shards_written = writer.shards_written;
    if !wrote && (dirty || !out.join(INDEX_NAME).exists()) {
        index.save(out)?;
    }
    Ok(report)
}

/// Every shard the index names must exist with the recorded length.
fn check_shard_files(out: &Path, index: &Index) -> Result<()> {
    for s in &index.shards {
        let path = out.join(&s.file);
        let len = std::fs::metadata(&path)
            .map_err(|e| DatasetError::io(&path, e))?
            .len();
        if len != s.codes * 2 {
            return Err(DatasetError::store(
                &path,
                format!(
                    "shard has {len} bytes, the index says {} (the store is damaged; use a new --out)",
                    s.codes * 2
                ),
            ));
        }
    }
    Ok(())
}

struct Prepared {
    path: PathBuf,
    key: String,
    hash: String,
    pixels: Tensor,
}

/// Encode one batch of same-size images; on a failure retry one by one to name the bad image.
fn encode_batch(
    vqgan: &Vqgan,
    batch: Vec<Prepared>,
    aliases: &HashMap<String, Vec<String>>,
    writer: &mut Writer,
    report: &mut PretokenizeReport,
) -> Result<()> {
    let xs: Vec<&Tensor> = batch.iter().map(|p| &p.pixels).collect();
    let grid = Tensor::cat(&xs, 0)
        .map_err(DatasetError::from)
        .and_then(|x| Ok(vqgan.encode(&x)?));
    match grid {
        Ok(g) => {
            let n = g.height * g.width;
            for (i, p) in batch.into_iter().enumerate() {
                writer.add(
                    p,
                    g.height,
                    g.width,
                    &g.codes[i * n..(i + 1) * n],
                    aliases,
                    report,
                );
            }
        }
        Err(_) if batch.len() > 1 => {
            for p in batch {
                encode_batch(vqgan, vec![p], aliases, writer, report)?;
            }
        }
        Err(e) => {
            let p = batch.into_iter().next().expect("batch of one");
            fail(
                report,
                aliases,
                p.path,
                &p.hash,
                format!("cannot encode: {e}"),
            );
        }
    }
    Ok(())
}

/// Report a failed image, and the later paths with the same content (counted as reused so far).
fn fail(
    report: &mut PretokenizeReport,
    aliases: &HashMap<String, Vec<String>>,
    path: PathBuf,
    hash: &str,
    why: String,
) {
    for a in aliases.get(hash).into_iter().flatten() {
        report.reused -= 1;
        report.failed.push((
            PathBuf::from(a),
            format!("same content as {}, which failed: {why}", path.display()),
        ));
    }
    report.failed.push((path, why));
}

/// Accumulates new codes and writes them as one shard plus the index on `flush`.
struct Writer<'a> {
    out: &'a Path,
    index: &'a mut Index,
    pending: Vec<u8>,
    entries: Vec<Entry>,
    images: BTreeMap<String, String>,
    last_flush: Instant,
    shards_written: usize,
}

impl Writer<'_> {
    fn add(
        &mut self,
        p: Prepared,
        rows: usize,
        cols: usize,
        codes: &[u32],
        aliases: &HashMap<String, Vec<String>>,
        report: &mut PretokenizeReport,
    ) {
        let n_embed = self.index.settings.n_embed as u32;
        if let Some(bad) = codes.iter().find(|&&c| c >= n_embed) {
            let why = format!("encoder returned code {bad} >= n_embed {n_embed}");
            fail(report, aliases, p.path, &p.hash, why);
            return;
        }
        let offset = (self.pending.len() / 2) as u64;
        for &c in codes {
            self.pending.extend_from_slice(&(c as u16).to_le_bytes());
        }
        self.entries.push(Entry {
            hash: p.hash.clone(),
            rows: rows as u32,
            cols: cols as u32,
            shard: self.index.shards.len() as u32,
            offset,
        });
        for a in aliases.get(&p.hash).into_iter().flatten() {
            self.images.insert(a.clone(), p.hash.clone());
        }
        self.images.insert(p.key, p.hash);
        report.encoded += 1;
    }

    /// Write the pending shard (if any) and then the index, both atomically. Returns whether
    /// anything was written.
    fn flush(&mut self) -> Result<bool> {
        self.last_flush = Instant::now();
        if self.entries.is_empty() {
            return Ok(false);
        }
        let name = shard_name(self.index.shards.len());
        // A file of that name can only be an orphan of a crash between shard and index writes:
        // nothing references it, so replacing it is safe.
        write_atomic(&self.out.join(&name), &self.pending)?;
        self.index.shards.push(ShardInfo {
            file: name,
            codes: (self.pending.len() / 2) as u64,
            sha256: sha256_hex(&self.pending),
        });
        self.index.entries.append(&mut self.entries);
        self.index.images.append(&mut self.images);
        self.index.save(self.out)?;
        self.pending.clear();
        self.shards_written += 1;
        Ok(true)
    }
}
