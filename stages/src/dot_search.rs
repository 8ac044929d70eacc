//! Fused "dot product + top-k" search: for each query row, the key rows with the largest score
//! `query · key − bias[key]`, best first, ties to the lower key index (as `numpy.argmax`), without
//! ever writing the query × key score matrix.
//!
//! Cosine matching uses it with unit rows and no bias; k-means assignment with the centroids as
//! keys and `bias = ‖c‖² / 2` (the largest `x·c − ‖c‖²/2` is the smallest `‖x − c‖²`).
//!
//! On x86-64 with AVX-512 a register-blocked kernel computes 32 queries × 12 keys at a time
//! (the queries packed feature-major once per [`Queries`], the keys once per search in tiles of
//! 12) and compares each tile of scores with a per-query threshold in registers: only a score
//! that can enter a query's top-k is looked at one by one. Many keys are split into one
//! contiguous range per thread, so that the threads share the work evenly whatever the number
//! of queries, and the ranges' lists are merged in key order: the result is the same for any
//! split (a query that meets a NaN score is searched again over every key in order).
//! Elsewhere the same search runs block by block through `gemm` ([`crate::linalg::matmul_nt`]).
//! Both give the same selection rule; they may round scores differently (a different summation
//! order), so a near-tie can go either way between machines, never between runs on one machine.

use rayon::prelude::*;

use crate::linalg::matmul_nt;

/// Queries in the layout the search reads. Packing costs one copy; reuse the value when the same
/// queries are searched repeatedly (k-means searches its points once per iteration).
pub struct Queries<'a> {
    rows: &'a [f32],
    n: usize,
    d: usize,
    #[cfg(target_arch = "x86_64")]
    packed: Option<Vec<avx512::Line>>,
}

impl<'a> Queries<'a> {
    /// `rows` holds `rows.len() / d` queries of width `d`, row-major.
    pub fn new(rows: &'a [f32], d: usize) -> Queries<'a> {
        let n = rows.len().checked_div(d).unwrap_or(0);
        Queries {
            rows,
            n,
            d,
            #[cfg(target_arch = "x86_64")]
            packed: avx512::available(d).then(|| avx512::pack(rows, n, d)),
        }
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there is no query.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Per query, the `k` best `(key index, score)` pairs, best first, in one flat buffer.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    entries: Vec<(usize, f32)>,
    lens: Vec<usize>,
}

impl TopK {
    fn new(n: usize, k: usize) -> TopK {
        TopK {
            k,
            entries: vec![(0, f32::NAN); n * k],
            lens: vec![0; n],
        }
    }

    /// Query `i`'s best keys, best first (`min(k, keys)` of them).
    pub fn row(&self, i: usize) -> &[(usize, f32)] {
        &self.entries[i * self.k..i * self.k + self.lens[i]]
    }

    /// Every query's best keys, as one vector per query.
    pub fn into_rows(self) -> Vec<Vec<(usize, f32)>> {
        (0..self.lens.len()).map(|i| self.row(i).to_vec()).collect()
    }
}

/// Offers key `j` with score `s` to one query's top list (`top[..*len]`, capacity `top.len()`):
/// taken when the list is not full or `s` beats its last score; placed after every equal score,
/// so that among equal scores the key offered first (the lower index) stays ahead.
#[inline]
fn offer(top: &mut [(usize, f32)], len: &mut usize, j: usize, s: f32) {
    let k = top.len();
    if *len < k || s > top[k - 1].1 {
        let at = top[..*len].partition_point(|&(_, t)| t >= s);
        let end = (*len + 1).min(k);
        top.copy_within(at..end - 1, at + 1);
        top[at] = (j, s);
        *len = end;
    }
}

/// For each query, the `k` keys (rows of `keys`, `m × d`) with the largest `q · key − bias[key]`
/// (`bias` empty = no bias), best first, ties to the lower index.
pub fn top_k(queries: &Queries, keys: &[f32], bias: &[f32], k: usize) -> TopK {
    let d = queries.d;
    let m = keys.len().checked_div(d).unwrap_or(0);
    assert_eq!(m * d, keys.len(), "keys are m × d");
    assert!(bias.is_empty() || bias.len() == m, "one bias per key");
    let k = k.min(m);
    let mut out = TopK::new(queries.n, k);
    if queries.n == 0 || k == 0 {
        return out;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(packed) = &queries.packed {
        avx512::search(packed, queries.n, d, keys, bias, &mut out);
        return out;
    }
    blocked(queries.rows, queries.n, d, keys, bias, &mut out);
    out
}

/// The portable path: scores for a block of keys at a time through `gemm`, then every score
/// offered in key order.
fn blocked(q: &[f32], n: usize, d: usize, keys: &[f32], bias: &[f32], out: &mut TopK) {
    const BLOCK: usize = 2048;
    let (m, k) = (keys.len() / d.max(1), out.k);
    let mut scores = vec![0f32; n * BLOCK.min(m)];
    let mut start = 0;
    while start < m {
        let cols = BLOCK.min(m - start);
        let block = &mut scores[..n * cols];
        matmul_nt(q, &keys[start * d..(start + cols) * d], n, cols, d, block);
        out.entries
            .par_chunks_mut(k)
            .zip(out.lens.par_iter_mut())
            .zip(block.par_chunks(cols))
            .for_each(|((top, len), row)| {
                for (j, &s) in row.iter().enumerate() {
                    let b = bias.get(start + j).copied().unwrap_or(0.0);
                    offer(top, len, start + j, s - b);
                }
            });
        start += cols;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use rayon::prelude::*;

    use super::{offer, TopK};

    /// Queries per panel (two 16-lane registers).
    pub const LANES: usize = 32;
    /// Keys per tile (24 accumulators of the 32 registers).
    const KEYS: usize = 12;
    /// Panels searched together against each tile of keys (their data stays in L2).
    const PANELS: usize = 4;

    /// A cache line of 16 floats (packed queries are 64-byte aligned).
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    pub struct Line([f32; 16]);

    /// Whether the kernel can run here.
    pub fn available(d: usize) -> bool {
        d > 0 && std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Panels of [`LANES`] queries, feature-major: panel `p`, feature `t` holds queries
    /// `p·32 .. p·32+32` in two lines (zeros past the last query).
    pub fn pack(rows: &[f32], n: usize, d: usize) -> Vec<Line> {
        let panels = n.div_ceil(LANES);
        let mut packed = vec![Line([0.0; 16]); panels * d * 2];
        packed
            .par_chunks_mut(d * 2)
            .enumerate()
            .for_each(|(p, panel)| {
                for r in 0..LANES.min(n - p * LANES) {
                    let row = &rows[(p * LANES + r) * d..(p * LANES + r + 1) * d];
                    for (t, &v) in row.iter().enumerate() {
                        panel[t * 2 + r / 16].0[r % 16] = v;
                    }
                }
            });
        packed
    }

    /// Keys in tiles of [`KEYS`] (fewer in the last), each feature-major: tile `key0`,
    /// feature `t`, key `j` at `key0·d + t·width + j`, so a tile's values for one feature are
    /// adjacent.
    fn pack_keys(keys: &[f32], d: usize) -> Vec<f32> {
        let mut tiles = vec![0f32; keys.len()];
        tiles
            .par_chunks_mut(KEYS * d)
            .zip(keys.par_chunks(KEYS * d))
            .for_each(|(tile, rows)| {
                let width = rows.len() / d;
                for (j, row) in rows.chunks(d).enumerate() {
                    for (t, &v) in row.iter().enumerate() {
                        tile[t * width + j] = v;
                    }
                }
            });
        tiles
    }

    /// Fewest tiles of keys in one key range: below this, splitting the keys costs more (one
    /// more pass over the queries, one more list per query) than the balance it buys.
    const MIN_RANGE_TILES: usize = 64;
    /// Largest `k` for which the keys are split into ranges (each range keeps `k` entries per
    /// query until they are merged).
    const MAX_SPLIT_K: usize = 16;

    /// [`super::top_k`] on packed queries: the keys in one contiguous range per thread (when
    /// there are enough of them, so that every thread has the same work however the queries
    /// divide into blocks), each range searched in parallel over blocks of panels, the ranges'
    /// lists merged in key order. A query that met a NaN score is searched again one key at a
    /// time over every key, so that it gets exactly what [`offer`] gives in key order.
    pub fn search(packed: &[Line], n: usize, d: usize, keys: &[f32], bias: &[f32], out: &mut TopK) {
        let ranges = key_ranges(keys.len() / d, out.k, rayon::current_num_threads());
        search_in_ranges(packed, n, d, keys, bias, &ranges, out);
    }

    /// [`search`] with the keys split at the given tile-aligned ranges (covering every key in
    /// order).
    pub(super) fn search_in_ranges(
        packed: &[Line],
        n: usize,
        d: usize,
        keys: &[f32],
        bias: &[f32],
        ranges: &[Range<usize>],
        out: &mut TopK,
    ) {
        let tiles = pack_keys(keys, d);
        let job = Job {
            packed,
            n,
            d,
            tiles: &tiles,
            keys,
            bias,
        };
        let mut rescan = vec![false; n];
        if let [all] = ranges {
            search_range(&job, all.clone(), out, &mut rescan);
        } else {
            let parts: Vec<(TopK, Vec<bool>)> = ranges
                .par_iter()
                .map(|range| {
                    let mut part = TopK::new(n, out.k);
                    let mut flags = vec![false; n];
                    search_range(&job, range.clone(), &mut part, &mut flags);
                    (part, flags)
                })
                .collect();
            merge(&parts, out, &mut rescan);
        }
        rescan_flagged(packed, d, keys, bias, &rescan, out);
    }

    /// The key ranges: one per thread (`threads`), each of whole tiles and at least
    /// [`MIN_RANGE_TILES`] of them, or all keys in one when `k` is above [`MAX_SPLIT_K`].
    pub(super) fn key_ranges(m: usize, k: usize, threads: usize) -> Vec<Range<usize>> {
        let n_tiles = m.div_ceil(KEYS);
        let parts = if k > MAX_SPLIT_K {
            1
        } else {
            threads.min(n_tiles / MIN_RANGE_TILES).max(1)
        };
        (0..parts)
            .map(|i| (i * n_tiles / parts * KEYS).min(m)..((i + 1) * n_tiles / parts * KEYS).min(m))
            .collect()
    }

    /// One search's inputs: the packed queries (`n` of width `d`), the keys packed in tiles and
    /// as given, and their biases (empty: none).
    struct Job<'a> {
        packed: &'a [Line],
        n: usize,
        d: usize,
        tiles: &'a [f32],
        keys: &'a [f32],
        bias: &'a [f32],
    }

    /// Keys `range` (tile-aligned) against every query, in parallel over blocks of panels:
    /// each query's top list in `out`, `rescan` set for each query that met a NaN score.
    fn search_range(job: &Job, range: Range<usize>, out: &mut TopK, rescan: &mut [bool]) {
        let Job {
            packed,
            n,
            d,
            tiles,
            keys,
            bias,
        } = *job;
        let k = out.k;
        let rows_per_block = LANES * PANELS;
        let span = range.start * d..range.end * d;
        let (tiles, keys) = (&tiles[span.clone()], &keys[span]);
        let bias = bias.get(range.clone()).unwrap_or(&[]);
        packed
            .par_chunks(d * 2 * PANELS)
            .zip(out.entries.par_chunks_mut(rows_per_block * k))
            .zip(out.lens.par_chunks_mut(rows_per_block))
            .zip(rescan.par_chunks_mut(rows_per_block))
            .enumerate()
            .for_each(|(b, (((panels, entries), lens), rescan))| {
                let rows = lens.len();
                debug_assert_eq!(rows, rows_per_block.min(n - b * rows_per_block));
                let found = Found {
                    entries,
                    lens,
                    rescan,
                    k,
                    base: range.start,
                };
                // SAFETY: the feature was detected when the queries were packed; every pointer
                // the kernel forms stays inside `panels` (whole panels of d × 2 lines) and
                // `tiles` (the range's keys × d values; a tile ends at the range's end, since
                // ranges are whole tiles or end at the last key).
                unsafe { search_block(panels, rows, d, (tiles, keys), bias, found) }
            });
    }

    /// Where [`search_block`] writes one block's results: the top lists of its queries
    /// (`entries`, `k` per query, and `lens`), their NaN flags, and the index of the first key
    /// it searches.
    struct Found<'a> {
        entries: &'a mut [(usize, f32)],
        lens: &'a mut [usize],
        rescan: &'a mut [bool],
        k: usize,
        base: usize,
    }

    /// Merges the ranges' lists (in key order) into `out`: each query's list from the first
    /// range, every later range's entries offered in order — among equal scores the earlier
    /// range (the lower index) stays ahead, as when every key is offered in order.
    fn merge(parts: &[(TopK, Vec<bool>)], out: &mut TopK, rescan: &mut [bool]) {
        let k = out.k;
        out.entries
            .par_chunks_mut(k)
            .zip(out.lens.par_iter_mut())
            .zip(rescan.par_iter_mut())
            .enumerate()
            .for_each(|(q, ((top, len), rescan))| {
                for (part, flags) in parts {
                    for &(j, s) in part.row(q) {
                        offer(top, len, j, s);
                    }
                    *rescan |= flags[q];
                }
            });
    }

    /// Searches the flagged queries again over every key, one score at a time in key order,
    /// with the kernel's arithmetic (a fused multiply-add per feature, from zero, then minus the
    /// bias): the list [`offer`] gives when every score is offered in order, NaNs included.
    fn rescan_flagged(
        packed: &[Line],
        d: usize,
        keys: &[f32],
        bias: &[f32],
        rescan: &[bool],
        out: &mut TopK,
    ) {
        let k = out.k;
        out.entries
            .par_chunks_mut(k)
            .zip(out.lens.par_iter_mut())
            .zip(rescan.par_iter())
            .enumerate()
            .filter(|(_, (_, &flagged))| flagged)
            .for_each(|(q, ((top, len), _))| {
                let (p, lane) = (q / LANES, q % LANES);
                let panel = &packed[p * d * 2..(p + 1) * d * 2];
                *len = 0;
                for (j, key) in keys.chunks(d).enumerate() {
                    let dot = (0..d).fold(0f32, |acc, t| {
                        panel[t * 2 + lane / 16].0[lane % 16].mul_add(key[t], acc)
                    });
                    offer(top, len, j, dot - bias.get(j).copied().unwrap_or(0.0));
                }
            });
    }

    /// Calls `$f::<NK>($args)` with the const `NK` equal to `$nk` (1 ..= [`KEYS`]).
    macro_rules! by_width {
        ($nk:expr, $f:ident($($arg:expr),*)) => {
            match $nk {
                12 => $f::<12>($($arg),*),
                11 => $f::<11>($($arg),*),
                10 => $f::<10>($($arg),*),
                9 => $f::<9>($($arg),*),
                8 => $f::<8>($($arg),*),
                7 => $f::<7>($($arg),*),
                6 => $f::<6>($($arg),*),
                5 => $f::<5>($($arg),*),
                4 => $f::<4>($($arg),*),
                3 => $f::<3>($($arg),*),
                2 => $f::<2>($($arg),*),
                _ => $f::<1>($($arg),*),
            }
        };
    }

    /// One block of panels against the keys of one range (`tiles` packed, `keys` as given),
    /// tile by tile in key order.
    #[target_feature(enable = "avx512f")]
    unsafe fn search_block(
        panels: &[Line],
        rows: usize,
        d: usize,
        (tiles, keys): (&[f32], &[f32]),
        bias: &[f32],
        found: Found,
    ) {
        let m = keys.len() / d;
        if found.k == 1 && found.base + m < u32::MAX as usize {
            return search_block_top1(panels, rows, d, (tiles, keys), bias, found);
        }
        let Found {
            entries,
            lens,
            rescan,
            k,
            base,
        } = found;
        let n_panels = panels.len() / (d * 2);
        // Per query: the score a key must beat to enter its list (NaN while the list is not
        // full: every key enters; +∞ past the last query: nothing does).
        let mut threshold = vec![f32::INFINITY; n_panels * LANES];
        threshold[..rows].fill(f32::NAN);
        let mut scores = [[0f32; LANES]; KEYS];
        let mut key0 = 0;
        while key0 < m {
            let nk = KEYS.min(m - key0);
            let bias_tile = bias_tile(bias, key0, nk);
            let kp = tiles[key0 * d..].as_ptr();
            for p in 0..n_panels {
                let panel = panels[p * d * 2..].as_ptr() as *const f32;
                let thr = threshold[p * LANES..].as_ptr();
                let hits = by_width!(nk, tile(panel, kp, d, &bias_tile, thr, &mut scores));
                if hits == 0 {
                    continue;
                }
                // Some score may enter a list (every NaN score is a hit): offer the tile's
                // scores, query by query, in key order.
                for lane in 0..LANES.min(rows.saturating_sub(p * LANES)) {
                    if hits >> lane & 1 == 0 {
                        continue;
                    }
                    let q = p * LANES + lane;
                    let top = &mut entries[q * k..(q + 1) * k];
                    for (j, row) in scores.iter().enumerate().take(nk) {
                        rescan[q] |= row[lane].is_nan();
                        offer(top, &mut lens[q], base + key0 + j, row[lane]);
                    }
                    threshold[q] = if lens[q] < k { f32::NAN } else { top[k - 1].1 };
                }
            }
            key0 += nk;
        }
    }

    /// [`search_block`] for the single best key, kept in registers tile by tile. A query that
    /// met a NaN score is flagged for the search one key at a time; one whose every score is
    /// −∞ gets the range's first key, as [`offer`] gives.
    #[target_feature(enable = "avx512f")]
    unsafe fn search_block_top1(
        panels: &[Line],
        rows: usize,
        d: usize,
        (tiles, keys): (&[f32], &[f32]),
        bias: &[f32],
        found: Found,
    ) {
        let Found {
            entries,
            lens,
            rescan,
            base,
            ..
        } = found;
        let m = keys.len() / d;
        let n_panels = panels.len() / (d * 2);
        let mut best = vec![f32::NEG_INFINITY; n_panels * LANES];
        let mut index = vec![u32::MAX; n_panels * LANES];
        let mut unordered = vec![0u32; n_panels];
        let mut key0 = 0;
        while key0 < m {
            let nk = KEYS.min(m - key0);
            let bias_tile = bias_tile(bias, key0, nk);
            let kp = tiles[key0 * d..].as_ptr();
            let first = (base + key0) as u32;
            for p in 0..n_panels {
                let panel = panels[p * d * 2..].as_ptr() as *const f32;
                let (b, i) = (
                    best[p * LANES..].as_mut_ptr(),
                    index[p * LANES..].as_mut_ptr(),
                );
                unordered[p] |= by_width!(nk, tile_top1(panel, kp, d, &bias_tile, first, b, i));
            }
            key0 += nk;
        }
        for q in 0..rows {
            rescan[q] = unordered[q / LANES] >> (q % LANES) & 1 == 1;
            entries[q] = match index[q] {
                u32::MAX => (base, f32::NEG_INFINITY),
                i => (i as usize, best[q]),
            };
            lens[q] = 1;
        }
    }

    /// The biases of keys `key0 .. key0 + nk` (zeros without bias).
    fn bias_tile(bias: &[f32], key0: usize, nk: usize) -> [f32; KEYS] {
        let mut tile = [0f32; KEYS];
        if !bias.is_empty() {
            tile[..nk].copy_from_slice(&bias[key0..key0 + nk]);
        }
        tile
    }

    /// Dot products of one panel (32 queries) with the tile of `NK` keys at `kp` (feature-major,
    /// see [`pack_keys`]): `[key][half of the panel]`.
    #[inline(always)]
    unsafe fn dots<const NK: usize>(
        panel: *const f32,
        kp: *const f32,
        d: usize,
    ) -> [[__m512; 2]; NK] {
        let mut acc = [[_mm512_setzero_ps(); 2]; NK];
        for t in 0..d {
            let a0 = _mm512_load_ps(panel.add(t * LANES));
            let a1 = _mm512_load_ps(panel.add(t * LANES + 16));
            for (j, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*kp.add(t * NK + j));
                acc[0] = _mm512_fmadd_ps(a0, b, acc[0]);
                acc[1] = _mm512_fmadd_ps(a1, b, acc[1]);
            }
        }
        acc
    }

    /// Scores of one panel against `NK` keys (dot minus the key's bias), written to
    /// `scores[j][lane]`; returns the lanes (bit per lane) where some score is above the lane's
    /// threshold or unordered with it (NaN), 0 if none.
    #[inline(always)]
    unsafe fn tile<const NK: usize>(
        panel: *const f32,
        kp: *const f32,
        d: usize,
        bias: &[f32; KEYS],
        thr: *const f32,
        scores: &mut [[f32; LANES]; KEYS],
    ) -> u64 {
        let acc = dots::<NK>(panel, kp, d);
        let (t0, t1) = (_mm512_loadu_ps(thr), _mm512_loadu_ps(thr.add(16)));
        let mut hits = 0u64;
        for (j, acc) in acc.iter().enumerate() {
            let b = _mm512_set1_ps(bias[j]);
            let (s0, s1) = (_mm512_sub_ps(acc[0], b), _mm512_sub_ps(acc[1], b));
            // "Not less or equal, unordered": above the threshold, or NaN on either side.
            let m0 = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(s0, t0) as u64;
            let m1 = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(s1, t1) as u64;
            hits |= m0 | m1 << 16;
            _mm512_storeu_ps(scores[j].as_mut_ptr(), s0);
            _mm512_storeu_ps(scores[j].as_mut_ptr().add(16), s1);
        }
        hits
    }

    /// Scores of one panel against `NK` keys, each query's best so far (`best`, `index`: 32
    /// each) raised to any strictly greater score (keys come in index order, so ties keep the
    /// lower index); returns the lanes (bit per lane) that saw a NaN score.
    #[inline(always)]
    unsafe fn tile_top1<const NK: usize>(
        panel: *const f32,
        kp: *const f32,
        d: usize,
        bias: &[f32; KEYS],
        key0: u32,
        best: *mut f32,
        index: *mut u32,
    ) -> u32 {
        let acc = dots::<NK>(panel, kp, d);
        let (mut b0, mut b1) = (_mm512_loadu_ps(best), _mm512_loadu_ps(best.add(16)));
        let (mut i0, mut i1) = (
            _mm512_loadu_si512(index as *const _),
            _mm512_loadu_si512(index.add(16) as *const _),
        );
        let mut nan = 0u32;
        for (j, acc) in acc.iter().enumerate() {
            let b = _mm512_set1_ps(bias[j]);
            let (s0, s1) = (_mm512_sub_ps(acc[0], b), _mm512_sub_ps(acc[1], b));
            let j = _mm512_set1_epi32((key0 + j as u32) as i32);
            let m0 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s0, b0);
            let m1 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s1, b1);
            b0 = _mm512_mask_mov_ps(b0, m0, s0);
            b1 = _mm512_mask_mov_ps(b1, m1, s1);
            i0 = _mm512_mask_mov_epi32(i0, m0, j);
            i1 = _mm512_mask_mov_epi32(i1, m1, j);
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(s0, s0) as u32
                | (_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(s1, s1) as u32) << 16;
        }
        _mm512_storeu_ps(best, b0);
        _mm512_storeu_ps(best.add(16), b1);
        _mm512_storeu_si512(index as *mut _, i0);
        _mm512_storeu_si512(index.add(16) as *mut _, i1);
        nan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers: every score is exact in f32, so ties are real ties on every path.
    fn integers(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + salt * 104_729) % 7) as f32 - 3.0)
            .collect()
    }

    /// Every score, sorted best first, ties to the lower index.
    fn brute_force(
        q: &[f32],
        keys: &[f32],
        bias: &[f32],
        d: usize,
        k: usize,
    ) -> Vec<Vec<(usize, f32)>> {
        q.chunks(d)
            .map(|q| {
                let mut all: Vec<(usize, f32)> = keys
                    .chunks(d)
                    .enumerate()
                    .map(|(j, key)| {
                        let dot: f32 = q.iter().zip(key).map(|(a, b)| a * b).sum();
                        (j, dot - bias.get(j).copied().unwrap_or(0.0))
                    })
                    .collect();
                all.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                all.truncate(k);
                all
            })
            .collect()
    }

    #[test]
    fn top_k_equals_brute_force_with_ties_to_the_lower_index() {
        // 70 queries (a partial last panel), 41 keys (a partial last tile); keys 20..40 repeat
        // keys 0..20 and key 40 repeats key 3, so many scores tie.
        let d = 9;
        let q = integers(70 * d, 1);
        let mut keys = integers(20 * d, 2);
        keys.extend_from_within(..20 * d);
        keys.extend_from_within(3 * d..4 * d);
        let half: Vec<f32> = (0..41).map(|j| (j % 5) as f32 * 0.5).collect();
        let queries = Queries::new(&q, d);
        for bias in [&[][..], &half[..]] {
            for k in [1, 2, 3, 12, 41, 50] {
                let want = brute_force(&q, &keys, bias, d, k);
                let got = top_k(&queries, &keys, bias, k);
                let mut portable = TopK::new(70, k.min(41));
                blocked(&q, 70, d, &keys, bias, &mut portable);
                for (i, want) in want.iter().enumerate() {
                    assert_eq!(got.row(i), &want[..], "query {i}, k = {k}");
                    assert_eq!(portable.row(i), &want[..], "portable: query {i}, k = {k}");
                }
            }
        }
    }

    /// Scores as bits, so that NaNs compare equal.
    fn bits(top: &TopK, n: usize) -> Vec<Vec<(usize, u32)>> {
        (0..n)
            .map(|i| top.row(i).iter().map(|&(j, s)| (j, s.to_bits())).collect())
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn splitting_the_keys_into_ranges_changes_nothing() {
        let (n, m, d) = (70, 41, 9);
        if !avx512::available(d) {
            return;
        }
        // Ties (keys 20..40 repeat keys 0..20), a query with NaN scores only, one with ±∞ scores
        // and a NaN where its infinite feature meets a zero, −∞ scores (infinite biases), and
        // every score −∞.
        let mut q = integers(n * d, 1);
        q[5 * d..6 * d].fill(f32::NAN);
        q[9 * d + 2] = f32::INFINITY;
        let mut keys = integers(20 * d, 2);
        keys.extend_from_within(..20 * d);
        keys.extend_from_within(3 * d..4 * d);
        keys[7 * d + 2] = 0.0;
        let half: Vec<f32> = (0..m).map(|j| (j % 5) as f32 * 0.5).collect();
        let some_infinite: Vec<f32> = (0..m)
            .map(|j| {
                if j < 14 || j % 3 == 0 {
                    f32::INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let all_infinite = vec![f32::INFINITY; m];
        let queries = Queries::new(&q, d);
        let packed = queries
            .packed
            .as_ref()
            .expect("packed where AVX-512 is available");
        let search = |bias: &[f32], k: usize, ranges: &[std::ops::Range<usize>]| {
            let mut out = TopK::new(n, k);
            avx512::search_in_ranges(packed, n, d, &keys, bias, ranges, &mut out);
            bits(&out, n)
        };
        for bias in [&[][..], &half, &some_infinite, &all_infinite] {
            for k in [1, 2, 3, 12, 41] {
                let whole = search(bias, k, std::slice::from_ref(&(0..m)));
                assert_eq!(whole, bits(&top_k(&queries, &keys, bias, k), n));
                for ranges in [&[0..12, 12..36, 36..41][..], &[0..24, 24..41]] {
                    assert_eq!(search(bias, k, ranges), whole, "k = {k}, {ranges:?}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn key_ranges_cover_the_keys_in_whole_tiles() {
        for (m, k, threads, parts) in [
            (22856, 1, 2, 2),
            (22856, 1, 3, 3),
            (22856, 17, 2, 1),
            (64, 1, 2, 1),
            (12 * 128, 4, 8, 2),
            (12 * 128 - 12, 4, 8, 1),
        ] {
            let ranges = avx512::key_ranges(m, k, threads);
            assert_eq!(ranges.len(), parts, "{m} keys, k = {k}, {threads} threads");
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().map(|r| r.end), Some(m));
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
                assert_eq!(pair[0].end % 12, 0);
                assert!(pair[0].end - pair[0].start >= 12 * 64);
            }
        }
    }

    #[test]
    fn top_k_on_real_valued_data_finds_the_best_score() {
        let (n, m, d) = (37, 300, 301);
        let q: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let keys: Vec<f32> = (0..m * d)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let got = top_k(&Queries::new(&q, d), &keys, &[], 4);
        let want = brute_force(&q, &keys, &[], d, 4);
        for (i, want) in want.iter().enumerate() {
            for (g, w) in got.row(i).iter().zip(want) {
                assert!(
                    (g.1 - w.1).abs() <= 1e-3 * w.1.abs().max(1.0),
                    "{g:?} vs {w:?}"
                );
            }
        }
        assert!(top_k(&Queries::new(&[], d), &keys, &[], 4)
            .into_rows()
            .is_empty());
        assert!(top_k(&Queries::new(&q, d), &[], &[], 4).row(0).is_empty());
    }
}
