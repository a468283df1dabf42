//! Shared helpers for the integration tests: tiny PNG images and example builders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use xprompt_retrieval::{NewExample, NewTarget};

/// Writes a distinct 4x4 PNG (pixels derived from `seed`) and returns its path.
pub fn png(dir: &Path, seed: u32) -> PathBuf {
    let img = image::RgbImage::from_fn(4, 4, |x, y| {
        let v = seed.wrapping_mul(2654435761).wrapping_add(x * 7 + y * 13);
        image::Rgb([
            (v & 255) as u8,
            ((v >> 8) & 255) as u8,
            ((v >> 16) & 255) as u8,
        ])
    });
    let path = dir.join(format!("img{seed}.png"));
    img.save(&path).expect("write png");
    path
}

pub fn example(dir: &Path, instruction: &str, task: &str, seed: u32) -> NewExample {
    NewExample {
        instruction: instruction.into(),
        task: task.into(),
        family: Some("editing".into()),
        input: png(dir, seed * 2),
        target: NewTarget::Image(png(dir, seed * 2 + 1)),
        description: None,
        reverse_instruction: None,
        split: Some("train".into()),
        source: Some("test".into()),
    }
}
