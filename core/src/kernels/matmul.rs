//! The kernels' matrix products: the `gemm` crate (the GEMM burn-flex itself calls) on slices,
//! each operand read in place through its strides, so transposes and head slices cost no copy.
//! Products split over rayon's pool with the `threads` feature (native builds); in the browser
//! on the calling thread.

/// A matrix read in place: `values[i·row_stride + j·col_stride]` is element (i, j).
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub values: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// Row-major rows of `cols` values.
    pub fn rows(values: &'a [f32], cols: usize) -> Self {
        Self {
            values,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same values read as the transpose.
    pub fn transposed(self) -> Self {
        Self {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

impl View<'_> {
    /// Whether a `rows × cols` read stays inside the slice.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.values.len()
    }
}

/// A row-major output matrix.
pub(super) struct Matrix<'a> {
    pub values: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

/// How [`matmul`] writes its product.
#[derive(Clone, Copy)]
pub(super) struct Product {
    /// The product is multiplied by this.
    pub scale: f32,
    /// Add to the output's values (a bias already there) instead of overwriting them.
    pub accumulate: bool,
    /// Split the product over rayon's pool when it is large (not inside a parallel loop).
    pub parallel: bool,
}

impl Product {
    /// `out = lhs · rhs`, on one thread.
    pub const PLAIN: Self = Self {
        scale: 1.0,
        accumulate: false,
        parallel: false,
    };

    /// `out = scale · lhs · rhs`, on one thread.
    pub const fn scaled(scale: f32) -> Self {
        Self {
            scale,
            ..Self::PLAIN
        }
    }
}

/// Products below this many multiply-adds stay on one thread. burn-flex splits from 192³; a
/// one-text batch's projections (~60 tokens × 384 × 384) are below that, and splitting them
/// from 64³ scored batch 1 9–22% faster in two alternating runs (docs/BENCHMARKS.md).
const PARALLEL_MIN_WORK: usize = 64 * 64 * 64;

#[cfg(feature = "threads")]
fn parallelism(split: bool) -> gemm::Parallelism {
    match split {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    }
}

/// No thread pool in the browser.
#[cfg(not(feature = "threads"))]
fn parallelism(_: bool) -> gemm::Parallelism {
    gemm::Parallelism::None
}

/// `out (+)= scale · lhs · rhs`, `inner` being the shared dimension.
pub(super) fn matmul(out: Matrix<'_>, lhs: View<'_>, rhs: View<'_>, inner: usize, how: Product) {
    let (m, n) = (out.rows, out.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * out.row_stride + n <= out.values.len(),
        "output inside its slice"
    );
    // SAFETY: the assert above bounds every element written; `out` is borrowed mutably, so
    // nothing else reads or writes it meanwhile.
    unsafe {
        matmul_into(
            out.values.as_mut_ptr(),
            [m, n, out.row_stride],
            lhs,
            rhs,
            inner,
            how,
        )
    }
}

/// [`matmul`] into the `rows × cols` block at `out`, rows `row_stride` apart: for products
/// that write disjoint blocks of one buffer from several threads at once (attention's heads).
///
/// # Safety
/// Every element of the block lies in one live allocation, and no other thread reads or writes
/// any of them during the call.
pub(super) unsafe fn matmul_into(
    out: *mut f32,
    [m, n, row_stride]: [usize; 3],
    lhs: View<'_>,
    rhs: View<'_>,
    inner: usize,
    how: Product,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        lhs.fits(m, inner) && rhs.fits(inner, n),
        "operands inside their slices"
    );
    let parallelism = parallelism(how.parallel && m * n * inner >= PARALLEL_MIN_WORK);
    // SAFETY: the assert above bounds every element gemm reads; the caller, every element it
    // writes.
    unsafe {
        gemm::gemm(
            m,
            n,
            inner,
            out,
            1,
            row_stride as isize,
            how.accumulate,
            lhs.values.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.values.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            how.scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A new `[rows, cols]` matrix `lhs · rhs`, written as `how` says (`accumulate` aside: the
/// matrix starts at zero).
pub(super) fn product(
    [rows, cols]: [usize; 2],
    lhs: View<'_>,
    rhs: View<'_>,
    inner: usize,
    how: Product,
) -> Vec<f32> {
    let mut values = vec![0f32; rows * cols];
    let out = Matrix {
        values: &mut values,
        rows,
        cols,
        row_stride: cols,
    };
    matmul(out, lhs, rhs, inner, how);
    values
}
