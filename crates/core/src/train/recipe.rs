//! The authors' fine-tune by name: `--recipe cleandift-sd21` /
//! `cleandift-sd15` set everything [CleanDIFT]'s training config and code
//! set, each value with the line it comes from (CompVis/cleandift at
//! commit `b070976`, `configs/sd{21,15}_feature_extractor.yaml`,
//! `train.py`, `src/dataloader.py`). README "Fine-tune recipes" shows the
//! same table beside the quick defaults.

use serde::{Deserialize, Serialize};

use super::data::DataRules;
use super::run::{DataOrder, TrainConfig, Trainable, Warmup};
use crate::features::preprocess::ResizeFilter;
use crate::model::FeatureKey;

/// The commit of CompVis/cleandift the values were read at.
pub const SOURCE_COMMIT: &str = "b070976b22b125167384eed5c96be3a694468763";

/// A published fine-tune recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// `configs/sd21_feature_extractor.yaml`: SD 2.1 at 768 px.
    CleandiftSd21,
    /// `configs/sd15_feature_extractor.yaml`: SD 1.5 at 512 px.
    CleandiftSd15,
}

/// One value a recipe sets, with where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeLine {
    /// The setting (our flag's name).
    pub setting: &'static str,
    /// Its value, as printed.
    pub value: String,
    /// The published source: file and line at [`SOURCE_COMMIT`].
    pub source: String,
}

impl Recipe {
    /// Every recipe.
    pub const ALL: [Recipe; 2] = [Recipe::CleandiftSd21, Recipe::CleandiftSd15];

    /// The name `--recipe` takes.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::CleandiftSd21 => "cleandift-sd21",
            Recipe::CleandiftSd15 => "cleandift-sd15",
        }
    }

    /// The config file it reproduces.
    pub fn config_file(self) -> &'static str {
        match self {
            Recipe::CleandiftSd21 => "configs/sd21_feature_extractor.yaml",
            Recipe::CleandiftSd15 => "configs/sd15_feature_extractor.yaml",
        }
    }

    /// The base model preset (the config's `ae.repo`, line 28).
    pub fn base_model(self) -> &'static str {
        match self {
            Recipe::CleandiftSd21 => "sd21",
            Recipe::CleandiftSd15 => "sd15",
        }
    }

    /// Training side in pixels (`data.img_size`, line 15).
    pub fn size(self) -> u32 {
        match self {
            Recipe::CleandiftSd21 => 768,
            Recipe::CleandiftSd15 => 512,
        }
    }

    /// Images per batch (`data.batch_size`, line 14).
    pub const BATCH: usize = 8;
    /// Adam's rate (`lr`, line 6).
    pub const LR: f64 = 1e-5;
    /// Warm-up steps (`lr_scheduler.num_warmup_steps`, line 57).
    pub const WARMUP: usize = 2000;
    /// `seed`, line 1.
    pub const SEED: u64 = 42;

    /// Checkpoint cadence (`checkpoint_freq`, line 4).
    pub fn save_every(self) -> usize {
        match self {
            Recipe::CleandiftSd21 => 200,
            Recipe::CleandiftSd15 => 100,
        }
    }

    /// How its images are read and resized (`src/dataloader.py`).
    pub fn data_rules(self) -> DataRules {
        DataRules {
            filter: ResizeFilter::Bilinear,
            listing_order: true,
            json_captions_required: true,
        }
    }

    /// Sets `cfg` to the recipe (steps, output and resume stay).
    pub fn apply(self, cfg: &mut TrainConfig) {
        let h = &mut cfg.hyper;
        h.batch_size = Self::BATCH;
        h.accum = 1;
        h.lr = Self::LR;
        h.betas = (0.9, 0.999);
        h.eps = 1e-8;
        h.warmup = Self::WARMUP;
        h.warmup_form = Warmup::FromZero;
        h.keys = FeatureKey::ALL.to_vec();
        h.trainable = Trainable::All;
        h.seed = Self::SEED;
        h.order = DataOrder::Listing;
        cfg.save_every = self.save_every();
    }

    /// Every value it sets with its source, in the order printed.
    pub fn lines(self) -> Vec<RecipeLine> {
        let cfg = self.config_file();
        let at = |line: u32| format!("{cfg}:{line}");
        let l = |setting, value: String, source: String| RecipeLine {
            setting,
            value,
            source,
        };
        vec![
            l("model", self.base_model().into(), at(28)),
            l("size", format!("{} px", self.size()), at(15)),
            l("batch", Self::BATCH.to_string(), at(14)),
            l("accum", "1".into(), at(9)),
            l("lr", "1e-5".into(), at(6)),
            l(
                "optimizer",
                "Adam, betas (0.9, 0.999), eps 1e-8, no weight decay".into(),
                "train.py:28 (torch.optim.Adam defaults)".into(),
            ),
            l(
                "warmup",
                format!(
                    "{} steps from rate 0 (step s: lr·min(1, s/{})), then constant",
                    Self::WARMUP,
                    Self::WARMUP
                ),
                format!("{cfg}:56-57 (constant_with_warmup); train.py:30-36, 69"),
            ),
            l(
                "timestep bins",
                "3 stratified, t_max 999".into(),
                format!("{cfg}:20-21"),
            ),
            l(
                "trainable",
                "all (student UNet, learned timestep, heads, mapping)".into(),
                format!("{cfg}:22-23"),
            ),
            l("keys", "all 11 (mid, us1..us10)".into(), format!("{cfg}:41-52 (feature_dims)")),
            l(
                "captions",
                "required: NAME.json {\"caption\": ...} beside each .jpg; used as prompts".into(),
                format!("{}; src/dataloader.py:24-30", at(24)),
            ),
            l(
                "data order",
                "the folder's listing order (os.listdir), consecutive batches per epoch, no shuffle"
                    .into(),
                "src/dataloader.py:24, 50".into(),
            ),
            l(
                "resize",
                "bilinear (Pillow, antialiased), stretched to size x size".into(),
                "src/dataloader.py:13 (torchvision Resize((s, s)))".into(),
            ),
            l("seed", Self::SEED.to_string(), at(1)),
            l(
                "save every",
                format!("{} steps", self.save_every()),
                at(4),
            ),
        ]
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Recipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!(
                    "recipe {s:?}: use {}",
                    Recipe::ALL.map(Recipe::name).join(" or ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_sets_the_authors_values() {
        let mut cfg = TrainConfig::new(400, "runs");
        Recipe::CleandiftSd21.apply(&mut cfg);
        let h = &cfg.hyper;
        assert_eq!((h.batch_size, h.accum, h.warmup, h.seed), (8, 1, 2000, 42));
        assert_eq!(h.lr, 1e-5);
        assert_eq!(h.warmup_form, Warmup::FromZero);
        assert_eq!(h.order, DataOrder::Listing);
        assert_eq!(h.keys.len(), 11);
        assert_eq!(cfg.save_every, 200);
        assert_eq!(cfg.steps, 400);
        // transformers' constant_with_warmup: rate 0 at the first step.
        assert_eq!(cfg.lr_at(0), 0.0);
        assert!((cfg.lr_at(1000) - 0.5e-5).abs() < 1e-18);
        assert_eq!(cfg.lr_at(2500), 1e-5);
        assert!(cfg.validate().is_ok());
        let mut sd15 = TrainConfig::new(10, "runs");
        Recipe::CleandiftSd15.apply(&mut sd15);
        assert_eq!(sd15.save_every, 100);
        assert_eq!(Recipe::CleandiftSd15.size(), 512);
    }

    #[test]
    fn names_parse_and_every_line_names_a_source() {
        for r in Recipe::ALL {
            assert_eq!(r.name().parse::<Recipe>(), Ok(r));
            for line in r.lines() {
                assert!(!line.source.is_empty(), "{}", line.setting);
            }
        }
        assert!("cleandift".parse::<Recipe>().is_err());
    }
}
