//! `y = x · Wᵀ` for a bf16 weight matrix on Intel AMX tiles (`tdpbf16ps`: a 16 × 16 block of
//! f32 sums gains 16 × 16 × 32 bf16 products per instruction, ~8× the AVX-512 dot product).
//!
//! AMX multiplies `A (16 × 32 bf16) · B (32 × 16 bf16)`, where `B` must hold its pairs of
//! consecutive k interleaved ("VNNI" layout). Rather than repacking the weights, the product
//! is computed transposed, `yᵀ = W · xᵀ`: a block of 16 weight rows is `A` exactly as stored,
//! and the input — rounded to bf16 anyway, like PyTorch's bf16 inference — is written in the
//! interleaved layout while it is rounded. Each 16 × 16 result tile is stored to a scratch
//! block and written transposed into `y`.
//!
//! Used for prefills (more than 64 rows, where the input is rounded to bf16 anyway) when
//! `in` is a multiple of 32 and `out` of 16 (every Lumina/Chameleon matrix); other shapes take
//! the AVX-512 kernel. Linux must grant the process the tile state (`arch_prctl`,
//! Linux ≥ 5.16); `XPROMPT_DISABLE_AMX=1` turns the path off (for side-by-side timing).

use half::bf16;
use rayon::prelude::*;

use super::OutPtr;

/// bf16 elements of `in` per tile row (64 bytes).
const K_TILE: usize = 32;
/// Rows of a tile.
const TILE_ROWS: usize = 16;
/// Weight rows per parallel task (a multiple of 32: two A tiles per step).
const CHUNK_ROWS: usize = 64;

/// Whether this CPU and OS run AMX-BF16 for this process (detected once; asks Linux for the
/// tile state on the first call).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("XPROMPT_DISABLE_AMX").is_none_or(|v| v.is_empty() || v == "0") && detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return false;
    }
    // CPUID.(7, 0).EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it fails (non-zero) where the kernel has
    // no AMX support, and then the path stays off.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Whether the kernel takes a product of this shape (`in`, `out`).
pub(crate) fn fits(in_dim: usize, out_dim: usize) -> bool {
    in_dim > 0 && in_dim.is_multiple_of(K_TILE) && out_dim > 0 && out_dim.is_multiple_of(TILE_ROWS)
}

/// `y (rows × out, row-major) = round_bf16(x) (rows × in) · Wᵀ`, `W` `(out × in)` bf16.
/// Returns `false` (and leaves `y` alone) when AMX is unavailable or the shape does not fit.
pub(crate) fn x_times_wt(
    y: &mut [f32],
    x: &[f32],
    w: &[bf16],
    (rows, in_dim, out_dim): (usize, usize, usize),
) -> bool {
    if !available() || !fits(in_dim, out_dim) || rows == 0 {
        return false;
    }
    assert!(
        x.len() >= rows * in_dim && w.len() >= out_dim * in_dim && y.len() >= rows * out_dim,
        "amx x_times_wt: buffers shorter than their shapes"
    );
    let packed = pack_input(x, rows, in_dim);
    let input = Packed {
        data: &packed,
        groups: rows.div_ceil(TILE_ROWS),
        k_tiles: in_dim / K_TILE,
        rows,
    };
    let w_bits: &[u16] = {
        // SAFETY: `bf16` is `#[repr(transparent)]` over `u16`.
        unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u16>(), w.len()) }
    };
    let out = OutPtr(y.as_mut_ptr());
    (0..out_dim.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .for_each(|c| {
            let n0 = c * CHUNK_ROWS;
            let n = CHUNK_ROWS.min(out_dim - n0);
            // SAFETY: `available()` checked AMX and the OS permission; `chunk` reads weight
            // rows n0..n0+n (inside `w`, asserted above; `n` is a multiple of 16 because
            // `out_dim` is) and writes only columns n0..n0+n of `y`'s rows < `rows`.
            unsafe {
                chunk(
                    &input,
                    &w_bits[n0 * in_dim..(n0 + n) * in_dim],
                    in_dim,
                    n,
                    &out,
                    n0,
                    out_dim,
                )
            };
        });
    true
}

/// The input rounded to bf16 in B-tile layout: for each group of 16 rows and each 32-wide
/// slice of `in`, one 16 × 16 tile of pairs — `[pair r][row c][2]` — rows past `rows` zero.
struct Packed<'a> {
    data: &'a [u16],
    groups: usize,
    k_tiles: usize,
    rows: usize,
}

fn pack_input(x: &[f32], rows: usize, in_dim: usize) -> Vec<u16> {
    let groups = rows.div_ceil(TILE_ROWS);
    let k_tiles = in_dim / K_TILE;
    let tile = TILE_ROWS * K_TILE; // 512 elements, 1 KB
    let mut packed = vec![0u16; groups * k_tiles * tile];
    packed
        .par_chunks_mut(k_tiles * tile)
        .enumerate()
        .for_each(|(g, group)| {
            for c in 0..TILE_ROWS.min(rows - g * TILE_ROWS) {
                let src = &x[(g * TILE_ROWS + c) * in_dim..][..in_dim];
                for (kt, block) in src.chunks_exact(K_TILE).enumerate() {
                    let dst = &mut group[kt * tile..][..tile];
                    for (r, pair) in block.chunks_exact(2).enumerate() {
                        dst[r * 2 * TILE_ROWS + 2 * c] = bf16::from_f32(pair[0]).to_bits();
                        dst[r * 2 * TILE_ROWS + 2 * c + 1] = bf16::from_f32(pair[1]).to_bits();
                    }
                }
            }
        });
    packed
}

/// The tile configuration `ldtilecfg` reads: palette 1, every tile 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Columns `n0..n0+n` of `y` from the `n` weight rows in `w` (`n × in`, `n` a multiple of 16).
/// Tiles: 0–3 the 2 × 2 result blocks, 4–5 two blocks of weight rows, 6–7 two input groups.
#[cfg(target_arch = "x86_64")]
unsafe fn chunk(
    x: &Packed,
    w: &[u16],
    in_dim: usize,
    n: usize,
    y: &OutPtr,
    n0: usize,
    out_dim: usize,
) {
    use std::arch::asm;
    asm!("ldtilecfg [{cfg}]", cfg = in(reg) &CONFIG, options(nostack, readonly));
    let mut scratch = Scratch([[0f32; TILE_ROWS]; TILE_ROWS]);
    for i0 in (0..n).step_by(2 * TILE_ROWS) {
        let two_a = i0 + TILE_ROWS < n;
        for g0 in (0..x.groups).step_by(2) {
            let two_b = g0 + 1 < x.groups;
            match (two_a, two_b) {
                (true, true) => tiles::<true, true>(x, w, in_dim, i0, g0),
                (true, false) => tiles::<true, false>(x, w, in_dim, i0, g0),
                (false, true) => tiles::<false, true>(x, w, in_dim, i0, g0),
                (false, false) => tiles::<false, false>(x, w, in_dim, i0, g0),
            }
            // Tile 0: weights i0.., group g0; 1: i0.., g0+1; 2: i0+16.., g0; 3: i0+16.., g0+1.
            for (t, a, b) in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)] {
                if (a == 1 && !two_a) || (b == 1 && !two_b) {
                    continue;
                }
                store_tile(t, &mut scratch);
                let first_row = (g0 + b) * TILE_ROWS;
                for c in 0..TILE_ROWS.min(x.rows - first_row) {
                    let dst = y.0.add((first_row + c) * out_dim + n0 + i0 + a * TILE_ROWS);
                    for r in 0..TILE_ROWS {
                        *dst.add(r) = scratch.0[r][c];
                    }
                }
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn chunk(_: &Packed, _: &[u16], _: usize, _: usize, _: &OutPtr, _: usize, _: usize) {
    unreachable!("available() is false off x86_64")
}

/// A result tile's landing place (64-byte rows, aligned for `tilestored`).
#[repr(C, align(64))]
struct Scratch([[f32; TILE_ROWS]; TILE_ROWS]);

/// Accumulates the result tiles 0–3 over the whole of `in` (zeroing them first).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tiles<const TWO_A: bool, const TWO_B: bool>(
    x: &Packed,
    w: &[u16],
    in_dim: usize,
    i0: usize,
    g0: usize,
) {
    use std::arch::asm;
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    let w_stride = in_dim * 2; // bytes between weight rows
    let a0 = w.as_ptr().add(i0 * in_dim);
    let a1 = w.as_ptr().add((i0 + TILE_ROWS) * in_dim);
    let tile = TILE_ROWS * K_TILE;
    let b0 = x.data.as_ptr().add(g0 * x.k_tiles * tile);
    let b1 = x.data.as_ptr().add((g0 + 1) * x.k_tiles * tile);
    for kt in 0..x.k_tiles {
        asm!("tileloadd tmm4, [{p} + {s} * 1]", p = in(reg) a0.add(kt * K_TILE), s = in(reg) w_stride, options(nostack, readonly));
        asm!("tileloadd tmm6, [{p} + {s} * 1]", p = in(reg) b0.add(kt * tile), s = in(reg) 64usize, options(nostack, readonly));
        asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
        if TWO_B {
            asm!("tileloadd tmm7, [{p} + {s} * 1]", p = in(reg) b1.add(kt * tile), s = in(reg) 64usize, options(nostack, readonly));
            asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem));
        }
        if TWO_A {
            asm!("tileloadd tmm5, [{p} + {s} * 1]", p = in(reg) a1.add(kt * K_TILE), s = in(reg) w_stride, options(nostack, readonly));
            asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem));
            if TWO_B {
                asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
            }
        }
    }
}

/// Stores result tile `t` (0–3) into `scratch`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_tile(t: usize, scratch: &mut Scratch) {
    use std::arch::asm;
    let p = scratch.0.as_mut_ptr();
    match t {
        0 => {
            asm!("tilestored [{p} + {s} * 1], tmm0", p = in(reg) p, s = in(reg) 64usize, options(nostack))
        }
        1 => {
            asm!("tilestored [{p} + {s} * 1], tmm1", p = in(reg) p, s = in(reg) 64usize, options(nostack))
        }
        2 => {
            asm!("tilestored [{p} + {s} * 1], tmm2", p = in(reg) p, s = in(reg) 64usize, options(nostack))
        }
        _ => {
            asm!("tilestored [{p} + {s} * 1], tmm3", p = in(reg) p, s = in(reg) 64usize, options(nostack))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    #[test]
    fn matches_the_product_of_the_rounded_input_on_every_edge() {
        if !available() {
            eprintln!("skipped: no AMX-BF16 here");
            return;
        }
        // Row counts that leave a group or a pair of groups partial; weight blocks that leave
        // the second A tile of a chunk empty; several chunks.
        for (rows, k, n) in [
            (1, 32, 16),
            (17, 64, 48),
            (40, 96, 80),
            (100, 128, 144),
            (16, 2048, 32),
        ] {
            let x = values(rows * k, 3 + rows as u64);
            let w: Vec<bf16> = values(n * k, 11 + n as u64)
                .into_iter()
                .map(bf16::from_f32)
                .collect();
            let mut y = vec![f32::NAN; rows * n];
            assert!(x_times_wt(&mut y, &x, &w, (rows, k, n)));
            for i in 0..rows {
                for j in 0..n {
                    // The exact product of what the tiles multiply: x rounded to bf16.
                    let want: f64 = (0..k)
                        .map(|t| bf16::from_f32(x[i * k + t]).to_f64() * w[j * k + t].to_f64())
                        .sum();
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()) * (k as f64).sqrt(),
                        "{rows}x{k}x{n} [{i}][{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_it_does_not_take_are_refused() {
        assert!(!fits(33, 16));
        assert!(!fits(32, 15));
        assert!(!fits(0, 16));
        let mut y = vec![1.0f32; 4];
        assert!(!x_times_wt(
            &mut y,
            &[0.0; 66],
            &[bf16::ZERO; 66],
            (2, 33, 2)
        ));
        assert_eq!(y, vec![1.0; 4], "a refused product leaves y alone");
    }
}
