"""``balance-fid``: FID between two folders of images or ``.npz`` statistics, like pytorch-fid.

    balance-fid REAL_DIR FAKE_DIR                   # FID: <value>
    balance-fid REAL_DIR stats.npz                  # precomputed statistics on either side
    balance-fid --save-stats REAL_DIR real.npz      # write pytorch-fid-compatible statistics
    balance-fid --download                          # fetch the weights into the torch hub cache

Also ``python -m balance.metrics.fid_cli``. Folders: every file with an image extension
(pytorch-fid's list), sorted, read as RGB 8-bit; all images of a batch must share a size. The
network and weights are those of :mod:`balance.metrics.fid`; nothing is downloaded unless
``--download`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

#: pytorch-fid's ``IMAGE_EXTENSIONS``.
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted (as pytorch-fid lists them)."""
    return sorted(p for ext in IMAGE_EXTENSIONS for p in folder.glob(f"*.{ext}"))


class FolderBatches:
    """Batches of uint8 tensors [B, 3, H, W] read lazily from image files (RGB, like
    pytorch-fid's ``ImagePathDataset``); ``len()`` is the number of batches."""

    def __init__(self, files: Sequence[Path], batch_size: int):
        self.files = list(files)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def __iter__(self) -> Iterator:
        import numpy as np
        import torch
        from PIL import Image

        for start in range(0, len(self.files), self.batch_size):
            arrays = []
            for path in self.files[start:start + self.batch_size]:
                try:
                    with Image.open(path) as img:
                        arrays.append(np.asarray(img.convert("RGB")))
                except (OSError, SyntaxError) as err:  # PIL: truncated, corrupt, not an image
                    raise ValueError(f"cannot read the image {path} ({err}): replace or "
                                     "remove it") from err
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise ValueError(f"images of different sizes in one batch: {sorted(shapes)}; "
                                 "resize them first or use --batch-size 1")
            yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balance-fid", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="*", help="two folders of images or .npz statistics files "
                        "(with --save-stats: an image folder and the .npz to write)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="Inception weights file (default: $BALANCE_FID_WEIGHTS, else the "
                        "torch hub cache)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per batch")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:0, ... (default: cuda when available)")
    parser.add_argument("--save-stats", action="store_true",
                        help="write the statistics of the first path to the second (.npz)")
    parser.add_argument("--download", action="store_true",
                        help="download the weights (to --weights PATH, else the torch hub cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow-nonstandard-weights", action="store_true",
                        help="accept a weights file other than the official one (checked by "
                        "SHA-256); the FID printed is then labelled non-standard")
    # Pipeline checks without the weights: the same network with seeded random weights.
    # The number printed is then not an FID.
    parser.add_argument("--random-init-seed", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    import torch

    from balance.metrics import fid

    if args.download:
        path = fid.download_inception_weights(args.weights)
        print(f"weights saved to {path}")
        if not args.path:
            return 0
    if len(args.path) != 2:
        parser.error("give two paths (folders of images or .npz files)")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    paths = [Path(p) for p in args.path]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = None

    def statistics(path: Path) -> fid.FIDStatistics:
        nonlocal model
        if path.suffix == ".npz":
            return fid.FIDStatistics.load(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no such folder or .npz file: {path}")
        files = image_files(path)
        if len(files) < 2:
            raise ValueError(f"{path}: need at least 2 images, found {len(files)}")
        if model is None:
            model = fid.load_inception(args.weights, device=device,
                                       random_init_seed=args.random_init_seed,
                                       allow_nonstandard=args.allow_nonstandard_weights or None)
        return fid.image_statistics(FolderBatches(files, args.batch_size), model=model,
                                    device=device, progress=not args.no_progress)

    try:
        if args.save_stats:
            if paths[1].exists():
                raise FileExistsError(f"refusing to overwrite {paths[1]}")
            if paths[1].suffix != ".npz":
                raise ValueError(f"the output must be a .npz file, got {paths[1]}")
            statistics(paths[0]).save(paths[1])
            print(f"statistics of {paths[0]} saved to {paths[1]}")
            return 0
        for p in paths:
            if not p.exists():
                raise FileNotFoundError(f"invalid path: {p}")
        first, second = statistics(paths[0]), statistics(paths[1])
        value = fid.fid_from_statistics(first, second)
    except (fid.FIDWeightsMissing, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"balance-fid: error: {err}", file=sys.stderr)
        return 2
    tag = getattr(model, "fid_network_tag", fid.PRETRAINED_TAG) if model else fid.PRETRAINED_TAG
    label = "" if tag == fid.PRETRAINED_TAG else f" (non-standard weights: {tag})"
    print(f"FID{label}: {value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
