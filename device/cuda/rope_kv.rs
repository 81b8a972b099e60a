//! RoPE and the KV-cache write on the GPU (`kernels/rope.cu`, `kernels/kv_cache.cu`): the two
//! ops apart, as the [`Backend`] trait names them, and fused (`rope_write_kv`, one launch, with
//! Qwen3's q/k norms too: `kernels/qk_norm.cu`) as the model's layers run them. Each checks on the host what
//! the CPU ops check: positions inside the RoPE table, slots inside the cache, buffer sizes.

use anyhow::{bail, ensure, Result};

use super::{u32_of, CudaBackend, CudaMeta, CudaTensor};
use crate::device::backend::{AttentionParams, Backend, QkNorm, QkvLayout};

impl CudaBackend {
    /// Positions in the RoPE table (`[max_positions, head_dim]`) and qkv's size: the table's
    /// length in positions.
    fn check_rope(
        &self,
        qkv: &CudaTensor,
        cos_sin: &CudaTensor,
        meta: &CudaMeta,
        layout: QkvLayout,
    ) -> Result<u32> {
        let max_pos = cos_sin.len() / layout.head_dim;
        let positions = &meta.host.positions;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= max_pos) {
            bail!("position {p} is beyond the model's RoPE table of {max_pos} positions");
        }
        ensure!(
            qkv.len() >= positions.len() * layout.row_width(),
            "rope: qkv too small"
        );
        u32_of(max_pos, "max positions")
    }

    /// Slots inside the cache and the buffers' sizes: the cache's length in slots.
    fn check_write_kv(
        &self,
        qkv: &CudaTensor,
        k_cache: &CudaTensor,
        v_cache: &CudaTensor,
        meta: &CudaMeta,
        params: &AttentionParams,
    ) -> Result<u64> {
        let l = params.layout;
        let slots = params.cache.num_blocks * params.cache.block_size;
        let kv = l.kv_width();
        let mapping = &meta.host.slot_mapping;
        if let Some(&s) = mapping.iter().find(|&&s| s >= 0 && s as usize >= slots) {
            bail!("slot {s} is outside the cache of {slots} slots");
        }
        ensure!(
            qkv.len() >= mapping.len() * l.row_width()
                && k_cache.len() >= slots * kv
                && v_cache.len() >= slots * kv,
            "write_kv: buffers too small"
        );
        Ok(slots as u64)
    }

    pub(super) fn rope_op(
        &self,
        qkv: &mut CudaTensor,
        cos_sin: &CudaTensor,
        meta: &CudaMeta,
        layout: QkvLayout,
    ) -> Result<()> {
        let mp = self.check_rope(qkv, cos_sin, meta, layout)?;
        let rows = meta.host.positions.len() as u32;
        let (p, cs, pp) = (
            self.tp(qkv),
            self.tp(cos_sin),
            self.meta_ptr(meta, meta.pos_off()),
        );
        let heads = head_args(layout);
        self.launch(&self.k.rope, (rows, 1, 1), 256, |b| {
            b.arg(&p).arg(&cs).arg(&pp).arg(&mp);
            for v in &heads {
                b.arg(v);
            }
        })
    }

    pub(super) fn write_kv_op(
        &self,
        qkv: &CudaTensor,
        k_cache: &mut CudaTensor,
        v_cache: &mut CudaTensor,
        meta: &CudaMeta,
        params: &AttentionParams,
    ) -> Result<()> {
        let ns = self.check_write_kv(qkv, k_cache, v_cache, meta, params)?;
        let l = params.layout;
        let rows = meta.host.slot_mapping.len() as u32;
        let (qp, kp, vp, sp) = (
            self.tp(qkv),
            self.tp(k_cache),
            self.tp(v_cache),
            self.meta_ptr(meta, 0),
        );
        let (qw, kw) = (
            u32_of(l.q_width(), "q width")?,
            u32_of(l.kv_width(), "kv width")?,
        );
        self.launch(&self.k.write_kv, (rows, 1, 1), 128, |b| {
            b.arg(&qp).arg(&kp).arg(&vp).arg(&sp);
            b.arg(&qw).arg(&kw).arg(&ns);
        })
    }

    /// [`Backend::rope_write_kv`](crate::device::backend::Backend::rope_write_kv) in one
    /// kernel: `qk_norm_rope_write_kv_<dtype>` with q/k norms (head_dim a multiple of 4 up to
    /// 256; otherwise `qk_norm` runs first), else `rope_write_kv_<dtype>`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_write_kv_op(
        &self,
        qkv: &mut CudaTensor,
        rows: usize,
        qk_norm: Option<QkNorm<'_, CudaTensor>>,
        cos_sin: &CudaTensor,
        k_cache: &mut CudaTensor,
        v_cache: &mut CudaTensor,
        meta: &CudaMeta,
        params: &AttentionParams,
    ) -> Result<()> {
        let l = params.layout;
        let mp = self.check_rope(qkv, cos_sin, meta, l)?;
        let ns = self.check_write_kv(qkv, k_cache, v_cache, meta, params)?;
        let (positions, slots) = (meta.host.positions.len(), meta.host.slot_mapping.len());
        ensure!(
            positions == rows && slots == rows,
            "rope_write_kv: {rows} rows with {positions} positions and {slots} slots"
        );
        let fusable = l.head_dim.is_multiple_of(4) && l.head_dim <= QK_NORM_ROPE_MAX_HEAD_DIM;
        let fused_norm = match qk_norm {
            Some(n) if !fusable => {
                self.qk_norm(qkv, n.q_w, n.k_w, n.eps, rows, l)?;
                None
            }
            n => n,
        };
        if let Some(n) = &fused_norm {
            ensure!(
                n.q_w.len() >= l.head_dim && n.k_w.len() >= l.head_dim,
                "qk_norm: weights shorter than head_dim {}",
                l.head_dim
            );
        }
        let (p, cs, pp) = (
            self.tp(qkv),
            self.tp(cos_sin),
            self.meta_ptr(meta, meta.pos_off()),
        );
        let (kp, vp, sp) = (self.tp(k_cache), self.tp(v_cache), self.meta_ptr(meta, 0));
        let heads = head_args(l);
        let rows = u32_of(rows, "rows")?;
        match fused_norm {
            Some(n) => {
                let (qw, kw) = (self.tp(n.q_w), self.tp(n.k_w));
                // One warp per head (q, k and v heads), 4 warps per block.
                let all_heads = u32_of(l.num_heads + 2 * l.num_kv_heads, "heads")?;
                let grid = (rows, all_heads.div_ceil(4), 1);
                self.launch(&self.k.qk_norm_rope_write_kv, grid, 128, |b| {
                    b.arg(&p).arg(&qw).arg(&kw).arg(&n.eps);
                    b.arg(&cs).arg(&pp).arg(&mp);
                    for v in &heads {
                        b.arg(v);
                    }
                    b.arg(&kp).arg(&vp).arg(&sp).arg(&ns);
                })
            }
            None => self.launch(&self.k.rope_write_kv, (rows, 1, 1), 256, |b| {
                b.arg(&p).arg(&cs).arg(&pp).arg(&mp);
                for v in &heads {
                    b.arg(v);
                }
                b.arg(&kp).arg(&vp).arg(&sp).arg(&ns);
            }),
        }
    }
}

/// The most head_dim `qk_norm_rope_write_kv` takes (`QKR_MAX_HEAD_DIM` in qk_norm.cu).
const QK_NORM_ROPE_MAX_HEAD_DIM: usize = 256;

/// The kernels' (num_heads, num_kv_heads, head_dim) arguments.
fn head_args(l: QkvLayout) -> [u32; 3] {
    [l.num_heads as u32, l.num_kv_heads as u32, l.head_dim as u32]
}
