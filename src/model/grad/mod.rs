//! Exact input gradients of an ONNX graph: tract runs inference only, so the
//! reverse pass is ours.
//!
//! The engine owns three things: the tensor types rules work on ([`Value`],
//! generic over [`Elem`] so every rule also runs in `f64` for its tests), the
//! op registry (one [`OpEntry`] line per ONNX op type, rules grouped one file
//! per op family), and the [`Engine`] that evaluates the nodes between the
//! image input and the logits, keeps what the backward rules need, and runs
//! them in reverse. It does not load files (see `model::graph`) and does not
//! know about attacks (the caller picks a [`Loss`]).

mod activation;
mod conv;
mod elementwise;
pub mod engine;
mod im2col;
mod linear;
mod loss;
mod matmul;
mod norm;
mod panel;
mod pool;
mod reduce;
mod resize;
mod shape;
mod simd;
mod value;
mod vmath;
mod winograd;

#[cfg(test)]
pub(crate) mod testutil;

pub use engine::{Engine, Tape};
pub use loss::{Loss, LossKind};
pub use value::{Elem, Value};

use crate::model::graph::Node;
use std::fmt;

/// Why one op could not be built or evaluated. The engine adds the node's
/// name and op type when it turns this into a [`crate::error::GradError`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpError(pub String);

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type OpResult<X> = Result<X, OpError>;

/// Returns early with an [`OpError`] built like `format!`.
macro_rules! op_bail {
    ($($arg:tt)*) => { return Err($crate::model::grad::OpError(format!($($arg)*))) };
}
pub(crate) use op_bail;

/// What a backward rule is given. Only the first output of a node is
/// differentiable (Dropout masks, MaxPool indices and LayerNormalization's
/// statistics are not), which the engine enforces when it plans the path.
pub struct Backward<'a, T: Elem> {
    /// The node's inputs as evaluated in the forward pass (`None` = absent optional input).
    pub inputs: &'a [Option<&'a Value<T>>],
    /// The node's first output as evaluated in the forward pass.
    pub output: &'a Value<T>,
    /// ∂loss/∂output, same shape as `output`.
    pub dout: &'a ndarray::ArrayD<T>,
    /// `wrt[i]`: the engine needs ∂loss/∂inputs[i].
    pub wrt: &'a [bool],
    /// What the forward pass saved for this backward pass (see
    /// [`Op::saves_for_backward`]); `None` when it saved nothing, and then the
    /// rule recomputes what it needs.
    pub saved: Option<&'a Value<T>>,
}

/// One ONNX op with its attributes already parsed.
pub trait Op<T: Elem>: Send + Sync {
    /// Evaluates the node. `inputs[i]` is `None` for an absent optional input.
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>>;

    /// Returns, for every input `i` with `ctx.wrt[i]`, ∂loss/∂input i (same shape
    /// as that input); `None` elsewhere. The vector has one entry per input.
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ndarray::ArrayD<T>>>> {
        let _ = ctx;
        op_bail!("this op has no backward rule")
    }

    /// True for ops whose output does not depend differentiably on any input
    /// (Shape, Size, Cast to an integer type): the gradient path stops here.
    fn stops_gradient(&self) -> bool {
        false
    }

    /// True when `forward` returns one value after the node's outputs, which
    /// the engine keeps on the tape and hands to `backward` as
    /// [`Backward::saved`]: work the forward pass did anyway (MaxPool's
    /// argmax) need not be repeated.
    fn saves_for_backward(&self) -> bool {
        false
    }

    /// Called once when the engine is built, with the values of the inputs
    /// that are constant (`None` for the others); every later `forward` and
    /// `backward` receives exactly these values for those inputs, so an op
    /// may precompute from them (Conv packs its weight matrix).
    fn prepare(&mut self, constants: &[Option<&Value<T>>]) {
        let _ = constants;
    }

    /// Called when the engine is built, for an op whose only reader is a
    /// Relu: true if the op now applies the ReLU to its own output (and its
    /// backward rule starts with the ReLU's), so the engine drops the Relu
    /// node. Saves a pass over the tensor and a copy of it on the tape.
    fn absorb_relu(&mut self) -> bool {
        false
    }
}

pub type Builder<T> = fn(&Node, &BuildCtx) -> OpResult<Box<dyn Op<T>>>;

/// Facts about the model an op builder may need beyond its own node.
#[derive(Debug, Clone, Copy)]
pub struct BuildCtx {
    /// The default-domain opset the model imports: several ops moved
    /// attributes to inputs or changed axis conventions across opsets.
    pub opset: i64,
}

/// One registered ONNX op type.
pub struct OpEntry<T: Elem> {
    pub name: &'static str,
    /// False for ops that can only be evaluated off the gradient path
    /// (shape arithmetic, constants).
    pub differentiable: bool,
    pub build: Builder<T>,
}

/// Every op the engine knows: one line per ONNX op type.
pub fn registry<T: Elem>() -> Vec<OpEntry<T>> {
    fn e<T: Elem>(name: &'static str, differentiable: bool, build: Builder<T>) -> OpEntry<T> {
        OpEntry { name, differentiable, build }
    }
    vec![
        e("Conv", true, conv::build_conv::<T>),
        e("Gemm", true, linear::build_gemm::<T>),
        e("MatMul", true, linear::build_matmul::<T>),
        e("Add", true, elementwise::build_add::<T>),
        e("Sub", true, elementwise::build_sub::<T>),
        e("Mul", true, elementwise::build_mul::<T>),
        e("Div", true, elementwise::build_div::<T>),
        e("PRelu", true, elementwise::build_prelu::<T>),
        e("Relu", true, activation::build_relu::<T>),
        e("LeakyRelu", true, activation::build_leaky_relu::<T>),
        e("Sigmoid", true, activation::build_sigmoid::<T>),
        e("Tanh", true, activation::build_tanh::<T>),
        e("Clip", true, activation::build_clip::<T>),
        e("Elu", true, activation::build_elu::<T>),
        e("HardSigmoid", true, activation::build_hard_sigmoid::<T>),
        e("HardSwish", true, activation::build_hard_swish::<T>),
        e("Gelu", true, activation::build_gelu::<T>),
        e("Erf", true, activation::build_erf::<T>),
        e("Exp", true, activation::build_exp::<T>),
        e("Log", true, activation::build_log::<T>),
        e("Sqrt", true, activation::build_sqrt::<T>),
        e("Neg", true, activation::build_neg::<T>),
        e("Abs", true, activation::build_abs::<T>),
        e("Softplus", true, activation::build_softplus::<T>),
        e("Round", true, activation::build_round::<T>),
        e("Floor", true, activation::build_floor::<T>),
        e("Ceil", true, activation::build_ceil::<T>),
        e("Identity", true, activation::build_identity::<T>),
        e("Dropout", true, activation::build_identity::<T>),
        e("Cast", true, shape::build_cast::<T>),
        e("Softmax", true, activation::build_softmax::<T>),
        e("LogSoftmax", true, activation::build_log_softmax::<T>),
        e("MaxPool", true, pool::build_max_pool::<T>),
        e("AveragePool", true, pool::build_average_pool::<T>),
        e("GlobalAveragePool", true, pool::build_global_average_pool::<T>),
        e("GlobalMaxPool", true, pool::build_global_max_pool::<T>),
        e("ReduceMean", true, reduce::build_reduce_mean::<T>),
        e("ReduceSum", true, reduce::build_reduce_sum::<T>),
        e("BatchNormalization", true, norm::build_batch_norm::<T>),
        e("InstanceNormalization", true, norm::build_instance_norm::<T>),
        e("LayerNormalization", true, norm::build_layer_norm::<T>),
        e("Flatten", true, shape::build_flatten::<T>),
        e("Reshape", true, shape::build_reshape::<T>),
        e("Transpose", true, shape::build_transpose::<T>),
        e("Squeeze", true, shape::build_squeeze::<T>),
        e("Unsqueeze", true, shape::build_unsqueeze::<T>),
        e("Concat", true, shape::build_concat::<T>),
        e("Slice", true, shape::build_slice::<T>),
        e("Gather", true, shape::build_gather::<T>),
        e("Pad", true, shape::build_pad::<T>),
        e("Resize", true, resize::build_resize::<T>),
        e("Upsample", true, resize::build_upsample::<T>),
        e("Constant", false, shape::build_constant::<T>),
        e("ConstantOfShape", false, shape::build_constant_of_shape::<T>),
        e("Shape", false, shape::build_shape::<T>),
        e("Size", false, shape::build_size::<T>),
    ]
}

/// Op types with a backward rule, sorted, for error messages and `inspect`.
pub fn differentiable_ops() -> Vec<&'static str> {
    let mut names: Vec<_> = registry::<f32>().into_iter().filter(|e| e.differentiable).map(|e| e.name).collect();
    names.sort_unstable();
    names
}
