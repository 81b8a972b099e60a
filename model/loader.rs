//! Opens a model from disk — an HF directory or a `.gguf` file — into config, tokenizer and
//! weights, and builds the runnable [`Llama`] on a backend.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use super::gguf::GgufFile;
use super::gguf_weights::GgufWeights;
use super::llama::Llama;
use super::safetensors_dir::SafetensorsDir;
use super::tokenizer::Tokenizer;
use super::weight_format::WeightFormat;
use super::weights::{LlamaWeights, WeightSource};
use super::StepLimits;
use crate::device::backend::Backend;

enum Files {
    Hf(SafetensorsDir),
    Gguf(GgufFile),
}

/// A model on disk, opened and checked but not yet placed on a device.
pub struct ModelSource {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// How the weight matrices are loaded (`auto` unless set with
    /// [`with_weight_format`](Self::with_weight_format)).
    pub weight_format: WeightFormat,
    files: Files,
}

impl ModelSource {
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            let config = ModelConfig::from_hf_file(&path.join("config.json"))?;
            let tokenizer = Tokenizer::from_hf_dir(path)?;
            let files = Files::Hf(SafetensorsDir::open(path)?);
            Ok(ModelSource {
                path: path.into(),
                config,
                tokenizer,
                weight_format: WeightFormat::default(),
                files,
            })
        } else if path.extension().is_some_and(|e| e == "gguf") {
            let file = GgufFile::open(path)?;
            let config =
                ModelConfig::from_gguf(&file).with_context(|| format!("in {}", path.display()))?;
            let tokenizer =
                Tokenizer::from_gguf(&file).with_context(|| format!("in {}", path.display()))?;
            Ok(ModelSource {
                path: path.into(),
                config,
                tokenizer,
                weight_format: WeightFormat::default(),
                files: Files::Gguf(file),
            })
        } else if !path.exists() {
            bail!("model path {} does not exist", path.display())
        } else {
            bail!(
                "{}: expected an HF model directory or a .gguf file",
                path.display()
            )
        }
    }

    /// The same model, its weights to be loaded as `format` says.
    pub fn with_weight_format(mut self, format: WeightFormat) -> Self {
        self.weight_format = format;
        self
    }

    /// Loads every weight onto `backend`, checking names and shapes against the config.
    pub fn load_weights<B: Backend>(&self, backend: &B) -> Result<LlamaWeights<B>> {
        let format = self.weight_format;
        match &self.files {
            Files::Hf(dir) => LlamaWeights::load(&self.config, dir, backend, format),
            Files::Gguf(file) => {
                let src = GgufWeights {
                    file,
                    num_heads: self.config.num_heads,
                    num_kv_heads: self.config.num_kv_heads,
                };
                LlamaWeights::load(&self.config, &src as &dyn WeightSource, backend, format)
            }
        }
    }

    /// The runnable model on `backend`, plus the tokenizer.
    pub fn into_model<B: Backend>(
        self,
        backend: B,
        limits: StepLimits,
    ) -> Result<(Llama<B>, Tokenizer)> {
        let weights = self.load_weights(&backend)?;
        let model = Llama::new(backend, self.config, weights, limits)?;
        Ok((model, self.tokenizer))
    }
}
