//! The kernels against the scalar reference, and the reference against Candle's dequantization
//! of the same bytes (an independent reading of the GGUF block layouts).

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::Device;
use rand::{Rng, SeedableRng};

use super::matmul::QMatrix;
use super::*;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Random blocks with plausible f16 scales (and minimums) and random bits everywhere else.
fn random_blocks(ty: WeightType, blocks: usize, r: &mut impl Rng) -> Vec<u8> {
    let mut out = vec![0u8; blocks * ty.block_bytes()];
    r.fill(&mut out[..]);
    let put = |b: &mut [u8], at: usize, v: f32| {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
    };
    for b in out.chunks_exact_mut(ty.block_bytes()) {
        match ty {
            // d and dmin multiply 6-bit scales and minimums.
            WeightType::Q4K | WeightType::Q5K => {
                put(b, 0, r.random_range(-0.002f32..0.002));
                put(b, 2, r.random_range(-0.004f32..0.004));
            }
            WeightType::Q6K => put(b, 208, r.random_range(-0.0005f32..0.0005)),
            _ => {
                put(b, 0, r.random_range(-0.05f32..0.05));
                if ty.has_min() {
                    put(b, 2, r.random_range(-0.2f32..0.2));
                }
            }
        }
    }
    out
}

/// A block's worth of values of `ty` that holds `cols` rounded up to whole blocks.
fn whole(ty: WeightType, cols: usize) -> usize {
    cols.next_multiple_of(ty.block_values())
}

fn random_vec(n: usize, r: &mut impl Rng) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-3f32..3.0)).collect()
}

fn candle_type(ty: WeightType) -> GgmlDType {
    match ty {
        WeightType::Q4_0 => GgmlDType::Q4_0,
        WeightType::Q4_1 => GgmlDType::Q4_1,
        WeightType::Q5_0 => GgmlDType::Q5_0,
        WeightType::Q5_1 => GgmlDType::Q5_1,
        WeightType::Q8_0 => GgmlDType::Q8_0,
        WeightType::Q4K => GgmlDType::Q4K,
        WeightType::Q5K => GgmlDType::Q5K,
        WeightType::Q6K => GgmlDType::Q6K,
    }
}

fn quantized(x: &[f32]) -> Vec<BlockQ8> {
    let mut q = vec![BlockQ8::ZERO; x.len() / QK];
    quantize_row(x, &mut q);
    q
}

#[test]
fn our_dequantization_reads_every_block_layout_as_candle_does() {
    let mut r = rng(1);
    for ty in WeightType::ALL {
        let (rows, cols) = (3, whole(ty, 96));
        let bytes = random_blocks(ty, rows * cols / ty.block_values(), &mut r);
        let storage = QStorage::from_data(Cow::Owned(bytes.clone()), &Device::Cpu, candle_type(ty))
            .expect("storage");
        let theirs: Vec<f32> = QTensor::new(storage, (rows, cols))
            .expect("qtensor")
            .dequantize(&Device::Cpu)
            .expect("dequantize")
            .flatten_all()
            .expect("flatten")
            .to_vec1()
            .expect("vec");
        let m = QMatrix::with_isa(ty, rows, cols, bytes, Isa::Scalar).expect("matrix");
        let mut ours = vec![0f32; rows * cols];
        for (i, row) in ours.chunks_exact_mut(cols).enumerate() {
            m.dequantize_row(i, row);
        }
        assert_eq!(ours, theirs, "{ty:?}");
    }
}

#[test]
fn the_scalar_dot_product_is_the_dot_of_the_dequantized_values() {
    let mut r = rng(2);
    for ty in WeightType::ALL {
        let cols = whole(ty, 320);
        let w = random_blocks(ty, cols / ty.block_values(), &mut r);
        let x = random_vec(cols, &mut r);
        let xq = quantized(&x);
        let per = ty.block_values() / QK;
        let mut wf = vec![0f32; cols];
        for (i, o) in wf.chunks_exact_mut(QK).enumerate() {
            let b = &w[(i / per) * ty.block_bytes()..(i / per + 1) * ty.block_bytes()];
            scalar::dequantize(ty, b, i % per, o);
        }
        let xf: Vec<f32> = xq
            .iter()
            .flat_map(|b| b.qs.map(|q| q as f32 * b.d))
            .collect();
        let want: f64 = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
        let got = scalar::dot_row(ty, &w, &xq);
        let scale: f64 = wf
            .iter()
            .zip(&xf)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        // The minimum term uses `s`, `d · Σq` rounded to f16 as llama.cpp keeps it: 2⁻¹⁰ of it.
        let min_term: f64 = xq
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let b = &w[(i / per) * ty.block_bytes()..(i / per + 1) * ty.block_bytes()];
                (scalar::unpack(ty, b, i % per).m * x.s).abs() as f64 / 1024.0
            })
            .sum();
        assert!(
            (got as f64 - want).abs() <= 1e-5 * scale + min_term,
            "{ty:?}: {got} vs {want}"
        );
    }
}

#[test]
fn activations_round_to_the_nearest_step_of_their_block() {
    let mut r = rng(3);
    let mut x = random_vec(96, &mut r);
    x[32..64].fill(0.0);
    let q = quantized(&x);
    assert_eq!(q[1], BlockQ8::ZERO, "an all-zero block has scale 0");
    for (b, chunk) in q.iter().zip(x.chunks_exact(QK)) {
        assert_eq!(b.sum, b.qs.iter().map(|&v| v as i32).sum::<i32>());
        for (&v, &orig) in b.qs.iter().zip(chunk) {
            // Within half a step (plus the f16 rounding of the step itself).
            assert!((v as f32 * b.d - orig).abs() <= b.d * 0.51 + 1e-6);
        }
    }
    let amax = x[..32].iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = half::f16::from_f32(amax / 127.0).to_f32();
    assert!(q[0].qs.iter().any(|v| v.unsigned_abs() == 127) && q[0].d == d);
}

/// `rows × cols` weights of `ty` against `nx` activation rows on `isa`, through the matrix
/// (regrouped, threaded), against the scalar reference on the file's own blocks.
fn check_against_reference(
    ty: WeightType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    isa: Isa,
) {
    let nb = cols / QK;
    let rb = cols / ty.block_values() * ty.block_bytes();
    let xq = quantized(x);
    let nx = x.len() / cols;
    let m = QMatrix::with_isa(ty, rows, cols, w.to_vec(), isa).expect("matrix");
    let mut got = vec![f32::NAN; nx * rows];
    m.matmul_quantized(&xq, &mut got);
    for j in 0..nx {
        for r in 0..rows {
            let want = scalar::dot_row(ty, &w[r * rb..(r + 1) * rb], &xq[j * nb..(j + 1) * nb]);
            let g = got[j * rows + r];
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "{ty:?} {isa:?} [{rows}, {cols}] × {nx}: row {r} of activation {j}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn every_kernel_matches_the_scalar_reference_bit_for_bit_on_random_blocks_and_odd_shapes() {
    let mut r = rng(4);
    let isas = Isa::all_available();
    eprintln!("ISAs on this CPU: {isas:?}");
    for ty in WeightType::ALL {
        // Row counts off the 16-row groups (padded lanes), and 1 to 48 blocks per row.
        for &(rows, cols) in &[(1, 32), (3, 64), (17, 96), (5, 576), (33, 1536), (2, 4096)] {
            let cols = whole(ty, cols);
            let w = random_blocks(ty, rows * cols / ty.block_values(), &mut r);
            // 1, 6 and 13 activation rows: the kernels take them eight, four, two and one at a
            // time.
            let nx = [1, 6, 13][rows % 3];
            let x = random_vec(nx * cols, &mut r);
            for &isa in &isas {
                check_against_reference(ty, &w, rows, cols, &x, isa);
            }
        }
    }
}

#[test]
fn an_extreme_activation_block_cannot_saturate_any_kernel() {
    // Every weight at its largest unsigned value (Q8_0: −128) against ±127 activations: the worst
    // case for AVX2's 16-bit pair sums.
    for ty in WeightType::ALL {
        let (rows, cols) = (16, ty.block_values());
        let mut w = random_blocks(ty, rows, &mut rng(5));
        let values = match ty {
            WeightType::Q4_0 | WeightType::Q5_0 | WeightType::Q8_0 => 2..ty.block_bytes(),
            WeightType::Q4_1 | WeightType::Q5_1 => 4..ty.block_bytes(),
            WeightType::Q4K | WeightType::Q5K => 16..ty.block_bytes(),
            WeightType::Q6K => 0..192,
        };
        let fill = if ty == WeightType::Q8_0 { 0x80 } else { 0xff };
        for b in w.chunks_exact_mut(ty.block_bytes()) {
            b[values.clone()].fill(fill);
        }
        let x: Vec<f32> = (0..cols)
            .map(|i| if i % 2 == 0 { -1.0 } else { 1.0 })
            .collect();
        let all_negative = vec![-1.0f32; cols];
        for &isa in &Isa::all_available() {
            check_against_reference(ty, &w, rows, cols, &x, isa);
            check_against_reference(ty, &w, rows, cols, &all_negative, isa);
        }
    }
}

#[test]
fn a_rows_result_is_bit_identical_alone_batched_chunked_and_on_any_thread_count() {
    let mut r = rng(6);
    for ty in WeightType::ALL {
        let (rows, cols) = (77, whole(ty, 576));
        let data = random_blocks(ty, rows * cols / ty.block_values(), &mut r);
        let m = QMatrix::new(ty, rows, cols, data).expect("matrix");
        let x = random_vec(8 * cols, &mut r);
        let mut batched = vec![0f32; 8 * rows];
        m.matmul(&x, &mut batched);
        for (i, row) in x.chunks_exact(cols).enumerate() {
            let mut alone = vec![0f32; rows];
            m.matmul(row, &mut alone);
            assert_eq!(alone, batched[i * rows..(i + 1) * rows], "{ty:?} row {i}");
        }
        let mut chunked = vec![0f32; 8 * rows];
        m.matmul(&x[..3 * cols], &mut chunked[..3 * rows]);
        m.matmul(&x[3 * cols..], &mut chunked[3 * rows..]);
        assert_eq!(chunked, batched, "{ty:?} chunked");
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let mut other = vec![0f32; 8 * rows];
            pool.install(|| m.matmul(&x, &mut other));
            assert_eq!(other, batched, "{ty:?} on {threads} threads");
        }
    }
}

#[test]
fn a_matrix_refuses_bytes_that_do_not_fit_its_shape() {
    let err = QMatrix::new(WeightType::Q4_1, 2, 48, vec![0; 60]).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    let err = QMatrix::new(WeightType::Q4_1, 2, 64, vec![0; 79]).unwrap_err();
    assert!(err.to_string().contains("needs 80 bytes, got 79"), "{err}");
}

#[test]
fn parts_of_different_types_stack_into_one_matrix_whose_rows_match_each_part() {
    let mut r = rng(7);
    let cols = 512;
    let shapes = [
        (WeightType::Q4K, 21),
        (WeightType::Q6K, 7),
        (WeightType::Q8_0, 16),
    ];
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(ty, rows)| random_blocks(ty, rows * cols / ty.block_values(), &mut r))
        .collect();
    let parts = shapes
        .iter()
        .zip(&data)
        .map(|(&(ty, rows), d)| QMatrix::new(ty, rows, cols, d.clone()).expect("part"))
        .collect();
    let m = QMatrix::stack(parts).expect("stack");
    assert_eq!(
        (m.rows(), m.groups(), m.type_names().as_str()),
        (44, 4, "Q4_K+Q6_K+Q8_0")
    );
    let x = random_vec(3 * cols, &mut r);
    let xq = quantized(&x);
    let mut got = vec![f32::NAN; 3 * 44];
    m.matmul_quantized(&xq, &mut got);
    let nb = cols / QK;
    for j in 0..3 {
        let mut row = 0;
        for (&(ty, rows), d) in shapes.iter().zip(&data) {
            let rb = cols / ty.block_values() * ty.block_bytes();
            for i in 0..rows {
                let want = scalar::dot_row(ty, &d[i * rb..(i + 1) * rb], &xq[j * nb..(j + 1) * nb]);
                assert_eq!(
                    got[j * 44 + row].to_bits(),
                    want.to_bits(),
                    "{ty:?} row {i}"
                );
                row += 1;
            }
        }
    }
    let mut deq = vec![0f32; cols];
    m.dequantize_row(23, &mut deq);
    let mut want = vec![0f32; cols];
    let rb = cols / 256 * WeightType::Q6K.block_bytes();
    for (i, o) in want.chunks_exact_mut(QK).enumerate() {
        let b = &data[1][2 * rb + (i / 8) * 210..][..210];
        scalar::dequantize(WeightType::Q6K, b, i % 8, o);
    }
    assert_eq!(deq, want, "row 23 is the Q6_K part's row 2");
}
