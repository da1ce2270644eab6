"""Pure parts of the distributed support: names without wrapper prefixes, rank facts from hosts,
scalar key hashes, and watch() before init_process_group."""

from torch import nn

from instrument.distributed.naming import clean, clean_all, root_prefix
from instrument.distributed.rankinfo import RankInfo, fill_missing
from instrument.instruments.scalars import key_hash


class DistributedDataParallel(nn.Module):  # stands in for the class name only
    def __init__(self, module):
        super().__init__()
        self.module = module


def test_root_wrapper_prefix_only_at_the_root():
    inner = nn.Sequential(nn.Linear(2, 2))
    inner.module = nn.Linear(2, 2)  # a user submodule named "module" keeps its name
    wrapped = DistributedDataParallel(inner)
    prefix = root_prefix(wrapped)
    assert prefix == ["module"]
    names = [n for n, _ in wrapped.named_parameters()]
    assert clean_all(names, prefix) == ["0.weight", "0.bias", "module.weight", "module.bias"]


def test_internal_parts_are_removed_anywhere():
    assert clean("_fsdp_wrapped_module.0._fsdp_wrapped_module.weight") == "0.weight"
    assert clean("layers.3._checkpoint_wrapped_module.attn._orig_mod.proj.bias") == \
        "layers.3.attn.proj.bias"


def test_collisions_and_the_root_keep_meaningful_names():
    assert clean_all(["module", "module.0"], ["module"], root="(root)") == ["(root)", "0"]
    # two names that would clean to the same one keep their originals
    assert clean_all(["a._orig_mod.w", "a.w"]) == ["a._orig_mod.w", "a.w"]


def test_node_and_local_rank_from_hosts_when_the_launcher_did_not_say():
    infos = [RankInfo(r, 4, None, None, host, 100 + r) for r, host in
             enumerate(["b", "b", "a", "a"])]
    fill_missing(infos)
    assert [(i.node, i.local_rank) for i in infos] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_key_hash_is_exact_in_float64_and_never_zero():
    values = {key_hash(k) for k in ("loss", "acc", "a", "b", "")}
    assert len(values) == 5 and 0.0 not in values
    assert all(v == float(int(v)) and v < 2**52 for v in values)


def test_watch_before_init_process_group_warns_and_records_alone(tmp_path, monkeypatch):
    import warnings

    import torch

    import instrument

    monkeypatch.setenv("WORLD_SIZE", "2")
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor = instrument.watch(model, opt, run=str(tmp_path / "r"), strict=True)
    monitor.close()
    assert any("init_process_group" in str(w.message) for w in caught)
    assert monitor.reducer is None
