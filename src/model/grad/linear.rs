//! (being written)
use super::{BuildCtx, Elem, Op, OpResult, op_bail};
use crate::model::graph::Node;
pub fn build_gemm<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
pub fn build_matmul<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> { op_bail!("not implemented yet") }
