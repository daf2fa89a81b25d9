//! f32 GEMM throughput at the guard's layer shapes ([rows, in] · [in, out]): the `gemm` crate
//! as burn-flex calls it (row-major, rayon over all cores) against OpenBLAS's `cblas_sgemm`
//! with as many threads, best of three timed loops each, interleaved so both see the same load.

use std::time::Instant;

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

struct Problem {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Problem {
    fn gemm_crate(&self, c: &mut [f32]) {
        let (m, n, k) = (self.m, self.n, self.k);
        // SAFETY: a is m×k, b is k×n, c is m×n, all row-major and exactly that long.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                1,
                k as isize,
                self.b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        }
    }

    fn openblas(&self, c: &mut [f32]) {
        let (m, n, k) = (self.m as i32, self.n as i32, self.k as i32);
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
                0.0,
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

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a plain setter of OpenBLAS's thread count.
    unsafe { openblas_set_num_threads(threads as i32) };
    println!("| m × k · k × n | gemm crate GFLOP/s | OpenBLAS GFLOP/s | gemm ÷ OpenBLAS time |");
    println!("|---|---|---|---|");
    for (m, n, k) in SHAPES {
        let problem = Problem {
            m,
            n,
            k,
            a: (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect(),
            b: (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect(),
        };
        let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
        let flops = 2.0 * (m * n * k) as f64;
        let reps = ((2e10 / flops) as usize).clamp(3, 200);
        let gemm_s = best_of_three(reps, || problem.gemm_crate(&mut c1));
        let blas_s = best_of_three(reps, || problem.openblas(&mut c2));
        let differ = c1
            .iter()
            .zip(&c2)
            .any(|(x, y)| (x - y).abs() > 1e-4 * (1.0 + y.abs()));
        assert!(!differ, "the two GEMMs disagree at {m}×{k}·{k}×{n}");
        println!(
            "| {m} × {k} · {k} × {n} | {:.1} | {:.1} | {:.2} |",
            flops / gemm_s / 1e9,
            flops / blas_s / 1e9,
            gemm_s / blas_s
        );
    }
}
