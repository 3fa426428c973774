"""How many trials fit at once and how long a trial may wait for workers, on fixed clusters
and on autoscaling ones (node groups read from the autoscaler's published config)."""

from __future__ import annotations

from sweeps.study import ResourcesSpec
from sweeps.tuning.cluster import start_timeout, trial_slots

GIB = 2**30
HEAD = {"Resources": {"CPU": 0, "memory": 24 * GIB}}
GPU_NODE = {"Resources": {"CPU": 4, "GPU": 1, "memory": 12 * GIB}}


def test_fixed_cluster_counts_what_alive_nodes_place():
    one_gpu = ResourcesSpec(cpus_per_worker=2, gpus_per_worker=1)
    assert trial_slots(one_gpu, nodes=[HEAD, GPU_NODE, GPU_NODE], groups=[]) == 2
    half_gpu = ResourcesSpec(cpus_per_worker=2, gpus_per_worker=0.5)
    assert trial_slots(half_gpu, nodes=[HEAD, GPU_NODE], groups=[]) == 2
    ddp = ResourcesSpec(workers=2, cpus_per_worker=1, gpus_per_worker=1)  # workers may spread over nodes
    assert trial_slots(ddp, nodes=[HEAD, GPU_NODE, GPU_NODE, GPU_NODE], groups=[]) == 1
    assert trial_slots(one_gpu, nodes=[HEAD], groups=[]) == 0


def test_autoscaling_cluster_counts_the_nodes_it_may_add():
    one_gpu = ResourcesSpec(cpus_per_worker=2, gpus_per_worker=1)
    groups = [{"Resources": {"CPU": 0}, "max_count": 1}, {"Resources": GPU_NODE["Resources"], "max_count": 8}]
    assert trial_slots(one_gpu, nodes=[HEAD], groups=groups) == 8  # no GPU node is up yet
    unbounded = [{"Resources": GPU_NODE["Resources"], "max_count": 1000}]
    assert trial_slots(one_gpu, nodes=[HEAD], groups=unbounded) == 1000
    # the trial drivers' memory (512 MiB each, anywhere) still caps it
    small = [{"Resources": {"CPU": 4, "GPU": 1, "memory": GIB // 4}, "max_count": 8}]
    assert trial_slots(one_gpu, nodes=[{"Resources": {"CPU": 0, "memory": GIB}}], groups=small) == 6


def test_trials_wait_longer_only_where_the_autoscaler_can_add_a_node_that_fits():
    one_gpu = ResourcesSpec(cpus_per_worker=2, gpus_per_worker=1, start_timeout_s=60, autoscale_timeout_s=900)
    assert start_timeout(one_gpu, groups=[]) == 60
    assert start_timeout(one_gpu, groups=[{"Resources": GPU_NODE["Resources"], "max_count": 2}]) == 900
    cpu_only = [{"Resources": {"CPU": 16}, "max_count": 4}]
    assert start_timeout(one_gpu, groups=cpu_only) == 60  # no node type has a GPU: fail fast


def test_trials_train_in_their_own_tune_actor_only_where_that_costs_nothing():
    from core.errors import StudyError
    from core.schema import parse
    from sweeps.tuning.cluster import in_process, trial_resources

    one = ResourcesSpec(cpus_per_worker=2, gpus_per_worker=0.25)
    laptop = [{"Resources": {"CPU": 8, "GPU": 1, "memory": 24 * GIB}}]
    assert in_process(one, nodes=laptop, groups=[]) is True
    assert in_process(one, nodes=[HEAD, GPU_NODE], groups=[]) is False  # a lost node would take the trial along
    assert in_process(one, nodes=laptop, groups=[{"Resources": GPU_NODE["Resources"], "max_count": 2}]) is False
    pinned = [{"Resources": {"CPU": 8, "GPU": 1, "trial_driver": 1}}]  # cluster.yaml's head keeps the drivers
    assert in_process(one, nodes=pinned, groups=[]) is False
    assert in_process(ResourcesSpec(workers=2), nodes=laptop, groups=[]) is False  # DDP needs Train workers
    assert in_process(ResourcesSpec(in_process=True), nodes=[HEAD, GPU_NODE], groups=[]) is True  # asked for
    assert in_process(ResourcesSpec(in_process=False), nodes=laptop, groups=[]) is False

    # the Tune actor holds what the worker would have held
    decided = ResourcesSpec(cpus_per_worker=2, gpus_per_worker=0.25, in_process=True)
    assert trial_resources(decided) == {"memory": 512 * 2**20, "CPU": 2, "GPU": 0.25}

    try:
        parse(ResourcesSpec, {"workers": 2, "in_process": True}, "resources")
    except StudyError as exc:
        assert exc.field == "resources.in_process" and "workers: 1" in str(exc)
    else:
        raise AssertionError("workers: 2 with in_process: true was accepted")
