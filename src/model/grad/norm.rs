//! (being written)
use super::{BuildCtx, Elem, Op, OpResult, op_bail};
use crate::model::graph::Node;
pub fn build_batch_norm<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_instance_norm<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_layer_norm<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
