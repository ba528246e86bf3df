"""Reading a ``torch.nn.Sequential`` into a margincert spec and its tensors.

Only this module imports torch, and only when ``Model.from_torch`` is called. The weights
are handed over as numpy views of the CPU tensors (no copy for float32 CPU tensors); the
extension copies them once into the model.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._margincert import MargincertError

SUPPORTED = "Linear, Conv2d, ReLU, LeakyReLU, MaxPool2d, AvgPool2d, Flatten (and Identity, Dropout)"
NOT_HOMOGENEOUS = (
    "Sigmoid",
    "Tanh",
    "GELU",
    "SiLU",
    "ELU",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "GroupNorm",
)


def _pair(v: Any, what: str, where: str) -> int:
    """An int, or a tuple of two equal ints, as one int."""
    if isinstance(v, int):
        return v
    t = tuple(v)
    if len(t) == 2 and t[0] == t[1]:
        return int(t[0])
    raise MargincertError(f"{where}: {what} {t} is not square; margincert takes square ones")


def _flatten(module: Any) -> List[Any]:
    import torch.nn as nn  # type: ignore[import-not-found,unused-ignore]

    out: List[Any] = []
    for m in module.children():
        if isinstance(m, nn.Sequential):
            out.extend(_flatten(m))
        else:
            out.append(m)
    return out


def _array(t: Any, notes: List[str]) -> np.ndarray:
    """A numpy view of a parameter tensor (a copy only off the CPU or for bfloat16)."""
    import torch  # type: ignore[import-not-found,unused-ignore]

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()  # exact: every bfloat16 is a float32
        notes.append("widened bfloat16 weights to float32 exactly")
    out: np.ndarray = t.numpy()
    return out


def describe(
    module: Any, input_shape: Optional[Sequence[int]]
) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], List[str]]:
    """``(spec dict, {"i.weight": array, ...}, notes)`` of a sequential torch module."""
    import torch.nn as nn  # type: ignore[import-not-found,unused-ignore]

    if not isinstance(module, nn.Module):
        raise MargincertError(
            f"from_torch takes a torch.nn.Module (an nn.Sequential), got {type(module).__name__}"
        )
    if isinstance(module, nn.Sequential):
        mods = _flatten(module)
    else:
        raise MargincertError(
            f"from_torch takes an nn.Sequential of {SUPPORTED}; got {type(module).__name__}: "
            "wrap the layers in nn.Sequential (the forward of a custom module cannot be read)"
        )
    layers: List[Dict[str, Any]] = []
    tensors: Dict[str, np.ndarray] = {}
    notes: List[str] = []
    first_linear: Optional[int] = None
    for k, m in enumerate(mods):
        where = f"module {k} ({type(m).__name__})"
        i = len(layers)
        name = type(m).__name__
        if isinstance(m, (nn.Identity, nn.Dropout)):
            if isinstance(m, nn.Dropout):
                notes.append(f"{where}: dropout is the identity at evaluation, skipped")
            continue
        if isinstance(m, nn.Linear):
            if not layers and first_linear is None:
                first_linear = m.in_features
            layers.append({"type": "dense", "out": m.out_features, "bias": m.bias is not None})
        elif isinstance(m, nn.Conv2d):
            if _pair(m.dilation, "dilation", where) != 1 or m.groups != 1:
                raise MargincertError(f"{where}: dilation and groups must be 1")
            if m.padding_mode != "zeros":
                raise MargincertError(
                    f"{where}: padding_mode {m.padding_mode!r} is not supported (only 'zeros')"
                )
            if isinstance(m.padding, str):
                padding: Any = m.padding  # 'valid' or 'same' (stride 1: TF SAME)
            else:
                p = _pair(m.padding, "padding", where)
                padding = "valid" if p == 0 else {"explicit": p}
            layers.append(
                {
                    "type": "conv2d",
                    "out": m.out_channels,
                    "kernel": _pair(m.kernel_size, "kernel", where),
                    "stride": _pair(m.stride, "stride", where),
                    "padding": padding,
                    "bias": m.bias is not None,
                }
            )
        elif isinstance(m, nn.ReLU):
            layers.append({"type": "relu"})
        elif isinstance(m, nn.LeakyReLU):
            # float32 forward passes use the slope as a float32, as margincert does.
            layers.append({"type": "leaky_relu", "slope": float(np.float32(m.negative_slope))})
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            size = _pair(m.kernel_size, "kernel", where)
            stride = size if m.stride is None else _pair(m.stride, "stride", where)
            if _pair(m.padding, "padding", where) != 0 or m.ceil_mode:
                raise MargincertError(f"{where}: padding and ceil_mode are not supported")
            if isinstance(m, nn.MaxPool2d):
                if _pair(m.dilation, "dilation", where) != 1 or m.return_indices:
                    raise MargincertError(f"{where}: dilation 1 without return_indices only")
                layers.append({"type": "max_pool", "size": size, "stride": stride})
            else:
                if m.divisor_override is not None:
                    raise MargincertError(f"{where}: divisor_override is not supported")
                layers.append({"type": "avg_pool", "size": size, "stride": stride})
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise MargincertError(f"{where}: only Flatten(start_dim=1, end_dim=-1)")
            layers.append({"type": "flatten"})
        else:
            why = (
                " (it is not positively homogeneous: margincert's theory needs ReLU-like "
                "activations and no normalization layers)"
                if name in NOT_HOMOGENEOUS
                else ""
            )
            raise MargincertError(f"{where} is not supported{why}; supported: {SUPPORTED}")
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            tensors[f"{i}.weight"] = _array(m.weight, notes)
            if m.bias is not None:
                tensors[f"{i}.bias"] = _array(m.bias, notes)
    if input_shape is None:
        if first_linear is None:
            raise MargincertError(
                "input_shape=(C, H, W) is needed: the network does not start with a Linear layer"
            )
        input_shape = (first_linear,)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        shape = (shape[0], 1, 1)
    if len(shape) != 3:
        raise MargincertError(f"input_shape must be (C, H, W) or (D,), got {tuple(input_shape)}")
    spec = {
        "name": "torch",
        "input": {"c": shape[0], "h": shape[1], "w": shape[2]},
        "layers": layers,
    }
    return spec, tensors, sorted(set(notes), key=notes.index)
