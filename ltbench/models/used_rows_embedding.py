"""A token embedding that holds only the rows a fixed set of sentences reads."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LTBenchError


class UsedRowsEmbedding(nn.Module):
    """``nn.Embedding`` restricted to the token ids of fixed sentences (the class prompts).

    A trainable text tower that only ever reads the same sentences gets gradient only in their rows;
    the other rows are never read and change by weight decay alone. Keeping the read rows gives the
    same outputs and, row for row, the same training trajectory, without carrying the whole
    vocabulary through the optimiser, the EMA copy and every checkpoint (49408 rows of CLIP's
    vocabulary: 95% of CPRFL's Digits parameters, 25 M of RN50's text tower). The kept ids are saved
    with the weights (extra state) and checked on load; a full-vocabulary weight (a checkpoint of the
    whole tower, an older run) loads by taking its rows.
    """

    def __init__(self, full: nn.Embedding, token_ids: torch.Tensor) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = full.num_embeddings, full.embedding_dim
        ids = torch.unique(token_ids.detach().to(full.weight.device, torch.long))
        self.weight = nn.Parameter(full.weight.detach()[ids].clone(), requires_grad=full.weight.requires_grad)
        lookup = torch.full((self.num_embeddings,), -1, dtype=torch.long, device=ids.device)
        lookup[ids] = torch.arange(len(ids), device=ids.device)
        # plain tensors, not buffers: weight averaging must not touch integer indices; they follow the device
        self.ids, self._lookup = ids, lookup

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "UsedRowsEmbedding":
        super()._apply(fn, recurse)
        # the indices follow the weight's device only: dtype casts and to_empty() must not touch them
        self.ids, self._lookup = self.ids.to(self.weight.device), self._lookup.to(self.weight.device)
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(self._lookup[tokens], self.weight)

    def accepts_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        """A checkpoint's ``weight`` may be the whole table (``ltbench.checkpoints.check_fits`` asks)."""
        return name == "weight" and tuple(shape) == (self.num_embeddings, self.embedding_dim)

    def get_extra_state(self) -> torch.Tensor:
        return self.ids.cpu()

    def set_extra_state(self, state: Any) -> None:
        ids = torch.as_tensor(state).to(self.ids)
        if ids.shape != self.ids.shape or not torch.equal(ids, self.ids):
            raise LTBenchError(
                f"token embedding: the weights were trained on {len(ids)} token rows of other sentences than this "
                f"model's {len(self.ids)} (class names or template differ); use the class names and template it was trained with"
            )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "weight"
        weight = state_dict.get(key)
        if isinstance(weight, torch.Tensor) and self.accepts_shape("weight", tuple(weight.shape)) and weight.shape[0] != len(self.ids):
            state_dict[key] = weight[self.ids.to(weight.device)]
            state_dict.setdefault(prefix + "_extra_state", self.ids.cpu())  # the whole table has every row
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{len(self.ids)} of {self.num_embeddings} rows, dim={self.embedding_dim}"
