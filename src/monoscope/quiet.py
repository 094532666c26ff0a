"""``--quiet``: silence the progress bars that libraries draw on their own as well.

transformers draws "Loading weights" bars, huggingface_hub download bars and datasets
"Map"/"Generating" bars; each reads an environment variable when first imported, and has a
switch for when it is already loaded. Setting the variables also reaches worker processes.
"""

from __future__ import annotations

import os
import sys

ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def silence_library_progress() -> None:
    """Turn off the progress bars of huggingface_hub, transformers and datasets in this process
    and in the processes it starts (imports nothing that is not loaded yet)."""
    for name in ENV:
        os.environ[name] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
