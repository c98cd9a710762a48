"""CIFAR-10 loader on tiny python batches written here (the real batches are not in the shared
data folder: see shared/data/PROVENANCE.md). The network is never used."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from balance.data import DataError, _download
from balance.data.cifar import CIFAR10_FILES, CIFAR10_URL, cifar10_folder, load_cifar10

TRAIN = CIFAR10_FILES["train"]


def batch_bytes(data: np.ndarray, labels: list[int], *, protocol: int = 2, str_keys=False) -> bytes:
    """A batch laid out like the official files (bytes keys, protocol 2) or a Python-3 variant."""
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    return pickle.dumps({key("data"): data, key("labels"): labels}, protocol=protocol)


def make_batches(rng: np.random.Generator, per_batch: int = 3):
    """{file name: (data uint8 [n, 3072], labels)} for the five train batches and the test batch."""
    out = {}
    for name in (*TRAIN, "test_batch"):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        out[name] = (data, labels)
    return out


def write_batches(folder: Path, batches, **kwargs) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        (folder / name).write_bytes(batch_bytes(data, labels, **kwargs))


@pytest.fixture
def tiny(tmp_path):
    batches = make_batches(np.random.default_rng(0))
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py", batches)
    return tmp_path, batches


def expected(batches, names):
    data = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    labels = sum((batches[n][1] for n in names), [])
    return torch.from_numpy(data).float() / 255, torch.tensor(labels)


def test_train_and_test_splits_load_exactly(tiny):
    root, batches = tiny
    x, y = load_cifar10("train", root=root, download=False, verify=False)
    ex, ey = expected(batches, TRAIN)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, ey)
    assert torch.equal(x, ex)  # batch order 1..5, rows channel-major R, G, B planes
    xt, yt = load_cifar10("test", root=root, download=False, verify=False)
    assert torch.equal(xt, expected(batches, ["test_batch"])[0]) and yt.shape == (3,)


def test_channel_layout(tmp_path):
    # One image whose red plane is 255, green 0, blue 100: rows are R(1024) G(1024) B(1024).
    data = np.concatenate([np.full(1024, 255), np.zeros(1024), np.full(1024, 100)])
    folder = tmp_path / "cifar-10-batches-py"  # the layout directly under the root
    folder.mkdir()
    (folder / "test_batch").write_bytes(batch_bytes(data[None].astype(np.uint8), [7]))
    x, y = load_cifar10("test", root=tmp_path, download=False, verify=False)
    assert cifar10_folder(tmp_path) == folder
    assert torch.all(x[0, 0] == 1) and torch.all(x[0, 1] == 0)
    assert torch.allclose(x[0, 2], torch.tensor(100 / 255))
    assert y.tolist() == [7]


@pytest.mark.parametrize("protocol,str_keys", [(4, True), (5, False)])
def test_python3_pickles_are_accepted(tmp_path, protocol, str_keys):
    rng = np.random.default_rng(1)
    batches = {"test_batch": (rng.integers(0, 256, (2, 3072), dtype=np.uint8), [1, 2])}
    write_batches(tmp_path / "cifar10" / "cifar-10-batches-py", batches, protocol=protocol,
                  str_keys=str_keys)
    x, y = load_cifar10("test", root=tmp_path, download=False, verify=False)
    assert torch.equal(x, expected(batches, ["test_batch"])[0]) and y.tolist() == [1, 2]


def test_wrong_md5_is_reported(tiny):
    root, _ = tiny
    with pytest.raises(DataError, match="md5") as info:
        load_cifar10("test", root=root, download=False)
    assert "test_batch" in str(info.value)


def test_truncated_batch_is_a_data_error(tiny):
    root, _ = tiny
    path = root / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated") as info:
        load_cifar10("train", root=root, download=False, verify=False)
    assert str(path) in str(info.value)


class Exploit:
    def __reduce__(self):
        return (os.remove, (self.target,))

    def __init__(self, target: str):
        self.target = target


def test_pickled_code_is_refused(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("must survive")
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Exploit(str(sentinel))}))
    with pytest.raises(DataError, match="refusing to load global"):
        load_cifar10("test", root=tmp_path, download=False, verify=False)
    assert sentinel.exists()


@pytest.mark.parametrize(
    "payload,match",
    [
        ({b"data": np.zeros((2, 3072), np.uint8)}, "'labels'"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
        ([1, 2, 3], "dict"),
    ],
)
def test_malformed_batches(tmp_path, payload, match):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=match):
        load_cifar10("test", root=tmp_path, download=False, verify=False)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError):
        load_cifar10("valid", root=tmp_path, download=False)


def test_missing_batches_name_the_folder(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar10("train", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "data_batch_5" in message
    assert "BALANCE_DATA" in message and CIFAR10_URL in message


class FakeNetwork:
    def __init__(self, payload: bytes | None = None):
        self.payload = payload
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float):
        self.calls.append(url)
        if self.payload is None:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        return io.BytesIO(self.payload)


def test_offline_download_failure_is_a_data_error(tmp_path, monkeypatch):
    net = FakeNetwork()
    monkeypatch.setattr(_download, "_urlopen", net)
    monkeypatch.delenv("BALANCE_OFFLINE", raising=False)
    with pytest.raises(DataError, match="download failed") as info:
        load_cifar10("test", root=tmp_path)
    assert net.calls == [CIFAR10_URL]
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in str(info.value)
    assert list((tmp_path / "cifar10").iterdir()) == []  # no partial archive left


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_extracts_only_the_batches(tmp_path, monkeypatch):
    batches = make_batches(np.random.default_rng(2), per_batch=2)
    members = {f"cifar-10-batches-py/{n}": batch_bytes(*batches[n]) for n in batches}
    members["cifar-10-batches-py/../../escape"] = b"x"  # a hostile archive must not write outside
    members["elsewhere/data_batch_1"] = b"x"
    archive = tar_gz(members)
    net = FakeNetwork(archive)
    monkeypatch.setattr(_download, "_urlopen", net)
    root = tmp_path / "root"
    # The archive's md5 is not the official one: verify=True must refuse it ...
    with pytest.raises(DataError, match="md5"):
        load_cifar10("train", root=root, download=True)
    assert not (root / "cifar10" / "cifar-10-batches-py").exists()
    # ... and verify=False (a user-made archive) extracts and loads it.
    x, y = load_cifar10("train", root=root, download=True, verify=False)
    assert torch.equal(x, expected(batches, TRAIN)[0]) and y.shape == (10,)
    folder = root / "cifar10" / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(batches)
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == ["cifar-10-batches-py"]
    assert not (tmp_path / "escape").exists() and not (root / "escape").exists()


def test_corrupt_archive_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_download, "_urlopen", FakeNetwork(b"\x1f\x8b not really gzip"))
    with pytest.raises(DataError, match="cannot extract"):
        load_cifar10("test", root=tmp_path, download=True, verify=False)
