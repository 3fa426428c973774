"""Studies (YAML), their validated schema, and the CLI that turns one into a Ray Tune run."""
