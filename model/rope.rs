//! The RoPE cos/sin table, computed once: row `p` is `[cos(p·f_0..f_half) | sin(p·f_0..f_half)]`.

use super::config::{ModelConfig, RopeScaling};

/// Inverse frequencies `theta^(-2i/d)`, adjusted by the config's scaling, in f32 as HF does.
pub fn inv_freqs(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f32 / d as f32))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f // high frequencies: unchanged
                    } else if wavelen > low_wavelen {
                        f / factor // low frequencies: fully scaled
                    } else {
                        // in between: interpolate smoothly
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// `[positions, head_dim]` table for positions `0..positions`.
pub fn cos_sin_table(cfg: &ModelConfig, positions: usize) -> Vec<f32> {
    let freqs = inv_freqs(cfg);
    let half = freqs.len();
    let mut table = vec![0.0f32; positions * 2 * half];
    for (p, row) in table.chunks_exact_mut(2 * half).enumerate() {
        let (cos, sin) = row.split_at_mut(half);
        for (i, f) in freqs.iter().enumerate() {
            // The angle is rounded to f32 first, as HF computes it, then taken in f64.
            let angle = (p as f32 * f) as f64;
            cos[i] = angle.cos() as f32;
            sin[i] = angle.sin() as f32;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Arch;

    fn cfg(scaling: RopeScaling) -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            vocab_size: 10,
            hidden_size: 64,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 4,
            num_kv_heads: 4,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: scaling,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            qk_norm: false,
            sliding_window: None,
        }
    }

    #[test]
    fn plain_frequencies_and_table() {
        let f = inv_freqs(&cfg(RopeScaling::None));
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 10000f32.powf(-2.0 / 16.0)).abs() < 1e-9);
        let t = cos_sin_table(&cfg(RopeScaling::None), 3);
        assert_eq!(&t[..8], &[1.0; 8]);
        assert!((t[16] - 1f32.cos()).abs() < 1e-7 && (t[24] - 1f32.sin()).abs() < 1e-7);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = inv_freqs(&cfg(RopeScaling::None));
        let scaled = inv_freqs(&cfg(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32.0,
        }));
        assert_eq!(scaled[0], plain[0], "wavelength 2π < 8: unchanged");
        let last = plain.len() - 1;
        assert!(
            (scaled[last] - plain[last] / 8.0).abs() < 1e-12,
            "long wavelength: divided"
        );
        assert!(scaled
            .iter()
            .zip(&plain)
            .all(|(s, p)| s <= p && *s >= p / 8.0));
    }
}
