"""The HuBERT lobe: waveforms and lengths in, chosen hidden states and frame counts out.

A narrow interface on SpeechBrain's HF HuBERT wrapper
(``speechbrain.integrations.huggingface.hubert.HuBERT``), so that another encoder could stand
in. ``hubert_source`` is a hub id (``facebook/hubert-large-ll60k``) or a local folder written by
``save_pretrained`` (as ``python -m lobes.tiny_hubert`` does); both go through the same loader.
"""

import torch
from speechbrain.integrations.huggingface.hubert import HuBERT

from lobes.frames import n_frames

FREEZE_CHOICES = ("none", "cnn", "all")


class HuBERTEncoder(torch.nn.Module):
    """HuBERT returning the hidden states of the requested layers and the valid frame counts.

    Layer indices follow HF ``output_hidden_states``: index 0 is the input of the first
    transformer layer, index ``i`` the output of layer ``i``; negative indices count from the
    end (-1 is the last layer).

    The padded tail of every waveform is zeroed and the waveform normalisation (when the
    checkpoint's feature extractor asks for it) uses each utterance's valid samples only, so the
    content of the padding never changes the real frames.

    Arguments
    ---------
    source : str
        Hub id or local folder of a HF HuBERT checkpoint.
    save_path : str
        Folder where a hub checkpoint is cached.
    output_layers : list of int
        Layers whose hidden states are returned, in this order.
    freeze : str
        ``"none"`` (train everything), ``"cnn"`` (freeze the convolutional feature extractor)
        or ``"all"`` (frozen encoder, no gradients).
    apply_spec_augment : bool
        HF's time masking on the CNN output during training.

    Example
    -------
    >>> import tempfile
    >>> from lobes.tiny_hubert import write_tiny_hubert
    >>> folder = write_tiny_hubert(tempfile.mkdtemp(), n_layers=2, dim=32)
    >>> encoder = HuBERTEncoder(folder, tempfile.mkdtemp(), output_layers=[1, 2])
    >>> hidden, frame_counts = encoder(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> tuple(hidden.shape), frame_counts.tolist()
    ((2, 2, 49, 32), [49, 24])
    """

    def __init__(
        self, source, save_path, output_layers=(-1,), freeze="cnn", apply_spec_augment=False
    ):
        super().__init__()
        if freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
        self.freeze = freeze
        self.hubert = HuBERT(
            source=str(source),
            save_path=str(save_path),
            freeze=freeze == "all",
            freeze_feature_extractor=freeze == "cnn",
            apply_spec_augment=apply_spec_augment,
            output_all_hiddens=True,
        )
        # Parameters no returned output depends on would stall DDP's gradient reduction: the
        # time-mask embedding without SpecAugment, and the final layer norm of stable-layer-norm
        # models, which HF applies to last_hidden_state only (not to hidden_states).
        model = self.hubert.model
        if not apply_spec_augment and getattr(model, "masked_spec_embed", None) is not None:
            model.masked_spec_embed.requires_grad_(False)
        if model.config.do_stable_layer_norm:
            model.encoder.layer_norm.requires_grad_(False)
        # The wrapper normalises over the whole padded tensor; we normalise per utterance.
        self.normalize_wav = bool(self.hubert.normalize_wav)
        self.hubert.normalize_wav = False
        self.num_layers = self.hubert.model.config.num_hidden_layers
        self.hidden_size = self.hubert.model.config.hidden_size
        self.output_layers = [self.resolve_layer(layer) for layer in output_layers]

    def resolve_layer(self, layer):
        """Map a (possibly negative) layer index to ``0..num_layers``, or raise a clear error."""
        layer = int(layer)
        resolved = layer + self.num_layers + 1 if layer < 0 else layer
        if not 0 <= resolved <= self.num_layers:
            raise ValueError(
                f"layer {layer} does not exist: this encoder has {self.num_layers} transformer "
                f"layers, so valid indices are 0..{self.num_layers} (0 = input of the first "
                f"layer) or -1..-{self.num_layers + 1}"
            )
        return resolved

    def drop_layers_after(self, last_layer):
        """Remove the transformer layers beyond ``last_layer`` (feature extraction speed).

        Keeps one layer more than asked when possible, so that ``hidden_states[last_layer]``
        stays the raw output of that layer (stable-layer-norm models normalise the last one).
        Only ``output_layers`` up to ``last_layer`` may be asked for afterwards.
        """
        last_layer = self.resolve_layer(last_layer)
        if any(layer > last_layer for layer in self.output_layers):
            raise ValueError(f"output layers {self.output_layers} go beyond {last_layer}")
        keep = min(last_layer + 1, self.num_layers)
        self.hubert.model.encoder.layers = self.hubert.model.encoder.layers[:keep]

    def train(self, mode=True):
        """Keep frozen parts in eval mode (no dropout) whatever the Brain asks."""
        super().train(mode)
        if self.freeze == "all":
            self.hubert.model.eval()
        elif self.freeze == "cnn":
            self.hubert.model.feature_extractor.eval()
        return self

    def prepare_wavs(self, wavs, wav_lens):
        """Zero the padded tail and normalise each waveform over its valid samples.

        Returns the prepared waveforms and the absolute number of valid samples.
        """
        max_samples = wavs.shape[1]
        n_samples = torch.round(wav_lens * max_samples).long().clamp(max=max_samples)
        valid = torch.arange(max_samples, device=wavs.device)[None, :] < n_samples[:, None]
        wavs = wavs * valid
        if self.normalize_wav:
            counts = n_samples.clamp(min=1).unsqueeze(1).to(wavs.dtype)
            mean = wavs.sum(dim=1, keepdim=True) / counts
            var = (((wavs - mean) * valid) ** 2).sum(dim=1, keepdim=True) / counts
            wavs = (wavs - mean) / torch.sqrt(var + 1e-7) * valid
        return wavs, n_samples

    def forward(self, wavs, wav_lens=None):
        """Encode a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(batch, samples)`` 16 kHz waveforms, zero- or otherwise padded.
        wav_lens : torch.Tensor
            Relative lengths in ``(0, 1]`` (SpeechBrain convention); ``None`` means no padding.

        Returns
        -------
        hidden : torch.Tensor
            ``(n_output_layers, batch, frames, hidden_size)``.
        frame_counts : torch.Tensor
            ``(batch,)`` number of real (non-padding) frames per utterance.
        """
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        wavs, n_samples = self.prepare_wavs(wavs, wav_lens)
        frame_counts = n_frames(n_samples)
        all_hidden = self.hubert(wavs, wav_lens)
        hidden = all_hidden[self.output_layers]
        # The transformer may give one frame fewer than the formula on rounding edges.
        frame_counts = frame_counts.clamp(max=hidden.shape[2])
        return hidden, frame_counts
