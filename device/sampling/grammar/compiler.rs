//! Constraint spec → compiled grammar, with a bounded cache keyed by the spec's text (clients
//! tend to send the same schema again and again; compiling one can take milliseconds).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory};

use super::spec::ConstraintSpec;
use super::stats::GrammarStats;

/// Most compiled grammars kept; the oldest is dropped first.
pub const CACHE_CAPACITY: usize = 64;

/// A grammar ready to constrain requests: a fresh matcher each request's copy starts from.
pub struct CompiledGrammar {
    key: String,
    template: Mutex<Matcher>,
    stats: Arc<GrammarStats>,
}

impl CompiledGrammar {
    /// A matcher at the grammar's start, counted live until dropped.
    pub(crate) fn start(&self) -> Matcher {
        let m = self
            .template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.stats.matcher_created();
        m
    }

    pub(crate) fn stats(&self) -> &Arc<GrammarStats> {
        &self.stats
    }

    /// The spec text it was compiled from.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledGrammar")
            .field("key", &self.key)
            .finish()
    }
}

impl PartialEq for CompiledGrammar {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

pub struct GrammarCompiler {
    factory: ParserFactory,
    cache: Mutex<Cache>,
    stats: Arc<GrammarStats>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Arc<CompiledGrammar>>,
    order: VecDeque<String>,
}

impl GrammarCompiler {
    /// A compiler for the tokenizer `env` describes (`model::token_env::token_env`).
    pub fn new(env: TokEnv, stats: Arc<GrammarStats>) -> Result<Self> {
        let mut factory = ParserFactory::new_simple(&env)?;
        factory.quiet();
        Ok(GrammarCompiler {
            factory,
            cache: Mutex::default(),
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<GrammarStats> {
        &self.stats
    }

    /// The compiled grammar for `spec`, or llguidance's reason it cannot be (e.g. an unsupported
    /// schema keyword), meant for the client.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Arc<CompiledGrammar>, String> {
        let key = spec.cache_key();
        if let Some(g) = self.lock().map.get(&key) {
            return Ok(Arc::clone(g));
        }
        let started = Instant::now();
        let parser = self
            .factory
            .create_parser(spec.to_grammar())
            .map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        self.stats.compiled(started.elapsed());
        let compiled = Arc::new(CompiledGrammar {
            key: key.clone(),
            template: Mutex::new(matcher),
            stats: Arc::clone(&self.stats),
        });
        let mut cache = self.lock();
        if cache.map.len() >= CACHE_CAPACITY {
            if let Some(old) = cache.order.pop_front() {
                cache.map.remove(&old);
            }
        }
        if cache
            .map
            .insert(key.clone(), Arc::clone(&compiled))
            .is_none()
        {
            cache.order.push_back(key);
        }
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
