"""Data: load a study's rows (hub, local files, generated), map columns, split, tokenize (``load``);
the generated emotion data set the demo and tests use (``synthetic``)."""
