"""Test-wide environment, set before anything imports the libraries that read it."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Every tool's cache and config dir goes under a folder the tests own, before anything imports them.
_HOME = Path(tempfile.mkdtemp(prefix="memaudit-tests-"))
for var, sub in (
    ("MPLCONFIGDIR", "mpl"),
    ("HF_HOME", "hf"),
    ("SCIKIT_LEARN_DATA", "sklearn"),
    ("MEMAUDIT_CACHE", "cache"),
    ("RAY_TMPDIR", "ray"),
):
    os.environ[var] = str(_HOME / sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

atexit.register(shutil.rmtree, _HOME, True)
