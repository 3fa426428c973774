"""The bottom layer: errors, the study's typed specs, the schema that builds them from YAML,
the hyperparameter rules, registries and the step schedule. Imports no other package of
this project; ``search_spaces``, ``trainables`` and ``sweeps`` all build on it."""
