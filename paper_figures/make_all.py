"""``python paper_figures/make_all.py [options]``: the same as ``python -m paper_figures``.

Rebuilds every registered table and figure from saved results (see ``paper_figures/__main__.py``
for the registry and the options).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
