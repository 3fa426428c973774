"""What one trial does, in rooms:

- ``data/``: a study's rows loaded, split and tokenized (``load``); generated data (``synthetic``)
- ``model/``: the base model wrapped with a peft method (``load``, ``methods``); tiny models (``tiny``)
- ``training/``: the Tune trial (``trial``) and the loop it runs (``loop``), failures, allocator, precision
- ``evaluation/``: metrics, floors, scores before training, merged-adapter evals, eval files
- ``kinds/``: task kinds (classification, QA, instruction tuning): each kind's data, head, scoring
- ``spec.py``: the one typed spec a trial receives; ``inference.py``: an exported model answering
"""

import logging


class _NoHubKernelNotice(logging.Filter):
    """bitsandbytes (>= 0.50) on CPUs with AVX512-BF16 tries, at import, to fetch an optional
    faster 4-bit kernel from the Hugging Face hub and warns when it cannot (the ``kernels``
    package is absent or the machine is offline), then uses its own kernel. The notice would
    open every command's output (and push a bad-input error off its one line) and says nothing
    a user must act on, so only that record is dropped; other bitsandbytes warnings stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in str(record.msg)


# Installed before anything imports bitsandbytes: every entry point imports this package first.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoHubKernelNotice())
