//! Dense linear algebra shared by the certified passes and the f32 kernels: ONE matrix
//! product wrapper ([`matmul`], in the style of faer's `matmul(dst, lhs, rhs, ...)`) over
//! the `gemm` crate, and the non-negative least-squares solver of the KKT multipliers
//! ([`nnls_gram`]).
//!
//! What the certified error bounds assume of [`matmul`] (proofs/forward.md, "What is
//! assumed"): `gemm` is a classical blocked (BLIS-style) product, so every output entry is a
//! sum of exactly its `k` products `a_ip b_pj`, each rounded once (or fused into an FMA), in
//! some order; no Strassen-like scheme and no reduced-precision accumulation for `f32`/`f64`.
//! Higham's bound `|fl(aᵀb) − aᵀb| ≤ γ_k |a|ᵀ|b| + k·η` holds for any such order. With
//! [`Par::Rayon`] `gemm` splits only the output (rows/columns of `C`), never the reduction
//! dimension, so each output is summed in an order fixed by the shapes and the thread count.

/// The scalars [`matmul`] runs in: binary32 and binary64 only (the certified bounds are
/// proved for IEEE round-to-nearest in these two formats).
pub trait Scalar: Copy + 'static + sealed::Sealed {
    /// `0` (exact).
    const ZERO: Self;
    /// `1` (exact).
    const ONE: Self;
}

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

mod sealed {
    /// Only `f32` and `f64` implement [`super::Scalar`].
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A read-only strided `rows × cols` matrix view: element `(i, j)` is
/// `data[i·row_stride + j·col_stride]`.
///
/// Invariant (checked by every constructor): every element of the view lies inside `data`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A view with explicit strides. Panics if an element falls outside `data` (an internal
    /// bug: callers size every buffer from a validated plan).
    pub fn from_strided(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert!(
            rows == 0
                || cols == 0
                || (rows - 1) * row_stride + (cols - 1) * col_stride < data.len(),
            "matrix view of {rows} x {cols} (strides {row_stride}, {col_stride}) over {} values",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The row-major `rows × cols` matrix stored in `data`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::from_strided(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub fn transpose(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A mutable row-major `rows × cols` matrix view with row stride `row_stride ≥ cols`.
///
/// Invariant (checked by the constructors): every element lies inside `data`.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// Rows of `cols` values, `row_stride` apart. Panics if the view does not fit `data`.
    pub fn with_row_stride(data: &'a mut [T], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            row_stride >= cols,
            "row stride {row_stride} below {cols} columns"
        );
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * row_stride + cols <= data.len(),
            "output view of {rows} x {cols} (stride {row_stride}) over {} values",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride,
        }
    }

    /// The row-major `rows × cols` matrix stored in `data`.
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        Self::with_row_stride(data, rows, cols, cols)
    }
}

/// Whether [`matmul`] overwrites or adds to its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accum {
    /// `C = A·B` (the old contents of `C` are never read).
    Replace,
    /// `C += A·B`.
    Add,
}

/// Threads [`matmul`] may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// The calling thread only.
    Seq,
    /// Up to this many threads of the global rayon pool (the output is split, never the
    /// reduction dimension).
    Rayon(usize),
}

/// `dst = lhs · rhs` ([`Accum::Replace`]) or `dst += lhs · rhs` ([`Accum::Add`]) through the
/// `gemm` crate (see the module documentation for what the certified bounds assume of it).
///
/// Panics when the shapes disagree (an internal bug, never user data).
pub fn matmul<T: Scalar>(
    dst: MatMut<'_, T>,
    accum: Accum,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    par: Par,
) {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    assert!(
        rhs.rows == k && dst.rows == m && dst.cols == n,
        "matmul of {m} x {k} by {} x {n} into {} x {}",
        rhs.rows,
        dst.rows,
        dst.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    let ld = dst.row_stride;
    if k == 0 {
        if accum == Accum::Replace {
            for r in 0..m {
                dst.data[r * ld..r * ld + n].fill(T::ZERO);
            }
        }
        return;
    }
    let par = match par {
        Par::Seq => gemm::Parallelism::None,
        Par::Rayon(t) => gemm::Parallelism::Rayon(t),
    };
    // SAFETY: the view constructors proved that every element the product reads,
    // `lhs.data[i·rs + p·cs]` (i < m, p < k) and `rhs.data[p·rs + j·cs]` (p < k, j < n), and
    // every element it writes, `dst.data[i·ld + j]` (i < m, j < n), lies inside its slice, and
    // the assert above that the shapes agree. `dst` borrows its slice mutably, so it aliases
    // neither operand. With `read_dst == false` gemm never reads `dst` (and ignores `alpha`).
    // Strides index existing slices, so they fit in isize.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            ld as isize,
            accum == Accum::Add,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        );
    }
}

/// Non-negative least squares on the normal equations (Lawson–Hanson active set):
/// minimises `½ xᵀ K x − bᵀ x` over `x ≥ 0`, i.e. `‖t − G x‖²` with `K = GᵀG`, `b = Gᵀt`.
/// `k` is the symmetric `m × m` Gram matrix, row-major. Plain f64: the result is only a
/// choice of multipliers, certified afterwards. Stops after `max_iter` outer iterations.
pub fn nnls_gram(k: &[f64], b: &[f64], m: usize, max_iter: usize) -> Vec<f64> {
    let mut x = vec![0.0; m];
    if m == 0 {
        return x;
    }
    let mut passive = vec![false; m];
    let scale = b.iter().fold(0.0f64, |a, v| a.max(v.abs()))
        + (0..m).fold(0.0f64, |a, i| a.max(k[i * m + i]));
    let tol = 1e-13 * scale.max(f64::MIN_POSITIVE);
    for _ in 0..max_iter {
        let w: Vec<f64> = (0..m)
            .map(|i| b[i] - (0..m).map(|j| k[i * m + j] * x[j]).sum::<f64>())
            .collect();
        let cand = (0..m)
            .filter(|&i| !passive[i])
            .max_by(|&i, &j| w[i].total_cmp(&w[j]));
        let Some(j) = cand else { break };
        if w[j] <= tol {
            break;
        }
        passive[j] = true;
        for _ in 0..=m {
            let p: Vec<usize> = (0..m).filter(|&i| passive[i]).collect();
            if p.is_empty() {
                break;
            }
            let z = solve_spd(k, b, m, &p);
            if p.iter().zip(&z).all(|(_, &zi)| zi > 0.0) {
                x.iter_mut().for_each(|v| *v = 0.0);
                for (&i, &zi) in p.iter().zip(&z) {
                    x[i] = zi;
                }
                break;
            }
            let mut alpha = f64::INFINITY;
            for (&i, &zi) in p.iter().zip(&z) {
                if zi <= 0.0 {
                    let d = x[i] - zi;
                    if d > 0.0 {
                        alpha = alpha.min(x[i] / d);
                    } else {
                        alpha = 0.0;
                    }
                }
            }
            let alpha = alpha.clamp(0.0, 1.0);
            for (&i, &zi) in p.iter().zip(&z) {
                x[i] += alpha * (zi - x[i]);
                if x[i] <= 1e-300 || (zi <= 0.0 && x[i] <= tol * 1e-3) {
                    x[i] = 0.0;
                    passive[i] = false;
                }
            }
        }
    }
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// Solves `K_PP z = b_P` by Cholesky, with a small ridge if `K_PP` is not numerically
/// positive definite.
fn solve_spd(k: &[f64], b: &[f64], m: usize, p: &[usize]) -> Vec<f64> {
    let s = p.len();
    let diag_max = p.iter().fold(0.0f64, |a, &i| a.max(k[i * m + i]));
    let mut ridge = 0.0;
    loop {
        let mut l = vec![0.0; s * s];
        let mut ok = true;
        for i in 0..s {
            for j in 0..=i {
                let mut v =
                    k[p[i] * m + p[j]] - (0..j).map(|t| l[i * s + t] * l[j * s + t]).sum::<f64>();
                if i == j {
                    v += ridge;
                    if v <= 0.0 || !v.is_finite() {
                        ok = false;
                        break;
                    }
                    l[i * s + i] = v.sqrt();
                } else {
                    l[i * s + j] = v / l[j * s + j];
                }
            }
            if !ok {
                break;
            }
        }
        if ok {
            let mut y = vec![0.0; s];
            for i in 0..s {
                y[i] = (b[p[i]] - (0..i).map(|t| l[i * s + t] * y[t]).sum::<f64>()) / l[i * s + i];
            }
            let mut z = vec![0.0; s];
            for i in (0..s).rev() {
                z[i] = (y[i] - (i + 1..s).map(|t| l[t * s + i] * z[t]).sum::<f64>()) / l[i * s + i];
            }
            return z;
        }
        ridge = if ridge == 0.0 {
            1e-14 * diag_max.max(f64::MIN_POSITIVE)
        } else {
            ridge * 100.0
        };
        if !ridge.is_finite() || ridge > diag_max.max(1.0) * 1e6 {
            return vec![0.0; s];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_solves_a_small_problem_with_an_active_bound() {
        // G = I (2x2), t = (1, -1): the NNLS solution is (1, 0).
        let k = [1.0, 0.0, 0.0, 1.0];
        let x = nnls_gram(&k, &[1.0, -1.0], 2, 20);
        assert_eq!(x, vec![1.0, 0.0]);
        // G = [[1, 1], [0, 1]] columns g1 = (1, 0), g2 = (1, 1); t = (2, 1) = g1 + g2.
        let k = [1.0, 1.0, 1.0, 2.0];
        let b = [2.0, 3.0];
        let x = nnls_gram(&k, &b, 2, 20);
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn matmul_matches_a_naive_product_in_every_layout() {
        // Small integers: every product and sum is exact, so any order gives the same bits.
        let (m, n, k) = (3, 4, 5);
        let a: Vec<f64> = (0..m * k).map(|v| (v % 7) as f64 - 3.0).collect();
        let b: Vec<f64> = (0..k * n).map(|v| (v % 5) as f64 - 2.0).collect();
        let mut want = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        let mut c = vec![f64::NAN; m * n];
        let lhs = MatRef::row_major(&a, m, k);
        matmul(
            MatMut::row_major(&mut c, m, n),
            Accum::Replace,
            lhs,
            MatRef::row_major(&b, k, n),
            Par::Seq,
        );
        assert_eq!(c, want);
        // Bᵀ stored row-major [n, k], read through a transposed view.
        let bt: Vec<f64> = (0..n * k).map(|v| b[(v % k) * n + v / k]).collect();
        let rhs = MatRef::row_major(&bt, n, k).transpose();
        matmul(
            MatMut::row_major(&mut c, m, n),
            Accum::Add,
            lhs,
            rhs,
            Par::Rayon(2),
        );
        assert_eq!(c, want.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    }
}
