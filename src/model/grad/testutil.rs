//! Test harness for backward rules: every rule is checked against central
//! finite differences of its own forward pass, computed in f64.
//!
//! For an op y = f(x₁…xₙ) and a fixed random cotangent v, the scalar
//! L = ⟨v, f(x)⟩ has ∂L/∂xᵢ = backward(v)ᵢ, which is what a rule must return.
//! Central differences with h = 1e-6 in f64 have truncation error
//! O(h²·f‴) ≈ 1e-12 and rounding error ≈ ε·|L|/h ≈ 1e-10·|L|, so a tolerance
//! of 1e-6·(1 + |∂L/∂x|) is loose for a correct rule and tight enough that a
//! missing or wrong term (errors of order 1e-2 or more) fails. Inputs are
//! drawn so that no element sits within 1e-3 of a kink (ReLU at 0, ties in a
//! max), where the derivative is undefined.

use super::{Backward, BuildCtx, Value, registry};
use crate::model::graph::{Attr, Node};
use ndarray::{ArrayD, IxDyn};

/// Deterministic uniform values in [lo, hi), kept at least 1e-3 away from 0
/// and from each other's ties by construction of a continuous distribution.
pub fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> ArrayD<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x2545_F491_4F6C_DD1D);
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64;
            let mut v = lo + (hi - lo) * u;
            if v.abs() < 1e-3 {
                v = if v < 0.0 { v - 2e-3 } else { v + 2e-3 };
            }
            v
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

pub fn f(shape: &[usize], seed: u64) -> Option<Value<f64>> {
    Some(Value::F(uniform(shape, seed, -2.0, 2.0)))
}

pub fn ints(values: &[i64]) -> Option<Value<f64>> {
    Some(Value::I(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values.to_vec()).unwrap()))
}

pub fn floats(shape: &[usize], values: &[f64]) -> Option<Value<f64>> {
    Some(Value::F(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap()))
}

pub fn node(op: &str, attrs: &[(&str, Attr)]) -> Node {
    attrs.iter().fold(Node::new(op), |n, (k, v)| n.with(k, v.clone()))
}

pub fn run_forward(node: &Node, opset: i64, inputs: &[Option<Value<f64>>]) -> Vec<Value<f64>> {
    let entry = registry::<f64>().into_iter().find(|e| e.name == node.op_type).expect("op registered");
    let op = (entry.build)(node, &BuildCtx { opset }).expect("op builds");
    let args: Vec<_> = inputs.iter().map(|v| v.as_ref()).collect();
    let mut outs = op.forward(&args).expect("forward runs");
    if op.saves_for_backward() {
        outs.pop();
    }
    outs
}

/// Checks the backward rule of `node` for every input `i` with `wrt[i]`
/// against central differences (see the module comment for the tolerance).
/// Returns the forward output so callers can also check values.
pub fn check_rule(node: &Node, opset: i64, inputs: Vec<Option<Value<f64>>>, wrt: &[bool]) -> ArrayD<f64> {
    let entry = registry::<f64>().into_iter().find(|e| e.name == node.op_type).expect("op registered");
    let op = (entry.build)(node, &BuildCtx { opset }).expect("op builds");
    let eval = |inputs: &[Option<Value<f64>>]| -> (ArrayD<f64>, Option<Value<f64>>) {
        let args: Vec<_> = inputs.iter().map(|v| v.as_ref()).collect();
        let mut out = op.forward(&args).expect("forward runs");
        let saved = if op.saves_for_backward() { out.pop() } else { None };
        (out[0].float().expect("float output").clone(), saved)
    };
    // The backward runs with what the forward saved, as in the engine.
    let (y, saved) = eval(&inputs);
    let v = uniform(y.shape(), 4242, -1.0, 1.0);
    let args: Vec<_> = inputs.iter().map(|v| v.as_ref()).collect();
    let out = Value::F(y.clone());
    let mut wrt_full = wrt.to_vec();
    wrt_full.resize(inputs.len(), false);
    let dins = op
        .backward(&Backward { inputs: &args, output: &out, dout: &v, wrt: &wrt_full, saved: saved.as_ref() })
        .expect("backward runs");
    assert_eq!(dins.len(), inputs.len(), "{}: one gradient slot per input", node.op_type);
    let h = 1e-6;
    for (i, &w) in wrt_full.iter().enumerate() {
        if !w {
            continue;
        }
        let an = dins[i].as_ref().unwrap_or_else(|| panic!("{}: no gradient for input {i}", node.op_type));
        let x = inputs[i].as_ref().unwrap().float().unwrap().clone();
        assert_eq!(an.shape(), x.shape(), "{}: gradient shape of input {i}", node.op_type);
        for k in 0..x.len() {
            let mut plus = inputs.clone();
            let mut minus = inputs.clone();
            if let Some(Value::F(a)) = &mut plus[i] {
                a.as_slice_mut().unwrap()[k] += h;
            }
            if let Some(Value::F(a)) = &mut minus[i] {
                a.as_slice_mut().unwrap()[k] -= h;
            }
            let fp = (&eval(&plus).0 * &v).sum();
            let fm = (&eval(&minus).0 * &v).sum();
            let fd = (fp - fm) / (2.0 * h);
            let a = an.as_slice().map(|s| s[k]).unwrap_or_else(|| an.iter().nth(k).copied().unwrap());
            assert!(
                (fd - a).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{} ({:?}): input {i} element {k}: analytic {a} vs finite difference {fd}",
                node.op_type,
                node.attrs
            );
        }
    }
    y
}
