//! (being written)
use super::{BuildCtx, Elem, Op, OpResult, op_bail};
use crate::model::graph::Node;
pub fn build_add<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_sub<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_mul<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_div<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_prelu<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
