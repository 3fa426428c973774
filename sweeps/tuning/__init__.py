"""Running a study on Ray Tune: the Tuner, searchers, schedulers, the cluster, resume/extend, the final stage."""
