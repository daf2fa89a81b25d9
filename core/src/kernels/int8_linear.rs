//! The linear layers of an int8 bundle run in integers: each row of activations is quantised to
//! 8 bits on the fly (symmetric, its own scale), multiplied with the bundle's int8 weights
//! (symmetric, one scale per output) into i32, and rescaled to f32 with the bias added —
//! PyTorch's dynamic int8 (`quantize_dynamic`) scheme. The dot products use AVX-512 VNNI or
//! AVX-VNNI where the CPU has them (`vpdpbusd`: 64 or 32 u8 × i8 products per instruction, 4×
//! an f32 FMA's), and portable loops the compiler vectorises elsewhere (wasm, older x86).
//!
//! `vpdpbusd` multiplies *unsigned* by signed bytes, so activations are stored shifted by 128
//! (u = q + 128) and each output takes `128 · Σₖ w[j, k]` back out, computed once at packing.
//! No sum can overflow: |u · w| ≤ 255 · 127, so i32 holds k up to 66,000.

/// Output columns per packed block: four 16-lane i32 vectors.
const COLS: usize = 64;
/// Activation rows per micro-tile.
const ROWS: usize = 4;
/// Inner-dimension values per `vpdpbusd` lane.
const DEPTH: usize = 4;
/// k-groups per weight slice: 64 × 256 bytes, a third of a 48 KB L1 (measured: a 1536-deep
/// block streamed from L2 runs at half the speed).
const SLICE_GROUPS: usize = 64;

/// A linear layer's weights, packed for the integer kernels: `[d_out/64][d_in/4][64][4]` i8
/// (zero-padded to whole blocks), so one k-step of a column block is 256 contiguous bytes.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    d_in: usize,
    d_out: usize,
    groups: usize,
    packed: Vec<i8>,
    scales: Vec<f32>,
    shift: Vec<i32>,
    bias: Option<Vec<f32>>,
}

impl Int8Linear {
    /// From a bundle's int8 matrix in PyTorch's layout (`weight` `[d_out, d_in]`, row-major,
    /// `scales` one per output row) and the f32 bias.
    pub fn new(
        weight: &[i8],
        scales: &[f32],
        bias: Option<&[f32]>,
        d_out: usize,
        d_in: usize,
    ) -> Self {
        assert_eq!(
            weight.len(),
            d_out * d_in,
            "int8 weight is not [d_out, d_in]"
        );
        assert_eq!(scales.len(), d_out, "one scale per output row");
        let groups = d_in.div_ceil(DEPTH);
        let blocks = d_out.div_ceil(COLS);
        let mut packed = vec![0i8; blocks * groups * COLS * DEPTH];
        for (j, row) in weight.chunks_exact(d_in.max(1)).enumerate().take(d_out) {
            let (block, col) = (j / COLS, j % COLS);
            for (k, &w) in row.iter().enumerate() {
                let at = ((block * groups + k / DEPTH) * COLS + col) * DEPTH + k % DEPTH;
                packed[at] = w;
            }
        }
        let shift = (0..d_out)
            .map(|j| {
                128 * weight[j * d_in..(j + 1) * d_in]
                    .iter()
                    .map(|&w| i32::from(w))
                    .sum::<i32>()
            })
            .collect();
        Self {
            d_in,
            d_out,
            groups,
            packed,
            scales: scales.to_vec(),
            shift,
            bias: bias.map(<[f32]>::to_vec),
        }
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }

    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// `x` `[rows, d_in]` → `[rows, d_out]`: x · Wᵀ + bias.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        assert!(
            x.len().is_multiple_of(self.d_in.max(1)),
            "x is not [rows, d_in]"
        );
        let rows = x.len() / self.d_in.max(1);
        let mut y = vec![0f32; rows * self.d_out];
        let dot = DotKernel::detect();
        // Each chunk quantises its own rows: that pass is as long as the input, so it is split too.
        let rows_per_chunk = chunk_rows(rows, self.d_in * self.d_out);
        for_each_chunk(&mut y, rows_per_chunk * self.d_out, |chunk, index| {
            let first = index * rows_per_chunk;
            let count = chunk.len() / self.d_out;
            let x = &x[first * self.d_in..(first + count) * self.d_in];
            super::simd::widest(
                #[inline(always)]
                || {
                    let (u, row_scales) = self.quantise_rows(x, count);
                    self.rows_into(dot, &u, &row_scales, chunk);
                },
            )
        });
        y
    }

    /// Each row as u8 = round(x / scale) + 128, padded to whole micro-tiles and k-groups (the
    /// padding meets zero weights or is never read back), and its scale max|x| / 127.
    #[inline(always)]
    fn quantise_rows(&self, x: &[f32], rows: usize) -> (Vec<u8>, Vec<f32>) {
        let stride = self.groups * DEPTH;
        let mut quantised = vec![128u8; rows.next_multiple_of(ROWS) * stride];
        let mut scales = Vec::with_capacity(rows);
        for (row, out) in x
            .chunks_exact(self.d_in.max(1))
            .zip(quantised.chunks_exact_mut(stride))
        {
            let max = max_abs(row);
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            let inverse = 1.0 / scale;
            for (q, &v) in out.iter_mut().zip(row) {
                *q = shifted_round((v * inverse).clamp(-127.0, 127.0));
            }
            scales.push(scale);
        }
        (quantised, scales)
    }

    /// The outputs of `row_scales.len()` rows whose quantised values start `u`. Each column
    /// block is done in slices of [`SLICE_GROUPS`] k-groups whose weights (16 KB) stay in L1
    /// while every micro-tile of rows passes over them, the sums carried in `sums`.
    #[inline(always)]
    fn rows_into(&self, dot: DotKernel, u: &[u8], row_scales: &[f32], y: &mut [f32]) {
        let stride = self.groups * DEPTH;
        let block_len = (self.groups * COLS * DEPTH).max(1);
        let tiles = u.len() / (ROWS * stride).max(1);
        let mut sums = vec![0i32; tiles * ROWS * COLS];
        for (block, weights) in self.packed.chunks_exact(block_len).enumerate() {
            for first in (0..self.groups).step_by(SLICE_GROUPS) {
                let groups = (self.groups - first).min(SLICE_GROUPS);
                let slice = &weights[first * COLS * DEPTH..][..groups * COLS * DEPTH];
                for (tile, tile_sums) in sums.chunks_exact_mut(ROWS * COLS).enumerate() {
                    let tile_u = &u[tile * ROWS * stride + first * DEPTH..];
                    dot.tile(tile_u, stride, slice, groups, tile_sums, first > 0);
                }
            }
            for (row, &scale) in row_scales.iter().enumerate() {
                let row_sums = &sums[row * COLS..][..COLS];
                self.finish_row(
                    block,
                    row_sums,
                    scale,
                    &mut y[row * self.d_out..][..self.d_out],
                );
            }
        }
    }

    /// One row's i32 sums of a column block, rescaled to f32 plus the bias. Zipped slices, the
    /// bias chosen outside the loop: indexing per column kept this loop scalar (a third of an
    /// int8 forward pass at batch 32, measured).
    #[inline(always)]
    fn finish_row(&self, block: usize, sums: &[i32], row_scale: f32, y: &mut [f32]) {
        let first = block * COLS;
        let columns = first..(first + COLS).min(self.d_out);
        let n = columns.len();
        let rescaled = sums[..n]
            .iter()
            .zip(&self.shift[columns.clone()])
            .zip(&self.scales[columns.clone()])
            .map(|((&sum, &shift), &scale)| (sum - shift) as f32 * (row_scale * scale));
        let y = &mut y[columns.clone()];
        match &self.bias {
            Some(bias) => {
                let rows = y.iter_mut().zip(rescaled).zip(&bias[columns]);
                rows.for_each(|((y, value), &b)| *y = value + b);
            }
            None => y
                .iter_mut()
                .zip(rescaled)
                .for_each(|(y, value)| *y = value + 0.0),
        }
    }
}

/// round(v) + 128 as u8 for |v| ≤ 127, ties to even: adding 1.5 · 2²³ leaves no fraction bits,
/// so the FPU's own rounding does it and the integer sits in the low bits. Integer operations
/// only, so the loop vectorises (`round_ties_even` is a libm call on x86-64's baseline, and a
/// float → int `as` is a saturating scalar conversion: together half of a layer's time).
#[inline(always)]
fn shifted_round(v: f32) -> u8 {
    const SHIFT: f32 = 12_582_912.0;
    ((v + SHIFT).to_bits() as i32 - SHIFT.to_bits() as i32 + 128) as u8
}

/// max |v| over `values`, in 16 independent lanes: one running maximum is a chain of dependent
/// `maxss` the compiler may not reorder (a quarter of a layer's time before). `a > m` rather
/// than `f32::max`, whose NaN rules keep it scalar.
#[inline(always)]
fn max_abs(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = if v.abs() > *lane { v.abs() } else { *lane };
        }
    }
    let rest = chunks.remainder().iter();
    rest.chain(&lanes)
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// Rows per parallel chunk: whole micro-tiles, a few chunks per thread when the work is large
/// enough to split (a split costs microseconds), else all rows.
fn chunk_rows(rows: usize, macs_per_row: usize) -> usize {
    #[cfg(feature = "threads")]
    if rows * macs_per_row >= 1 << 21 {
        let chunks = 4 * rayon::current_num_threads();
        return rows.div_ceil(chunks).next_multiple_of(ROWS).max(ROWS);
    }
    let _ = macs_per_row;
    rows.next_multiple_of(ROWS).max(ROWS)
}

/// `work(chunk, index)` on `values` cut into chunks of `len`: over rayon's pool with `threads`.
fn for_each_chunk(values: &mut [f32], len: usize, work: impl Fn(&mut [f32], usize) + Sync) {
    if values.is_empty() {
        return;
    }
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        values
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| work(c, i));
    }
    #[cfg(not(feature = "threads"))]
    values
        .chunks_mut(len)
        .enumerate()
        .for_each(|(i, c)| work(c, i));
}

/// Which dot-product kernel this CPU runs, chosen once per call (the check is a cached load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DotKernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
}

impl DotKernel {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni") {
                return Self::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avxvnni") {
                return Self::AvxVnni;
            }
        }
        Self::Portable
    }

    /// Every kernel this CPU can run (the tests compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let best = Self::detect();
        let mut all = vec![Self::Portable];
        #[cfg(target_arch = "x86_64")]
        if best == Self::Avx512Vnni && std::arch::is_x86_feature_detected!("avxvnni") {
            all.push(Self::AvxVnni);
        }
        if best != Self::Portable {
            all.push(best);
        }
        all
    }

    /// `acc[r · 64 + c] (+)= Σ_k u[r · stride + k] · w[k][c]` for a micro-tile of 4 rows and
    /// `groups` k-groups of one packed column block: added to `acc` when `accumulate`.
    fn tile(
        self,
        u: &[u8],
        stride: usize,
        w: &[i8],
        groups: usize,
        acc: &mut [i32],
        accumulate: bool,
    ) {
        assert!(u.len() >= (ROWS - 1) * stride + groups * DEPTH);
        assert!(w.len() >= groups * COLS * DEPTH && acc.len() == ROWS * COLS);
        if !accumulate {
            acc.fill(0);
        }
        match self {
            Self::Portable => tile_portable(u, stride, w, groups, acc),
            // SAFETY: detect() saw the CPU feature; the asserts above bound every access.
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => unsafe { x86::tile_avx512_vnni(u, stride, w, groups, acc) },
            #[cfg(target_arch = "x86_64")]
            Self::AvxVnni => unsafe { x86::tile_avx_vnni(u, stride, w, groups, acc) },
        }
    }
}

fn tile_portable(u: &[u8], stride: usize, w: &[i8], groups: usize, acc: &mut [i32]) {
    for g in 0..groups {
        let step = &w[g * COLS * DEPTH..][..COLS * DEPTH];
        for r in 0..ROWS {
            let x = &u[r * stride + g * DEPTH..][..DEPTH];
            let out = &mut acc[r * COLS..][..COLS];
            for (sum, lane) in out.iter_mut().zip(step.chunks_exact(DEPTH)) {
                *sum += (0..DEPTH)
                    .map(|t| i32::from(x[t]) * i32::from(lane[t]))
                    .sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{COLS, DEPTH, ROWS};
    use std::arch::x86_64::*;

    /// 4 rows × 64 columns in 16 zmm accumulators; per k-group 4 weight loads, 4 broadcasts.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn tile_avx512_vnni(
        u: &[u8],
        stride: usize,
        w: &[i8],
        groups: usize,
        acc: &mut [i32],
    ) {
        // SAFETY (acc): the caller checked it holds ROWS · COLS values.
        let mut sums: [[__m512i; 4]; ROWS] = core::array::from_fn(|r| {
            core::array::from_fn(|i| unsafe {
                _mm512_loadu_si512(acc.as_ptr().add(r * COLS + i * 16).cast())
            })
        });
        for g in 0..groups {
            // SAFETY (all reads): the caller checked u and w hold every group of the tile.
            let step = unsafe { w.as_ptr().add(g * COLS * DEPTH) };
            let weights: [__m512i; 4] =
                core::array::from_fn(|i| unsafe { _mm512_loadu_si512(step.add(i * 64).cast()) });
            for (r, row) in sums.iter_mut().enumerate() {
                let x = unsafe {
                    u.as_ptr()
                        .add(r * stride + g * DEPTH)
                        .cast::<i32>()
                        .read_unaligned()
                };
                let x = _mm512_set1_epi32(x);
                for (sum, weight) in row.iter_mut().zip(&weights) {
                    *sum = _mm512_dpbusd_epi32(*sum, x, *weight);
                }
            }
        }
        for (r, row) in sums.iter().enumerate() {
            for (i, sum) in row.iter().enumerate() {
                // SAFETY: acc holds ROWS · COLS values.
                unsafe {
                    _mm512_storeu_si512(acc.as_mut_ptr().add(r * COLS + i * 16).cast(), *sum)
                };
            }
        }
    }

    /// AVX-VNNI has 16 ymm registers: the block is done as four passes of 16 columns (8
    /// accumulators each), re-reading the 4 rows of activations from L1.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn tile_avx_vnni(
        u: &[u8],
        stride: usize,
        w: &[i8],
        groups: usize,
        acc: &mut [i32],
    ) {
        for pass in 0..4 {
            // SAFETY (acc): the caller checked it holds ROWS · COLS values.
            let mut sums: [[__m256i; 2]; ROWS] = core::array::from_fn(|r| {
                let at = r * COLS + pass * 16;
                core::array::from_fn(|i| unsafe {
                    _mm256_loadu_si256(acc.as_ptr().add(at + i * 8).cast())
                })
            });
            for g in 0..groups {
                // SAFETY (all reads): the caller checked u and w hold every group of the tile.
                let step = unsafe { w.as_ptr().add(g * COLS * DEPTH + pass * 64) };
                let weights: [__m256i; 2] = core::array::from_fn(|i| unsafe {
                    _mm256_loadu_si256(step.add(i * 32).cast())
                });
                for (r, row) in sums.iter_mut().enumerate() {
                    let x = unsafe {
                        u.as_ptr()
                            .add(r * stride + g * DEPTH)
                            .cast::<i32>()
                            .read_unaligned()
                    };
                    let x = _mm256_set1_epi32(x);
                    for (sum, weight) in row.iter_mut().zip(&weights) {
                        *sum = _mm256_dpbusd_avx_epi32(*sum, x, *weight);
                    }
                }
            }
            for (r, row) in sums.iter().enumerate() {
                for (i, sum) in row.iter().enumerate() {
                    let at = r * COLS + pass * 16 + i * 8;
                    // SAFETY: acc holds ROWS · COLS values.
                    unsafe { _mm256_storeu_si256(acc.as_mut_ptr().add(at).cast(), *sum) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1) (no RNG crate needed).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// A random int8 matrix with per-row scales, as a bundle stores one.
    fn int8_matrix(d_out: usize, d_in: usize, seed: u64) -> (Vec<i8>, Vec<f32>) {
        let q = values(d_out * d_in, seed)
            .iter()
            .map(|v| (v * 127.0).round() as i8)
            .collect();
        let scales = values(d_out, seed + 1)
            .iter()
            .map(|v| 0.01 + v.abs() * 0.02)
            .collect();
        (q, scales)
    }

    /// The same integer arithmetic, in f64, straight from the unpacked matrix.
    fn reference(
        x: &[f32],
        w: &[i8],
        scales: &[f32],
        bias: Option<&[f32]>,
        d_out: usize,
        d_in: usize,
    ) -> Vec<f32> {
        let mut y = Vec::new();
        for row in x.chunks_exact(d_in) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            let q: Vec<f64> = row
                .iter()
                .map(|v| f64::from((v * (1.0 / scale)).round_ties_even().clamp(-127.0, 127.0)))
                .collect();
            for j in 0..d_out {
                let dot: f64 = q
                    .iter()
                    .zip(&w[j * d_in..][..d_in])
                    .map(|(a, &b)| a * f64::from(b))
                    .sum();
                let b = bias.map_or(0.0, |b| f64::from(b[j]));
                y.push((dot * f64::from(scale) * f64::from(scales[j]) + b) as f32);
            }
        }
        y
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_kernel_matches_the_integer_reference_on_odd_shapes() {
        for &(rows, d_in, d_out) in &[
            (1, 1, 1),
            (3, 5, 7),
            (5, 384, 384),
            (9, 37, 130),
            (33, 1536, 64),
            (0, 8, 8),
        ] {
            let (w, scales) = int8_matrix(d_out, d_in, rows as u64 + 3);
            let bias = values(d_out, 11);
            let x = values(rows * d_in, 5);
            let layer = Int8Linear::new(&w, &scales, Some(&bias), d_out, d_in);
            let expected = reference(&x, &w, &scales, Some(&bias), d_out, d_in);
            assert_eq!(layer.forward(&x).len(), rows * d_out);
            for kernel in DotKernel::available() {
                let (u, row_scales) = layer.quantise_rows(&x, rows);
                let mut y = vec![0f32; rows * d_out];
                layer.rows_into(kernel, &u, &row_scales, &mut y);
                // Sums are exact integers; only the final f32 scaling rounds.
                let tolerance = 1e-5 * expected.iter().fold(1f32, |m, v| m.max(v.abs()));
                assert!(
                    max_diff(&y, &expected) <= tolerance,
                    "{kernel:?} {rows}×{d_in}→{d_out}"
                );
            }
        }
    }

    #[test]
    fn it_stays_close_to_the_float_layer() {
        // Dynamic int8 is an approximation: bounded by the activations' 8-bit rounding.
        let (rows, d_in, d_out) = (16, 384, 96);
        let (w, scales) = int8_matrix(d_out, d_in, 1);
        let x = values(rows * d_in, 2);
        let layer = Int8Linear::new(&w, &scales, None, d_out, d_in);
        let mut float = Vec::new();
        for row in x.chunks_exact(d_in) {
            for j in 0..d_out {
                let dot: f32 = row
                    .iter()
                    .zip(&w[j * d_in..][..d_in])
                    .map(|(a, &b)| a * f32::from(b) * scales[j])
                    .sum();
                float.push(dot);
            }
        }
        let scale = float.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_diff(&layer.forward(&x), &float) < 0.02 * scale);
    }

    #[test]
    fn a_zero_row_gives_the_bias() {
        let (w, scales) = int8_matrix(8, 8, 4);
        let bias = values(8, 9);
        let layer = Int8Linear::new(&w, &scales, Some(&bias), 8, 8);
        assert_eq!(layer.forward(&[0.0; 8]), bias);
    }
}
