//! f32 GEMM throughput at the guard's layer shapes ([rows, in] · [in, out]): the `gemm` crate
//! as burn-flex calls it (row-major, rayon over all cores) against OpenBLAS's `cblas_sgemm`
//! with as many threads, best of three timed loops each, interleaved so both see the same load.
//! First it measures the machine's f32 peak: a loop of nothing but independent fused
//! multiply-adds on registers (AVX-512 where the CPU has it, else AVX2), on one thread and on
//! every core at once, which is what a GEMM's share of the peak is stated against. Last, it
//! runs MiniLM's six layers in turn, each product with its own weights, as `harmaug score`
//! meets them (a product repeated on the same operands finds them in cache; a model does not),
//! with the gemm crate also split by columns by hand.

use std::time::Instant;

use gemm::Parallelism;

/// An output pointer shared by the threads that write disjoint columns of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the threads write disjoint elements.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `offset` values on.
    ///
    /// # Safety
    /// `offset` lies inside the output.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.0.add(offset) }
    }
}

unsafe extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
    fn openblas_set_num_threads(threads: i32);
}

const ROW_MAJOR: i32 = 101;
const NO_TRANSPOSE: i32 = 111;

/// (m, n, k): MiniLM's projections and feed-forward at 2,048 and 128 token rows, and
/// DeBERTa-v3-large's at 4,096.
const SHAPES: [(usize, usize, usize); 7] = [
    (2048, 1536, 384),
    (2048, 384, 1536),
    (2048, 384, 384),
    (128, 384, 384),
    (128, 1536, 384),
    (4096, 1024, 1024),
    (4096, 4096, 1024),
];

/// One product's operands, row-major: `a` is m×k, `b` is k×n.
#[derive(Clone, Copy)]
struct Problem<'a> {
    m: usize,
    n: usize,
    k: usize,
    a: &'a [f32],
    b: &'a [f32],
}

impl Problem<'_> {
    /// a, b and c hold at least the m×k, k×n and m×n values every engine reads and writes.
    fn assert_fits(&self, c: &[f32]) {
        assert!(self.a.len() >= self.m * self.k && self.b.len() >= self.k * self.n);
        assert!(c.len() >= self.m * self.n);
    }

    /// `c = a·b`, or `c += a·b` with `accumulate` (c holding bias rows, as core's linear
    /// kernel writes them), gemm splitting it over rayon's pool itself.
    fn gemm_crate(&self, c: &mut [f32], accumulate: bool) {
        self.assert_fits(c);
        // SAFETY: a is m×k, b is k×n, c is m×n, all row-major and at least that long.
        unsafe { self.columns(c.as_mut_ptr(), 0..self.n, accumulate, Parallelism::Rayon(0)) }
    }

    /// As [`Self::gemm_crate`], split by columns: one single-threaded gemm call per half of the
    /// columns, each packing only its half of the weights. Faster here at few rows, but not in
    /// `harmaug score` (tried in core on 2026-12-02 and not kept, docs/BENCHMARKS.md).
    fn gemm_crate_by_columns(&self, c: &mut [f32], accumulate: bool) {
        self.assert_fits(c);
        let half = self.n.div_ceil(2).next_multiple_of(16).min(self.n);
        let out = Out(c.as_mut_ptr());
        // SAFETY: as above; the two calls write disjoint columns of c.
        rayon::join(
            || unsafe { self.columns(out.at(0), 0..half, accumulate, Parallelism::None) },
            || unsafe { self.columns(out.at(half), half..self.n, accumulate, Parallelism::None) },
        );
    }

    /// gemm on `columns` of b into c's same columns, whose first is at `c`.
    ///
    /// # Safety
    /// a, b and c hold the m×k, k×n and m×n row-major values read and written.
    unsafe fn columns(
        &self,
        c: *mut f32,
        columns: std::ops::Range<usize>,
        accumulate: bool,
        parallelism: Parallelism,
    ) {
        let (m, n, k) = (self.m, self.n, self.k);
        // SAFETY: the caller's.
        unsafe {
            gemm::gemm(
                m,
                columns.len(),
                k,
                c,
                1,
                n as isize,
                accumulate,
                self.a.as_ptr(),
                1,
                k as isize,
                self.b.as_ptr().add(columns.start),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    }

    fn openblas(&self, c: &mut [f32], accumulate: bool) {
        self.assert_fits(c);
        let (m, n, k) = (self.m as i32, self.n as i32, self.k as i32);
        let beta = if accumulate { 1.0 } else { 0.0 };
        // SAFETY: as above; OpenBLAS reads and writes only within those extents.
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                NO_TRANSPOSE,
                NO_TRANSPOSE,
                m,
                n,
                k,
                1.0,
                self.a.as_ptr(),
                k,
                self.b.as_ptr(),
                n,
                beta,
                c.as_mut_ptr(),
                n,
            )
        }
    }
}

/// Seconds per call: the best of three loops of `reps` calls.
fn best_of_three(reps: usize, mut run: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                run();
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::MAX, f64::min)
}

/// Rounds of the FMA loop per measurement and thread: ~0.1 s at these machines' clocks.
const PEAK_ROUNDS: usize = 8_000_000;

/// f32 FLOP/s of the FMA loop on each of `threads` threads at once, best of three.
fn peak_flops(threads: usize) -> f64 {
    let rounds = std::hint::black_box(PEAK_ROUNDS);
    let flops_each = fma_loop(1).1 * rounds as f64;
    let seconds = best_of_three(1, || {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| std::hint::black_box(fma_loop(rounds)));
            }
        })
    });
    threads as f64 * flops_each / seconds
}

/// `rounds` of independent vector FMAs (one per accumulator, so neither their latency nor
/// memory limits the loop) on the widest vector unit, AVX-512 or else AVX2: (a checksum that
/// keeps the work, FLOPs per round).
fn fma_loop(rounds: usize) -> (f32, f64) {
    // SAFETY: each version runs only where the CPU has its features (checked here).
    unsafe {
        if is_x86_feature_detected!("avx512f") {
            (fma::avx512(rounds), 16.0 * 16.0 * 2.0)
        } else {
            assert!(is_x86_feature_detected!("fma"), "no FMA unit to measure");
            (fma::avx2(rounds), 12.0 * 8.0 * 2.0)
        }
    }
}

/// Opaque multipliers with no fixed point: with 0.999·1 + 0.001 = 1 the compiler folded the
/// loop away.
mod fma {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// 16 accumulators: 8 would cover 2 FMA units × 4 cycles of latency; more than 16 made the
    /// compiler spill.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(rounds: usize) -> f32 {
        let (b, c) = black_box((_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(1e-7)));
        let mut acc = black_box([_mm512_set1_ps(1.0); 16]);
        for _ in 0..rounds {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
    }

    /// 12 accumulators: AVX2 has 16 registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(rounds: usize) -> f32 {
        let (b, c) = black_box((_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(1e-7)));
        let mut acc = black_box([_mm256_set1_ps(1.0); 12]);
        for _ in 0..rounds {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|a| {
                // SAFETY: 8 lanes into 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "f32 peak (FMA loop): {:.1} GFLOP/s on 1 thread, {:.1} GFLOP/s on {threads}\n",
        peak_flops(1) / 1e9,
        peak_flops(threads) / 1e9
    );
    // SAFETY: a plain setter of OpenBLAS's thread count.
    unsafe { openblas_set_num_threads(threads as i32) };
    println!("| m × k · k × n | gemm crate GFLOP/s | OpenBLAS GFLOP/s | gemm ÷ OpenBLAS time |");
    println!("|---|---|---|---|");
    for (m, n, k) in SHAPES {
        let (a, b) = (values(m * k, 7), values(k * n, 5));
        let problem = Problem {
            m,
            n,
            k,
            a: &a,
            b: &b,
        };
        let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
        let flops = 2.0 * (m * n * k) as f64;
        let reps = ((2e10 / flops) as usize).clamp(3, 200);
        let gemm_s = best_of_three(reps, || problem.gemm_crate(&mut c1, false));
        let blas_s = best_of_three(reps, || problem.openblas(&mut c2, false));
        assert_agree(&c1, &c2, [m, n, k]);
        println!(
            "| {m} × {k} · {k} × {n} | {:.1} | {:.1} | {:.2} |",
            flops / gemm_s / 1e9,
            flops / blas_s / 1e9,
            gemm_s / blas_s
        );
    }
    layer_sequence();
}

/// `n` values that repeat every `period` (exact in f32 products of these sizes).
fn values(n: usize, period: usize) -> Vec<f32> {
    (0..n).map(|i| (i % period) as f32 * 0.1).collect()
}

fn assert_agree(c1: &[f32], c2: &[f32], [m, n, k]: [usize; 3]) {
    let differ = c1
        .iter()
        .zip(c2)
        .any(|(x, y)| (x - y).abs() > 1e-4 * (1.0 + y.abs()));
    assert!(!differ, "the two GEMMs disagree at {m}×{k}·{k}×{n}");
}

/// A MiniLM layer's products as (k, n): query, key, value and output projections, then the
/// feed-forward block up and down.
const LAYER: [(usize, usize); 6] = [
    (384, 384),
    (384, 384),
    (384, 384),
    (384, 384),
    (384, 1536),
    (1536, 384),
];

/// Token rows: a batch of 32 of the benchmark's prompts (1,744 on average, sorted by length)
/// and one prompt (56).
const SEQUENCE_ROWS: [usize; 2] = [1744, 56];

/// The products of MiniLM's six layers in turn, as `harmaug score` meets them: 36 distinct
/// weight matrices (42 MB, so each comes from L3 rather than from a cache the same product
/// left warm, which the table above measures), each product accumulated into bias rows
/// written just before it, as core's linear kernel does. GFLOP/s over the whole sequence.
fn layer_sequence() {
    let weights: Vec<Vec<f32>> = (0..6)
        .flat_map(|layer| LAYER.map(|(k, n)| values(k * n, 5 + layer)))
        .collect();
    let bias: Vec<f32> = values(1536, 3);
    println!(
        "\n| six MiniLM layers (36 weight matrices), rows | gemm crate GFLOP/s | gemm crate, split by columns | OpenBLAS GFLOP/s |"
    );
    println!("|---|---|---|---|");
    for m in SEQUENCE_ROWS {
        let x = values(m * 1536, 7);
        let mut out = vec![0f32; m * 1536];
        let products: Vec<Problem<'_>> = weights
            .iter()
            .zip(LAYER.iter().cycle())
            .map(|(b, &(k, n))| Problem { m, n, k, a: &x, b })
            .collect();
        let flops: f64 = products
            .iter()
            .map(|p| 2.0 * (p.m * p.n * p.k) as f64)
            .sum();
        let reps = ((2e10 / flops) as usize).clamp(1, 200);
        let mut run = |engine: usize| {
            for p in &products {
                let c = &mut out[..m * p.n];
                c.chunks_exact_mut(p.n)
                    .for_each(|row| row.copy_from_slice(&bias[..p.n]));
                match engine {
                    0 => p.gemm_crate(c, true),
                    1 => p.gemm_crate_by_columns(c, true),
                    _ => p.openblas(c, true),
                }
            }
        };
        let seconds = [0, 1, 2].map(|engine| best_of_three(reps, || run(engine)));
        let [gemm, by_columns, blas] = seconds.map(|s| flops / s / 1e9);
        println!("| {m} | {gemm:.1} | {by_columns:.1} | {blas:.1} |");
    }
}
