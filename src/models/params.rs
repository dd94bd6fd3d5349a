//! Parameter helpers burn does not provide in the form dace needs.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Forces every lazily initialised parameter to take its value now.
///
/// burn initialises parameters on first use, and cloning an uninitialised parameter gives the
/// clone its *own* pending initialiser: `model.clone().into_record()` would then save weights the
/// original never uses. Materialising right after `init` makes clones share one set of weights.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Number of trainable scalars (PyTorch's `sum(p.numel() for p in parameters())`): burn's
/// `num_params` also counts batch-norm running statistics. Only an autodiff backend knows which
/// tensors require gradients, hence the bound.
pub fn trainable_params<B: AutodiffBackend, M: Module<B>>(module: &M) -> usize {
    struct Count(usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}

/// Shapes of all float parameters, in visiting order (to check loaded weights against a config).
pub fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.dims().to_vec());
        }
    }
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}
