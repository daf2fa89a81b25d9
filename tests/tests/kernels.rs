//! core's CPU kernels (core/src/kernels) against burn's own ops on burn-flex, where they run:
//! random shapes including empty, length-1 and odd sizes, non-contiguous views, and inputs
//! the caller still holds (the kernel works in place only on a buffer nobody else sees).

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor, activation};
use harmaug_core::kernels;
use harmaug_tests::{max_tensor_diff as max_diff, random_flex as random};

#[test]
fn gelu_equals_burns_on_every_shape() {
    for shape in [[0, 5, 3], [1, 1, 1], [2, 7, 13], [3, 1, 1537], [4, 33, 384]] {
        let x = random(shape);
        let diff = max_diff(kernels::gelu(x.clone()), activation::gelu(x));
        assert!(diff < 2e-6, "{shape:?}: max |Δ| {diff:e}");
    }
}

#[test]
fn gelu_of_a_view_and_of_a_held_tensor() {
    let x = random([6, 9]);
    let held = x.clone();
    let before: Vec<f32> = held.to_data().to_vec().unwrap();
    let transposed = x.clone().transpose();
    let diff = max_diff(
        kernels::gelu(transposed.clone()),
        activation::gelu(transposed),
    );
    assert!(diff < 2e-6, "transposed: max |Δ| {diff:e}");
    let _ = kernels::gelu(x);
    let after: Vec<f32> = held.into_data().to_vec().unwrap();
    assert_eq!(before, after, "the caller's tensor was overwritten");
}

/// A linear layer `[d_in, d_out]` of burn-flex, with a bias or without.
fn linear_layer(d_in: usize, d_out: usize, bias: bool) -> burn::nn::Linear<Flex> {
    burn::nn::Linear {
        weight: burn::module::Param::from_tensor(random([d_in, d_out])),
        bias: bias.then(|| burn::module::Param::from_tensor(random([d_out]))),
    }
}

/// `x·W + b` sums `d_in` products of N(0, 3²) values: the tolerance grows with their scale.
fn linear_tolerance(d_in: usize) -> f32 {
    1e-5 * 9.0 * (d_in.max(1) as f32).sqrt()
}

/// The feed-forward block's fused layers: GELU taken with the bias, and the residual added with
/// it, on odd, empty, length-1 and thread-splitting shapes, with and without a bias, and on
/// views (a transposed input, a transposed residual) — each as burn's composition.
#[test]
fn linear_with_gelu_or_a_residual_equals_burns_composition() {
    let shapes = [
        (0, 5, 3),
        (1, 1, 1),
        (7, 13, 5),
        (3, 4, 0),
        (5, 0, 3),
        (300, 384, 1536),
    ];
    for ((rows, d_in, d_out), bias) in shapes.into_iter().flat_map(|s| [(s, true), (s, false)]) {
        let (layer, x) = (linear_layer(d_in, d_out, bias), random([rows, d_in]));
        let tolerance = linear_tolerance(d_in);
        let Ok(ours) = kernels::linear_gelu(&layer, x.clone()) else {
            panic!("linear_gelu must run on Flex");
        };
        let diff = max_diff(ours, activation::gelu(layer.forward(x.clone())));
        assert!(
            diff <= 1.2 * tolerance,
            "gelu {rows}×{d_in}→{d_out}: max |Δ| {diff:e}"
        );
        let residual = random([rows, d_out]);
        let Ok(ours) = kernels::linear_add(&layer, x.clone(), residual.clone()) else {
            panic!("linear_add must run on Flex");
        };
        let diff = max_diff(ours, layer.forward(x) + residual);
        assert!(
            diff <= tolerance,
            "add {rows}×{d_in}→{d_out}: max |Δ| {diff:e}"
        );
    }
    let (layer, x, residual) = (linear_layer(9, 4, true), random([9, 6]), random([4, 6]));
    let composed = layer.forward(x.clone().transpose()) + residual.clone().transpose();
    let Ok(ours) = kernels::linear_add(&layer, x.clone().transpose(), residual.transpose()) else {
        panic!("linear_add must run on views");
    };
    assert!(max_diff(ours, composed) <= linear_tolerance(9), "views");
    let composed = activation::gelu(layer.forward(x.clone().transpose()));
    let ours = kernels::linear_gelu(&layer, x.transpose()).ok();
    assert!(ours.is_some_and(|ours| max_diff(ours, composed) <= linear_tolerance(9)));
}

/// Products large enough for gemm to split over the pool, in widths no split divides evenly,
/// on pools of 2 and 8 threads: each as burn's composition.
#[test]
fn products_split_over_threads_equal_burns() {
    for threads in [2, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for (rows, d_in, d_out) in [(70, 100, 301), (203, 64, 129), (33, 384, 1537)] {
                let (layer, x) = (linear_layer(d_in, d_out, true), random([rows, d_in]));
                let residual = random([rows, d_out]);
                let Ok(ours) = kernels::linear_add(&layer, x.clone(), residual.clone()) else {
                    panic!("linear_add must run on Flex");
                };
                let diff = max_diff(ours, layer.forward(x.clone()) + residual);
                // Into bias rows, accumulating (`linear`), and written bare (`linear_add`).
                let into_bias = max_diff(kernels::linear(&layer, x.clone()), layer.forward(x));
                assert!(
                    diff.max(into_bias) <= linear_tolerance(d_in),
                    "{threads} threads, {rows}×{d_in}→{d_out}: max |Δ| {diff:e} {into_bias:e}"
                );
            }
        });
    }
}

/// A residual of another shape, and training (Autodiff<Flex>, where dropout sits between the
/// layer and the sum), hand the inputs back for the composition.
#[test]
fn linear_add_hands_back_what_it_does_not_fuse() {
    let layer = linear_layer(4, 3, true);
    let declined = kernels::linear_add(&layer, random([2, 4]), random([2, 4]));
    assert!(declined.is_err_and(|[x, residual]| x.dims() == [2, 4] && residual.dims() == [2, 4]));
    let device = Default::default();
    let training = burn::nn::LinearConfig::new(4, 3).init::<Autodiff<Flex>>(&device);
    let x = Tensor::<Autodiff<Flex>, 2>::random([2, 4], Distribution::Default, &device);
    let residual = Tensor::random([2, 3], Distribution::Default, &device);
    assert!(kernels::linear_add(&training, x.clone(), residual).is_err());
    assert!(kernels::linear_gelu(&training, x).is_err());
}

#[test]
fn softmax_equals_burns_on_every_shape() {
    for shape in [
        [0, 2, 5, 5],
        [1, 1, 1, 1],
        [2, 3, 7, 13],
        [1, 2, 3, 1537],
        [2, 12, 33, 33],
    ] {
        // Against f64, not burn's f32 softmax: on 1,537-value rows burn's own is off by up to
        // 3e-6, which made a comparison with it fail one run in ten.
        let x = random(shape);
        let values: Vec<f32> = x.to_data().to_vec().unwrap();
        let exact = exact_softmax(&values, shape[3]);
        let diff = max_diff_exact(kernels::softmax_last(x), &exact);
        assert!(diff < 1e-6, "{shape:?}: max |Δ| {diff:e}");
    }
    let x = random([2, 4, 6, 0]);
    assert_eq!(kernels::softmax_last(x).dims(), [2, 4, 6, 0]);
}

#[test]
fn softmax_of_a_masked_view() {
    let x = random([2, 3, 5, 5]).swap_dims(2, 3);
    let mask = Tensor::<Flex, 4>::from_data(
        [[[[0.0, 0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]]]],
        &Default::default(),
    );
    let x = x + mask.expand([2, 3, 5, 5]);
    let diff = max_diff(kernels::softmax_last(x.clone()), activation::softmax(x, 3));
    assert!(diff < 1e-6, "max |Δ| {diff:e}");
}

/// The attention masks the models pass: per key `[batch, 1, 1, cols]` and per query and key
/// `[batch, 1, rows, cols]` (fully masked rows included), fused on flex = burn's add + softmax.
#[test]
fn softmax_with_a_broadcast_bias_equals_burns() {
    let device = Default::default();
    let scores = random([2, 3, 4, 5]);
    let key_mask = Tensor::<Flex, 4>::from_data(
        [
            [[[0.0, 0.0, 0.0, 0.0, f32::MIN]]],
            [[[0.0, 0.0, f32::MIN, f32::MIN, f32::MIN]]],
        ],
        &device,
    );
    let row_mask = random([2, 1, 4, 5]).mask_fill(random([2, 1, 4, 5]).lower_elem(0.0), f32::MIN);
    let full = random([2, 3, 4, 5]);
    for bias in [key_mask, row_mask, full] {
        let expected = activation::softmax(scores.clone() + bias.clone(), 3);
        let ours = kernels::softmax_last_with_bias(scores.clone(), Some(bias));
        let diff = max_diff(ours, expected);
        assert!(diff < 1e-6, "max |Δ| {diff:e}");
    }
    let diff = max_diff(
        kernels::softmax_last_with_bias(scores.clone(), None),
        activation::softmax(scores, 3),
    );
    assert!(diff < 1e-6, "no bias: max |Δ| {diff:e}");
}

/// Softmax of each row of `row` values in f64: the reference for long rows, where burn's f32
/// softmax is itself off by up to 1.6e-6 (measured: ours 5.4e-7 on [3, 4, 97, 211] rows).
fn exact_softmax(x: &[f32], row: usize) -> Vec<f64> {
    x.chunks(row)
        .flat_map(|values| {
            let max = values.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let exps: Vec<f64> = values.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(move |e| e / sum)
        })
        .collect()
}

fn max_diff_exact(ours: Tensor<Flex, 4>, exact: &[f64]) -> f64 {
    let ours: Vec<f32> = ours.into_data().to_vec().unwrap();
    ours.iter()
        .zip(exact)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max)
}

/// Tensors large enough that native builds split the rows over threads (core's `threads`
/// feature): chunk edges fall inside no row, so every row is as exact as on small tensors.
#[test]
fn large_tensors_split_over_threads_stay_exact() {
    let x = random([1031, 257]);
    let diff = max_diff(kernels::gelu(x.clone()), activation::gelu(x));
    assert!(diff < 2e-6, "gelu: max |Δ| {diff:e}");
    let scores = random([3, 4, 97, 211]);
    let values: Vec<f32> = scores.to_data().to_vec().unwrap();
    let diff = max_diff_exact(
        kernels::softmax_last(scores.clone()),
        &exact_softmax(&values, 211),
    );
    assert!(diff < 1e-6, "softmax: max |Δ| {diff:e}");
    let bias = random([3, 1, 97, 211]).mask_fill(random([3, 1, 97, 211]).lower_elem(0.0), -1e4);
    let biased: Vec<f32> = (scores.clone() + bias.clone())
        .into_data()
        .to_vec()
        .unwrap();
    let ours = kernels::softmax_last_with_bias(scores, Some(bias));
    let diff = max_diff_exact(ours, &exact_softmax(&biased, 211));
    assert!(diff < 1e-6, "biased softmax: max |Δ| {diff:e}");
}

/// burn's composition of attention over `[batch, seq, heads·d]` projections, as the models
/// write it where the kernel does not run, with DeBERTa's position terms gathered from
/// `[batch, heads, seq, 2·span]` products.
fn composed_attention<B: burn::tensor::backend::Backend>(
    inputs: kernels::AttentionInputs<B>,
    heads: usize,
) -> Tensor<B, 3> {
    let split = |t: Tensor<B, 3>| {
        let [batch, seq, width] = t.dims();
        t.reshape([batch, seq, heads, width / heads])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (split(inputs.q), split(inputs.k), split(inputs.v));
    let [batch, _, seq, d] = q.dims();
    let device = q.device();
    let terms = inputs.relative.map_or((None, None, None), |t| {
        (t.pos_key, t.pos_query, Some(t.index))
    });
    let count = 1 + usize::from(terms.0.is_some()) + usize::from(terms.1.is_some());
    let scale = 1.0 / ((d * count) as f64).sqrt();
    let mut scores = q.clone().matmul(k.clone().swap_dims(2, 3)) * scale;
    // The index as a tensor, and transposed for p2c (HF's p2c index).
    let index = |transposed: bool| {
        let table = terms.2.as_ref().expect("an index with the terms");
        let values: Vec<i64> = (0..seq * seq)
            .map(|n| {
                let (i, j) = (n / seq, n % seq);
                i64::from(if transposed {
                    table[j * seq + i]
                } else {
                    table[n]
                })
            })
            .collect();
        Tensor::<B, 4, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(values, [1, 1, seq, seq]),
            &device,
        )
        .expand([batch, heads, seq, seq])
    };
    // [batch, heads, seq, d] against a [rows, heads·d] table → [batch, heads, seq, rows].
    let against = |x: Tensor<B, 4>, table: Tensor<B, 2>| {
        let [rows, width] = table.dims();
        let table = table
            .reshape([1, rows, heads, width / heads])
            .swap_dims(1, 2);
        x.matmul(table.swap_dims(2, 3))
    };
    if let Some(pos_key) = terms.0 {
        scores = scores + against(q, pos_key).gather(3, index(false)) * scale;
    }
    if let Some(pos_query) = terms.1 {
        let p2c = against(k, pos_query).gather(3, index(true)).swap_dims(2, 3);
        scores = scores + p2c * scale;
    }
    if let Some(bias) = inputs.bias {
        scores = scores + bias;
    }
    let context = activation::softmax(scores, 3).matmul(v).swap_dims(1, 2);
    context.reshape([batch, seq, heads * d])
}

/// Inputs for one attention: random projections, the bias given, and position terms when
/// `position_rows` > 0 (DeBERTa's, c2p and p2c as `terms` says).
fn attention_inputs(
    [batch, seq, heads, d]: [usize; 4],
    bias: Option<Tensor<Flex, 4>>,
    position_rows: usize,
    [c2p, p2c]: [bool; 2],
) -> kernels::AttentionInputs<Flex> {
    let width = heads * d;
    let relative = (position_rows > 0).then(|| {
        let span = (position_rows / 2) as i64;
        let index = (0..seq * seq)
            .map(|n| {
                let distance = (n / seq) as i64 - (n % seq) as i64;
                let r = harmaug_core::models::deberta_v2::relative_position(distance, 8, 16);
                (r + span).clamp(0, 2 * span - 1) as u32
            })
            .collect();
        kernels::RelativeTerms {
            pos_key: c2p.then(|| random([position_rows, width])),
            pos_query: p2c.then(|| random([position_rows, width])),
            index,
        }
    });
    kernels::AttentionInputs {
        q: random([batch, seq, width]),
        k: random([batch, seq, width]),
        v: random([batch, seq, width]),
        bias,
        relative,
        packed: None,
    }
}

fn copy(inputs: &kernels::AttentionInputs<Flex>) -> kernels::AttentionInputs<Flex> {
    kernels::AttentionInputs {
        q: inputs.q.clone(),
        k: inputs.k.clone(),
        v: inputs.v.clone(),
        bias: inputs.bias.clone(),
        relative: inputs.relative.as_ref().map(|t| kernels::RelativeTerms {
            pos_key: t.pos_key.clone(),
            pos_query: t.pos_query.clone(),
            index: t.index.clone(),
        }),
        packed: inputs.packed.clone(),
    }
}

/// Max |Δ| between the kernel's context and burn's composition of the same inputs.
fn kernel_against_composition(inputs: kernels::AttentionInputs<Flex>, heads: usize) -> f32 {
    let expected = composed_attention(copy(&inputs), heads);
    let Ok(ours) = kernels::attention(inputs, heads, &no_dropout()) else {
        panic!("the kernel must run on Flex");
    };
    max_diff(ours, expected)
}

fn no_dropout() -> burn::nn::Dropout {
    burn::nn::DropoutConfig::new(0.0).init()
}

#[test]
fn attention_equals_burns_composition() {
    // (batch, seq, heads, d), with a key padding bias, a per-query bias, or none.
    for (batch, seq, heads, d) in [(1, 1, 1, 1), (2, 7, 3, 5), (3, 33, 12, 32), (1, 130, 2, 64)] {
        let padding = Tensor::<Flex, 4>::random(
            [batch, 1, 1, seq],
            Distribution::Uniform(-3.0, 0.0),
            &Default::default(),
        );
        let per_query = random([batch, 1, seq, seq]);
        for bias in [None, Some(padding), Some(per_query)] {
            let inputs = attention_inputs([batch, seq, heads, d], bias, 0, [false; 2]);
            let diff = kernel_against_composition(inputs, heads);
            assert!(
                diff < 1e-4,
                "{batch}×{seq}, {heads} heads of {d}: max |Δ| {diff:e}"
            );
        }
    }
}

/// A `[batch, 1, seq, seq]` bias masking random (query, key) pairs with f32::MIN, as DeBERTa's
/// padding bias masks padded queries and keys.
fn per_query_padding(batch: usize, seq: usize) -> Tensor<Flex, 4> {
    let masked = random([batch, 1, seq, seq]).lower_elem(-1.0);
    Tensor::zeros([batch, 1, seq, seq], &Default::default()).mask_fill(masked, f32::MIN)
}

/// DeBERTa's disentangled attention: both position terms, or one of them, on position tables
/// of 16 rows (8 log buckets, so long distances share rows) and of one row pair; odd sizes,
/// length-1 dims, a per-query padding bias as DeBERTa passes it.
#[test]
fn disentangled_attention_equals_burns_composition() {
    let shapes = [(1, 1, 1, 1), (2, 7, 3, 5), (2, 41, 4, 16), (1, 130, 2, 64)];
    for (batch, seq, heads, d) in shapes {
        let padding = per_query_padding(batch, seq);
        for (rows, terms) in [(16, [true, true]), (16, [true, false]), (2, [false, true])] {
            for bias in [None, Some(padding.clone())] {
                let inputs = attention_inputs([batch, seq, heads, d], bias, rows, terms);
                let diff = kernel_against_composition(inputs, heads);
                assert!(
                    diff < 1e-4,
                    "{batch}×{seq}, {heads} heads of {d}, {rows} rows {terms:?}: max |Δ| {diff:e}"
                );
            }
        }
    }
}

/// A classifier's last layer attends from the first token only: the kernel with one query row
/// per sequence equals the first row of the whole attention, with and without DeBERTa's
/// position terms, under a per-query padding bias cut to that row.
#[test]
fn attention_from_the_first_token_equals_the_first_row_of_the_whole() {
    for (batch, seq, heads, d) in [(1, 1, 1, 1), (2, 7, 3, 5), (3, 33, 12, 32)] {
        let padding = per_query_padding(batch, seq);
        for (rows, terms) in [(0, [false; 2]), (16, [true, true]), (2, [false, true])] {
            let whole =
                attention_inputs([batch, seq, heads, d], Some(padding.clone()), rows, terms);
            let expected = composed_attention(copy(&whole), heads).slice([0..batch, 0..1]);
            let mut first = copy(&whole);
            first.q = whole.q.slice([0..batch, 0..1]);
            first.bias = Some(padding.clone().slice([0..batch, 0..1, 0..1, 0..seq]));
            let Ok(ours) = kernels::attention(first, heads, &no_dropout()) else {
                panic!("the kernel must run on Flex");
            };
            assert_eq!(ours.dims(), [batch, 1, heads * d]);
            let diff = max_diff(ours, expected);
            assert!(
                diff < 1e-4,
                "{batch}×{seq}, {heads} heads of {d}, {rows} rows {terms:?}: max |Δ| {diff:e}"
            );
        }
    }
}

/// Packed sequences (no padding, one after another on the token axis) equal each sequence
/// attended alone: BERT's attention and DeBERTa's position terms (one index for the longest
/// sequence, read block by block), every query row or each sequence's first only.
#[test]
fn packed_sequences_equal_each_sequence_attended_alone() {
    let (heads, d, lengths) = (3, 5, [7usize, 1, 4, 7, 2]);
    let longest = 7;
    for (rows, terms) in [(0, [false; 2]), (16, [true, true]), (2, [false, true])] {
        let shared = attention_inputs([1, longest, heads, d], None, rows, terms).relative;
        let alone: Vec<_> = lengths
            .iter()
            .map(|&n| {
                let mut inputs = attention_inputs([1, n, heads, d], None, rows, terms);
                if let (Some(own), Some(shared)) = (inputs.relative.as_mut(), shared.as_ref()) {
                    own.pos_key = shared.pos_key.clone();
                    own.pos_query = shared.pos_query.clone();
                }
                inputs
            })
            .collect();
        for first_only in [false, true] {
            let cat = |part: fn(&kernels::AttentionInputs<Flex>) -> Tensor<Flex, 3>| {
                Tensor::cat(alone.iter().map(part).collect(), 1)
            };
            let packed = kernels::AttentionInputs {
                q: match first_only {
                    true => cat(|x| x.q.clone().slice([0..1, 0..1])),
                    false => cat(|x| x.q.clone()),
                },
                k: cat(|x| x.k.clone()),
                v: cat(|x| x.v.clone()),
                bias: None,
                relative: shared.as_ref().map(|t| kernels::RelativeTerms {
                    pos_key: t.pos_key.clone(),
                    pos_query: t.pos_query.clone(),
                    index: t.index.clone(),
                }),
                packed: Some(kernels::Packed {
                    lengths: lengths.to_vec().into(),
                    first_only,
                }),
            };
            let expected = Tensor::cat(
                alone
                    .iter()
                    .map(|inputs| {
                        let context = composed_attention(copy(inputs), heads);
                        let [_, n, width] = context.dims();
                        let queries = if first_only { 1 } else { n };
                        context.slice([0..1, 0..queries, 0..width])
                    })
                    .collect(),
                1,
            );
            let Ok(ours) = kernels::attention(packed, heads, &no_dropout()) else {
                panic!("the kernel must take packed sequences on Flex");
            };
            assert_eq!(ours.dims(), expected.dims());
            let diff = max_diff(ours, expected);
            assert!(
                diff < 1e-4,
                "{rows} rows {terms:?}, first only {first_only}: {diff:e}"
            );
        }
    }
}

/// Packed sequences that do not add up to the token axis, or with a bias, go back.
#[test]
fn packed_sequences_that_do_not_fit_go_back() {
    let kernel_takes = |lengths: Vec<usize>, bias: Option<Tensor<Flex, 4>>| {
        let mut inputs = attention_inputs([1, 6, 2, 4], bias, 0, [false; 2]);
        inputs.packed = Some(kernels::Packed {
            lengths: lengths.into(),
            first_only: false,
        });
        kernels::attention(inputs, 2, &no_dropout()).is_ok()
    };
    assert!(kernel_takes(vec![2, 4], None));
    assert!(!kernel_takes(vec![2, 3], None));
    assert!(!kernel_takes(vec![2, 4], Some(random([1, 1, 1, 6]))));
}

/// No tokens (burn's composition cannot expand an index over them): an empty context, with and
/// without position terms.
#[test]
fn disentangled_attention_of_no_tokens() {
    let inputs = attention_inputs([2, 0, 2, 4], None, 16, [true, true]);
    let Ok(context) = kernels::attention(inputs, 2, &no_dropout()) else {
        panic!("the kernel must run on Flex");
    };
    assert_eq!(context.dims(), [2, 0, 8]);
    let inputs = attention_inputs([2, 0, 2, 4], None, 0, [false; 2]);
    assert!(kernels::attention(inputs, 2, &no_dropout()).is_ok_and(|c| c.dims() == [2, 0, 8]));
}

/// Position terms whose index points outside their tables go back to the caller.
#[test]
fn disentangled_attention_declines_an_index_outside_its_tables() {
    let mut inputs = attention_inputs([1, 5, 2, 4], None, 16, [true, true]);
    if let Some(terms) = inputs.relative.as_mut() {
        let mut index = terms.index.to_vec();
        index[7] = 16;
        terms.index = index.into();
    }
    assert!(kernels::attention(inputs, 2, &no_dropout()).is_err());
}

/// Training (Autodiff<Flex>) with DeBERTa's position terms gets its inputs back for burn's
/// composition, which keeps gradients (BERT attention is an autodiff op of core's there:
/// tests/tests/training_kernels.rs).
#[test]
fn disentangled_attention_under_autodiff_hands_its_inputs_back() {
    let device = Default::default();
    let x = || Tensor::<Autodiff<Flex>, 3>::random([2, 4, 6], Distribution::Default, &device);
    let inputs = kernels::AttentionInputs {
        q: x(),
        k: x(),
        v: x(),
        bias: None,
        relative: Some(kernels::RelativeTerms {
            pos_key: Some(Tensor::random([4, 6], Distribution::Default, &device)),
            pos_query: None,
            index: vec![1; 16].into(),
        }),
        packed: None,
    };
    assert!(kernels::attention(inputs, 2, &no_dropout()).is_err());
}
