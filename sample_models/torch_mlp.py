"""The PyTorch sample: a small MLP for iris, and the factory ``--from-python`` calls.

    mserve export --from-python sample_models.torch_mlp:build -n iris-torch \\
        --weights sample_models/iris_mlp_state_dict.pt --sample sample_models/iris_sample.csv
"""

from __future__ import annotations

import torch


class IrisMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.out(torch.relu(self.hidden(features)))
        return {"logits": logits, "probabilities": torch.softmax(logits, dim=-1)}


class Probabilities(torch.nn.Module):
    """Only the probabilities, as one tensor: the TorchScript sample (traced)."""

    def __init__(self, mlp: IrisMLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)["probabilities"]


def build() -> IrisMLP:
    """An untrained IrisMLP: --weights fills in the trained parameters."""
    return IrisMLP()
