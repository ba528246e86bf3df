//! Reading initializers, constants and node attributes out of the ONNX protobuf.

use onnx_protobuf::{NodeProto, TensorProto, tensor_proto::DataType};

use super::MAX_VALUES;
use super::graph::GraphReader;
use crate::error::{Error, Result};
use crate::import::{SourceDtype, bf16_to_f32, f16_to_f32, f64_to_f32};

/// The attribute `name` of `node`, if set.
pub(super) fn attr<'n>(
    node: &'n NodeProto,
    name: &str,
) -> Option<&'n onnx_protobuf::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
/// An INT attribute, `default` when unset.
pub(super) fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}
/// A FLOAT attribute, `default` when unset.
pub(super) fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}
/// An INTS attribute, if set.
pub(super) fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}
/// A STRING attribute (lossy UTF-8), if set.
pub(super) fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

impl<'a> GraphReader<'a> {
    /// The initializer or constant `name`, if any.
    pub(super) fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.inits
            .get(name)
            .copied()
            .or_else(|| self.consts.get(name).copied())
    }

    /// The weight (second input) of node `k`: its name and its initializer.
    pub(super) fn weight(&self, k: usize, node: &NodeProto) -> Result<(String, &'a TensorProto)> {
        let wname = node
            .input
            .get(1)
            .ok_or_else(|| self.err(k, node, "no weight input"))?
            .clone();
        let t = self
            .tensor(&wname)
            .ok_or_else(|| self.err(k, node, format!("weight '{wname}' is not an initializer")))?;
        Ok((wname, t))
    }

    /// An initializer as f32, checked against `shape`.
    pub(super) fn floats(
        &mut self,
        k: usize,
        node: &NodeProto,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| {
            self.err(
                k,
                node,
                format!(
                    "input '{name}' is not an initializer (only constant weights are imported)"
                ),
            )
        })?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        if dims != shape {
            return Err(self.err(
                k,
                node,
                format!("tensor '{name}' has shape {:?}, expected {shape:?}", t.dims),
            ));
        }
        let n = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|&n| n <= MAX_VALUES)
            .ok_or_else(|| {
                self.err(k, node, format!("tensor '{name}' is too large ({shape:?})"))
            })?;
        if t.data_location.value() != 0 {
            return Err(self.err(
                k,
                node,
                format!("tensor '{name}' uses external data, which is not supported"),
            ));
        }
        let raw = !t.raw_data.is_empty() || n == 0;
        let dt = t.data_type;
        let values = if dt == DataType::FLOAT as i32 {
            self.conv.add(SourceDtype::F32);
            if raw {
                need(t.raw_data.len(), n * 4).map(|_| crate::io::le_f32(&t.raw_data))
            } else {
                need(t.float_data.len(), n).map(|_| t.float_data.clone())
            }
        } else if dt == DataType::FLOAT16 as i32 || dt == DataType::BFLOAT16 as i32 {
            let is16 = dt == DataType::FLOAT16 as i32;
            self.conv.add(if is16 {
                SourceDtype::F16
            } else {
                SourceDtype::Bf16
            });
            let bytes: std::result::Result<Vec<u8>, String> = if raw {
                need(t.raw_data.len(), n * 2).map(|_| t.raw_data.clone())
            } else {
                need(t.int32_data.len(), n).map(|_| {
                    t.int32_data
                        .iter()
                        .flat_map(|&v| (v as u16).to_le_bytes())
                        .collect()
                })
            };
            bytes.map(|b| {
                if is16 {
                    f16_to_f32(&b)
                } else {
                    bf16_to_f32(&b)
                }
            })
        } else if dt == DataType::DOUBLE as i32 {
            self.conv.add(SourceDtype::F64);
            let vals = if raw {
                need(t.raw_data.len(), n * 8).map(|_| crate::io::le_f64(&t.raw_data))
            } else {
                need(t.double_data.len(), n).map(|_| t.double_data.clone())
            };
            match vals {
                Ok(v) => {
                    let (f, changed) = f64_to_f32(&v, name, self.opts.round_f64)
                        .map_err(|e| self.err(k, node, e))?;
                    self.conv.rounded(name, changed);
                    Ok(f)
                }
                Err(e) => Err(e),
            }
        } else {
            return Err(self.err(k, node, format!("tensor '{name}' has ONNX data type {dt}; only FLOAT, FLOAT16, BFLOAT16 and DOUBLE are imported")));
        };
        let values = values.map_err(|m| self.err(k, node, format!("tensor '{name}': {m}")))?;
        if let Some(p) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "ONNX tensor '{name}' value {p} is {}",
                values[p]
            )));
        }
        Ok(values)
    }

    /// A constant INT64 tensor (a `Reshape` target shape).
    pub(super) fn ints(&self, k: usize, node: &NodeProto, name: &str) -> Result<Vec<i64>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| self.err(k, node, format!("shape '{name}' is not a constant")))?;
        if t.data_type != DataType::INT64 as i32 {
            return Err(self.err(k, node, format!("shape '{name}' is not INT64")));
        }
        if !t.raw_data.is_empty() {
            if t.raw_data.len() % 8 != 0 {
                return Err(self.err(k, node, "malformed INT64 raw data"));
            }
            Ok(t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                .collect())
        } else {
            Ok(t.int64_data.clone())
        }
    }
}

/// Checks that a tensor holds as many values (or bytes) as its shape needs.
fn need(have: usize, want: usize) -> std::result::Result<(), String> {
    if have == want {
        Ok(())
    } else {
        Err(format!("holds {have} values/bytes, the shape needs {want}"))
    }
}
