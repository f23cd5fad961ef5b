"""Mine and finetune a tiny network, alone or as one rank under torchrun; saves what this
process ends with to OUT/rank<r>.pt. Run by tests/test_distributed.py.

usage: python tests/ddp_worker.py OUT {mlp,bn}
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import UserNet, separable_arrays  # noqa: E402

from gemminer.data.loader import BatchLoader  # noqa: E402
from gemminer.masking import score_layers, to_score_model, weight_name  # noqa: E402
from gemminer.methods.gem_miner import MineConfig, mine_scores  # noqa: E402
from gemminer.settings.config import FinetuneConfig, OptimConfig  # noqa: E402
from gemminer.training import finetune  # noqa: E402
from gemminer.training.runtime import start_runtime  # noqa: E402

GLOBAL_BATCH = 16
MEAN, STD = (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)


def network(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":  # no BatchNorm: DDP's averaged gradient is the global batch's
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 3))
    return UserNet()


def main(out: Path, kind: str) -> None:
    torch.set_num_threads(1)
    with start_runtime("cpu", precision="fp32") as (runtime, name):  # exact sums
        device = torch.device(name)
        shard = (runtime.rank, runtime.world_size)
        data = separable_arrays(64)

        def loader(seed: int) -> BatchLoader:
            return BatchLoader(
                data,
                batch_size=GLOBAL_BATCH,
                mean=MEAN,
                std=STD,
                train=True,
                seed=seed,
                shard=shard,
            )

        test = BatchLoader(data, batch_size=24, mean=MEAN, std=STD, shard=shard)
        plain = network(kind)
        initial = {k: v.clone() for k, v in plain.state_dict().items()}
        model = to_score_model(network(kind), torch.Generator().manual_seed(1))
        cfg = MineConfig(
            density=0.2,
            epochs=3,
            period=1,
            lam=1e-3,
            batch_size=GLOBAL_BATCH,
            optim=OptimConfig(lr=0.5),
            bn_recalibration_batches=0,
        )
        result = mine_scores(
            model, loader(2), cfg, device, eval_batches={"test": test}, runtime=runtime
        )
        scores = {weight_name(n): m.scores.detach().clone() for n, m in score_layers(model).items()}
        plain.load_state_dict(initial)
        history = finetune(
            plain,
            result.mask,
            loader(3),
            FinetuneConfig(epochs=2, batch_size=GLOBAL_BATCH, optim=OptimConfig(lr=0.05)),
            device,
            eval_batches={"test": test},
            runtime=runtime,
        )
        torch.save(
            {
                "world_size": runtime.world_size,
                "mask": dict(result.mask),
                "scores": scores,
                "mining": result.history,
                "finetune": history,
                "weights": {k: v.detach().clone() for k, v in plain.state_dict().items()},
            },
            out / f"rank{runtime.rank}.pt",
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
