"""Model and methods: load the base model and wrap it with a peft method (``load``), the method
registry (``methods``), tiny from-config models of real families for tests and smoke runs (``tiny``)."""
