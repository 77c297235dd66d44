//! `eval --protocol`: a published evaluation protocol by name, its values
//! with the lines they come from (README "Evaluation protocols",
//! docs/NUMERICS.md §7).
//!
//! `dift` is DIFT's `eval_spair.py` (Tsingularity/dift at `9421eb2`). The
//! second protocol published numbers come from, GeoAware-SC / "Telling Left
//! from Right" as forked in CompVis/cleandift's `geoaware-sc-eval` branch
//! (images resized and padded to a fixed annotation size, strict `<`,
//! image threshold `α·ANNO_SIZE`, flip-adapted and soft-argmax
//! predictions), is not implemented: no number of ours may be compared
//! with a number of that protocol.

use anyhow::bail;
use clap::ValueEnum;

use super::eval::EvalArgs;

/// The commit of Tsingularity/dift the values were read at.
pub const DIFT_COMMIT: &str = "9421eb2";

/// A published evaluation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// DIFT's SPair-71k evaluation (`eval_spair.py`): prompt "a photo of a
    /// {category}", images stretched to 768×768 (Pillow bicubic), t 261,
    /// ensemble 8, `us6` (up_ft_index 1), PCK@0.1 with the bbox threshold
    /// `<=`, per point and per pair.
    Dift,
}

/// One value a protocol sets.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolLine {
    /// Our flag.
    pub flag: &'static str,
    /// Its value under the protocol.
    pub value: &'static str,
    /// Where the protocol sets it.
    pub source: &'static str,
}

impl Protocol {
    /// Every value the protocol sets, with its source.
    pub fn lines(self) -> Vec<ProtocolLine> {
        let l = |flag, value, source| ProtocolLine {
            flag,
            value,
            source,
        };
        match self {
            Protocol::Dift => vec![
                l(
                    "--prompt",
                    "a photo of a {category}",
                    "src/models/dift_sd.py:253 (SDFeaturizer4Eval)",
                ),
                l(
                    "--size",
                    "768",
                    "eval_spair.py:141 (--img_size 768 768); src/models/dift_sd.py:277 img.resize: Pillow's default, bicubic",
                ),
                l(
                    "--letterbox",
                    "off (stretch)",
                    "src/models/dift_sd.py:277 img.resize((768, 768))",
                ),
                l("--t", "261", "eval_spair.py:145 (--t)"),
                l("--ensemble", "8", "eval_spair.py:147 (--ensemble_size)"),
                l("--layers", "us6", "eval_spair.py:146 (--up_ft_index 1)"),
                l(
                    "--alpha",
                    "0.1",
                    "eval_spair.py:100, 122, 132-133: bbox threshold max(h, w), dist/threshold <= 0.1, per point and per pair",
                ),
            ],
        }
    }

    /// `a` with the protocol's values, and one note per value a flag given
    /// overrides. A flag left at its default takes the protocol's value;
    /// options the protocol cannot run with are refused by name.
    pub fn apply(self, a: &EvalArgs) -> anyhow::Result<(EvalArgs, Vec<String>)> {
        let mut out = a.clone();
        let mut notes = Vec::new();
        match self {
            Protocol::Dift => {
                let dataset = a.dataset.as_deref().unwrap_or("");
                if !dataset.starts_with("spair:") {
                    bail!(
                        "--protocol dift is DIFT's SPair-71k evaluation: use --dataset spair:DIR (given {dataset:?})"
                    );
                }
                if a.features.letterbox {
                    bail!(
                        "--protocol dift stretches every image to 768x768 as DIFT does: drop --letterbox"
                    );
                }
                if a.features.sources.trim() != "sd" {
                    bail!(
                        "--protocol dift evaluates diffusion features (--features sd); --features {} is not DIFT's protocol",
                        a.features.sources
                    );
                }
                let f = &mut out.features;
                let mut take = |flag: &str, current: &mut String, default: &str, value: &str| {
                    if current.trim() == default {
                        *current = value.to_string();
                    } else if current.trim() != value {
                        notes.push(format!(
                            "{flag} {current:?} given: overrides the protocol's {value:?}"
                        ));
                    }
                };
                take("--prompt", &mut f.prompt, "", "a photo of a {category}");
                take("--size", &mut f.size, "model", "768");
                take("--layers", &mut f.layers, "us6", "us6");
                take("--alpha", &mut out.alpha, "0.05,0.1,0.15", "0.1");
                if f.t != 261.0 {
                    notes.push(format!("--t {} given: overrides the protocol's 261", f.t));
                }
                if f.ensemble != 8 {
                    notes.push(format!(
                        "--ensemble {} given: overrides the protocol's 8",
                        f.ensemble
                    ));
                }
            }
        }
        Ok((out, notes))
    }

    /// What the protocol set, printed before the run.
    pub fn report(self) -> String {
        let mut s = match self {
            Protocol::Dift => format!(
                "protocol dift: Tsingularity/dift eval_spair.py at {DIFT_COMMIT} (its 'per point' is our bb/pt, its 'per image' our bb/img)\n"
            ),
        };
        for l in self.lines() {
            s.push_str(&format!("  {:<12} {}  [{}]\n", l.flag, l.value, l.source));
        }
        s
    }
}
