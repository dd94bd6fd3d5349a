//! Supervised training shared by the teacher (and later the students): batching with augmentation,
//! the training loop with checkpoint/resume, evaluation and model checkpoints, and the import of
//! pretrained torchvision/timm ResNets as teachers (`import`) with a parity check against the
//! logits their framework computes (`parity`).

pub mod batch;
pub mod checkpoint;
pub mod eval;
pub mod import;
pub mod optim;
pub mod parity;
pub mod progress;
pub mod step;
pub mod teacher;

pub use batch::{CropKind, ImageBatcher};
pub use checkpoint::{load_model, save_model, ModelMeta, ModelSource, Normalization, SourceLibrary};
pub use eval::{evaluate, EvalReport};
pub use teacher::{train_teacher, TeacherConfig, TeacherReport};
