"""Training: the Tune trial (``trial``), the worker loop it runs (``loop``), what a failure means
(``failures``), and what the loop runs on: allocator, mixed precision, kernels, a GPU-memory estimate."""
