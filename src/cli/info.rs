//! `cleandift info`.

use std::fmt::Write;

use clap::Args;

use super::BackboneArgs;
use crate::model::FeatureKey;
use crate::model::weights::Backbone;

#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let bb = args.backbone.load()?;
    print!("{}", report(&bb));
    Ok(())
}

/// The text `info` prints.
pub fn report(bb: &Backbone) -> String {
    let cfg = &bb.config;
    let size = cfg.image_size();
    let mut s = String::new();
    let p = &bb.params;
    let _ = writeln!(s, "model:      {}", cfg.name);
    let _ = writeln!(s, "weights:    {}", bb.describe());
    s.push_str(&bb.layout_text());
    let _ = writeln!(s, "family:     {}", cfg.family.short());
    let _ = writeln!(s, "device:     {:?}, dtype {:?}", bb.device, bb.dtype);
    let _ = writeln!(
        s,
        "parameters: UNet {:.3} M, VAE encoder {:.3} M, text encoder {:.3} M",
        p.unet as f64 / 1e6,
        p.vae_encoder as f64 / 1e6,
        p.text as f64 / 1e6
    );
    if let Some(st) = &bb.student {
        let t = st
            .timestep
            .map_or("261 (none stored)".to_string(), |t| format!("{t:.2}"));
        let _ = writeln!(s, "student:    {} (timestep {t})", st.source);
    }
    let _ = writeln!(
        s,
        "image size: {size}x{size} (latent {0}x{0})",
        cfg.unet.sample_size
    );
    let _ = writeln!(s, "\nkey    channels  stride  grid at {size}px");
    for k in FeatureKey::ALL {
        let g = size.div_ceil(k.stride());
        let _ = writeln!(
            s,
            "{:<6} {:>8}  {:>6}  {g}x{g}",
            k.name(),
            k.channels(&cfg.unet),
            k.stride()
        );
    }
    s
}
