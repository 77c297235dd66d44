//! What a person picks for a fine-tune (steps, learning rate, what trains,
//! seed, where run folders go), as one serialisable type: the app's
//! Fine-tune panel persists it and turns it into a [`TrainConfig`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::recipe::Recipe;
use super::run::{TrainConfig, Trainable};

/// Where run folders go when none is chosen (relative to the current folder).
pub const DEFAULT_OUT_DIR: &str = "cleandift-train";

/// A fine-tune's choices; everything else is the paper's setting
/// ([`TrainConfig::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainChoices {
    /// Optimizer steps (batch 1).
    pub steps: usize,
    /// `None`: the model's default ([`super::run::default_lr`]).
    pub lr: Option<f64>,
    pub trainable: Trainable,
    pub seed: u64,
    /// Where run folders go (`None`: [`DEFAULT_OUT_DIR`]).
    pub out_dir: Option<PathBuf>,
    /// A published recipe (`None`: the quick fine-tune with these
    /// choices). A recipe sets the learning rate, warm-up, batch, size,
    /// what trains, seed, data rules and save cadence; only the steps and
    /// the output folder stay the person's.
    pub recipe: Option<Recipe>,
}

impl Default for TrainChoices {
    /// A short demo run: 50 steps, the model's learning rate, the whole UNet.
    fn default() -> Self {
        TrainChoices {
            steps: 50,
            lr: None,
            trainable: Trainable::All,
            seed: 0,
            out_dir: None,
            recipe: None,
        }
    }
}

impl TrainChoices {
    /// Puts values a hand-edited or older settings file may hold back in
    /// range.
    pub fn sanitize(&mut self) {
        self.steps = self.steps.clamp(1, 100_000);
        if let Some(lr) = self.lr
            && !(lr.is_finite() && lr > 0.0 && lr < 1.0)
        {
            self.lr = None;
        }
    }

    /// The folder run folders go to.
    pub fn out_dir(&self) -> PathBuf {
        self.out_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT_DIR))
    }

    /// The run's config into `out_dir` at learning rate `lr`: the paper's
    /// settings with these choices, a checkpoint at least every quarter of
    /// the run; with a recipe, the recipe's settings (`lr` unused).
    pub fn config(&self, out_dir: &Path, lr: f64) -> TrainConfig {
        let mut config = TrainConfig::new(self.steps, out_dir);
        if let Some(r) = self.recipe {
            r.apply(&mut config);
            return config;
        }
        config.hyper.lr = lr;
        config.hyper.trainable = self.trainable;
        config.hyper.seed = self.seed;
        config.save_every = (self.steps / 4).max(1).min(config.save_every);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_carries_the_choices_and_saves_every_quarter() {
        let c = TrainChoices {
            steps: 40,
            lr: Some(3e-4),
            trainable: Trainable::Decoder,
            seed: 7,
            out_dir: None,
            recipe: None,
        };
        let cfg = c.config(Path::new("runs"), 3e-4);
        assert_eq!(cfg.steps, 40);
        assert_eq!(cfg.hyper.lr, 3e-4);
        assert_eq!(cfg.hyper.trainable, Trainable::Decoder);
        assert_eq!(cfg.hyper.seed, 7);
        assert_eq!(cfg.save_every, 10);
        assert_eq!(cfg.out_dir, PathBuf::from("runs"));
        assert_eq!(c.out_dir(), PathBuf::from(DEFAULT_OUT_DIR));
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn a_recipe_in_the_choices_sets_the_run() {
        let c = TrainChoices {
            steps: 30,
            recipe: Some(Recipe::CleandiftSd15),
            ..TrainChoices::default()
        };
        let cfg = c.config(Path::new("runs"), 1e-3);
        assert_eq!(cfg.steps, 30);
        assert_eq!(cfg.hyper.lr, 1e-5);
        assert_eq!(cfg.hyper.batch_size, 8);
        assert_eq!(cfg.hyper.warmup, 2000);
        assert_eq!(cfg.save_every, 100);
        // Settings written before recipes load as the quick fine-tune.
        let old: TrainChoices = serde_json::from_str(r#"{"steps": 5}"#).expect("old form");
        assert_eq!(old.recipe, None);
    }

    #[test]
    fn sanitize_clamps_steps_and_drops_a_bad_rate() {
        let mut c = TrainChoices {
            steps: 0,
            lr: Some(f64::NAN),
            ..TrainChoices::default()
        };
        c.sanitize();
        assert_eq!(c.steps, 1);
        assert_eq!(c.lr, None);
    }
}
