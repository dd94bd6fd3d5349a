//! Run-time choice of the widest x86 vector extension for a kernel's loops.
//!
//! dace is built for the baseline x86-64 (no `target-cpu` flag, so one binary runs everywhere).
//! [`with_simd!`] compiles a function body three times: with AVX-512 (16 f32 lanes), with
//! AVX2 + FMA (8 lanes), and for the baseline; a call runs the widest one the CPU has. The
//! bodies are plain loops the compiler vectorises. Elementwise loops and sums into a fixed set of
//! lanes do the same operations in the same order on every path (no fast-math, `mul_add` rounds
//! once everywhere), so the results are the same bits whichever path runs; the tests run every
//! tier the CPU has through [`with_tier`] and compare the bits.

use std::cell::Cell;
use std::sync::OnceLock;

/// A compiled variant of the [`with_simd!`] functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Baseline,
    Avx2,
    Avx512,
}

impl Tier {
    /// Whether this CPU can run the tier.
    pub fn supported(self) -> bool {
        match self {
            Tier::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => {
                Tier::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The tiers this CPU can run, narrowest first.
    pub fn all_supported() -> Vec<Tier> {
        [Tier::Baseline, Tier::Avx2, Tier::Avx512].into_iter().filter(|t| t.supported()).collect()
    }
}

thread_local! {
    static FORCED: Cell<Option<Tier>> = const { Cell::new(None) };
}

/// The tier [`with_simd!`] functions run on this thread: the widest supported one, unless
/// [`with_tier`] chose another.
pub fn current() -> Tier {
    static WIDEST: OnceLock<Tier> = OnceLock::new();
    FORCED.get().unwrap_or_else(|| *WIDEST.get_or_init(|| *Tier::all_supported().last().expect("baseline")))
}

/// Runs `f` with this thread's [`with_simd!`] calls on `tier` (calls `f` makes on other threads
/// are not affected). `None` if the CPU cannot run `tier`.
pub fn with_tier<R>(tier: Tier, f: impl FnOnce() -> R) -> Option<R> {
    if !tier.supported() {
        return None;
    }
    let before = FORCED.replace(Some(tier));
    let result = f();
    FORCED.set(before);
    Some(result)
}

/// Defines `$vis fn $name(args) -> ret` from a body, dispatching at run time as described above.
macro_rules! with_simd {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::kernels::simd::{current, Tier};
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                match current() {
                    // SAFETY: `current` only returns tiers whose features the CPU has.
                    Tier::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Tier::Avx2 => return unsafe { avx2($($arg),*) },
                    Tier::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}

pub(crate) use with_simd;
