//! The suite validator (`xprompt data validate`): schema, references, image sizes, and the exactness
//! invariants of dense targets (palette membership, binary edges, unit normals). Collects every problem
//! instead of stopping at the first.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use image::RgbImage;

use crate::manifest::{read_suite_info, Direction, Family, Record, Split, Target, FORMAT};
use crate::palette::{class_table, decode_normal, depth_palette_by_name};

#[derive(Debug, Default)]
pub struct ValidationReport {
    pub records: usize,
    pub tasks: usize,
    pub images_checked: usize,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Validate the suite in `dir`. Only a missing/unreadable suite.json is an `Err`; everything else is
/// reported in the returned report.
pub fn validate_suite(dir: &Path) -> crate::error::Result<ValidationReport> {
    let info = read_suite_info(dir)?;
    let mut rep = ValidationReport {
        tasks: info.tasks.len(),
        ..Default::default()
    };
    if info.format != FORMAT {
        rep.errors.push(format!(
            "suite.json: format {:?}, expected {FORMAT:?}",
            info.format
        ));
    }
    let manifest = dir.join("manifest.jsonl");
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) => {
            rep.errors.push(format!("{}: {e}", manifest.display()));
            return Ok(rep);
        }
    };
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => records.push(r),
            Err(e) => rep
                .errors
                .push(format!("manifest.jsonl line {}: {e}", i + 1)),
        }
    }
    rep.records = records.len();
    let tasks: HashMap<&str, &crate::manifest::TaskInfo> =
        info.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    let classes: HashSet<[u8; 3]> = info.classes.iter().map(|c| c.colour).collect();
    if classes.len() != info.classes.len()
        || class_table(info.classes.len())
            .iter()
            .any(|c| !classes.contains(c))
    {
        rep.errors
            .push("suite.json: class colours are not the standard class palette".into());
    }
    let mut ids = HashSet::new();
    let mut checked: HashMap<String, Option<RgbImage>> = HashMap::new();
    let mut splits_seen: HashMap<&str, HashSet<Split>> = HashMap::new();
    for r in &records {
        let e = &mut rep.errors;
        if !ids.insert(r.id.as_str()) {
            e.push(format!("{}: duplicate id", r.id));
        }
        splits_seen
            .entry(r.task.as_str())
            .or_default()
            .insert(r.split);
        match tasks.get(r.task.as_str()) {
            None => e.push(format!("{}: task {:?} not in suite.json", r.id, r.task)),
            Some(t) => {
                if t.family != r.family || t.target != r.target || t.heldout != r.heldout {
                    e.push(format!(
                        "{}: family/target/heldout disagree with suite.json task {}",
                        r.id, t.name
                    ));
                }
            }
        }
        match (&r.output_image, &r.output_text, r.target) {
            (None, Some(_), Target::Text) | (Some(_), None, _)
                if (r.target == Target::Text) == r.output_text.is_some() => {}
            _ => e.push(format!(
                "{}: needs exactly one of output_image / output_text matching target {:?}",
                r.id, r.target
            )),
        }
        if r.inputs.is_empty()
            && !(r.family == Family::Text
                && r.target != Target::Text
                && r.direction == Direction::Forward)
        {
            e.push(format!("{}: no input images", r.id));
        }
        if r.sources.len() != r.licences.len() {
            e.push(format!(
                "{}: {} sources but {} licences",
                r.id,
                r.sources.len(),
                r.licences.len()
            ));
        }
        if r.instruction.trim().is_empty() {
            e.push(format!("{}: empty instruction", r.id));
        }
        for rel in r.inputs.iter().chain(r.output_image.iter()) {
            if rel.contains("..") || rel.starts_with('/') {
                e.push(format!("{}: path {rel:?} escapes the suite", r.id));
                continue;
            }
            let entry = checked
                .entry(rel.clone())
                .or_insert_with(|| image::open(dir.join(rel)).ok().map(|i| i.to_rgb8()));
            match entry {
                None => e.push(format!("{}: {rel} missing or unreadable", r.id)),
                Some(img) if img.width() != info.size || img.height() != info.size => {
                    e.push(format!(
                        "{}: {rel} is {}x{}, suite size is {}",
                        r.id,
                        img.width(),
                        img.height(),
                        info.size
                    ))
                }
                Some(_) => {}
            }
        }
        // exactness invariants of dense maps (on whichever side holds the map)
        let dense_rel = match r.direction {
            Direction::Forward => r.output_image.as_ref(),
            Direction::Reverse => r.inputs.first(),
        };
        let kind = if r.direction == Direction::Forward {
            r.target
        } else {
            tasks
                .get(r.reverse_task.as_deref().unwrap_or(""))
                .map(|t| t.target)
                .unwrap_or(Target::Rgb)
        };
        if let Some(Some(img)) = dense_rel.and_then(|p| checked.get(p)) {
            if let Some(msg) = check_dense(img, kind, r.palette.as_deref(), &classes) {
                e.push(format!("{}: {msg}", r.id));
            }
        }
    }
    rep.images_checked = checked.len();
    for t in &info.tasks {
        let s = splits_seen.get(t.name.as_str());
        if !s.is_some_and(|s| s.contains(&Split::Test) && s.contains(&Split::Train)) {
            rep.warnings
                .push(format!("task {} lacks a train or test split", t.name));
        }
    }
    Ok(rep)
}

fn check_dense(
    img: &RgbImage,
    kind: Target,
    palette: Option<&str>,
    classes: &HashSet<[u8; 3]>,
) -> Option<String> {
    match kind {
        Target::Segmentation => img
            .pixels()
            .find(|p| !classes.contains(&p.0))
            .map(|p| format!("segmentation colour {:?} not in the class palette", p.0)),
        Target::Depth => {
            let Some(pal) = palette.and_then(depth_palette_by_name) else {
                return Some(format!("unknown depth palette {palette:?}"));
            };
            let table: HashSet<[u8; 3]> = pal.table().into_iter().collect();
            img.pixels()
                .find(|p| !table.contains(&p.0))
                .map(|p| format!("depth colour {:?} not in palette {}", p.0, pal.name))
        }
        Target::Edges => img
            .pixels()
            .find(|p| !(p.0 == [0, 0, 0] || p.0 == [255, 255, 255]))
            .map(|p| format!("edge map pixel {:?} is not binary", p.0)),
        Target::Normals => img.pixels().find_map(|p| {
            let v = p.0.map(|c| c as f32 / 255.0 * 2.0 - 1.0);
            let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            let n = decode_normal(p.0);
            ((len - 1.0).abs() > 0.02 || n[2] < -0.6).then(|| {
                format!(
                    "normal code {:?} is not a unit, visible-surface normal",
                    p.0
                )
            })
        }),
        Target::Rgb | Target::Text => None,
    }
}
