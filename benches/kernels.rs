//! Microbenchmark of the CUDA kernels: each op's achieved bandwidth (bytes it must move at least,
//! each input read once and each output written once, over its median time) against a measured
//! device-to-device copy. Every kernel runs in both storage dtypes (f32 rows, then the same rows
//! suffixed `_bf16`, bytes counted at the dtype's size); Llama-3-8B-like shapes. Run on a GPU machine by
//! `scripts/gpu-check.sh`'s run.sh; prints `skipped: ...` without a GPU.
//!
//! Each timing: 3 warm-up launches, then the median of 30, each between two CUDA events on the
//! backend's stream. Inputs are random (never zeros) and larger than L2 except where noted.
//! Output: a readable table, plus one `BENCH\t<name>\t<shape>\t<us>\t<rate>\t<unit>\t<% of copy>`
//! line per row for run.sh.

use std::hint::black_box;

use tandem::device::backend::{AttentionParams, Backend, CacheShape, QkNorm, QkvLayout};
use tandem::device::cuda::{
    CudaBackend, CudaOptions, DType, DecodePath, GemmPath, SKINNY_MAX_ROWS,
};
use tandem::device::sampling::DeviceSampling;
use tandem::device::step::{SeqChunk, StepInput};

type T = <CudaBackend as Backend>::Tensor;

const WARMUP: usize = 3;
const REPS: usize = 30;

struct Bench {
    b: CudaBackend,
    seed: u64,
    copy_gbs: f64,
    /// Appended to every row's name: "" for f32, "_bf16" for bf16.
    tag: &'static str,
}

impl Bench {
    /// Random values in [-1, 1) (a cheap xorshift: the benchmark needs bytes, not statistics).
    fn random(&mut self, n: usize) -> T {
        let mut v = Vec::with_capacity(n);
        let mut s = self.seed;
        for _ in 0..n {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.push((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0);
        }
        self.seed = s;
        self.b.upload(&v).unwrap()
    }

    /// Median microseconds of `f` over REPS runs, each timed with events on the stream.
    fn time(&self, f: impl FnMut(&CudaBackend)) -> f64 {
        self.time_on(&self.b, f)
    }

    /// [`time`](Self::time) on backend `b` (this one or a [`variant`](Self::variant)).
    fn time_on(&self, b: &CudaBackend, mut f: impl FnMut(&CudaBackend)) -> f64 {
        b.time_us(WARMUP, REPS, || {
            f(b);
            Ok(())
        })
        .unwrap()
    }

    /// Another backend on the device, storing this one's dtype and running as `options` say,
    /// for the rows that compare the paths a backend can be fixed to. The work queued so far
    /// is finished first, so that it may read this backend's tensors.
    fn variant(&self, options: CudaOptions) -> CudaBackend {
        self.b.synchronize().unwrap();
        CudaBackend::new(0, self.b.dtype(), options).unwrap()
    }

    fn report_bytes(&self, name: &str, shape: &str, us: f64, bytes: f64) {
        let name = format!("{name}{}", self.tag);
        let gbs = bytes / us / 1e3;
        let pct = 100.0 * gbs / self.copy_gbs;
        println!("{name:<26} {shape:<34} {us:>10.1} {gbs:>9.0} GB/s {pct:>6.1}%");
        println!("BENCH\t{name}\t{shape}\t{us:.1}\t{gbs:.0}\tGB/s\t{pct:.1}");
    }

    fn report_flops(&self, name: &str, shape: &str, us: f64, flops: f64) {
        let name = format!("{name}{}", self.tag);
        let tf = flops / us / 1e6;
        println!(
            "{name:<26} {shape:<34} {us:>10.1} {tf:>7.1} TFLOP/s {:>5}",
            "-"
        );
        println!("BENCH\t{name}\t{shape}\t{us:.1}\t{tf:.1}\tTFLOP/s\t-");
    }
}

fn main() {
    let b = match CudaBackend::new(0, DType::F32, CudaOptions::default()) {
        Ok(b) => b,
        Err(e) => {
            println!("skipped: kernels bench: no CUDA device ({e:#})");
            return;
        }
    };
    let device = b.device_name().unwrap_or_else(|_| "?".into());
    let mut bench = Bench {
        b,
        seed: 0x2545_F491_4F6C_DD1D,
        copy_gbs: 0.0,
        tag: "",
    };
    println!("device: {device}");

    // The ceiling: a 1 GiB device-to-device copy, counting bytes read plus bytes written.
    let n = 1 << 28;
    let src = bench.random(n);
    let mut dst = bench.b.zeros(n).unwrap();
    let us = bench.time(|b| {
        b.stream()
            .memcpy_dtod(src.bytes(), dst.bytes_mut())
            .unwrap()
    });
    bench.copy_gbs = (2 * n * 4) as f64 / us / 1e3;
    println!(
        "{:<26} {:<34} {:>10} {:>14} {:>7}",
        "kernel", "shape", "us", "rate", "% copy"
    );
    bench.report_bytes("copy_d2d", "1 GiB", us, (2 * n * 4) as f64);
    drop((src, dst));
    kernels(&mut bench);
    let copy_gbs = bench.copy_gbs;
    drop(bench);
    let b = match CudaBackend::new(0, DType::Bf16, CudaOptions::default()) {
        Ok(b) => b,
        Err(e) => {
            println!("kernels bench: no bf16 backend ({e:#})");
            return;
        }
    };
    let mut bench = Bench {
        b,
        seed: 0x2545_F491_4F6C_DD1D,
        copy_gbs,
        tag: "_bf16",
    };
    kernels(&mut bench);
}

/// Every kernel at the backend's dtype.
fn kernels(bench: &mut Bench) {
    let (rows, hidden, inter, vocab) = (4096usize, 4096usize, 14336usize, 32000usize);
    let f = bench.b.dtype().size() as f64; // bytes per element
    let layout = QkvLayout {
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
    };

    // Metadata of one prefill of `rows` tokens.
    let ids: Vec<u32> = (0..rows as u32)
        .map(|i| (i * 7919) % vocab as u32)
        .collect();
    let table: Vec<u32> = (0..(rows / 16) as u32).collect();
    let mut step = StepInput::build(
        &[SeqChunk {
            tokens: &ids,
            num_cached: 0,
            block_table: &table,
            want_logits: true,
        }],
        16,
    )
    .unwrap();
    step.logits_indices = (0..rows as u32).step_by(64).collect();
    let mut meta = bench.b.new_meta(rows, 64, layout).unwrap();
    bench.b.upload_meta(&step, &mut meta).unwrap();

    // Embedding gather and logit-row gather.
    let emb = bench.random(vocab * hidden);
    let mut x = bench.b.zeros(rows * hidden).unwrap();
    let us = bench.time(|b| b.embed(&emb, &meta, hidden, &mut x).unwrap());
    let shape = format!("{rows} rows x {hidden}");
    bench.report_bytes("embed", &shape, us, 2.0 * (rows * hidden) as f64 * f);
    let mut last = bench.b.zeros(64 * hidden).unwrap();
    let us = bench.time(|b| b.gather_logit_rows(&x, &meta, hidden, &mut last).unwrap());
    let shape = format!("64 of {rows} rows x {hidden} (L2)");
    bench.report_bytes(
        "gather_logit_rows",
        &shape,
        us,
        2.0 * (64 * hidden) as f64 * f,
    );
    drop(emb);

    // RMSNorm and the fused residual add + RMSNorm.
    let xs = bench.random(rows * hidden);
    let w = bench.random(hidden);
    let mut out = bench.b.zeros(rows * hidden).unwrap();
    let us = bench.time(|b| b.rms_norm(&xs, &w, 1e-5, rows, hidden, &mut out).unwrap());
    let shape = format!("{rows} x {hidden}");
    bench.report_bytes("rms_norm", &shape, us, 2.0 * (rows * hidden) as f64 * f);
    let delta = bench.random(rows * hidden);
    let mut residual = bench.random(rows * hidden);
    let us = bench.time(|b| {
        b.add_rms_norm(&mut residual, &delta, &w, 1e-5, rows, hidden, &mut out)
            .unwrap()
    });
    bench.report_bytes("add_rms_norm", &shape, us, 4.0 * (rows * hidden) as f64 * f);
    drop((xs, delta, residual, out));

    // q/k norm, RoPE and the KV write on the fused qkv rows.
    let mut qkv = bench.random(rows * layout.row_width());
    let qw = bench.random(layout.head_dim);
    let kw = bench.random(layout.head_dim);
    let rotated = (rows * (layout.q_width() + layout.kv_width())) as f64 * f;
    let shape = format!("{rows} rows, 32/8 heads x 128");
    let us = bench.time(|b| b.qk_norm(&mut qkv, &qw, &kw, 1e-6, rows, layout).unwrap());
    bench.report_bytes("qk_norm", &shape, us, 2.0 * rotated);
    let angles: Vec<f32> = (0..8192 * 128).map(|i| (i % 977) as f32 * 1e-3).collect();
    let cos_sin = bench.b.upload(&angles).unwrap();
    let us = bench.time(|b| b.rope(&mut qkv, &cos_sin, &meta, layout).unwrap());
    bench.report_bytes("rope", &shape, us, 2.0 * rotated);
    let cache = CacheShape {
        num_blocks: rows / 16,
        block_size: 16,
        num_kv_heads: layout.num_kv_heads,
        head_dim: layout.head_dim,
    };
    let params = AttentionParams {
        layout,
        cache,
        scale: 1.0 / (layout.head_dim as f32).sqrt(),
        sliding_window: None,
    };
    let mut kc = bench.b.zeros(cache.elements()).unwrap();
    let mut vc = bench.b.zeros(cache.elements()).unwrap();
    let us = bench.time(|b| b.write_kv(&qkv, &mut kc, &mut vc, &meta, &params).unwrap());
    let kv_bytes = 2.0 * (rows * layout.kv_width()) as f64 * f;
    bench.report_bytes("write_kv", &shape, us, 2.0 * kv_bytes);
    // Both in one launch (what the model's layers run): q and k read and written back, v read,
    // k and v written to the cache.
    let us = bench.time(|b| {
        b.rope_write_kv(
            &mut qkv, rows, None, &cos_sin, &mut kc, &mut vc, &meta, &params,
        )
        .unwrap()
    });
    bench.report_bytes("rope_write_kv", &shape, us, 2.0 * rotated + 1.5 * kv_bytes);
    // With Qwen3's q/k norms first, still one launch (the same bytes).
    let us = bench.time(|b| {
        let norm = Some(QkNorm {
            q_w: &qw,
            k_w: &kw,
            eps: 1e-6,
        });
        b.rope_write_kv(
            &mut qkv, rows, norm, &cos_sin, &mut kc, &mut vc, &meta, &params,
        )
        .unwrap()
    });
    let bytes = 2.0 * rotated + 1.5 * kv_bytes;
    bench.report_bytes("qk_norm_rope_write_kv", &shape, us, bytes);

    // Prefill attention: one 4096-token prompt, causal (compute-bound). The kernel the backend
    // picks (bf16: the tensor-core prefill kernel), then the general kernel on the same step.
    let mut attn = bench.b.zeros(rows * layout.q_width()).unwrap();
    let flops = 4.0 * (rows * rows / 2 * layout.head_dim * layout.num_heads) as f64;
    for (name, general) in [
        ("paged_attention_prefill", false),
        ("paged_attention_prefill_gen", true),
    ] {
        let pinned = general.then(|| {
            bench.variant(CudaOptions {
                prefill_general: true,
                ..CudaOptions::default()
            })
        });
        let us = bench.time_on(pinned.as_ref().unwrap_or(&bench.b), |b| {
            b.attention(&qkv, &kc, &vc, &meta, &params, &mut attn)
                .unwrap()
        });
        bench.report_flops(name, "1 x 4096 tokens, 32/8 x 128", us, flops);
    }
    drop((qkv, kc, vc, attn));

    // SiLU·mul.
    let gu = bench.random(rows * 2 * inter);
    let mut act = bench.b.zeros(rows * inter).unwrap();
    let us = bench.time(|b| b.silu_mul(&gu, rows, inter, &mut act).unwrap());
    let shape = format!("{rows} x {inter}");
    bench.report_bytes("silu_mul", &shape, us, 3.0 * (rows * inter) as f64 * f);
    drop((gu, act));

    // Paged decode attention: 64 sequences x 2048 context (target: >= 70% of copy).
    let (seqs, ctx, bs) = (64usize, 2048usize, 16usize);
    let blocks_per_seq = ctx / bs;
    let order: Vec<u32> = {
        // Scatter blocks: a stride permutation of all blocks.
        let nb = seqs * blocks_per_seq;
        (0..nb as u32).map(|i| (i * 7919) % nb as u32).collect()
    };
    let toks = vec![1u32; seqs];
    let chunks: Vec<SeqChunk> = (0..seqs)
        .map(|s| SeqChunk {
            tokens: &toks[s..s + 1],
            num_cached: ctx - 1,
            block_table: &order[s * blocks_per_seq..(s + 1) * blocks_per_seq],
            want_logits: true,
        })
        .collect();
    let dstep = StepInput::build(&chunks, bs).unwrap();
    // At head_dim 128, the split-context decode kernel the backend picks (in bf16 the
    // tensor-core one), the scalar decode kernel (`_scalar`, bf16 only: in f32 it is the one
    // picked) and the general kernel on the same step for comparison; at 64 (Llama-3.2-1B's
    // shape, where the scalar kernel reads two key rows per warp: one row fills only half the
    // lanes), the picked and the scalar decode kernels (`_d64` rows).
    let bf16 = bench.b.dtype() == DType::Bf16;
    for (head_dim, paths) in [
        (
            128,
            &[
                ("paged_attention_decode", DecodePath::Auto),
                ("paged_attention_decode_scalar", DecodePath::Scalar),
                ("paged_attention_decode_gen", DecodePath::General),
            ][..],
        ),
        (
            64,
            &[
                ("paged_attention_decode_d64", DecodePath::Auto),
                ("paged_attention_decode_d64_scalar", DecodePath::Scalar),
            ][..],
        ),
    ] {
        let paths = paths
            .iter()
            .filter(|(_, p)| bf16 || *p != DecodePath::Scalar);
        let dl = QkvLayout { head_dim, ..layout };
        let mut dmeta = bench.b.new_meta(seqs, seqs, dl).unwrap();
        bench.b.upload_meta(&dstep, &mut dmeta).unwrap();
        let dcache = CacheShape {
            num_blocks: seqs * blocks_per_seq,
            block_size: bs,
            num_kv_heads: dl.num_kv_heads,
            head_dim,
        };
        let dparams = AttentionParams {
            cache: dcache,
            layout: dl,
            scale: 1.0 / (head_dim as f32).sqrt(),
            ..params
        };
        let kc = bench.random(dcache.elements());
        let vc = bench.random(dcache.elements());
        let dq = bench.random(seqs * dl.row_width());
        let mut dout = bench.b.zeros(seqs * dl.q_width()).unwrap();
        let bytes = 2.0 * dcache.elements() as f64 * f + 2.0 * (seqs * dl.q_width()) as f64 * f;
        let shape = format!("{seqs} seqs x {ctx} ctx, 32/8 x {head_dim}");
        let decode_variant = |path| {
            bench.variant(CudaOptions {
                decode_path: path,
                ..CudaOptions::default()
            })
        };
        for &(name, path) in paths {
            let pinned = (path != DecodePath::Auto).then(|| decode_variant(path));
            let us = bench.time_on(pinned.as_ref().unwrap_or(&bench.b), |b| {
                b.attention(&dq, &kc, &vc, &dmeta, &dparams, &mut dout)
                    .unwrap()
            });
            bench.report_bytes(name, &shape, us, bytes);
        }
        // TANDEM_BENCH_DECODE_SWEEP=1: the decode kernel at pinned split counts (for tuning the
        // automatic choice; plain lines, not table rows).
        if std::env::var_os("TANDEM_BENCH_DECODE_SWEEP").is_some() {
            for splits in [1, 2, 3, 4, 6, 8, 12, 16] {
                let pinned = decode_variant(DecodePath::Splits(splits));
                let us = bench.time_on(&pinned, |b| {
                    b.attention(&dq, &kc, &vc, &dmeta, &dparams, &mut dout)
                        .unwrap()
                });
                println!(
                    "decode sweep{} (head_dim {head_dim}): {splits} splits: {us:.1} us, {:.0} GB/s",
                    bench.tag,
                    bytes / us / 1e3
                );
            }
        }
    }

    // Device sampling of a decode step: 256 rows of a Llama-3 vocabulary (128,256), greedy and
    // top-p 0.9 at temperature 0.8, and greedy at 1 and 64 rows (split over blocks); bytes =
    // the logits read once. The time includes the parameter upload, the token download and the
    // host synchronisation.
    let (srows, svocab) = (256usize, 128_256usize);
    let slogits = bench.random(srows * svocab);
    let mut smeta = bench.b.new_meta(1, srows, layout).unwrap();
    let sample_cases = [
        ("sample_greedy_r1", true, 1),
        ("sample_greedy_r64", true, 64),
        ("sample_greedy", true, srows),
        ("sample_top_p", false, srows),
    ];
    for (name, greedy, rows) in sample_cases {
        let params: Vec<DeviceSampling> = (0..rows as u64)
            .map(|r| DeviceSampling {
                greedy,
                inv_temperature: 1.0 / 0.8,
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                seed: r,
                position: 0,
                logprobs: None,
                constrained: false,
            })
            .collect();
        let mut out = Vec::with_capacity(srows);
        let us = bench.time(|b| {
            out.clear();
            assert!(b
                .sample_rows(&slogits, svocab, &params, &[], &mut smeta, &mut out)
                .unwrap());
        });
        let shape = format!("{rows} rows x {svocab}");
        bench.report_bytes(name, &shape, us, (rows * svocab) as f64 * f);
    }
    drop((slogits, smeta));

    // cuBLAS through `linear`: sgemm (f32, no TF32) or bf16 GemmEx with f32 accumulation.
    let (m, k, n) = (4096usize, 4096usize, 4096usize);
    let a = bench.random(m * k);
    let wt = bench.random(n * k);
    let mut c = bench.b.zeros(m * n).unwrap();
    let us = bench.time(|b| b.linear(&a, &wt, None, m, k, n, &mut c).unwrap());
    bench.report_flops(
        "linear",
        "4096 x 4096 x 4096 GEMM",
        us,
        2.0 * (m * n * k) as f64,
    );
    black_box(&c);
    bench.b.synchronize().unwrap();
    drop((a, wt, c));
    if bench.tag == "_bf16" {
        decode_products(bench);
    }
}

/// Llama-3.2-1B's products at decode row counts, on cuBLAS, on the skinny kernel at each
/// k-warp count (k split over blocks as the backend's heuristic says; `--gemm auto` also times
/// each unsplit), on cuBLASLt's first algorithm, and as tuned, against the bytes they must move
/// (weights, x, out). bf16 only: the skinny kernel is.
fn decode_products(bench: &mut Bench) {
    let shapes = [
        ("qkv", 3072usize, 2048usize),
        ("o", 2048, 2048),
        ("gate_up", 16384, 2048),
        ("down", 2048, 8192),
        ("lm_head", 128256, 2048),
    ];
    let mut paths = vec![("cublas".to_string(), GemmPath::Cublas)];
    for kw in [1, 2, 4, 8] {
        paths.push((format!("skinny_k{kw}"), GemmPath::Skinny(kw)));
    }
    // cuBLASLt's heuristic's first algorithm (what GemmEx would run, through cuBLASLt), and
    // whatever tuning picks (timed here warm, as every row of this table is).
    paths.push(("lt0".to_string(), GemmPath::Lt(0)));
    paths.push(("tuned".to_string(), GemmPath::Auto));
    let backends: Vec<(String, CudaBackend)> = paths
        .into_iter()
        .map(|(name, path)| {
            let options = CudaOptions {
                gemm: Some(path),
                ..CudaOptions::default()
            };
            (name, bench.variant(options))
        })
        .collect();
    for (name, n, k) in shapes {
        let w = bench.random(n * k);
        let x = bench.random(SKINNY_MAX_ROWS * k);
        let mut out = bench.b.zeros(SKINNY_MAX_ROWS * n).unwrap();
        // The operands are written on this backend's stream, read on the variants'.
        bench.b.synchronize().unwrap();
        for rows in [1, 16, SKINNY_MAX_ROWS] {
            for (path_name, pinned) in &backends {
                let us = bench.time_on(pinned, |b| {
                    b.linear(&x, &w, None, rows, k, n, &mut out).unwrap()
                });
                let bytes = 2.0 * (n * k + rows * k + rows * n) as f64;
                let shape = format!("{rows} x {k} -> {n}");
                bench.report_bytes(
                    &format!("gemm_{name}_r{rows}_{path_name}"),
                    &shape,
                    us,
                    bytes,
                );
            }
        }
        black_box(&out);
        for (_, pinned) in &backends {
            pinned.synchronize().unwrap();
        }
    }
    bench.b.synchronize().unwrap();
}
