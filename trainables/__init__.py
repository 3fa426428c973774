"""What one trial does: data, model + peft method, the Ray Train worker loop, metrics."""

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
