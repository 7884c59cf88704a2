//! (being written)
use super::{BuildCtx, Elem, Op, OpResult, op_bail};
use crate::model::graph::Node;
pub fn build_max_pool<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_average_pool<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_global_average_pool<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_global_max_pool<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
