//! One linear layer at the guard's shapes, three ways on the CPU: burn-flex's f32 `linear` (what
//! f32 models run), the same layer dequantised from int8 (what int8 bundles ran until now: the
//! same f32 work), and `Int8Linear` (dynamic int8: activations quantised per row, integer dot
//! products). Prints one Markdown table: best-of-5 ms, GMAC/s and the speed-up over f32, with
//! the largest |Δ| from the f32 layer relative to its largest output. bench/int8_linear.py runs
//! PyTorch's f32 and dynamic int8 `Linear` on the same shapes.
//!
//!     cargo run --release -p harmaug --example int8_linear

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use harmaug_core::kernels::Int8Linear;

/// (rows, d_in, d_out): MiniLM at batch 1 (~24 tokens) and batch 32 (~48 tokens each), and
/// DeBERTa-v3-large's 8 × 512 tokens.
const SHAPES: &[(usize, usize, usize)] = &[
    (24, 384, 384),
    (24, 384, 1536),
    (24, 1536, 384),
    (1536, 384, 384),
    (1536, 384, 1536),
    (1536, 1536, 384),
    (4096, 1024, 1024),
    (4096, 1024, 4096),
    (4096, 4096, 1024),
];

fn main() {
    println!(
        "| rows × d_in → d_out | f32 ms | int8 ms | f32 GMAC/s | int8 GMAC/s | int8 / f32 | max |Δ| / max |y| |"
    );
    println!("|---|---|---|---|---|---|---|");
    // `int8_linear ROWS D_IN D_OUT` runs that one shape (for a profile).
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let only = [(
        args.first().copied().unwrap_or(0),
        args.get(1).copied().unwrap_or(0),
        args.get(2).copied().unwrap_or(0),
    )];
    let shapes = if args.len() == 3 { &only[..] } else { SHAPES };
    for &(rows, d_in, d_out) in shapes {
        let (weight, scales) = int8_matrix(d_out, d_in);
        let bias = pseudo_random(d_out, 3);
        let x = pseudo_random(rows * d_in, 4);
        let int8 = Int8Linear::new(&weight, &scales, Some(&bias), d_out, d_in);
        let float = float_layer(&weight, &scales, &bias, d_out, d_in);
        let input = Tensor::<Flex, 2>::from_data(
            TensorData::new(x.clone(), [rows, d_in]),
            &Default::default(),
        );

        let run_float =
            || burn::tensor::module::linear(input.clone(), float.0.clone(), Some(float.1.clone()));
        let f32_ms = best_of(5, || drop(run_float().into_data()));
        let int8_ms = best_of(if args.len() == 3 { 200 } else { 5 }, || {
            drop(int8.forward(&x))
        });
        let y_float = run_float().into_data().to_vec::<f32>().unwrap_or_default();
        let y_int8 = int8.forward(&x);
        let scale = y_float.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = y_float
            .iter()
            .zip(&y_int8)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let gmacs = (rows * d_in * d_out) as f64 / 1e6;
        println!(
            "| {rows} × {d_in} → {d_out} | {f32_ms:.3} | {int8_ms:.3} | {:.0} | {:.0} | {:.2}× | {:.4} |",
            gmacs / f32_ms,
            gmacs / int8_ms,
            f32_ms / int8_ms,
            diff / scale
        );
    }
}

/// The f32 layer an int8 bundle dequantises to: burn's `[d_in, d_out]` weight and the bias.
fn float_layer(
    weight: &[i8],
    scales: &[f32],
    bias: &[f32],
    d_out: usize,
    d_in: usize,
) -> (Tensor<Flex, 2>, Tensor<Flex, 1>) {
    let mut transposed = vec![0f32; d_in * d_out];
    for j in 0..d_out {
        for k in 0..d_in {
            transposed[k * d_out + j] = f32::from(weight[j * d_in + k]) * scales[j];
        }
    }
    let device = Default::default();
    (
        Tensor::from_data(TensorData::new(transposed, [d_in, d_out]), &device),
        Tensor::from_data(TensorData::new(bias.to_vec(), [d_out]), &device),
    )
}

fn int8_matrix(d_out: usize, d_in: usize) -> (Vec<i8>, Vec<f32>) {
    let weight = pseudo_random(d_out * d_in, 1)
        .iter()
        .map(|v| (v * 127.0).round() as i8)
        .collect();
    (weight, vec![0.02 / 127.0 * 40.0; d_out])
}

/// Best wall time of `reps` runs after one warm-up, in ms.
fn best_of(reps: usize, mut run: impl FnMut()) -> f64 {
    run();
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
