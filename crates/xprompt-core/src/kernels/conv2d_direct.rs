//! Direct stride-1 convolution for f32 on AVX-512: the forward pass and the input gradient of
//! `conv2d_shifted` without its nine gemm calls per image.
//!
//! The shifted-gemm form runs one `(C_out × C_in) · (C_in × H·W)` product per kernel tap: with
//! the VQGAN's 32–128 channels each product is short in its inner dimension, and every call
//! packs the shifted input again, zero-fills and re-reads the accumulator and finally copies
//! the valid columns out (~25 % of a tokenizer training step went there). Here a register
//! tile of `ROWS` output channels × `SLOTS` vectors of 16 output positions accumulates over
//! all input channels and taps at once, reading the zero-padded input directly and the
//! weights pre-packed per tile, and adds the result into the output once.
//!
//! A *slot* is 16 consecutive output columns of one output row (the last one of a row
//! masked); a tile's slots may come from several rows, so narrow images keep the tile full.
//! Lanes past the row's end compute on whatever follows in the padded buffer and are never
//! stored; 16 zeros after the padded buffer keep those reads in bounds.

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Output channels per register tile.
const ROWS: usize = 4;
/// 16-lane output vectors per register tile (`ROWS × SLOTS` accumulators of 32 registers).
const SLOTS: usize = 6;
const LANES: usize = 16;
/// Input channels per pass over a tile (the rest accumulate in a later pass through `out`).
const CHANNEL_BLOCK: usize = 32;

/// AVX-512F present, and not turned off by `XPROMPT_DISABLE_DIRECT_CONV=1` (which falls back
/// to the shifted gemms, for side-by-side timing).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var_os("XPROMPT_DISABLE_DIRECT_CONV");
        off.is_none_or(|v| v.is_empty() || v == "0")
            && std::arch::is_x86_feature_detected!("avx512f")
    })
}

/// A zero-padded input: `channels` planes `cs` apart whose rows are `wp` wide, followed by at
/// least [`SLACK`] zeros.
pub struct PaddedInput<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub wp: usize,
    pub cs: usize,
}

/// `out (rows, h_out, w_out) += Σ_taps taps[t] · input_tap`, with `taps` laid out
/// `(k·k, rows, channels)` and tap `(ky, kx)` reading the input shifted by `ky·wp + kx`.
/// Runs of row blocks go to parallel tasks when `parallel`.
pub fn correlate(
    input: &PaddedInput,
    taps: &[f32],
    k: usize,
    rows: usize,
    (h_out, w_out): (usize, usize),
    out: &mut [f32],
    parallel: bool,
) {
    assert!(available(), "conv2d_direct needs AVX-512F");
    let c = input.channels;
    let kk = k * k;
    assert_eq!(taps.len(), kk * rows * c);
    assert_eq!(out.len(), rows * h_out * w_out);
    let last_read = (c - 1) * input.cs + (h_out - 1 + k - 1) * input.wp + (k - 1) + w_out + LANES;
    assert!(last_read <= input.data.len(), "padded input lacks its slack");
    let offsets: Vec<usize> = (0..kk).map(|t| (t / k) * input.wp + t % k).collect();
    let slots = Slots::new(h_out, w_out, input.wp);
    let plane = h_out * w_out;
    let blocks = rows.div_ceil(ROWS);
    let packed: Vec<Vec<f32>> = (0..blocks)
        .map(|rb| pack_block(taps, rb * ROWS, rows, c, kk))
        .collect();
    // Per thread a run of row blocks; per tile and channel block the input it reads (a few
    // rows of CHANNEL_BLOCK planes) stays in L1 while every row block of the run uses it.
    let per_task = if parallel {
        blocks.div_ceil(rayon::current_num_threads())
    } else {
        blocks
    };
    let run = |(task, out): (usize, &mut [f32])| {
        let first = task * per_task;
        for tile in slots.tiles() {
            for ch0 in (0..c).step_by(CHANNEL_BLOCK) {
                let channels = ch0..c.min(ch0 + CHANNEL_BLOCK);
                for (i, out) in out.chunks_mut(ROWS * plane).enumerate() {
                    let weights = &packed[first + i][ch0 * kk * ROWS..];
                    let valid_rows = out.len() / plane;
                    // SAFETY: AVX-512F was checked above; every read lies within
                    // `input.data` (the bound asserted above covers the farthest slot, tap
                    // and lane) and `weights` (`channels` × `kk` × ROWS from `ch0`), and
                    // stores stay within this block's `valid_rows` planes of `out`.
                    unsafe {
                        tile_kernel(input, channels.clone(), &offsets, weights, &tile, out, plane, valid_rows)
                    };
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(per_task * ROWS * plane).enumerate().for_each(run);
    } else {
        run((0, out));
    }
}

/// One row block's weights as `(channel, tap, ROWS)`, zero for rows past `rows`.
fn pack_block(taps: &[f32], r0: usize, rows: usize, c: usize, kk: usize) -> Vec<f32> {
    let mut packed = vec![0f32; c * kk * ROWS];
    for ch in 0..c {
        for t in 0..kk {
            for r in 0..ROWS.min(rows - r0) {
                packed[(ch * kk + t) * ROWS + r] = taps[(t * rows + r0 + r) * c + ch];
            }
        }
    }
    packed
}

/// Where each slot reads (offset into a padded plane) and writes (offset into an output
/// plane), and which of its lanes are stored.
struct Slots {
    read: Vec<usize>,
    write: Vec<usize>,
    mask: Vec<u16>,
}

/// Up to `SLOTS` slots; unused ones have an empty mask.
struct Tile {
    read: [usize; SLOTS],
    write: [usize; SLOTS],
    mask: [u16; SLOTS],
}

impl Slots {
    fn new(h_out: usize, w_out: usize, wp: usize) -> Self {
        let mut s = Slots {
            read: Vec::new(),
            write: Vec::new(),
            mask: Vec::new(),
        };
        for y in 0..h_out {
            for x0 in (0..w_out).step_by(LANES) {
                let n = LANES.min(w_out - x0);
                s.read.push(y * wp + x0);
                s.write.push(y * w_out + x0);
                s.mask.push(((1u32 << n) - 1) as u16);
            }
        }
        s
    }

    fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.read.len()).step_by(SLOTS).map(move |i0| {
            let mut t = Tile {
                read: [0; SLOTS],
                write: [0; SLOTS],
                mask: [0; SLOTS],
            };
            for j in 0..SLOTS.min(self.read.len() - i0) {
                t.read[j] = self.read[i0 + j];
                t.write[j] = self.write[i0 + j];
                t.mask[j] = self.mask[i0 + j];
            }
            t
        })
    }
}

/// `out[tile] += Σ_{channels, taps} w · input` for one register tile; `packed` starts at the
/// first of `channels`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile_kernel(
    input: &PaddedInput,
    channels: std::ops::Range<usize>,
    offsets: &[usize],
    packed: &[f32],
    tile: &Tile,
    out: &mut [f32],
    plane: usize,
    valid_rows: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); SLOTS]; ROWS];
    let data = input.data.as_ptr();
    let mut w = packed.as_ptr();
    for ch in channels {
        let base = data.add(ch * input.cs);
        for &off in offsets {
            let p = base.add(off);
            let wv = [
                _mm512_set1_ps(*w),
                _mm512_set1_ps(*w.add(1)),
                _mm512_set1_ps(*w.add(2)),
                _mm512_set1_ps(*w.add(3)),
            ];
            for j in 0..SLOTS {
                let x = _mm512_loadu_ps(p.add(tile.read[j]));
                for r in 0..ROWS {
                    acc[r][j] = _mm512_fmadd_ps(wv[r], x, acc[r][j]);
                }
            }
            w = w.add(ROWS);
        }
    }
    let o = out.as_mut_ptr();
    for (r, acc) in acc.iter().enumerate().take(valid_rows) {
        for j in 0..SLOTS {
            let m = tile.mask[j];
            if m != 0 {
                let dst = o.add(r * plane + tile.write[j]);
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst), acc[j]);
                _mm512_mask_storeu_ps(dst, m, sum);
            }
        }
    }
}
