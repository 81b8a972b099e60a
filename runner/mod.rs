//! Runs a model step by step: the [`Runner`] owns what is about *running* a forward pass rather
//! than what the pass computes — two metadata slots used in turn (a step's metadata goes up while
//! the step before, in the other slot, may still be running), padding a decode step to the
//! backend's graph shape, capture-or-replay with an eager retry, and steps sampled on the device
//! and launched ahead (`sampled_step.rs`). The engine, KV sizing, `tandem generate`, `tandem bench
//! decode` and `tandem calibrate` all run models through it.

pub mod sampled_step;

use anyhow::{ensure, Context, Result};

use crate::device::backend::Backend;
use crate::device::kv_cache::KvCache;
use crate::device::sampling::DeviceSampling;
use crate::device::step::StepInput;
use crate::model::config::ModelConfig;
use crate::model::loader::ModelSource;
use crate::model::tokenizer::Tokenizer;
use crate::model::{Model, StepLimits};

pub use sampled_step::LaunchedStep;

/// What [`Runner::run_ops`] does after a step's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterForward {
    /// Marks the step's end: its logits are the result.
    Finish,
    /// Samples its first `rows` logit rows on the device, then marks its end.
    Sample(usize),
    /// Neither: the step's sampling is launched later, with its rows' constraints
    /// ([`Runner::sample_launched`]), which marks its end.
    AwaitSampling,
}

pub struct Runner<B: Backend> {
    model: Box<dyn Model<B>>,
    /// Two metadata slots, used in turn (see `sampled_step.rs`).
    metas: [B::Meta; 2],
    next_slot: usize,
    /// Reused buffers for a step padded to a graph shape and its sampling entries.
    padded: StepInput,
    padded_sampling: Vec<DeviceSampling>,
}

impl<B: Backend> Runner<B> {
    pub fn new(model: impl Model<B> + 'static) -> Result<Self> {
        Self::from_boxed(Box::new(model))
    }

    pub fn from_boxed(model: Box<dyn Model<B>>) -> Result<Self> {
        let limits = model.limits();
        ensure!(
            limits.max_tokens > 0 && limits.max_seqs > 0,
            "step limits must be positive"
        );
        let layout = model.config().qkv_layout();
        let b = model.backend();
        let new_meta = || b.new_meta(limits.max_tokens, limits.max_seqs, layout);
        let metas = [new_meta()?, new_meta()?];
        Ok(Runner {
            model,
            metas,
            next_slot: 0,
            padded: StepInput::default(),
            padded_sampling: Vec::new(),
        })
    }

    pub fn cfg(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn limits(&self) -> StepLimits {
        self.model.limits()
    }

    pub fn backend(&self) -> &B {
        self.model.backend()
    }

    pub fn model(&self) -> &dyn Model<B> {
        self.model.as_ref()
    }

    /// A paged cache of `num_blocks` blocks of `block_size` tokens for this model.
    pub fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache<B>> {
        self.model.new_kv_cache(num_blocks, block_size)
    }

    /// Runs one step: writes its K/V into `kv` and returns the logits of the rows in
    /// `step.logits_indices`, as `(len(logits_indices), vocab)` on the device.
    pub fn forward(&mut self, step: &StepInput, kv: &mut KvCache<B>) -> Result<&B::Tensor> {
        self.model.check_step(step, kv)?;
        let slot = self.take_slot();
        self.model
            .backend()
            .upload_meta(step, &mut self.metas[slot])?;
        self.run_ops(step, kv, slot, false, AfterForward::Finish)?;
        Ok(self.model.logits())
    }

    /// The metadata slot the next step uses (they alternate).
    fn take_slot(&mut self) -> usize {
        let slot = self.next_slot;
        self.next_slot ^= 1;
        slot
    }

    /// Issues the step whose metadata is in slot `slot` (uploaded already): the forward pass,
    /// then what `after` says; or replays the graph the backend captured for it (`graph`: the
    /// step is padded to a graph shape, and `after` is not [`AfterForward::AwaitSampling`]).
    fn run_ops(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
        slot: usize,
        graph: bool,
        after: AfterForward,
    ) -> Result<()> {
        let meta = &mut self.metas[slot];
        // A second attempt runs eagerly when capturing a graph failed (the backend then turns
        // its graphs off): capturing only records the ops, so none of them has run yet.
        for attempt in 0..2 {
            let replayed = match self.model.backend().step_graphs() {
                Some(g) => g.begin_ops(meta, graph && attempt == 0)?,
                None => false,
            };
            if replayed {
                break;
            }
            let issued = self.model.forward_ops(meta, step, kv).and_then(|()| {
                let vocab = self.model.config().vocab_size;
                match after {
                    AfterForward::Sample(rows) => {
                        let sampler = self
                            .model
                            .backend()
                            .device_sampler()
                            .context("this backend does not sample on the device")?;
                        sampler.sample_launch(self.model.logits(), vocab, rows, &[], meta)
                    }
                    AfterForward::Finish | AfterForward::AwaitSampling => Ok(()),
                }
            });
            // A capture must end even when an op failed, or the stream stays in capture mode.
            let ended = match self.model.backend().step_graphs() {
                Some(g) => g.end_ops(meta, issued.is_ok()),
                None => Ok(()),
            };
            issued?;
            match ended {
                Ok(()) => break,
                Err(e) if graph && attempt == 0 => {
                    tracing::warn!("running the step eagerly: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
        match after {
            AfterForward::AwaitSampling => Ok(()),
            _ => self.model.backend().finish_step(meta),
        }
    }

    /// [`forward`](Self::forward), with the logits copied into `out` on the host: one row of
    /// `vocab_size` per wanted row, flat. `out` is resized, so a caller that keeps it allocates
    /// nothing once warmed up (the executor does, every step).
    pub fn forward_into(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.forward(step, kv)?;
        self.logits_into(step.logits_indices.len(), out)
    }

    /// Copies the first `rows` logit rows of the last [`forward`](Self::forward) into `out` (resized).
    pub fn logits_into(&self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        out.resize(rows * self.cfg().vocab_size, 0.0);
        self.backend().download_into(self.model.logits(), out)
    }

    /// [`forward`](Self::forward), with the logits copied to the host, one `Vec` per wanted row.
    pub fn forward_to_host(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.cfg().vocab_size;
        let n = step.logits_indices.len();
        self.forward(step, kv)?;
        let flat = self.backend().download(self.model.logits(), n * vocab)?;
        Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

/// Loads `source`'s model onto `backend` with a workspace for `limits`, ready to run; also
/// returns its tokenizer.
pub fn load<B: Backend>(
    source: ModelSource,
    backend: B,
    limits: StepLimits,
) -> Result<(Runner<B>, Tokenizer)> {
    let (model, tokenizer) = source.into_model(backend, limits)?;
    Ok((Runner::new(model)?, tokenizer))
}
