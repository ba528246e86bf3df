//! The single-precision matrix product every dense and conv kernel goes through.
//!
//! Backend: [`crate::linalg::matmul`], the crate's one wrapper of the `gemm` crate (measured
//! faster than `matrixmultiply` on the dev machine, see the crate report in
//! `benches/train.rs`). Products big enough to pay for it use the global
//! rayon pool; `gemm` splits only the output (rows/columns of `C`), never the reduction
//! dimension, so each output element is summed in a fixed order that depends only on the
//! shapes and the thread count: results are bit-reproducible run to run.

use crate::linalg::{Accum, MatMut, MatRef, Par, matmul};

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major view (`rs = cols`, `cs = 1`).
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major `[rows, cols]` matrix stored in `data`: a `[cols, rows]`
    /// view.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// Products with fewer multiply-adds than this run on the calling thread only.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `C[m, n] = A[m, k] · B[k, n]` (or `C += A · B` when `accumulate`), `C` row-major with
/// row stride `ldc`.
///
/// Panics if a view is too short for its shape (an internal bug, never user data: callers
/// size every buffer from the validated plan).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    // The views below check that every element of each operand and of `c` is in bounds.
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && m * n * k >= PARALLEL_MIN_FLOPS {
        Par::Rayon(threads)
    } else {
        Par::Seq
    };
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    matmul(
        MatMut::with_row_stride(c, m, n, ldc),
        accum,
        MatRef::from_strided(a.data, m, k, a.rs, a.cs),
        MatRef::from_strided(b.data, k, n, b.rs, b.cs),
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] +=
                        a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, n, k) = (37, 23, 51);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        for (av, bv) in [
            (Mat::rows(&a, k), Mat::rows(&b, n)),
            (Mat::t(&a, m), Mat::t(&b, k)),
        ] {
            let want = naive(m, n, k, av, bv);
            let mut c = vec![1.0f32; m * n];
            sgemm(m, n, k, av, bv, &mut c, n, false);
            for (x, y) in c.iter().zip(&want) {
                // Inputs are multiples of 1/32 with small sums: exact in f32.
                assert_eq!(*x as f64, *y);
            }
            sgemm(m, n, k, av, bv, &mut c, n, true);
            for (x, y) in c.iter().zip(&want) {
                assert_eq!(*x as f64, 2.0 * *y);
            }
        }
    }
}
