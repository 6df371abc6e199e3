//! Embeddings as the stores keep them, and cosine similarity computed the way pgvector does, so
//! that SQLite's exact search and PostgreSQL's agree on where a threshold falls.

/// The key in `cache_meta` under which the semantic table's dimension is recorded.
pub const DIMENSIONS_KEY: &str = "semantic_dimensions";

/// Little-endian f32s, 4 bytes each: how SQLite stores an embedding.
pub fn to_le_bytes(vector: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// pgvector's text form, `[1,2.5,-3]`. Rust prints the shortest text that parses back to the
/// same f32, so PostgreSQL stores exactly the vector given.
pub fn to_pgvector_text(vector: &[f32]) -> String {
    let mut out = String::with_capacity(vector.len() * 10 + 2);
    out.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&x.to_string());
    }
    out.push(']');
    out
}

/// Independent partial sums: the compiler keeps them in SIMD lanes (pgvector's C is compiled
/// with `-fassociative-math` to the same effect). Sums of exactly representable products are
/// exact in any order, so such similarities agree with pgvector's to the bit.
const LANES: usize = 8;

/// Cosine similarity as pgvector's `1 - (a <=> b)`: sums in f32, the division in f64, the
/// result kept within [-1, 1]. `query_norm2` is the query's sum of squares, computed once;
/// `stored` is little-endian f32s.
pub fn cosine_le_bytes(query: &[f32], query_norm2: f32, stored: &[u8]) -> f64 {
    let (dot, norm2) = dot_and_norm(query, |i| {
        f32::from_le_bytes([
            stored[4 * i],
            stored[4 * i + 1],
            stored[4 * i + 2],
            stored[4 * i + 3],
        ])
    });
    finish(dot, query_norm2, norm2)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (dot, nb) = dot_and_norm(a, |i| b[i]);
    finish(dot, norm2(a), nb)
}

pub fn norm2(v: &[f32]) -> f32 {
    dot_and_norm(v, |i| v[i]).1
}

/// The dot product of two contiguous vectors of equal length, summed in the same lanes and
/// order as [`cosine_le_bytes`] sums its dot product, so that
/// `similarity(dot(q, v), norm2(q), norm2(v))` equals `cosine_le_bytes(q, norm2(q), bytes(v))`
/// to the bit. SQLite's in-memory index (`vector_index.rs`) scans with it.
///
/// A hand-written loop rather than a SIMD crate on purpose: those reorder or fuse (FMA) the
/// arithmetic, and a similarity one ulp away from pgvector's moves where a threshold falls.
/// Rust never contracts `a * b + c` into an FMA, and `chunks_exact` lets the compiler keep the
/// lanes in SIMD registers without bounds checks.
#[inline]
pub fn dot(q: &[f32], v: &[f32]) -> f32 {
    debug_assert_eq!(q.len(), v.len());
    let mut acc = [0.0f32; LANES];
    let (qs, vs) = (q.chunks_exact(LANES), v.chunks_exact(LANES));
    let (q_tail, v_tail) = (qs.remainder(), vs.remainder());
    for (a, b) in qs.zip(vs) {
        for lane in 0..LANES {
            acc[lane] += a[lane] * b[lane];
        }
    }
    for (lane, (a, b)) in q_tail.iter().zip(v_tail).enumerate() {
        acc[lane] += a * b;
    }
    reduce(acc)
}

/// Cosine similarity from a dot product and both sums of squares, finished as
/// [`cosine_le_bytes`] finishes it.
#[inline]
pub fn similarity(dot: f32, query_norm2: f32, norm2: f32) -> f64 {
    finish(dot, query_norm2, norm2)
}

/// The dot product of `q` with `x` and the sum of squares of `x`, for `x` of `q`'s length.
#[inline(always)]
fn dot_and_norm(q: &[f32], x: impl Fn(usize) -> f32) -> (f32, f32) {
    let mut dot = [0.0f32; LANES];
    let mut norm = [0.0f32; LANES];
    let whole = q.len() / LANES * LANES;
    for base in (0..whole).step_by(LANES) {
        for lane in 0..LANES {
            let v = x(base + lane);
            dot[lane] += q[base + lane] * v;
            norm[lane] += v * v;
        }
    }
    for i in whole..q.len() {
        let v = x(i);
        dot[i - whole] += q[i] * v;
        norm[i - whole] += v * v;
    }
    (reduce(dot), reduce(norm))
}

/// Sums the lanes, always in the same order.
#[inline(always)]
fn reduce(lanes: [f32; LANES]) -> f32 {
    lanes.iter().sum()
}

fn finish(dot: f32, na: f32, nb: f32) -> f64 {
    let similarity = f64::from(dot) / (f64::from(na) * f64::from(nb)).sqrt();
    if similarity.is_nan() {
        0.0
    } else {
        similarity.clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_exactly() {
        let v = vec![0.1f32, -3.5, 1e-30, 123_456.79, f32::MIN_POSITIVE];
        assert_eq!(from_le_bytes(&to_le_bytes(&v)), v);
        let text = to_pgvector_text(&v);
        let parsed: Vec<f32> = text
            .trim_matches(['[', ']'])
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parsed, v);
    }

    #[test]
    fn dot_then_similarity_equals_the_scan_to_the_bit() {
        // A small deterministic generator: the point is many different roundings.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        for dims in [1, 3, 8, 13, 384] {
            for _ in 0..200 {
                let q: Vec<f32> = (0..dims).map(|_| next()).collect();
                let v: Vec<f32> = (0..dims).map(|_| next() * 3.0).collect();
                let scanned = cosine_le_bytes(&q, norm2(&q), &to_le_bytes(&v));
                let indexed = similarity(dot(&q, &v), norm2(&q), norm2(&v));
                assert_eq!(scanned.to_bits(), indexed.to_bits(), "{dims} dims");
            }
        }
    }

    #[test]
    fn cosine_is_exact_where_the_arithmetic_is() {
        assert_eq!(cosine(&[1.0, 0.0], &[3.0, 4.0]), 0.6);
        assert_eq!(cosine(&[2.0, 0.0], &[2.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[-1.0, 0.0]), -1.0);
        let q = [1.0f32, 0.0];
        assert_eq!(
            cosine_le_bytes(&q, norm2(&q), &to_le_bytes(&[3.0, 4.0])),
            0.6
        );
        assert_eq!(
            cosine(&[0.0, 0.0], &[1.0, 0.0]),
            0.0,
            "a zero vector is similar to nothing"
        );
    }
}
