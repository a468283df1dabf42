//! Test support for the property tests that feed damaged files to every parser xprompt owns
//! (safetensors, GGUF, config.json, vqgan.yaml, `.ckpt`, `.xpt`, manifests, the example
//! database's log and snapshot): parsers must return errors, never panic, and never
//! allocate without bound.
//!
//! - [`mutated`]: a proptest strategy of damaged copies of a valid file — bytes flipped,
//!   truncated, spliced, and length-like fields overwritten with extreme integers (the edit
//!   that finds unbounded allocations);
//! - [`committed_configs`]: the recipes under `configs/`, for the tests that parse them;
//! - [`CapAllocator`]: a global allocator for a test binary that refuses any single
//!   allocation above a cap, so a parser that trusts a length field fails the test loudly
//!   (the process aborts naming the size) instead of passing on a machine with overcommit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

/// One damage applied to a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// XOR the byte at this position (modulo the length) with a non-zero mask.
    Flip { at: usize, mask: u8 },
    /// Keep only this fraction (per mille) of the bytes.
    Truncate { keep_per_mille: u16 },
    /// Insert bytes at this position.
    Insert { at: usize, bytes: Vec<u8> },
    /// Overwrite 8 bytes at this position with an extreme little-endian integer.
    Extreme { at: usize, value: u64 },
    /// Delete a run of bytes.
    Delete { at: usize, len: usize },
}

impl Edit {
    pub fn apply(&self, data: &mut Vec<u8>) {
        let n = data.len();
        match self {
            Edit::Flip { at, mask } if n > 0 => data[at % n] ^= mask,
            Edit::Truncate { keep_per_mille } => {
                data.truncate(n * *keep_per_mille as usize / 1000);
            }
            Edit::Insert { at, bytes } => {
                let at = if n == 0 { 0 } else { at % (n + 1) };
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Extreme { at, value } if n >= 8 => {
                let at = at % (n - 7);
                data[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            Edit::Delete { at, len } if n > 0 => {
                let at = at % n;
                let end = (at + len).min(n);
                data.drain(at..end);
            }
            _ => {}
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let extreme = prop_oneof![
        Just(0u64),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 40),
        any::<u64>(),
    ];
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        1 => (0u16..1000).prop_map(|keep_per_mille| Edit::Truncate { keep_per_mille }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        2 => (any::<usize>(), extreme).prop_map(|(at, value)| Edit::Extreme { at, value }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Delete { at, len }),
    ]
}

/// Damaged copies of `valid`: one to four [`Edit`]s applied in order.
pub fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(edit(), 1..=4).prop_map(move |edits| {
        let mut data = valid.clone();
        for e in &edits {
            e.apply(&mut data);
        }
        data
    })
}

/// The proptest settings of the parser tests: `cases` damaged files per run, new ones each
/// run (no regression files are written into the source tree).
pub fn damaged_file_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Copies a directory tree (the valid fixture a test damages a copy of).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A global allocator that refuses single allocations above `cap` bytes and remembers the
/// largest one it granted. Declare it in a test binary:
/// `#[global_allocator] static ALLOC: CapAllocator = CapAllocator::new(256 << 20);`
pub struct CapAllocator {
    cap: usize,
    largest: AtomicUsize,
}

impl CapAllocator {
    pub const fn new(cap: usize) -> Self {
        CapAllocator {
            cap,
            largest: AtomicUsize::new(0),
        }
    }

    /// The largest single allocation granted so far.
    pub fn largest(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }

    fn admit(&self, size: usize) -> bool {
        if size > self.cap {
            return false;
        }
        self.largest.fetch_max(size, Ordering::Relaxed);
        true
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged, or refused with null
// (which callers must handle: Rust's collections abort with the size, failing the test).
unsafe impl GlobalAlloc for CapAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.admit(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The recipes committed under the repository's `configs/` whose file names `select` accepts,
/// as `(file name, path)` sorted by name: tests parse each with the crate's own config type.
pub fn committed_configs(select: impl Fn(&str) -> bool) -> Vec<(String, std::path::PathBuf)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut found: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a configs/ entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().to_string();
            (name.ends_with(".toml") && select(&name)).then_some((name, path))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_in_bounds_on_any_input() {
        for data in [vec![], vec![1u8], vec![0u8; 9], (0..100).collect()] {
            for e in [
                Edit::Flip { at: 12345, mask: 1 },
                Edit::Truncate {
                    keep_per_mille: 500,
                },
                Edit::Insert {
                    at: 999,
                    bytes: vec![7, 7],
                },
                Edit::Extreme {
                    at: 3,
                    value: u64::MAX,
                },
                Edit::Delete { at: 5, len: 1000 },
            ] {
                let mut d = data.clone();
                e.apply(&mut d);
            }
        }
        let mut d: Vec<u8> = (0..16).collect();
        Edit::Extreme {
            at: 0,
            value: u64::MAX,
        }
        .apply(&mut d);
        assert_eq!(&d[..8], &[0xff; 8]);
        Edit::Truncate {
            keep_per_mille: 500,
        }
        .apply(&mut d);
        assert_eq!(d.len(), 8);
    }

    #[test]
    fn the_cap_refuses_oversized_requests_and_records_the_largest() {
        let a = CapAllocator::new(1024);
        assert!(a.admit(100));
        assert!(a.admit(1024));
        assert!(!a.admit(1025));
        assert_eq!(a.largest(), 1024);
    }
}
