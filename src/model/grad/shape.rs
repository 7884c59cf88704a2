//! (being written)
use super::{BuildCtx, Elem, Op, OpResult, op_bail};
use crate::model::graph::Node;
pub fn build_cast<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_flatten<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_reshape<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_transpose<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_squeeze<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_unsqueeze<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_concat<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_slice<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_gather<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_pad<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_constant<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_constant_of_shape<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_shape<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_size<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
