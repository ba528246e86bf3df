"""margincert: certify the margins of homogeneous networks from Python.

Every number comes from the margincert Rust crate (the same code as the ``margincert`` CLI):
a certificate computed here equals, bit for bit, the one ``margincert certify`` writes for the
same model, images and options.

- :class:`Model` -- ``Model.from_torch(seq)``, ``Model.from_safetensors(path, spec=...)``,
  ``Model.from_onnx(path)``, ``Model.from_arrays(spec, tensors)``; ``model.homogeneity()``.
- :func:`certify` -- a :class:`Certificate` (``q_min``, normalized margins, the loss as
  exact decimals and a ``log10`` enclosure, KKT bounds, ``to_json()``, ``verify(...)``).
- :func:`robust` -- per-example certified and attack radii as numpy arrays.
- :func:`watch` -- certify a training model every ``k`` steps into a list of dicts.

Images are uint8 pixels ``p``, or floats exactly ``p / 255`` in float32 (as ``ToTensor``
gives); anything else is refused, so a certificate is about the exact inputs. Errors raise
:class:`MargincertError` (a ``ValueError``) with the CLI's message. A long call returns
control on Ctrl-C (``KeyboardInterrupt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple, Union

import numpy as np

try:
    from . import _margincert as _native
except ImportError as e:  # pragma: no cover - a checkout imported without its extension
    raise ImportError(
        "the margincert extension (_margincert) is not built next to this package "
        f"({__file__}): install it with `pip install ./python` (or `cd python && maturin "
        "develop --release`), and do not run Python from inside python/ with an installed "
        "package (the source folder shadows it)"
    ) from e
from ._margincert import (
    Certificate,
    MargincertError,
    Model,
    RobustReport,
    VerifyReport,
    __version__,
)
from ._watch import Watch, watch

__all__ = [
    "Certificate",
    "Data",
    "MargincertError",
    "Model",
    "RobustReport",
    "VerifyReport",
    "Watch",
    "__version__",
    "certify",
    "load_data",
    "robust",
    "verify",
    "watch",
]


@dataclass(frozen=True)
class Data:
    """Labelled images with the name and class count a certificate records.

    Unpacks as ``images, labels = data``.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    classes: int

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return len(self.labels)


def load_data(
    source: str = "embedded",
    split: str = "train",
    *,
    binary: Optional[Tuple[int, int]] = None,
    subset: Optional[int] = None,
) -> Data:
    """A dataset margincert reads: ``"embedded"`` (the 1,000 + 1,000 MNIST images shipped
    with the crate), ``"mnist:DIR"``, ``"fashion-mnist:DIR"``, ``"cifar10:DIR"`` or a
    directory; ``binary=(pos, neg)`` keeps two classes (labels 1 / 0), ``subset=n`` the
    first ``n`` examples. Named as ``margincert certify`` names the same selection."""
    images, labels, name, classes = _native.load_data(source, split, binary=binary, subset=subset)
    return Data(images, labels, name, classes)


def _numpy(x: Any) -> Any:
    """A torch tensor as a numpy array (detached, on the CPU); anything else as it is."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


ImagesLike = Union[Data, np.ndarray, Any]


def _data(
    images: ImagesLike, labels: Any, classes: Optional[int], name: Optional[str]
) -> Tuple[Any, Any, Optional[int], str]:
    if isinstance(images, Data):
        if labels is not None:
            raise MargincertError("give either a Data or images and labels, not both")
        return (
            images.images,
            images.labels,
            images.classes if classes is None else classes,
            images.name if name is None else name,
        )
    if labels is None:
        raise MargincertError("labels are missing: pass images and labels (or a Data)")
    return _numpy(images), _numpy(labels), classes, "arrays" if name is None else name


def certify(
    model: Model,
    images: ImagesLike,
    labels: Any = None,
    *,
    loss: Optional[str] = None,
    kkt: bool = True,
    kkt_active: Optional[int] = None,
    precision: Optional[int] = None,
    witness_examples: Optional[int] = None,
    precision_mode: str = "auto",
    per_example: bool = False,
    classes: Optional[int] = None,
    name: Optional[str] = None,
) -> Certificate:
    """Certifies ``model`` on the exact images ``p / 255`` (as ``margincert certify``).

    ``images``: uint8 ``(N, C, H, W)`` (or ``(N, H, W)`` for one channel, or flat
    ``(N, C*H*W)``), or floats exactly ``p / 255``; or a :class:`Data` (then no ``labels``).
    ``labels``: class indices (1 / 0 for a one-output model). ``loss``: ``"ce"``,
    ``"logistic"`` or ``"exponential"`` (default: the checkpoint's training loss, else
    cross-entropy). ``kkt``: the approximate-KKT bounds (the slowest part), ``kkt_active``
    constraints at most (64). ``precision``: MPFR bits (128). ``precision_mode``: ``"f64"``,
    ``"dd"`` or ``"auto"``. ``per_example``: record every margin enclosure. ``classes``:
    default the model's outputs (2 for one output). ``name``: the dataset name recorded.
    """
    x, y, classes, name = _data(images, labels, classes, name)
    return _native.certify(
        model,
        x,
        y,
        loss=loss,
        kkt=kkt,
        kkt_active=kkt_active,
        precision=precision,
        witness_examples=witness_examples,
        precision_mode=precision_mode,
        per_example=per_example,
        classes=classes,
        name=name,
    )


def robust(
    model: Model,
    images: ImagesLike,
    labels: Any = None,
    *,
    norm: str = "inf",
    eps_max: Optional[float] = None,
    steps: int = 14,
    restarts: int = 3,
    method: str = "crown",
    max_unstable: int = 1024,
    classes: Optional[int] = None,
    name: Optional[str] = None,
) -> RobustReport:
    """Certified robustness radii and verified PGD attack radii of every example, as
    ``margincert robust``. ``norm``: ``"2"`` or ``"inf"``; ``eps_max``: largest radius
    searched (3.0 for L2, 0.3 for L-inf); ``steps``: bisection steps (14, the CLI's default);
    ``restarts``: PGD restarts; ``method``: ``"ibp"`` (L-inf: IBP; L2: the margin over the
    Lipschitz bounds), ``"crown"`` (then full CROWN over the box or ball, the default) or
    ``"alpha"`` (then optimized ReLU slopes); ``max_unstable``: crown/alpha refine only
    layers with at most this many unstable units (larger is tighter and slower)."""
    x, y, classes, name = _data(images, labels, classes, name)
    return _native.robust(
        model,
        x,
        y,
        norm=str(norm),
        eps_max=eps_max,
        steps=steps,
        restarts=restarts,
        method=method,
        max_unstable=max_unstable,
        classes=classes,
        name=name,
    )


def verify(
    document: Union[Certificate, RobustReport],
    model: Model,
    images: ImagesLike,
    labels: Any = None,
) -> VerifyReport:
    """Recomputes every claim of a certificate or robustness report about ``model`` on the
    same images and labels, as ``margincert verify`` does (the model's SHA-256 must be the
    one recorded). The report is truthy when every claim is confirmed."""
    x, y, _, _ = _data(images, labels, None, None)
    if isinstance(document, Certificate):
        return _native.verify_certificate(document, model, x, y)
    return document.verify(model, x, y)
