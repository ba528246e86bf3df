//! The weight and pooling operators: `Gemm` and `MatMul` (+ `Add`) into `Dense`, `Conv` into
//! `Conv2d`, `MaxPool` and `AveragePool` into `MaxPool` and `AvgPool`.

use onnx_protobuf::NodeProto;

use super::MAX_VALUES;
use super::graph::GraphReader;
use super::proto::{attr_i, attr_ints, attr_s};
use crate::error::Result;
use crate::model::{Layer, Padding, Window};

impl GraphReader<'_> {
    /// A `Gemm` (`trans_b` from its attribute) or `MatMul` (`trans_b = false`) node as a
    /// `Dense` layer; `bias` names the bias initializer, if any.
    pub(super) fn dense(
        &mut self,
        k: usize,
        node: &NodeProto,
        trans_b: bool,
        bias: Option<String>,
    ) -> Result<()> {
        if !self.shape.is_flat() {
            return Err(self.err(
                k,
                node,
                format!(
                    "a {} on a non-flat input {} (add Flatten first)",
                    node.op_type, self.shape
                ),
            ));
        }
        let (wname, t) = self.weight(k, node)?;
        let n_in = self.shape.len();
        if t.dims.len() != 2 {
            return Err(self.err(
                k,
                node,
                format!("weight '{wname}' has dims {:?}, expected 2-D", t.dims),
            ));
        }
        let out = if trans_b { t.dims[0] } else { t.dims[1] };
        if out <= 0 {
            return Err(self.err(k, node, format!("weight '{wname}' has dims {:?}", t.dims)));
        }
        if out as usize > MAX_VALUES {
            return Err(self.err(
                k,
                node,
                format!("weight '{wname}' has dims {:?}: too large", t.dims),
            ));
        }
        let out = out as usize;
        let weight = if trans_b {
            self.floats(k, node, &wname, &[out, n_in])?
        } else {
            let w = self.floats(k, node, &wname, &[n_in, out])?;
            let mut t = vec![0.0; w.len()];
            for i in 0..n_in {
                for o in 0..out {
                    t[o * n_in + i] = w[i * out + o];
                }
            }
            t
        };
        let b = match bias {
            Some(b) => {
                let dims = &self.tensor(&b).map(|t| t.dims.clone()).unwrap_or_default();
                let shape: Vec<usize> = if dims.len() == 2 {
                    vec![1, out]
                } else {
                    vec![out]
                };
                Some(self.floats(k, node, &b, &shape)?)
            }
            None => None,
        };
        self.push(
            Layer::Dense {
                out,
                bias: b.is_some(),
            },
            Some((vec![out, n_in], weight, b)),
        )
    }

    /// A `Conv` node as a `Conv2d` layer.
    pub(super) fn conv_node(&mut self, k: usize, node: &NodeProto) -> Result<()> {
        if self.shape.is_flat() && self.flattened {
            return Err(self.err(k, node, "Conv after Flatten/Dense is not supported"));
        }
        let (wname, t) = self.weight(k, node)?;
        let d = t.dims.clone();
        if d.len() != 4 || d[2] != d[3] || d.iter().any(|&x| x <= 0) {
            return Err(self.err(k, node, format!("weight '{wname}' has dims {d:?}; only square 2-D kernels [out, in, k, k] are supported")));
        }
        if !geometry_ok(&d[2..]) || d[0] as usize > MAX_VALUES {
            return Err(self.err(
                k,
                node,
                format!("weight '{wname}' has dims {d:?}: too large"),
            ));
        }
        let (out, kern) = (d[0] as usize, d[2] as usize);
        if attr_i(node, "group", 1) != 1 {
            return Err(self.err(
                k,
                node,
                "grouped convolutions (group != 1) are not supported",
            ));
        }
        if attr_ints(node, "dilations").is_some_and(|v| v.iter().any(|&x| x != 1)) {
            return Err(self.err(k, node, "dilated convolutions are not supported"));
        }
        let st = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        if st.len() != 2 || st[0] != st[1] || st[0] < 1 {
            return Err(self.err(
                k,
                node,
                format!("strides {st:?}: only equal strides are supported"),
            ));
        }
        if !geometry_ok(&st) || !geometry_ok(&attr_ints(node, "pads").unwrap_or_default()) {
            return Err(self.err(
                k,
                node,
                "strides or pads out of range (negative or above 65536)",
            ));
        }
        let stride = st[0] as usize;
        let auto = attr_s(node, "auto_pad").unwrap_or_default();
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let padding = match auto.as_str() {
            "" | "NOTSET" => {
                if pads.len() != 4 || pads.iter().any(|&p| p < 0) {
                    return Err(self.err(k, node, format!("pads {pads:?}")));
                }
                let p: Vec<usize> = pads.iter().map(|&p| p as usize).collect();
                // ONNX pads: [top, left, bottom, right]
                if p.iter().all(|&x| x == p[0]) {
                    if p[0] == 0 {
                        Padding::Valid
                    } else {
                        Padding::Explicit(p[0])
                    }
                } else {
                    let w = Window::new(kern, stride, Padding::Same, self.shape.h, self.shape.w)
                        .map_err(|e| self.err(k, node, e))?;
                    let bottom =
                        ((w.out_h - 1) * stride + kern).saturating_sub(self.shape.h) - w.pad_top;
                    let right =
                        ((w.out_w - 1) * stride + kern).saturating_sub(self.shape.w) - w.pad_left;
                    if p == [w.pad_top, w.pad_left, bottom, right] {
                        self.notes.push(format!(
                            "node {k} '{}': asymmetric pads {pads:?} are TensorFlow SAME",
                            node.name
                        ));
                        Padding::Same
                    } else {
                        return Err(self.err(k, node, format!("asymmetric pads {pads:?} are neither symmetric nor TensorFlow SAME ({:?})", [w.pad_top, w.pad_left, bottom, right])));
                    }
                }
            }
            "VALID" => Padding::Valid,
            "SAME_UPPER" => Padding::Same,
            other => return Err(self.err(k, node, format!("auto_pad '{other}' is not supported"))),
        };
        let weight = self.floats(k, node, &wname, &[out, self.shape.c, kern, kern])?;
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(b) => Some(self.floats(k, node, &b.clone(), &[out])?),
            None => None,
        };
        self.push(
            Layer::Conv2d {
                out,
                kernel: kern,
                stride,
                padding,
                bias: bias.is_some(),
            },
            Some((vec![out, self.shape.c, kern, kern], weight, bias)),
        )
    }

    /// A `MaxPool` or `AveragePool` node as a `MaxPool` or `AvgPool` layer.
    pub(super) fn pool_node(&mut self, k: usize, node: &NodeProto) -> Result<()> {
        let ks = attr_ints(node, "kernel_shape").unwrap_or_default();
        let st = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
        let auto = attr_s(node, "auto_pad").unwrap_or_default();
        if !geometry_ok(&ks) || !geometry_ok(&st) {
            return Err(self.err(
                k,
                node,
                "kernel or strides out of range (negative or above 65536)",
            ));
        }
        if ks.len() != 2
            || ks[0] != ks[1]
            || ks[0] < 1
            || st.len() != 2
            || st[0] != st[1]
            || st[0] < 1
        {
            return Err(self.err(k, node, format!("only square 2-D pools with equal strides are supported (kernel {ks:?}, strides {st:?})")));
        }
        if pads.iter().any(|&p| p != 0) || !(auto.is_empty() || auto == "NOTSET" || auto == "VALID")
        {
            return Err(self.err(
                k,
                node,
                format!("padded pooling is not supported (pads {pads:?}, auto_pad '{auto}')"),
            ));
        }
        if attr_i(node, "ceil_mode", 0) != 0
            || dil.iter().any(|&d| d != 1)
            || attr_i(node, "storage_order", 0) != 0
        {
            return Err(self.err(
                k,
                node,
                "pooling with ceil_mode, dilations or storage_order is not supported",
            ));
        }
        // stride == size is written `None` (the spec's default), as native specs do
        let size = ks[0] as usize;
        let stride = Some(st[0] as usize).filter(|&t| t != size);
        self.push(
            if node.op_type == "MaxPool" {
                Layer::MaxPool { size, stride }
            } else {
                Layer::AvgPool { size, stride }
            },
            None,
        )
    }
}

/// Refuses geometry values outside `0..=`[`crate::limits::MAX_ONNX_WINDOW`].
fn geometry_ok(v: &[i64]) -> bool {
    v.iter()
        .all(|&x| (0..=crate::limits::MAX_ONNX_WINDOW).contains(&x))
}
