//! A student's per-epoch checkpoint: weights, both AdamW states and the history so far, so that a
//! killed student (a preempted cluster job, a closed laptop) resumes where it stopped and trains
//! to the same weights as an uninterrupted run (batch order, augmentation and regenerated images
//! are pure functions of the seeds and the epoch).
//!
//! Layout of the checkpoint folder: `model-<epoch>.bin`, `optim-<epoch>.bin` (burn's named
//! MessagePack records) and `state.json`, written last and naming the epoch whose files are
//! whole; older epochs' files are removed after it. A crash at any point leaves a state.json that
//! names complete files.

use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::record::Recorder;
use serde::{Deserialize, Serialize};

use super::config::{EpochPoint, StudentConfig};
use crate::error::{DaceError, Result};
use crate::fsio;
use crate::kernels::TrainBackend;
use crate::models::Classifier;
use crate::train::checkpoint::{model_from_bytes, model_to_bytes, WeightRecorder};

const FORMAT: &str = "dace-student-checkpoint/1";
const STATE_FILE: &str = "state.json";

/// Where a student checkpoints, and whether it may pick up a checkpoint it finds there.
#[derive(Clone, Debug)]
pub struct StudentCheckpoint {
    pub dir: PathBuf,
    pub resume: bool,
}

/// What a run has done so far, besides weights and optimiser state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub epochs_done: usize,
    pub history: Vec<EpochPoint>,
    pub trained_images: usize,
    pub train_seconds: f64,
    pub regen_seconds: f64,
}

#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    config: StudentConfig,
    set_fingerprint: String,
    progress: Progress,
}

fn model_file(epoch: usize) -> String {
    format!("model-{epoch}.bin")
}

fn optim_file(epoch: usize) -> String {
    format!("optim-{epoch}.bin")
}

impl StudentCheckpoint {
    /// Whether a run already saved an epoch here.
    pub fn exists(&self) -> bool {
        self.dir.join(STATE_FILE).exists()
    }

    /// Refuses to overwrite another run's checkpoint unless resuming (and a checkpoint of other
    /// settings even then), so two runs never mix their epochs.
    pub fn check_start(&self, config: &StudentConfig, set_fingerprint: &str) -> Result<Option<Progress>> {
        let path = self.dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        if !self.resume {
            return Err(DaceError::Invalid(format!(
                "{} holds a student checkpoint: pass --resume to continue it, or choose another --out",
                self.dir.display()
            )));
        }
        let state: State = fsio::read_json(&path)?;
        if state.format != FORMAT {
            return Err(DaceError::bad_file(&path, format!("format `{}`, expected `{FORMAT}`", state.format)));
        }
        let (saved, wanted) = (serde_json::to_value(&state.config).ok(), serde_json::to_value(config).ok());
        if saved != wanted {
            return Err(DaceError::bad_file(
                &path,
                "the checkpoint is of other student settings (architecture, epochs, batch, seed or augmentation)",
            ));
        }
        if state.set_fingerprint != set_fingerprint {
            return Err(DaceError::bad_file(&path, "the checkpoint trained on another package or training set"));
        }
        if state.progress.epochs_done > config.epochs || state.progress.history.len() != state.progress.epochs_done {
            return Err(DaceError::bad_file(&path, "inconsistent epoch count"));
        }
        Ok(Some(state.progress))
    }

    /// Saves the state after `progress.epochs_done` epochs, then drops the previous epoch's files.
    pub fn save<B: TrainBackend, O: Optimizer<Classifier<B>, B>>(
        &self,
        config: &StudentConfig,
        set_fingerprint: &str,
        model: &Classifier<B>,
        optims: &[O; 2],
        progress: &Progress,
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| DaceError::io(&self.dir, e))?;
        let epoch = progress.epochs_done;
        fsio::write_atomic(&self.dir.join(model_file(epoch)), &model_to_bytes(model)?)?;
        let records = optims.iter().map(|o| o.to_record()).collect::<Vec<_>>();
        let bytes = WeightRecorder::default()
            .record(records, ())
            .map_err(|e| DaceError::Invalid(format!("cannot serialise the student's optimiser state: {e}")))?;
        fsio::write_atomic(&self.dir.join(optim_file(epoch)), &bytes)?;
        let state =
            State { format: FORMAT.into(), config: config.clone(), set_fingerprint: set_fingerprint.into(), progress: progress.clone() };
        fsio::write_json(&self.dir.join(STATE_FILE), &state)?;
        if epoch > 0 {
            for stale in [model_file(epoch - 1), optim_file(epoch - 1)] {
                let _ = std::fs::remove_file(self.dir.join(stale));
            }
        }
        Ok(())
    }

    /// The weights saved after `epochs_done` epochs.
    pub fn load_model<B: TrainBackend>(&self, config: &StudentConfig, epochs_done: usize, device: &B::Device) -> Result<Classifier<B>> {
        let path = self.dir.join(model_file(epochs_done));
        model_from_bytes::<B>(&config.model, fsio::read(&path)?, &path, device)
    }

    /// The two optimiser states saved after `epochs_done` epochs, loaded into `optims` (made for
    /// the loaded weights).
    pub fn load_optims<B: TrainBackend, O: Optimizer<Classifier<B>, B>>(
        &self,
        epochs_done: usize,
        optims: [O; 2],
        device: &B::Device,
    ) -> Result<[O; 2]> {
        let path = self.dir.join(optim_file(epochs_done));
        let bytes = fsio::read(&path)?;
        // burn's record reader panics on some malformed records: that is a bad file too.
        let loaded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| WeightRecorder::default().load::<Vec<O::Record>>(bytes, device)));
        let records = match loaded {
            Ok(Ok(r)) if r.len() == 2 => r,
            Ok(Ok(r)) => return Err(DaceError::bad_file(&path, format!("{} optimiser states, expected 2", r.len()))),
            Ok(Err(e)) => return Err(DaceError::bad_file(&path, format!("cannot read the optimiser state: {e}"))),
            Err(_) => return Err(DaceError::bad_file(&path, "cannot read the optimiser state: malformed record")),
        };
        let mut records = records.into_iter();
        let [a, b] = optims;
        let (ra, rb) = (records.next().expect("two records"), records.next().expect("two records"));
        Ok([a.load_record(ra), b.load_record(rb)])
    }
}

/// The checkpoint folder of a student writing to `out`.
pub fn default_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}
