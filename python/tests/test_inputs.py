"""Bad input raises MargincertError with a message that says what is wrong and how to fix
it; float pixels are accepted only when exactly k/255 in float32."""

from __future__ import annotations

import numpy as np
import pytest

import margincert as mc
from conftest import EXPECTED, IMPORT


@pytest.fixture(scope="module")
def linear() -> mc.Model:
    return mc.Model.from_safetensors(EXPECTED / "linear-last.safetensors")


@pytest.fixture(scope="module")
def data() -> mc.Data:
    return mc.load_data(binary=(0, 1), subset=8)


def test_error_is_a_value_error() -> None:
    assert issubclass(mc.MargincertError, ValueError)


def test_float_pixels_exactly_k_over_255_equal_the_uint8_ones(linear: mc.Model, data: mc.Data) -> None:
    x, y = data
    as_f32 = x.astype(np.float32) / np.float32(255)  # what ToTensor gives
    as_f64 = x.astype(np.float64) / 255.0
    ref = mc.certify(linear, x, y, kkt=False).to_json()
    assert mc.certify(linear, as_f32, y, kkt=False).to_json() == ref
    assert mc.certify(linear, as_f64, y, kkt=False).to_json() == ref
    # (N, H, W) and flat (N, C*H*W) layouts of one channel are the same examples.
    assert mc.certify(linear, x[:, 0], y, kkt=False).to_json() == ref
    assert mc.certify(linear, x.reshape(len(x), -1), y, kkt=False).to_json() == ref


def test_normalized_float_pixels_are_refused(linear: mc.Model, data: mc.Data) -> None:
    x, y = data
    normalized = ((x.astype(np.float32) / 255 - 0.1307) / 0.3081).astype(np.float32)
    with pytest.raises(mc.MargincertError, match=r"exactly k/255 in float32"):
        mc.certify(linear, normalized, y, kkt=False)
    off = x.astype(np.float32) / np.float32(255)
    off.flat[5] = np.nextafter(off.flat[5], np.float32(1))
    with pytest.raises(mc.MargincertError, match=r"flat index 5 "):
        mc.certify(linear, off, y, kkt=False)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.bool_])
def test_wrong_image_dtypes_are_refused(linear: mc.Model, data: mc.Data, dtype: type) -> None:
    x, y = data
    with pytest.raises(mc.MargincertError, match="images must be uint8"):
        mc.certify(linear, x.astype(dtype), y, kkt=False)


def test_wrong_shapes_are_refused(linear: mc.Model, data: mc.Data) -> None:
    x, y = data
    with pytest.raises(mc.MargincertError, match=r"shape mismatch: images have shape \[8, 1, 28, 27\]"):
        mc.certify(linear, x[..., :27], y, kkt=False)
    with pytest.raises(mc.MargincertError, match=r"labels have shape \[7\].*8 examples"):
        mc.certify(linear, x, y[:7], kkt=False)


def test_bad_labels_are_refused(linear: mc.Model, data: mc.Data) -> None:
    x, y = data
    with pytest.raises(mc.MargincertError, match="labels must be integers"):
        mc.certify(linear, x, y.astype(np.float32), kkt=False)
    bad = y.astype(np.int64)
    bad[3] = 2
    with pytest.raises(mc.MargincertError, match="label 2 at index 3 is out of range for 2 classes"):
        mc.certify(linear, x, bad, kkt=False)
    with pytest.raises(mc.MargincertError, match="labels are missing"):
        mc.certify(linear, x)


def test_bad_options_are_refused(linear: mc.Model, data: mc.Data) -> None:
    with pytest.raises(mc.MargincertError, match="unknown loss 'hinge'"):
        mc.certify(linear, data, loss="hinge")
    with pytest.raises(mc.MargincertError, match="kkt_active=0"):
        mc.certify(linear, data, kkt_active=0)
    with pytest.raises(mc.MargincertError, match="precision must be between 64 and 4096"):
        mc.certify(linear, data, precision=10, kkt=False)
    with pytest.raises(mc.MargincertError, match="unknown norm"):
        mc.robust(linear, data, norm="1")
    with pytest.raises(mc.MargincertError, match="steps=0"):
        mc.robust(linear, data, steps=0)
    with pytest.raises(mc.MargincertError, match="unknown bound method"):
        mc.robust(linear, data, method="beta")


def test_robust_method_picks_the_bounds(linear: mc.Model, data: mc.Data) -> None:
    # L2: `ibp` gives the Lipschitz radii only; `crown` adds the bound over the ball, which
    # is never below them.
    cheap = mc.robust(linear, data, norm="2", steps=6, restarts=1, method="ibp").to_dict()
    full = mc.robust(linear, data, norm="2", steps=6, restarts=1).to_dict()
    assert cheap["relaxation"] == "ibp" and full["relaxation"] == "crown"
    for a, b in zip(cheap["examples"], full["examples"]):
        assert a["crown"] is None and b["crown"] is not None
        assert b["certified"] >= a["certified"]
    capped = mc.robust(linear, data, norm="2", steps=6, restarts=1, max_unstable=0).to_dict()
    assert capped["max_unstable"] == 0 and full["max_unstable"] == 1024


def test_model_files_errors_carry_the_cli_message(tmp_path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(mc.MargincertError, match="nope.safetensors"):
        mc.Model.from_safetensors(missing)
    with pytest.raises(mc.MargincertError, match=r"no model spec"):
        mc.Model.from_safetensors(IMPORT / "mlp.safetensors")
    with pytest.raises(mc.MargincertError, match="invalid certificate JSON"):
        mc.Certificate.from_json("{not json")


def test_arrays_that_do_not_fit_the_spec_are_refused() -> None:
    spec = {"input": {"c": 4, "h": 1, "w": 1}, "layers": [{"type": "dense", "out": 3}]}
    w = np.ones((3, 4), np.float32)
    m = mc.Model.from_arrays(spec, {"0.weight": w})
    assert m.num_params == 12 and m.outputs == 3
    with pytest.raises(mc.MargincertError, match=r"tensor '0.weight' has shape \[4, 3\]"):
        mc.Model.from_arrays(spec, {"0.weight": w.T})
    with pytest.raises(mc.MargincertError, match="a bias '0.bias' the spec does not declare"):
        mc.Model.from_arrays(spec, {"0.weight": w, "0.bias": np.zeros(3, np.float32)})
    with pytest.raises(mc.MargincertError, match="tensors not used by the model spec: extra"):
        mc.Model.from_arrays(spec, {"0.weight": w, "extra": w})
    with pytest.raises(mc.MargincertError, match="not exactly representable"):
        mc.Model.from_arrays(spec, {"0.weight": np.full((3, 4), 0.1)})
    nan = w.copy()
    nan[1, 2] = np.nan
    with pytest.raises(mc.MargincertError, match="non-finite value"):
        mc.Model.from_arrays(spec, {"0.weight": nan})


def test_non_homogeneous_networks_are_refused_when_required() -> None:
    spec = {
        "input": {"c": 4, "h": 1, "w": 1},
        "layers": [{"type": "dense", "out": 3}, {"type": "relu"}, {"type": "dense", "out": 2, "bias": True}],
    }
    t = {"0.weight": np.ones((3, 4), np.float32), "2.weight": np.ones((2, 3), np.float32),
         "2.bias": np.zeros(2, np.float32)}
    with pytest.raises(mc.MargincertError, match=r"not homogeneous: layer 2 \(dense 2 \+bias\)"):
        mc.Model.from_arrays(spec, t, require_homogeneous=True)
    m = mc.Model.from_arrays(spec, t)
    h = m.homogeneity()
    assert h["degree"] is None and h["offending_layer"] == 2
    x = np.zeros((2, 4), np.uint8)
    cert = mc.certify(m, x, np.array([0, 1]))
    assert cert.normalized_margin is None and cert.degree is None
    assert "not homogeneous" in cert.kkt_omitted


def test_homogeneity_and_imports(linear: mc.Model) -> None:
    tiny = mc.Model.from_safetensors(EXPECTED / "tiny-cnn-last.safetensors")
    h = tiny.homogeneity()
    assert h["degree"] == 3 and len(h["reasons"]) == 8
    assert tiny.trained_loss == "cross-entropy" and linear.trained_loss == "logistic"
    # The same network as ONNX, as a PyTorch state_dict + spec and as a checkpoint.
    onnx = mc.Model.from_onnx(IMPORT / "cnn_first_bias.onnx")
    st = mc.Model.from_safetensors(IMPORT / "cnn_first_bias.safetensors", IMPORT / "cnn_first_bias.toml")
    native = mc.Model.from_safetensors(IMPORT / "cnn_first_bias.native.safetensors")
    for m in (st, native):
        a, b = onnx.state_dict(), m.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), k
    assert onnx.homogeneity()["degree"] == st.homogeneity()["degree"] is not None
    assert mc.Model.from_safetensors(IMPORT / "cnn_bias.native.safetensors").homogeneity()["degree"] is None


def test_state_dict_imports_with_a_map_a_prefix_and_f16() -> None:
    native = mc.Model.from_safetensors(IMPORT / "mlp.native.safetensors").state_dict()
    by_file = mc.Model.from_safetensors(IMPORT / "mlp.safetensors", IMPORT / "mlp.toml",
                                        map=IMPORT / "mlp.map.toml")
    by_dict = mc.Model.from_safetensors(IMPORT / "mlp.safetensors", IMPORT / "mlp.toml",
                                        map={1: "fc1", 3: "head"})
    for m in (by_file, by_dict):
        sd = m.state_dict()
        assert sd.keys() == native.keys() and all(np.array_equal(sd[k], native[k]) for k in sd)
    with pytest.raises(mc.MargincertError, match="no tensor named '1.weight'"):
        mc.Model.from_safetensors(IMPORT / "mlp.safetensors", IMPORT / "mlp.toml")
    f16 = mc.Model.from_safetensors(IMPORT / "mlp_f16.safetensors", IMPORT / "mlp_f16.toml",
                                    prefix="model.")
    assert any("from f16 exactly" in n for n in f16.notes)
    # float16 arrays are widened exactly by from_arrays too.
    sd = f16.state_dict()
    half = {k: v.astype(np.float16) for k, v in sd.items()}
    again = mc.Model.from_arrays(f16.spec, half).state_dict()
    assert all(np.array_equal(again[k], sd[k]) for k in sd)
