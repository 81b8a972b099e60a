//! CUDA graphs of decode steps: a plain decode step is padded to one of a few batch sizes
//! (`device/graph_shape.rs`) and a block-table width rounded up to a power of two, and the whole
//! step — forward pass and sampler — is captured once per shape and metadata slot (the second
//! time the shape comes: the first runs eagerly, as a warm-up), then replayed: one launch instead
//! of a few hundred.
//!
//! A replay must read what changes from memory, never from launch arguments: everything that
//! differs between steps of one shape lives in the slot's metadata buffer (fixed address), and
//! the decode attention splits the context by the table width rather than the longest context
//! (`graph_mode`; its trailing splits are empty for shorter contexts). The op-level host checks
//! run at capture only: `Model::check_step` repeats what matters on every step.
//!
//! tests/cuda_engine.rs `graphs_replay_what_eager_steps_compute` compares replayed steps with
//! eager ones (on the emulated device, device/cuda/emulated.rs, where there is no GPU).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use cudarc::driver::sys;

use super::meta::SendGraph;
use super::{CudaBackend, CudaMeta};
use crate::device::graph_shape::graph_batch_size;
use crate::device::step::StepInput;

/// Graphs kept per metadata slot; shapes beyond run eagerly (each graph holds a few hundred
/// nodes; 64 covers every batch bucket at three table widths for 256 sequences).
const MAX_GRAPHS_PER_SLOT: usize = 64;

impl CudaBackend {
    /// A counter of the decode steps replayed from graphs, which outlives moving the backend
    /// into a model and an engine (tests check that graphs are actually used).
    pub fn graph_replays(&self) -> Arc<AtomicU64> {
        self.replays.clone()
    }

    /// [`crate::device::backend::Backend::graph_shape`] on this device.
    pub(super) fn graph_shape_op(
        &self,
        step: &StepInput,
        max_rows: usize,
    ) -> Option<(usize, usize)> {
        if !self.cuda_graphs() || !step.is_plain_decode() {
            return None;
        }
        let rows = graph_batch_size(step.num_seqs(), max_rows)?;
        Some((rows, step.max_blocks_per_seq.max(1).next_power_of_two()))
    }

    /// [`crate::device::backend::Backend::begin_ops`] on this device.
    pub(super) fn begin_ops_op(&self, meta: &mut CudaMeta, graph: bool) -> Result<bool> {
        meta.graph_mode = graph;
        if !graph || !self.cuda_graphs() {
            return Ok(false);
        }
        let key = (meta.host.num_seqs(), meta.host.max_blocks_per_seq);
        if let Some(g) = meta.graphs.get(&key) {
            g.graph.launch()?;
            self.replays.fetch_add(1, Ordering::Relaxed);
            // What the captured sampler launch set on the host when it was issued: without it
            // the step would look unsampled and its samples would never be copied back.
            meta.sampling.sampled_rows = g.sampled_rows;
            meta.sampling.vocab = g.vocab;
            return Ok(true);
        }
        // The first step of a shape runs eagerly: a library that initialises lazily on first
        // use (cuBLAS picking and loading its kernels) does so outside a capture, where it may
        // not. The capture comes the second time.
        if meta.warmed.insert(key) || meta.graphs.len() >= MAX_GRAPHS_PER_SLOT {
            return Ok(false);
        }
        // Thread-local: only this thread's calls are captured (the engine thread never touches
        // the device, and the copy and return streams are not used until the capture ends).
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        meta.capturing = Some(key);
        Ok(false)
    }

    /// [`crate::device::backend::Backend::end_ops`] on this device: ends a capture, keeps the
    /// graph and launches it (capturing only recorded the ops).
    pub(super) fn end_ops_op(&self, meta: &mut CudaMeta, ok: bool) -> Result<()> {
        meta.graph_mode = false;
        let Some(key) = meta.capturing.take() else {
            return Ok(());
        };
        let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        if !ok {
            // The caller reports the failed op; the partial graph is dropped.
            return Ok(());
        }
        let graph = match ended {
            Ok(Some(g)) => g,
            failed => {
                // Run eagerly from now on rather than fail every decode step the same way.
                self.cuda_graphs.store(false, Ordering::Relaxed);
                let why = match failed {
                    Err(e) => format!("{e}"),
                    _ => "the capture recorded nothing".into(),
                };
                tracing::warn!("CUDA graph capture failed ({why}); decode steps run eagerly now");
                return Err(anyhow!(
                    "capturing a CUDA graph of a decode step failed: {why}"
                ));
            }
        };
        graph.launch()?;
        let graph = SendGraph {
            graph,
            sampled_rows: meta.sampling.sampled_rows,
            vocab: meta.sampling.vocab,
        };
        meta.graphs.insert(key, graph);
        Ok(())
    }
}
