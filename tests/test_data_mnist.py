"""MNIST loader: the real files in the shared data folder, and small / corrupt files written here.

The network is never used: download paths run against a stand-in for ``urlopen``.
"""

from __future__ import annotations

import gzip
import io
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from balance.data import DataError, _download
from balance.data.mnist import ALL_FILES, MNIST_FILES, MNIST_MD5, MNIST_MIRRORS, load_mnist

# Official class counts (LeCun et al.; also torchvision's MNIST).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --------------------------------------------------------------------------- real data
def test_real_train_split(shared_data_root):
    x, y = load_mnist("train", root=shared_data_root, download=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1
    assert torch.bincount(y).tolist() == TRAIN_COUNTS
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training digits
    # The usual normalisation constants 0.1307 / 0.3081 (rounded to 4 decimals): exact data.
    assert x.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert x.std().item() == pytest.approx(0.3081, abs=5e-5)
    # Continuous pixels: byte / 255, so many distinct values, not binarised.
    assert torch.unique(x[:100]).numel() > 200


def test_real_test_split_and_environment_root(shared_data_root, monkeypatch):
    monkeypatch.setenv("BALANCE_DATA", str(shared_data_root))
    x, y = load_mnist("test", download=False)
    assert x.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == TEST_COUNTS
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    assert x.mean().item() == pytest.approx(0.13251, abs=5e-5)


def test_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid", root=tmp_path, download=False)


# --------------------------------------------------------------------------- fake files
def idx_bytes(array: np.ndarray, magic: int | None = None, dims=None) -> bytes:
    """An idx unsigned-byte payload; ``magic`` / ``dims`` override the header to corrupt it."""
    magic = 0x0800 | array.ndim if magic is None else magic
    dims = array.shape if dims is None else dims
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in dims)
    return header + array.astype(np.uint8).tobytes()


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    image_name, label_name = MNIST_FILES[split]
    (folder / image_name).write_bytes(gzip.compress(idx_bytes(images)))
    (folder / label_name).write_bytes(gzip.compress(idx_bytes(labels)))
    return folder


@pytest.fixture
def fake(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    folder = write_split(tmp_path, "test", images, labels)
    return tmp_path, folder, images, labels


def test_small_files_load_exactly(fake):
    root, _, images, labels = fake
    x, y = load_mnist("test", root=root, download=False, verify=False)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(images).float() / 255)
    assert y.tolist() == labels.tolist() and y.dtype == torch.int64


def test_wrong_md5_is_reported(fake):
    root, folder, _, _ = fake
    with pytest.raises(DataError, match="md5") as info:
        load_mnist("test", root=root, download=False)
    assert str(folder / "t10k-images-idx3-ubyte.gz") in str(info.value)


def corrupt(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def test_truncated_gzip_is_a_data_error(fake):
    root, folder, _, _ = fake
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as info:
        load_mnist("test", root=root, download=False, verify=False)
    assert str(path) in str(info.value)


def test_not_gzip_is_a_data_error(fake):
    root, folder, _, _ = fake
    corrupt(folder, "t10k-labels-idx1-ubyte.gz", b"<html>404 not found</html>")
    with pytest.raises(DataError, match="decompress"):
        load_mnist("test", root=root, download=False, verify=False)


def test_wrong_magic_is_a_data_error(fake):
    root, folder, images, _ = fake
    # A labels-style (idx1) header on the images file.
    flat = images.reshape(-1)
    corrupt(folder, "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(flat)))
    with pytest.raises(DataError, match="magic"):
        load_mnist("test", root=root, download=False, verify=False)


def test_header_size_mismatch_is_a_data_error(fake):
    root, folder, images, _ = fake
    data = idx_bytes(images, dims=(10, 28, 28))  # claims 10 images, holds 7
    corrupt(folder, "t10k-images-idx3-ubyte.gz", gzip.compress(data))
    with pytest.raises(DataError, match="announces shape"):
        load_mnist("test", root=root, download=False, verify=False)


def test_empty_decompressed_file_is_a_data_error(fake):
    root, folder, _, _ = fake
    corrupt(folder, "t10k-labels-idx1-ubyte.gz", gzip.compress(b"\x00\x00"))
    with pytest.raises(DataError, match="magic"):
        load_mnist("test", root=root, download=False, verify=False)


def test_image_label_count_mismatch(fake):
    root, folder, _, labels = fake
    corrupt(folder, "t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(labels[:5])))
    with pytest.raises(DataError, match="7 images but"):
        load_mnist("test", root=root, download=False, verify=False)


def test_labels_out_of_range(fake):
    root, folder, _, labels = fake
    bad = labels.copy()
    bad[0] = 10
    corrupt(folder, "t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(bad)))
    with pytest.raises(DataError, match="0..9"):
        load_mnist("test", root=root, download=False, verify=False)


def test_wrong_image_size(tmp_path):
    rng = np.random.default_rng(1)
    write_split(tmp_path, "train", rng.integers(0, 255, (3, 32, 32)), np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"\(28, 28\)"):
        load_mnist("train", root=tmp_path, download=False, verify=False)


# --------------------------------------------------------------------------- missing / download
def test_missing_files_name_files_and_folder(tmp_path):
    with pytest.raises(DataError) as info:
        load_mnist("train", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "mnist") in message
    for name in MNIST_FILES["train"]:
        assert name in message
    assert "BALANCE_DATA" in message


def test_one_missing_file_is_named(fake):
    root, folder, _, _ = fake
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing from .*: t10k-labels-idx1-ubyte.gz\\."):
        load_mnist("test", root=root, download=False)


class FakeNetwork:
    """Stands in for ``urlopen``: serves bytes per file name, or fails like an offline machine."""

    def __init__(self, files: dict[str, bytes] | None = None, fail_prefixes=()):
        self.files = files or {}
        self.fail_prefixes = tuple(fail_prefixes)
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float):
        self.calls.append(url)
        if url.startswith(self.fail_prefixes) or url.rsplit("/", 1)[-1] not in self.files:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        return io.BytesIO(self.files[url.rsplit("/", 1)[-1]])


def no_leftovers(folder: Path) -> bool:
    return not folder.exists() or not any(p.name.endswith(".part") for p in folder.iterdir())


def test_offline_download_failure_is_a_data_error(tmp_path, monkeypatch):
    net = FakeNetwork()
    monkeypatch.setattr(_download, "_urlopen", net)
    monkeypatch.delenv("BALANCE_OFFLINE", raising=False)
    with pytest.raises(DataError) as info:
        load_mnist("test", root=tmp_path)  # download=None: try, since files are missing
    message = str(info.value)
    assert "download failed" in message and "Name or service not known" in message
    assert str(tmp_path / "mnist") in message and "t10k-images-idx3-ubyte.gz" in message
    assert net.calls and all(url.startswith(MNIST_MIRRORS) for url in net.calls)
    # Every mirror was tried for the first file before giving up.
    assert len(net.calls) == len(MNIST_MIRRORS)
    assert no_leftovers(tmp_path / "mnist")


def test_balance_offline_skips_the_network(tmp_path, monkeypatch):
    net = FakeNetwork()
    monkeypatch.setattr(_download, "_urlopen", net)
    monkeypatch.setenv("BALANCE_OFFLINE", "1")
    with pytest.raises(DataError, match="downloading is off"):
        load_mnist("test", root=tmp_path)
    assert net.calls == []


def real_bytes(shared: Path, split: str) -> dict[str, bytes]:
    return {name: (shared / "mnist" / name).read_bytes() for name in MNIST_FILES[split]}


def test_download_when_missing(shared_data_root, tmp_path, monkeypatch):
    # The first mirror is down; the second serves the official bytes.
    net = FakeNetwork(real_bytes(shared_data_root, "test"), fail_prefixes=(MNIST_MIRRORS[0],))
    monkeypatch.setattr(_download, "_urlopen", net)
    x, y = load_mnist("test", root=tmp_path, download=True)
    assert x.shape == (10000, 1, 28, 28) and torch.bincount(y).tolist() == TEST_COUNTS
    folder = tmp_path / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST_FILES["test"])
    assert any(url.startswith(MNIST_MIRRORS[1]) for url in net.calls)
    assert _download.md5_file(folder / "t10k-images-idx3-ubyte.gz") == MNIST_MD5[
        "t10k-images-idx3-ubyte.gz"
    ]


def test_truncated_download_is_rejected_and_not_kept(shared_data_root, tmp_path, monkeypatch):
    files = real_bytes(shared_data_root, "test")
    files = {name: data[: len(data) // 2] for name, data in files.items()}
    monkeypatch.setattr(_download, "_urlopen", FakeNetwork(files))
    with pytest.raises(DataError, match="md5"):
        load_mnist("test", root=tmp_path, download=True)
    assert no_leftovers(tmp_path / "mnist")
    assert not (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_download_true_replaces_a_corrupt_file(shared_data_root, tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES["test"]:
        shutil.copy(shared_data_root / "mnist" / name, folder / name)
    corrupt(folder, "t10k-labels-idx1-ubyte.gz", b"garbage")
    net = FakeNetwork(real_bytes(shared_data_root, "test"))
    monkeypatch.setattr(_download, "_urlopen", net)
    with pytest.raises(DataError, match="md5"):
        load_mnist("test", root=tmp_path)  # download=None leaves existing files alone
    assert net.calls == []
    x, y = load_mnist("test", root=tmp_path, download=True)
    assert torch.bincount(y).tolist() == TEST_COUNTS
    assert [url.rsplit("/", 1)[-1] for url in net.calls] == ["t10k-labels-idx1-ubyte.gz"]


def test_all_files_table_is_complete():
    assert set(ALL_FILES) == set(MNIST_MD5)


def test_failed_replacement_keeps_the_old_file_and_says_so(shared_data_root, tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES["test"]:
        shutil.copy(shared_data_root / "mnist" / name, folder / name)
    corrupt(folder, "t10k-images-idx3-ubyte.gz", b"garbage")
    monkeypatch.setattr(_download, "_urlopen", FakeNetwork())
    with pytest.raises(DataError, match="downloading a fresh copy failed") as info:
        load_mnist("test", root=tmp_path, download=True)
    assert str(folder) in str(info.value)
    assert (folder / "t10k-images-idx3-ubyte.gz").read_bytes() == b"garbage"
    assert no_leftovers(folder)
