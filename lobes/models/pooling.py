"""Masked pooling over frames: padding frames never count in a pooled vector.

Kept rather than SpeechBrain's ``nnet.pooling.StatisticsPooling``, which takes relative lengths
and rounds them to frames (HuBERT's frame count is not proportional to the samples, so a padding
frame can count or a real one be dropped), adds random noise to the mean (and draws from torch's
generator), uses the unbiased std (NaN for a one-frame clip) and has no attentive mode.
"""

import torch

from lobes.models.frames import frame_mask


def masked_mean(frames, frame_counts):
    """Mean over the real frames of each utterance.

    Arguments
    ---------
    frames : torch.Tensor
        ``(batch, max_frames, dim)``.
    frame_counts : torch.Tensor
        ``(batch,)`` number of real frames.

    Example
    -------
    >>> frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean(frames, torch.tensor([2]))
    tensor([[2.]])
    """
    mask = frame_mask(frame_counts, frames.shape[1]).unsqueeze(-1).to(frames.dtype)
    return (frames * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MaskedPooling(torch.nn.Module):
    """Pool frames into one utterance vector, ignoring padding.

    Arguments
    ---------
    mode : str
        ``"mean"`` (output ``dim``), ``"stats"`` (mean and standard deviation, ``2 * dim``) or
        ``"attentive"`` (a learned softmax weighting of the real frames, ``dim``).
    input_size : int
        Frame dimension; needed by ``"attentive"`` only.

    Example
    -------
    >>> pool = MaskedPooling("stats")
    >>> pooled = pool(torch.randn(2, 5, 4), torch.tensor([5, 3]))
    >>> tuple(pooled.shape)
    (2, 8)
    """

    def __init__(self, mode="mean", input_size=None):
        super().__init__()
        if mode not in ("mean", "stats", "attentive"):
            raise ValueError(f"pooling mode must be mean, stats or attentive, got {mode!r}")
        self.mode = mode
        if mode == "attentive":
            if input_size is None:
                raise ValueError("attentive pooling needs input_size")
            self.attention = torch.nn.Sequential(
                torch.nn.Linear(input_size, input_size // 2 or 1),
                torch.nn.Tanh(),
                torch.nn.Linear(input_size // 2 or 1, 1),
            )

    def forward(self, frames, frame_counts):
        """Return ``(batch, out_dim)`` pooled vectors."""
        if self.mode == "mean":
            return masked_mean(frames, frame_counts)
        if self.mode == "stats":
            mean = masked_mean(frames, frame_counts)
            variance = masked_mean((frames - mean.unsqueeze(1)) ** 2, frame_counts)
            return torch.cat([mean, torch.sqrt(variance + 1e-6)], dim=-1)
        mask = frame_mask(frame_counts, frames.shape[1])
        scores = self.attention(frames).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        return (frames * weights).sum(dim=1)
