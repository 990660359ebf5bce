"""Task heads: the multi-scale frame head of stage 1 and the utterance heads.

The utterance heads are a plain linear layer (baseline, stage 0) and a cosine classifier
(stage 2) trained with AM-Softmax through SpeechBrain's ``AngularMargin`` and
``LogSoftmaxWrapper``: the margin enters the training loss only, and the scores used for
evaluation and inference are the plain scaled cosines.
"""

import torch
import torch.nn.functional as F
from speechbrain.nnet.losses import AngularMargin, LogSoftmaxWrapper

from lobes.models.frames import frame_mask


class MultiScaleFrameHead(torch.nn.Module):
    """One linear frame classifier per GMP scale.

    Arguments
    ---------
    input_size : int
        Frame feature dimension.
    gmp_scales : list of int
        Cluster count of each scale, e.g. ``[64, 256, 1024]``.
    gender_split : bool
        GMPs clustered per gender (ids of the second gender offset by K): 2K outputs a scale.

    Example
    -------
    >>> head = MultiScaleFrameHead(8, [4, 16])
    >>> [tuple(t.shape) for t in head(torch.randn(2, 5, 8))]
    [(2, 5, 4), (2, 5, 16)]
    >>> MultiScaleFrameHead(8, [4, 16], gender_split=True).n_outputs
    [8, 32]
    """

    def __init__(self, input_size, gmp_scales, gender_split=False):
        super().__init__()
        self.gmp_scales = list(gmp_scales)
        self.n_outputs = [k * (2 if gender_split else 1) for k in self.gmp_scales]
        self.linears = torch.nn.ModuleList(
            torch.nn.Linear(input_size, n_outputs) for n_outputs in self.n_outputs
        )

    def forward(self, frames):
        """Return a list of ``(batch, frames, K_s)`` logits, one per scale."""
        return [linear(frames) for linear in self.linears]


def masked_frame_ce(logits, frame_labels, frame_counts):
    """Cross-entropy averaged over the real frames of the batch only.

    Arguments
    ---------
    logits : torch.Tensor
        ``(batch, frames, n_classes)``.
    frame_labels : torch.Tensor
        ``(batch, frames)`` integer targets; values on padding frames are ignored.
    frame_counts : torch.Tensor
        ``(batch,)`` number of real frames.

    Example
    -------
    >>> logits = torch.zeros(1, 3, 2)
    >>> labels = torch.tensor([[0, 1, 999]])
    >>> round(float(masked_frame_ce(logits, labels, torch.tensor([2]))), 4)
    0.6931
    """
    n_frames_in_batch = min(logits.shape[1], frame_labels.shape[1])
    logits = logits[:, :n_frames_in_batch]
    frame_labels = frame_labels[:, :n_frames_in_batch]
    mask = frame_mask(frame_counts.clamp(max=n_frames_in_batch), n_frames_in_batch)
    return F.cross_entropy(logits[mask], frame_labels[mask].long())


def multi_scale_frame_loss(logits_per_scale, labels_per_scale, frame_counts, scale_weights):
    """``sum_s w_s * CE(frame logits_s, GMP_s)`` over real frames only.

    Example
    -------
    >>> logits = [torch.zeros(1, 2, 4), torch.zeros(1, 2, 8)]
    >>> labels = [torch.zeros(1, 2), torch.zeros(1, 2)]
    >>> round(float(multi_scale_frame_loss(logits, labels, torch.tensor([2]), [1.0, 0.5])), 4)
    2.426
    """
    return sum(
        weight * masked_frame_ce(logits, labels, frame_counts)
        for logits, labels, weight in zip(
            logits_per_scale, labels_per_scale, scale_weights, strict=True
        )
    )


class CosineHead(torch.nn.Module):
    """Cosine classifier: cosine similarity between an embedding and one weight per class.

    Arguments
    ---------
    input_size : int
        Dimension of the pooled vector.
    n_classes : int
        Number of classes.
    embedding_size : int, optional
        When given, a linear layer (with bias) maps the pooled vector to an embedding of this
        size first, as speaker-verification cosine classifiers do: pooled encoder features
        share a large common direction that a bias-free cosine cannot remove.

    Example
    -------
    >>> head = CosineHead(4, 3, embedding_size=8)
    >>> cosines = head(torch.randn(2, 4))
    >>> bool((cosines.abs() <= 1.0 + 1e-6).all()), tuple(cosines.shape)
    (True, (2, 3))
    """

    def __init__(self, input_size, n_classes, embedding_size=None):
        super().__init__()
        self.embedding = None
        if embedding_size:
            self.embedding = torch.nn.Linear(input_size, embedding_size)
            input_size = embedding_size
        self.weight = torch.nn.Parameter(torch.empty(n_classes, input_size))
        torch.nn.init.xavier_uniform_(self.weight)

    def forward(self, features):
        """Return ``(..., n_classes)`` cosine similarities for ``(..., input_size)`` inputs."""
        if self.embedding is not None:
            features = self.embedding(features)
        return F.linear(F.normalize(features, dim=-1), F.normalize(self.weight, dim=-1))


class SoftmaxCELoss(torch.nn.Module):
    """Plain cross-entropy on logits, with the same interface as ``AMSoftmaxLoss``.

    Example
    -------
    >>> loss_fn = SoftmaxCELoss()
    >>> logits = torch.tensor([[2.0, 0.0]])
    >>> round(float(loss_fn(logits, torch.tensor([0]))), 4), loss_fn.scores(logits)
    (0.1269, tensor([[2., 0.]]))
    """

    def forward(self, logits, targets):
        """Mean cross-entropy of ``(batch, n_classes)`` logits and ``(batch,)`` class ids."""
        return F.cross_entropy(logits, targets.reshape(-1))

    def scores(self, logits):
        """The logits themselves: evaluation scores."""
        return logits


class AMSoftmaxLoss(torch.nn.Module):
    """AM-Softmax on cosine scores: SpeechBrain's ``AngularMargin`` in ``LogSoftmaxWrapper``.

    ``forward`` is the training loss (margin ``m`` subtracted from the target cosine, then
    scaled by ``s``); ``scores`` gives the margin-free scaled cosines for evaluation.

    Arguments
    ---------
    margin : float
        Additive cosine margin m (default 0.2).
    scale : float
        Scale s (default 30).

    Example
    -------
    >>> loss_fn = AMSoftmaxLoss(margin=0.2, scale=30.0)
    >>> cosines = torch.tensor([[0.5, 0.1]])
    >>> targets = torch.tensor([0])
    >>> bool(loss_fn(cosines, targets) > AMSoftmaxLoss(0.0, 30.0)(cosines, targets))
    True
    >>> loss_fn.scores(cosines)
    tensor([[15.,  3.]])
    """

    def __init__(self, margin=0.2, scale=30.0):
        super().__init__()
        self.margin = margin
        self.scale = scale
        self.loss = LogSoftmaxWrapper(AngularMargin(margin=margin, scale=scale))

    def forward(self, cosines, targets):
        """Training loss for ``(batch, n_classes)`` cosines and ``(batch,)`` class ids."""
        return self.loss(cosines.unsqueeze(1), targets.reshape(-1, 1))

    def scores(self, cosines):
        """Margin-free scaled cosines, the logits of evaluation and inference."""
        return self.scale * cosines
