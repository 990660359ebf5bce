"""HuBERT frame arithmetic: one frame per 20 ms of 16 kHz audio.

HuBERT's convolutional feature extractor has a receptive field of 400 samples and
a stride of 320 samples, so an utterance of ``n`` samples yields
``floor((n - 400) / 320) + 1`` frames (docs/design.md, The method).

No torch import at module level: the torch-free ONNX runtime path (``lobes.deploy.onnx_runtime``)
uses these constants and ``n_frames`` too.
"""

SAMPLE_RATE = 16000
FRAME_SHIFT = 320
RECEPTIVE_FIELD = 400


class TooShortError(ValueError):
    """Raised when a clip is shorter than one HuBERT frame (400 samples)."""


def n_frames(n_samples):
    """Return the number of HuBERT frames for a clip of ``n_samples`` samples.

    Arguments
    ---------
    n_samples : int, torch.Tensor or numpy.ndarray
        Number of 16 kHz samples (a tensor or an array gives an elementwise answer).

    Returns
    -------
    int or torch.Tensor
        ``floor((n_samples - 400) / 320) + 1``.

    Raises
    ------
    TooShortError
        If any clip holds fewer than 400 samples (25 ms), too short for one frame.

    Example
    -------
    >>> n_frames(16000)
    49
    >>> import torch
    >>> n_frames(torch.tensor([400, 719, 720]))
    tensor([1, 1, 2])
    """
    if hasattr(n_samples, "shape"):  # a tensor or an array: elementwise
        if bool((n_samples < RECEPTIVE_FIELD).any()):
            raise TooShortError(
                f"a clip of {int(n_samples.min())} samples is shorter than one HuBERT "
                f"frame ({RECEPTIVE_FIELD} samples = 25 ms at 16 kHz); drop it or pad it"
            )
        whole = n_samples.long() if hasattr(n_samples, "long") else n_samples.astype("int64")
        # non-negative here, so floor division is exact
        return (whole - RECEPTIVE_FIELD) // FRAME_SHIFT + 1
    n_samples = int(n_samples)
    if n_samples < RECEPTIVE_FIELD:
        raise TooShortError(
            f"a clip of {n_samples} samples is shorter than one HuBERT frame "
            f"({RECEPTIVE_FIELD} samples = 25 ms at 16 kHz); drop it or pad it"
        )
    return (n_samples - RECEPTIVE_FIELD) // FRAME_SHIFT + 1


def frame_mask(frame_counts, max_frames):
    """Boolean mask ``(batch, max_frames)``, True on real frames, False on padding.

    Example
    -------
    >>> import torch
    >>> frame_mask(torch.tensor([2, 3]), 3)
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    import torch  # here: the module's constants serve the torch-free path too

    positions = torch.arange(max_frames, device=frame_counts.device)
    return positions.unsqueeze(0) < frame_counts.unsqueeze(1)
