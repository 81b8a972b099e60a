//! RoPE and the KV-cache write on the GPU (`kernels/rope.cu`, `kernels/kv_cache.cu`): the two
//! ops apart, as the [`Backend`](crate::runtime::backend::Backend) trait names them, and fused
//! (`rope_write_kv`, one launch) as the model's layers run them. Each checks on the host what
//! the CPU ops check: positions inside the RoPE table, slots inside the cache, buffer sizes.

use anyhow::{bail, ensure, Result};
use cudarc::driver::PushKernelArg;

use super::{u32_of, CudaBackend, CudaMeta, CudaTensor};
use crate::runtime::backend::{AttentionParams, QkvLayout};

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

    /// `rope_op` then `write_kv_op` in one kernel (`rope_write_kv_<dtype>`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_write_kv_op(
        &self,
        qkv: &mut CudaTensor,
        cos_sin: &CudaTensor,
        k_cache: &mut CudaTensor,
        v_cache: &mut CudaTensor,
        meta: &CudaMeta,
        params: &AttentionParams,
    ) -> Result<()> {
        let mp = self.check_rope(qkv, cos_sin, meta, params.layout)?;
        let ns = self.check_write_kv(qkv, k_cache, v_cache, meta, params)?;
        ensure!(
            meta.host.positions.len() == meta.host.slot_mapping.len(),
            "rope_write_kv: {} positions for {} slots",
            meta.host.positions.len(),
            meta.host.slot_mapping.len()
        );
        let rows = meta.host.positions.len() as u32;
        let (p, cs, pp) = (
            self.tp(qkv),
            self.tp(cos_sin),
            self.meta_ptr(meta, meta.pos_off()),
        );
        let (kp, vp, sp) = (self.tp(k_cache), self.tp(v_cache), self.meta_ptr(meta, 0));
        let heads = head_args(params.layout);
        self.launch(&self.k.rope_write_kv, (rows, 1, 1), 256, |b| {
            b.arg(&p).arg(&cs).arg(&pp).arg(&mp);
            for v in &heads {
                b.arg(v);
            }
            b.arg(&kp).arg(&vp).arg(&sp).arg(&ns);
        })
    }
}

/// The kernels' (num_heads, num_kv_heads, head_dim) arguments.
fn head_args(l: QkvLayout) -> [u32; 3] {
    [l.num_heads as u32, l.num_kv_heads as u32, l.head_dim as u32]
}
