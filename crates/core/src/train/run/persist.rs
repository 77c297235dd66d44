//! Checkpoints of a run: the space check, saving, and resuming.

use std::path::Path;

use candle_core::DType;

use crate::model::FeatureKey;
use crate::model::weights::Backbone;
use crate::train::checkpoint::{
    self, Entry, LoadedState, SavedSettings, StateMeta, read_state, state_file_name,
    student_file_name, write_state, write_student,
};
use crate::train::data::Dataset;
use crate::train::heads::Heads;
use crate::train::objective::{StudentCopy, T_INIT};
use crate::train::rundir::{self, CkptDir, RunDir};
use crate::train::{Result, TrainError};

use super::{Adam, Checkpoint, TrainConfig, Trainer};

/// Refuses to start when the run folder's file system lacks room for the
/// checkpoints: one more (the previous one stays until the new one is
/// complete), two when none exists yet.
pub(super) fn check_space(dir: &Path, trainer: &Trainer, has_checkpoint: bool) -> Result<()> {
    let student: usize = trainer
        .student
        .named_tensors()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    // Student (f32), then parameters and Adam's two moments per trainable
    // scalar, plus a little for headers.
    let one = (student as u64 + 3 * trainer.trainable_scalars() as u64) * 4 + (1 << 16);
    let need = if has_checkpoint { one } else { 2 * one };
    if let Some(free) = rundir::free_space(dir)
        && free < need
    {
        return Err(TrainError::NoSpace {
            path: dir.to_path_buf(),
            need,
            free,
        });
    }
    Ok(())
}

/// Commits the state and the student of `step` as one checkpoint folder.
pub(super) fn save(
    trainer: &Trainer,
    run: &RunDir,
    base: &str,
    step: usize,
    settings: &SavedSettings,
) -> Result<Checkpoint> {
    let timestep = trainer.student.timestep_value()?;
    let meta = StateMeta {
        version: checkpoint::STATE_VERSION,
        step,
        adam_step: trainer.adam.t,
        base: base.to_string(),
        timestep: f64::from(timestep),
        student_file: student_file_name(base),
        settings: settings.clone(),
    };
    let mut tensors = trainer.heads.named_tensors();
    tensors.push((
        "timestep".into(),
        trainer.student.timestep().as_tensor().clone(),
    ));
    let mut entries = Entry::tensors(&tensors);
    entries.extend(trainer.adam.state_entries());
    let ck = run.commit(step, |dir| {
        write_state(&dir.join(state_file_name(base)), &meta, &entries)?;
        write_student(
            &dir.join(student_file_name(base)),
            trainer.student.named_tensors(),
            timestep,
            step,
            base,
        )
    })?;
    Ok(checkpoint_of(run, &ck, base))
}

fn checkpoint_of(run: &RunDir, ck: &CkptDir, base: &str) -> Checkpoint {
    Checkpoint {
        step: ck.step,
        student: run.student_path(),
        state: ck.dir.join(state_file_name(base)),
        dir: ck.dir.clone(),
        run_dir: run.path().to_path_buf(),
    }
}

/// Rebuilds the trainer from the checkpoint `ck` of `run`.
pub(super) fn resume(
    bb: &Backbone,
    cfg: &TrainConfig,
    keys: &[FeatureKey],
    base: &str,
    data: &Dataset,
    run: &RunDir,
    ck: &CkptDir,
) -> Result<(Trainer, usize, Checkpoint)> {
    let dir = ck.dir.as_path();
    let state_path = checkpoint::find_state(dir)?;
    let bad = |why: String| TrainError::Checkpoint {
        path: state_path.clone(),
        why,
    };
    let LoadedState { meta, tensors } = read_state(&state_path, &bb.device)?;
    if meta.base != base {
        return Err(bad(format!(
            "it belongs to a {} run; this backbone is {base}",
            meta.base
        )));
    }
    if meta.settings.hyper.keys != keys {
        return Err(bad(format!(
            "it aligns {}; this run asks for {} (the heads differ)",
            names(&meta.settings.hyper.keys),
            names(keys)
        )));
    }
    if meta.settings.hyper.trainable != cfg.hyper.trainable {
        return Err(bad(format!(
            "it trains {} parameters; this run asks for {}",
            meta.settings.hyper.trainable, cfg.hyper.trainable
        )));
    }
    if meta.settings.size != data.size() {
        tracing::warn!(
            "resuming a run trained at {} px at {} px",
            meta.settings.size,
            data.size()
        );
    }
    let student_path = dir.join(&meta.student_file);
    if !student_path.is_file() {
        return Err(bad(format!(
            "its student {} is missing",
            student_path.display()
        )));
    }
    let student_step = checkpoint::student_step(&student_path)?;
    if student_step != Some(meta.step) {
        return Err(bad(format!(
            "the student file is from step {}, the training state from step {}: the last save was interrupted; {} alone is still a usable student",
            student_step.map_or("?".into(), |s| s.to_string()),
            meta.step,
            student_path.display()
        )));
    }
    let saved = crate::model::weights::read_safetensors(&student_path, &bb.device, DType::F32)?;
    let timestep = tensors
        .get("timestep")
        .map(|t| -> Result<f64> {
            Ok(f64::from(
                t.flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(T_INIT as f32),
            ))
        })
        .transpose()?
        .unwrap_or(meta.timestep);
    let student = StudentCopy::from_backend(
        Box::new(saved),
        &bb.config.unet,
        cfg.hyper.trainable,
        timestep,
        &bb.device,
    )?;
    let mut heads = Heads::new(
        keys,
        |k| k.channels(&bb.config.unet),
        meta.settings.hyper.seed,
        &bb.device,
    )?;
    heads.load_from(&tensors)?;
    let mut adam = Adam::new(cfg.hyper.betas.0, cfg.hyper.betas.1, cfg.hyper.eps);
    adam.load(&tensors, meta.adam_step);
    Ok((
        Trainer::new(student, heads, adam),
        meta.step,
        checkpoint_of(
            run,
            &CkptDir {
                step: meta.step,
                dir: dir.to_path_buf(),
            },
            base,
        ),
    ))
}

fn names(keys: &[FeatureKey]) -> String {
    keys.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}
