import pytest
import torch

from gemminer import FinetuneConfig, Mask, OptimConfig, prunable_weights
from gemminer.data.loader import BatchLoader
from gemminer.training import finetune


@pytest.mark.parametrize(
    "optim",
    [
        OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-3, schedule="constant"),
        OptimConfig(name="adam", lr=0.01, weight_decay=5e-3, schedule="cosine"),
    ],
)
def test_pruned_weights_stay_exactly_zero(user_net, tiny_data, optim):
    g = torch.Generator().manual_seed(0)
    mask = Mask(
        {n: torch.rand(w.shape, generator=g) < 0.2 for n, w in prunable_weights(user_net).items()}
    )
    before = {n: w.detach().clone() for n, w in prunable_weights(user_net).items()}
    loader = BatchLoader(tiny_data, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, train=True)
    cfg = FinetuneConfig(epochs=4, batch_size=8, optim=optim)  # 48 steps with momentum and decay
    history = finetune(user_net, mask, loader, cfg, torch.device("cpu"))
    assert len(history) == 4
    for name, w in prunable_weights(user_net).items():
        pruned = ~mask[name]
        assert torch.all(w[pruned] == 0), name
        kept = mask[name]
        assert not torch.equal(w[kept], before[name][kept]), f"{name}: kept weights did not train"


def test_finetune_rejects_a_mask_for_another_model(user_net, tiny_data):
    from gemminer.errors import MaskError

    loader = BatchLoader(tiny_data, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(MaskError):
        finetune(
            user_net,
            Mask({"other.weight": torch.ones(2)}),
            loader,
            FinetuneConfig(epochs=1),
            torch.device("cpu"),
        )
