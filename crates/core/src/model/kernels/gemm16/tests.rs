use super::kernel::has_avx512bf16;
use super::*;

/// Deterministic values in [-1, 1).
fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A `rows`×`cols` view of `src`, stored row-major or (`transposed`)
/// column-major.
fn view(src: Src<'_>, rows: usize, cols: usize, transposed: bool) -> MatRef<'_> {
    let (rs, cs) = if transposed { (1, rows) } else { (cols, 1) };
    MatRef {
        src,
        off: 0,
        rs,
        cs,
    }
}

fn kernels() -> Vec<Kernel> {
    let mut k = vec![Kernel::Portable];
    if has_avx512bf16() {
        k.push(Kernel::Avx512Bf16);
    }
    k
}

#[test]
fn rounding_is_nearest_even_and_keeps_nan() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
    assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even.
    assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(bf16_bits(-2.5), 0xc020);
    assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    assert_eq!(bf16_to_f32(bf16_bits(f32::INFINITY)), f32::INFINITY);
    assert_eq!(bf16_to_f32(bf16_bits(f32::MAX)), f32::INFINITY);
}

/// The packed product against an f64 product of the same bf16-rounded
/// values, for both micro-kernels, on edge shapes: single elements, odd
/// K (a zero-padded pair), partial MR/NR tiles, K across several KC
/// blocks, strided (transposed) operands, accumulation and alpha.
///
/// Tolerance: the inputs are rounded identically, so only the f32
/// accumulation differs from the exact sum: at most about
/// K·2⁻²⁴·Σ|a·b| (each of K additions rounds once); 1e-6·K·Σ|a·b|
/// bounds that with margin, and a wrong index gives an error of the
/// order of Σ|a·b| itself.
#[test]
fn packed_product_matches_f64_on_edge_shapes() {
    for (m, n, k) in [
        (1, 1, 1),
        (1, 1, 2),
        (13, 33, 7),
        (12, 32, 2),
        (25, 65, 301),
        (5, 3, 600),
        (40, 17, 16),
    ] {
        let a = rand(m * k, 1 + m as u64);
        let b = rand(k * n, 2 + n as u64);
        let r = |x: f32| f64::from(bf16_to_f32(bf16_bits(x)));
        for transposed in [false, true] {
            // A row-major (M×K) or stored as Aᵀ (K×M); B likewise.
            let (ra, rb) = if transposed {
                let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                (at, bt)
            } else {
                (a.clone(), b.clone())
            };
            let ma = view(Src::F32(&ra), m, k, transposed);
            let bits: Vec<u16> = rb.iter().map(|&x| bf16_bits(x)).collect();
            let mb = view(Src::Bf16(&bits), k, n, transposed);
            let pa = PackedA::new(ma, m, k);
            let pb = PackedB::new(mb, k, n);
            for kernel in kernels() {
                for (accumulate, alpha) in [(false, 1.0f32), (true, 0.5)] {
                    // C with a row stride wider than N.
                    let cs = n + 3;
                    let init = rand(m * cs, 9);
                    let mut c = init.clone();
                    // SAFETY: c holds m rows of n at row stride cs.
                    unsafe { gemm_packed(kernel, &pa, &pb, c.as_mut_ptr(), cs, accumulate, alpha) };
                    for i in 0..m {
                        for j in 0..n {
                            let (mut s, mut mag) = (0f64, 0f64);
                            for kk in 0..k {
                                let p = r(a[i * k + kk]) * r(b[kk * n + j]);
                                s += p;
                                mag += p.abs();
                            }
                            let base = if accumulate {
                                f64::from(init[i * cs + j])
                            } else {
                                0.0
                            };
                            let want = base + f64::from(alpha) * s;
                            let got = f64::from(c[i * cs + j]);
                            let tol = 1e-6 * (k as f64) * mag.max(1e-3) + 1e-6 * base.abs();
                            assert!(
                                (got - want).abs() <= tol,
                                "{kernel:?} {m}x{n}x{k} t{transposed} acc {accumulate}: ({i},{j}) {got} vs {want}"
                            );
                        }
                        // The padding columns of C are untouched.
                        for j in n..cs {
                            assert_eq!(c[i * cs + j], init[i * cs + j]);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn empty_reduction_writes_zeros() {
    let pa = PackedA::new(view(Src::F32(&[]), 3, 0, false), 3, 0);
    let pb = PackedB::new(view(Src::F32(&[]), 0, 5, false), 0, 5);
    let mut c = vec![7f32; 15];
    // SAFETY: c holds 3 rows of 5.
    unsafe { gemm_packed(Kernel::Portable, &pa, &pb, c.as_mut_ptr(), 5, false, 1.0) };
    assert!(c.iter().all(|&x| x == 0.0));
}
