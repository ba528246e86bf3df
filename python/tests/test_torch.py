"""`Model.from_torch` on small torch models equals the safetensors import of the same
state_dict; non-homogeneous or unsupported modules are refused clearly. Skipped (with the
reason printed) when torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

import margincert as mc

torch = pytest.importorskip("torch", reason="torch is not installed: the from_torch tests need it")
nn = torch.nn


def cnn() -> "nn.Sequential":
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=True),  # first-layer bias: homogeneous
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding="same", bias=False),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 10, bias=False),
    )


def test_from_torch_equals_the_safetensors_import(tmp_path) -> None:
    st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    net = cnn()
    m = mc.Model.from_torch(net, (1, 28, 28))
    assert m.homogeneity()["degree"] == 3
    path = tmp_path / "sd.safetensors"
    st.save_file(net.state_dict(), str(path))
    f = mc.Model.from_safetensors(path, spec=m.spec)
    a, b = m.state_dict(), f.state_dict()
    assert a.keys() == b.keys() == {k for k in net.state_dict()}
    for k, v in net.state_dict().items():
        assert np.array_equal(a[k], v.numpy()) and np.array_equal(b[k], v.numpy()), k
    data = mc.load_data(subset=12)
    ca = mc.certify(m, data, kkt_active=4).to_dict()
    cb = mc.certify(f, data, kkt_active=4).to_dict()
    ca.pop("checkpoint_sha256"), cb.pop("checkpoint_sha256")
    assert ca == cb
    # The certified margins enclose the ones torch computes in float32 (loosely).
    with torch.no_grad():
        logits = net(torch.from_numpy(data.images).float() / 255)
    y = torch.from_numpy(data.labels.astype(np.int64))
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.clone()
    others[torch.arange(len(y)), y] = -float("inf")
    q = (true - others.max(1).values).min().item()
    lo, hi = mc.certify(m, data, kkt=False).q_min
    assert lo - 1e-4 <= q <= hi + 1e-4


def test_from_torch_saved_checkpoint_is_what_the_cli_reads(tmp_path) -> None:
    m = mc.Model.from_torch(cnn(), (1, 28, 28))
    p = tmp_path / "m.safetensors"
    m.save(p)
    again = mc.Model.from_safetensors(p)
    assert again.sha256 == m.sha256
    data = mc.load_data(subset=6)
    assert mc.certify(m, data, kkt=False).to_json() == mc.certify(again, data, kkt=False).to_json()


def test_mlp_infers_its_input_and_torch_float_pixels_are_accepted() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10, bias=False))
    m = mc.Model.from_torch(net)
    assert m.input_shape == (784, 1, 1)
    x, y = mc.load_data(subset=5)
    as_tensor = torch.from_numpy(x).float().div(255)  # ToTensor's pixels
    ref = mc.certify(m, x.reshape(5, -1), y, kkt=False).to_json()
    assert mc.certify(m, as_tensor.reshape(5, -1), torch.from_numpy(y), kkt=False).to_json() == ref


def test_non_homogeneous_and_unsupported_modules_are_refused() -> None:
    biased = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=True))
    with pytest.raises(mc.MargincertError, match=r"not homogeneous: layer 2 \(dense 2 \+bias\)"):
        mc.Model.from_torch(biased)
    assert mc.Model.from_torch(biased, require_homogeneous=False).homogeneity()["degree"] is None
    with pytest.raises(mc.MargincertError, match=r"module 1 \(Sigmoid\).*not positively homogeneous"):
        mc.Model.from_torch(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()))
    with pytest.raises(mc.MargincertError, match=r"input_shape=\(C, H, W\) is needed"):
        mc.Model.from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    with pytest.raises(mc.MargincertError, match="takes an nn.Sequential"):
        mc.Model.from_torch(nn.Linear(3, 2))
    with pytest.raises(mc.MargincertError, match="dilation and groups must be 1"):
        mc.Model.from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 8, 8))


def test_watch_a_torch_training_loop(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10, bias=False))
    x, y = mc.load_data(subset=30)
    xt = torch.from_numpy(x).float() / 255
    yt = torch.from_numpy(y.astype(np.int64))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=10)
    w = mc.watch(net, loader, every=2, input_shape=(1, 28, 28))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for epoch in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
        w.step(epoch)
    assert [r["step"] for r in w] == [0, 2, 4]
    assert all(r["examples"] == 30 and r["degree"] == 1 for r in w)
    # Each row is about the weights at its step.
    assert all(np.isfinite(r["q_min_lo"]) for r in w)
    assert w[0]["q_min_lo"] != w[-1]["q_min_lo"]
    assert list(tmp_path.iterdir()) == []
