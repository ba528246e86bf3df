"""``watch``: certified margins of a model while it trains, as a list of dicts."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from ._margincert import MargincertError, Model
from ._margincert import certify as _certify


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _arrays(data: Any) -> Tuple[Any, Any, Optional[int], str]:
    """``(images, labels, classes, name)`` from a Data, an ``(images, labels)`` pair or an
    iterable of ``(x, y)`` batches (a DataLoader; read once, in its order)."""
    if hasattr(data, "images") and hasattr(data, "labels") and hasattr(data, "classes"):
        return data.images, data.labels, data.classes, data.name
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], tuple):
        return _numpy(data[0]), _numpy(data[1]), None, "watch"
    xs, ys = [], []
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise MargincertError(
                "watch: the loader must yield (images, labels) batches, or pass (images, labels)"
            )
        xs.append(_numpy(batch[0]))
        ys.append(_numpy(batch[1]))
    if not xs:
        raise MargincertError("watch: the loader yielded no batch")
    return np.concatenate(xs), np.concatenate(ys), None, "watch"


class Watch(List[Dict[str, Any]]):
    """The rows certified so far (a list of dicts, ``pandas.DataFrame(w)`` reads it).

    Call :meth:`step` from the training loop; it certifies the module's current weights on
    the watched data when the step is due (``step % every == 0`` or ``step`` in ``at``) and
    appends a row. Nothing is written to disk.
    """

    def __init__(
        self,
        module: Any,
        data: Any,
        every: int = 1,
        *,
        at: Optional[Iterable[int]] = None,
        input_shape: Optional[Sequence[int]] = None,
        loss: Optional[str] = "ce",
        kkt: bool = False,
        classes: Optional[int] = None,
        **certify_options: Any,
    ) -> None:
        super().__init__()
        if every < 1 and at is None:
            raise MargincertError(f"watch: every must be at least 1, got {every}")
        self.module = module
        self.every = every
        self.at: Set[int] = set(at) if at is not None else set()
        self.input_shape = input_shape
        self.images, self.labels, data_classes, self.name = _arrays(data)
        self.classes = classes if classes is not None else data_classes
        self.options: Dict[str, Any] = dict(loss=loss, kkt=kkt, **certify_options)
        self._calls = 0

    def due(self, step: int) -> bool:
        """Whether :meth:`step` certifies at ``step``."""
        return step in self.at or (self.every >= 1 and step % self.every == 0)

    def model(self) -> Model:
        """The module's current weights as a :class:`Model`."""
        if isinstance(self.module, Model):
            return self.module
        return Model.from_torch(self.module, self.input_shape, require_homogeneous=False)

    def step(self, step: Optional[int] = None, *, force: bool = False) -> Optional[Dict[str, Any]]:
        """Certifies now if ``step`` (default: the number of earlier calls) is due, or
        ``force``; returns the new row (None when not due)."""
        s = self._calls if step is None else int(step)
        self._calls += 1
        if not (force or self.due(s)):
            return None
        t0 = time.perf_counter()
        cert = _certify(
            self.model(),
            self.images,
            self.labels,
            classes=self.classes,
            name=self.name,
            **self.options,
        )
        row = row_of(cert)
        row["step"] = s
        row["seconds"] = time.perf_counter() - t0
        self.append(row)
        return row


def _ends(prefix: str, pair: Optional[Tuple[float, float]]) -> Dict[str, Optional[float]]:
    lo, hi = pair if pair is not None else (None, None)
    return {f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def row_of(cert: Any) -> Dict[str, Any]:
    """The flat dict of a certificate that ``watch`` records."""
    row: Dict[str, Any] = {}
    row.update(_ends("q_min", cert.q_min))
    row.update(_ends("normalized_margin", cert.normalized_margin))
    row.update(_ends("layer_normalized_margin", cert.layer_normalized_margin))
    row.update(_ends("smoothed_margin", cert.smoothed_margin))
    row.update(_ends("loss_log10", cert.loss_log10))
    lower, upper = cert.loss_str
    row["loss_lower"] = lower
    row["loss_upper"] = upper
    row["certified_positive"] = cert.certified_positive
    row["examples"] = cert.examples
    row["degree"] = cert.degree
    kkt = cert.kkt
    if kkt is not None:
        row["kkt_epsilon_paper"] = kkt["paper"]["epsilon_upper"]
        row["kkt_delta_paper"] = kkt["paper"]["delta_upper"]
    return row


def watch(
    module: Any,
    loader_or_arrays: Any,
    every: int = 1,
    **options: Any,
) -> Watch:
    """A :class:`Watch` of ``module`` (a bias-free ``nn.Sequential`` or a :class:`Model`) on
    ``loader_or_arrays`` (``(images, labels)``, a :class:`margincert.Data`, or a DataLoader
    read once): call ``w.step(epoch)`` in the training loop; ``w`` is the list of rows
    (``step``, ``q_min_lo/hi``, ``normalized_margin_lo/hi``, ``layer_normalized_margin_lo/hi``,
    ``smoothed_margin_lo/hi``, ``loss_log10_lo/hi``, ``loss_lower/upper`` as exact decimal
    strings, ``certified_positive``, ``examples``, ``degree``, ``seconds``). Options:
    ``at=`` chosen steps, ``input_shape=``, ``loss=``, ``kkt=`` and any :func:`certify`
    option."""
    return Watch(module, loader_or_arrays, every, **options)
