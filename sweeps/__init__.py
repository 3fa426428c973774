"""Studies (YAML), their validated schema, and the CLI that turns one into a Ray Tune run."""

import trainables  # noqa: F401  (its library-notice filter must be in place before bitsandbytes loads)
