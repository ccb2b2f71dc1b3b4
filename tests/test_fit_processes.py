"""fit() under torchrun: every process runs every step, whatever the batch sizes."""

import json
import sys
import textwrap

from edgener.training.loop import process_share
from tests.conftest import run_module

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import torch

    from edgener.training.loop import TrainSettings, fit, torchrun_processes


    class Step(torch.nn.Module):
        # Stacking the examples, as a collate does: an empty share cannot make a batch.
        def __init__(self, seen):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))
            self.inputs = torch.arange(9, dtype=torch.float32)
            self.seen = seen

        def forward(self, indices):
            self.seen.append(list(indices))
            return (self.weight * torch.stack([self.inputs[i] for i in indices])).mean()


    with torchrun_processes(threads=1) as processes:
        seen = []
        step = Step(seen)
        settings = TrainSettings(epochs=1, batch_size=8, group_by_length=False)
        fit(step, step, [1] * 9, lambda: 0.0, settings, Path(sys.argv[1]), "toy", processes)
        Path(sys.argv[1], f"seen-{processes.rank}.json").write_text(json.dumps(seen))
""")


def test_a_batch_smaller_than_the_processes_lends_an_example_again():
    assert process_share([5, 6, 7], 1, 2) == [6]
    assert process_share([5], 0, 2) == [5]
    assert process_share([5], 1, 2) == [5]
    assert process_share([5, 6], 3, 4) == [6]


def test_two_processes_train_an_epoch_whose_last_batch_has_one_example(tmp_path):
    """Nine examples in batches of eight: the second batch holds one example for two
    processes. Both must still run the step, or the first waits on the gradient
    all-reduce until the second crashes on an empty batch."""
    (tmp_path / "fit_toy.py").write_text(SCRIPT)
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29519")
    result = run_module("fit_toy", str(tmp_path), cwd=tmp_path, launcher=launcher,
                        timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shares = [json.loads((tmp_path / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
    assert [len(s) for s in shares] == [2, 2]  # two steps each
    assert all(batch for share in shares for batch in share)
    steps = sorted((shares[0][k] + shares[1][k] for k in (0, 1)), key=len)
    assert len(steps[0]) == 2 and steps[0][0] == steps[0][1]  # the lone example, twice
    assert sorted(steps[1] + steps[0][:1]) == list(range(9))
