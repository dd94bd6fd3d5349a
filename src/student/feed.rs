//! Where a student's epoch images come from: its fixed set, a regeneration run between epochs,
//! or a regeneration that runs one epoch ahead on its own thread while the current epoch trains.
//!
//! The prefetching thread hands each epoch over through a rendezvous channel: it finishes epoch
//! e + 1 and waits until the trainer asks for it, so at most two epochs of images (the one being
//! trained on and the next) are alive beside the regeneration cache. Images are a pure function
//! of (seed, patch), and the trainer's kernels sum in a fixed order, so prefetching changes when
//! images are made, never the trained weights.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::Scope;

use crate::error::{DaceError, Result};

/// A producer of epoch images: `(seed index, seed) ->` u8 images of every item.
pub type EpochImages<'a> = &'a mut (dyn FnMut(usize, u64) -> Result<Arc<Vec<u8>>> + Send);

/// Epoch images supplied by a regenerator, and whether it may run ahead on its own thread.
pub struct EpochSource<'a> {
    pub images: EpochImages<'a>,
    pub prefetch: bool,
}

/// The images of the coming epochs, in order.
pub enum EpochFeed<'a> {
    /// The training set's own images every epoch.
    Fixed,
    /// Made when asked for, on the training thread.
    Inline { images: EpochImages<'a>, wanted: std::vec::IntoIter<(usize, u64)> },
    /// Made one epoch ahead by a thread of the enclosing scope.
    Prefetched(Receiver<Result<Arc<Vec<u8>>>>),
}

impl<'a> EpochFeed<'a> {
    /// The feed of `wanted` (seed index, seed) pairs, one per coming epoch, from `source`.
    pub fn start<'scope>(scope: &'scope Scope<'scope, '_>, source: Option<EpochSource<'a>>, wanted: Vec<(usize, u64)>) -> EpochFeed<'a>
    where
        'a: 'scope,
    {
        match source {
            None => EpochFeed::Fixed,
            Some(EpochSource { images, prefetch: false }) => EpochFeed::Inline { images, wanted: wanted.into_iter() },
            Some(EpochSource { images, prefetch: true }) => {
                let (tx, rx) = sync_channel(0);
                scope.spawn(move || {
                    for (index, seed) in wanted {
                        let made = images(index, seed);
                        let failed = made.is_err();
                        // The trainer stopped (finished, or failed first): nothing more to make.
                        if tx.send(made).is_err() || failed {
                            return;
                        }
                    }
                });
                EpochFeed::Prefetched(rx)
            }
        }
    }

    /// The next epoch's images (`None` for the fixed set).
    pub fn next_epoch(&mut self) -> Result<Option<Arc<Vec<u8>>>> {
        match self {
            EpochFeed::Fixed => Ok(None),
            EpochFeed::Inline { images, wanted } => {
                let (index, seed) = wanted.next().ok_or_else(|| DaceError::Invalid("more epochs than planned".into()))?;
                images(index, seed).map(Some)
            }
            EpochFeed::Prefetched(rx) => match rx.recv() {
                Ok(made) => made.map(Some),
                Err(_) => Err(DaceError::Invalid("the regeneration thread stopped before the last epoch".into())),
            },
        }
    }
}
