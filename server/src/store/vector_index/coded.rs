//! The index's first pass: every embedding also kept as `i8` codes (a quarter of the bytes, so
//! a quarter of the memory traffic, which is what bounds a scan of 100,000 rows), and a
//! rigorous interval around each row's exact similarity computed from them. The exact
//! similarity (`vector::dot`, as pgvector computes it) is then computed only for rows whose
//! interval reaches the best row's lower bound: no other row can be the answer or tie with it,
//! so the answer is the exact scan's, to the bit.
//!
//! The interval. With per-vector scales, `q = s_q·q̂ + e_q` and `v = s_v·v̂ + e_v` (codes in
//! -127..=127, `e` the rounding error), so `q·v = s_q·s_v·(q̂·v̂) + q·e_v + e_q·(s_v·v̂)` and by
//! Cauchy–Schwarz `|q·v − s_q·s_v·(q̂·v̂)| ≤ ‖q‖·‖e_v‖ + ‖e_q‖·‖s_v·v̂‖`. `q̂·v̂` is an exact
//! integer. The f32 dot product the exact path computes differs from `q·v` by at most
//! `γ_k·‖q‖·‖v‖` (Higham's bound for `k` roundings per term: one product, the lane's
//! additions, the eight-lane sum; plus an allowance for underflow). All bound arithmetic is
//! f64 with explicit slack for its own rounding. Degenerate vectors (zero, non-finite, norms
//! that under- or overflow f32) get no interval: such rows are always rescored exactly, and
//! such queries scan exactly.

/// What the first pass knows about one vector besides its codes.
#[derive(Debug, Clone, Copy)]
pub struct Coded {
    /// `s`: value = s · code + error.
    pub scale: f64,
    /// Upper bound of ‖e‖.
    pub error: f64,
    /// Upper bound of ‖s · codes‖.
    pub coded_norm: f64,
    /// Upper bound of ‖v‖.
    pub norm: f64,
    /// `1 / sqrt(norm2)`, where `norm2` is the f32 sum of squares the exact path divides by.
    pub inv_sqrt_norm2: f64,
    /// No interval: always compute exactly.
    pub exact_only: bool,
}

/// Relative slack on f64 sums of a few hundred terms (each term's error is below 2^-52).
const F64_SLACK: f64 = 1e-9;
/// The largest code.
const LEVELS: f64 = 127.0;

impl Coded {
    const EXACT_ONLY: Coded = Coded {
        scale: 0.0,
        error: f64::INFINITY,
        coded_norm: f64::INFINITY,
        norm: f64::INFINITY,
        inv_sqrt_norm2: 0.0,
        exact_only: true,
    };

    /// Codes `v` (appended to `codes`, always `v.len()` of them); `norm2` is
    /// `vector::norm2(v)`.
    pub fn code(v: &[f32], norm2: f32, codes: &mut Vec<i8>) -> Coded {
        let max = v.iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
        let healthy = v.iter().all(|x| x.is_finite())
            && norm2.is_finite()
            && norm2 >= f32::MIN_POSITIVE
            && max >= f64::from(f32::MIN_POSITIVE);
        if !healthy {
            codes.extend(std::iter::repeat_n(0, v.len()));
            return Coded::EXACT_ONLY;
        }
        let scale = max / LEVELS;
        let (mut error2, mut coded2, mut value2) = (0.0f64, 0.0f64, 0.0f64);
        for x in v {
            let x = f64::from(*x);
            let code = (x / scale).round().clamp(-LEVELS, LEVELS);
            codes.push(code as i8);
            let coded = code * scale;
            error2 += (x - coded) * (x - coded);
            coded2 += coded * coded;
            value2 += x * x;
        }
        let up = |x: f64| x * (1.0 + F64_SLACK);
        let coded_norm = up(coded2.sqrt());
        Coded {
            scale,
            // `code * scale` is itself rounded: allow for it.
            error: up(error2.sqrt()) + coded_norm * F64_SLACK,
            coded_norm,
            norm: up(value2.sqrt()),
            inv_sqrt_norm2: 1.0 / f64::from(norm2).sqrt(),
            exact_only: false,
        }
    }
}

/// A query ready for the first pass.
pub struct CodedQuery {
    pub codes: Vec<i8>,
    pub coded: Coded,
    /// `γ_k` of the exact path's f32 dot product at this dimension.
    gamma: f64,
    /// Absolute allowance for products that underflow.
    underflow: f64,
}

impl CodedQuery {
    /// None when the query is degenerate: scan exactly.
    pub fn new(query: &[f32], norm2: f32) -> Option<CodedQuery> {
        let mut codes = Vec::with_capacity(query.len());
        let coded = Coded::code(query, norm2, &mut codes);
        if coded.exact_only {
            return None;
        }
        // Roundings a term goes through in `vector::dot`: its product, at most
        // ceil(d / 8) - 1 additions in its lane, the eight-lane sum; generously rounded up.
        let k = query.len().div_ceil(8) as f64 + 16.0;
        let u = f64::powi(2.0, -24);
        Some(CodedQuery {
            codes,
            coded,
            gamma: k * u / (1.0 - k * u),
            underflow: query.len() as f64 * k * f64::powi(2.0, -149),
        })
    }

    /// Bounds of the exact similarity of a row whose integer dot product with the query's
    /// codes is `integer_dot`, clamped as the exact path clamps. None for exact-only rows.
    #[inline]
    pub fn bounds(&self, row: &Coded, integer_dot: i32) -> Option<(f64, f64)> {
        if row.exact_only {
            return None;
        }
        let q = &self.coded;
        let approx = q.scale * row.scale * f64::from(integer_dot);
        let margin = q.norm * row.error
            + q.error * row.coded_norm
            + self.gamma * q.norm * row.norm
            + self.underflow
            + approx.abs() * F64_SLACK;
        let scale = q.inv_sqrt_norm2 * row.inv_sqrt_norm2;
        let (low, high) = ((approx - margin) * scale, (approx + margin) * scale);
        let slack = (low.abs().max(high.abs())) * F64_SLACK + f64::MIN_POSITIVE;
        Some((
            (low - slack).clamp(-1.0, 1.0),
            (high + slack).clamp(-1.0, 1.0),
        ))
    }
}

/// `q̂ · v̂` for every row of `codes` (rows of `query.len()` codes) into `out`. Integer sums
/// are exact in any order, so the CPU's widest vectors may be used without changing a result.
pub fn integer_dots(query: &[i8], codes: &[i8], out: &mut Vec<i32>) {
    out.clear();
    out.resize(codes.len() / query.len().max(1), 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { integer_dots_avx2(query, codes, out) };
        return;
    }
    integer_dots_portable(query, codes, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn integer_dots_avx2(query: &[i8], codes: &[i8], out: &mut [i32]) {
    integer_dots_portable(query, codes, out);
}

/// Inlined into each caller, so the AVX2 caller's copy is compiled for AVX2.
#[inline(always)]
fn integer_dots_portable(query: &[i8], codes: &[i8], out: &mut [i32]) {
    if query.is_empty() {
        return;
    }
    for (row, dot) in codes.chunks_exact(query.len()).zip(out.iter_mut()) {
        // 127 · 127 · 2000 dimensions stays far below 2^31.
        *dot = query
            .iter()
            .zip(row)
            .map(|(a, b)| i32::from(*a) * i32::from(*b))
            .sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vector;

    /// A small deterministic generator with many magnitudes.
    fn values(seed: &mut u64, n: usize, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * spread
            })
            .collect()
    }

    #[test]
    fn the_exact_similarity_is_always_inside_its_bounds() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for dims in [1, 2, 7, 8, 9, 384, 1000] {
            for round in 0..300 {
                let spread = [1.0, 1e-3, 1e3, 1e-20][round % 4];
                let q = values(&mut seed, dims, spread);
                let mut v = values(&mut seed, dims, spread);
                if round % 3 == 0 {
                    // Near the query: the interesting case.
                    for (x, y) in v.iter_mut().zip(&q) {
                        *x = *x * 0.01 + y;
                    }
                }
                let (qn, vn) = (vector::norm2(&q), vector::norm2(&v));
                let exact = vector::similarity(vector::dot(&q, &v), qn, vn);
                let Some(query) = CodedQuery::new(&q, qn) else {
                    continue;
                };
                let mut codes = Vec::new();
                let row = Coded::code(&v, vn, &mut codes);
                let mut dot = Vec::new();
                integer_dots(&query.codes, &codes, &mut dot);
                let Some((low, high)) = query.bounds(&row, dot[0]) else {
                    continue;
                };
                assert!(
                    low <= exact && exact <= high,
                    "{dims} dims: {low} <= {exact} <= {high}"
                );
                if spread == 1.0 && dims >= 8 {
                    assert!(high - low < 0.2, "useful bounds: {low}..{high}");
                }
            }
        }
    }

    #[test]
    fn degenerate_vectors_have_no_interval() {
        let mut codes = Vec::new();
        for v in [
            vec![0.0f32; 4],
            vec![f32::NAN, 1.0, 0.0, 0.0],
            vec![f32::INFINITY, 1.0, 0.0, 0.0],
            vec![1e30f32, 1e30, 0.0, 0.0], // the sum of squares overflows
            vec![1e-30f32, 0.0, 0.0, 0.0], // ... underflows
        ] {
            assert!(
                Coded::code(&v, vector::norm2(&v), &mut codes).exact_only,
                "{v:?}"
            );
            assert!(CodedQuery::new(&v, vector::norm2(&v)).is_none());
        }
        assert_eq!(codes.len(), 20, "always one code per dimension");
    }

    #[test]
    fn integer_dots_agree_with_a_plain_loop() {
        let query: Vec<i8> = (0..37).map(|i| (i * 7 % 255 - 127) as i8).collect();
        let codes: Vec<i8> = (0..37 * 5).map(|i| (i * 13 % 255 - 127) as i8).collect();
        let mut out = Vec::new();
        integer_dots(&query, &codes, &mut out);
        let plain: Vec<i32> = codes
            .chunks(37)
            .map(|row| {
                row.iter()
                    .zip(&query)
                    .map(|(a, b)| i32::from(*a) * i32::from(*b))
                    .sum()
            })
            .collect();
        assert_eq!(out, plain);
    }
}
