"""The encoder lobe: waveforms and lengths in, chosen hidden states and frame counts out.

``SSLEncoder`` loads a pre-trained self-supervised speech encoder (HuBERT, WavLM, wav2vec 2.0)
from a hub id or a local ``save_pretrained`` folder through SpeechBrain's HF
wrapper of its family (the family is read from the checkpoint's ``config.json``), and returns the
hidden states of the layers asked for. The interface stays narrow (s3prl's upstream idea), so
the stages never depend on the family.

What the lobe guarantees, whatever the family, size or training flags (docs/design.md,
Encoders):

- **Layer indices** follow HF ``output_hidden_states``: 0 is the input of the first transformer
  layer, ``i`` the output of layer ``i``, ``-1`` the last. The states are recorded by hooks on the
  layers themselves, so LayerDrop can never shift an index: a layer skipped by LayerDrop passes
  its input through (the state of layer ``i`` is then that of the last layer that ran).
- **The last layer** of a stable-layer-norm encoder (hubert-large, wavlm-large,
  wav2vec2-large) includes the encoder's final layer norm, as ``last_hidden_state``, fairseq and
  transformers 4 give it; intermediate layers are the raw layer outputs.
- **Batch independence**: an utterance gives the same frames alone or padded in a batch. The
  padded tail is zeroed and each waveform normalised over its own samples; padding frames are
  masked in attention; and for group-norm front ends (base models), whose first convolution
  normalises over the whole time axis, the convolutional front end runs on each utterance's
  own samples.
- **SpecAugment** (HF time masking) is drawn over each utterance's real frames only, so batches
  of very short clips train instead of failing.
"""

import functools

import torch
import torch.nn.functional as F
from speechbrain.integrations.huggingface.hubert import HuBERT
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from speechbrain.integrations.huggingface.wavlm import WavLM
from transformers import AutoConfig
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from lobes.models.frames import frame_mask, n_frames
from lobes.utils.errors import HparamsError

FREEZE_CHOICES = ("none", "cnn", "all")
# model_type of config.json -> SpeechBrain's HF wrapper of that family
FAMILIES = {"hubert": HuBERT, "wavlm": WavLM, "wav2vec2": Wav2Vec2}
# families that load but break a guarantee of the lobe, and why
REFUSED = {"data2vec-audio": "its stack of positional convolutions carries padding into the "
           "real frames, so an utterance's features would depend on the batch"}


class EncoderNotFound(HparamsError, FileNotFoundError):
    """The encoder a setting names cannot be read (offline, misspelled hub id, wrong folder)."""


def encoder_config(source, cache_dir=None):
    """The HF configuration of an encoder (hub id or local folder), with a clear error.

    Example
    -------
    >>> import tempfile
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> encoder_config(write_tiny_hubert(tempfile.mkdtemp(), n_layers=1, dim=8)).model_type
    'hubert'
    """
    try:
        config = AutoConfig.from_pretrained(str(source), cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EncoderNotFound(
            f"cannot read the encoder configuration of {source!r} ({first_line}): give "
            "--encoder_source (or the encoder_source key) a hub id that this machine can "
            "download or has in its cache (e.g. facebook/hubert-large-ll60k), or a local folder "
            "written by save_pretrained (holding config.json)"
        ) from error
    if config.model_type in REFUSED:
        raise ValueError(f"{source} is a {config.model_type} model, which the encoder lobe does "
                         f"not support: {REFUSED[config.model_type]}")
    if config.model_type not in FAMILIES:
        raise ValueError(
            f"{source} is a {config.model_type!r} model; the encoder lobe supports "
            f"{', '.join(sorted(FAMILIES))}"
        )
    return config


def encoder_dim(source, cache_dir=None):
    """The hidden size of an encoder, read from its configuration (``encoder_dim`` in hparams).

    Example
    -------
    >>> import tempfile
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> encoder_dim(write_tiny_hubert(tempfile.mkdtemp(), n_layers=1, dim=8))
    8
    """
    return int(encoder_config(source, cache_dir).hidden_size)


class SSLEncoder(torch.nn.Module):
    """A self-supervised speech encoder returning the hidden states of the requested layers.

    Arguments
    ---------
    source : str
        Hub id or local folder of a HF HuBERT, WavLM or wav2vec 2.0 checkpoint.
    save_path : str
        Folder where a hub checkpoint is cached.
    output_layers : list of int
        Layers whose hidden states are returned, in this order (HF ``hidden_states`` indexing;
        negative indices count from the end).
    freeze : str
        ``"none"`` (train everything), ``"cnn"`` (freeze the convolutional front end) or
        ``"all"`` (frozen encoder, no gradients).
    layerdrop : float or None
        Probability of skipping each transformer layer in training (HF LayerDrop); ``None``
        keeps the checkpoint's own value.
    apply_spec_augment : bool
        HF SpecAugment time masking of the front end's output in training.
    mask_time_prob : float or None
        Share of frames masked by SpecAugment; ``None`` keeps the checkpoint's value.

    Example
    -------
    >>> import tempfile
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> folder = write_tiny_hubert(tempfile.mkdtemp(), n_layers=2, dim=32)
    >>> encoder = SSLEncoder(folder, tempfile.mkdtemp(), output_layers=[1, 2])
    >>> hidden, frame_counts = encoder(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> tuple(hidden.shape), frame_counts.tolist()
    ((2, 2, 49, 32), [49, 24])
    """

    def __init__(self, source, save_path, output_layers=(-1,), freeze="cnn", layerdrop=None,
                 apply_spec_augment=False, mask_time_prob=None):
        super().__init__()
        if freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
        family = FAMILIES[encoder_config(source, save_path).model_type]
        self.freeze = freeze
        self.ssl = family(
            source=str(source),
            save_path=str(save_path),
            freeze=freeze == "all",
            freeze_feature_extractor=freeze == "cnn",
            apply_spec_augment=apply_spec_augment,
        )
        model = self.ssl.model
        config = model.config
        if layerdrop is not None:
            config.layerdrop = float(layerdrop)
        if mask_time_prob is not None:
            config.mask_time_prob = float(mask_time_prob)
        self.apply_spec_augment = bool(apply_spec_augment) and config.mask_time_prob > 0
        if not self.apply_spec_augment and getattr(model, "masked_spec_embed", None) is not None:
            model.masked_spec_embed.requires_grad_(False)  # unused: DDP would wait for its grad
        # The wrapper normalises over the whole padded tensor; we normalise per utterance.
        self.normalize_wav = bool(self.ssl.normalize_wav)
        self.num_layers = config.num_hidden_layers
        self.hidden_size = config.hidden_size
        self.output_layers = [self.resolve_layer(layer) for layer in output_layers]
        self.stable_layer_norm = bool(getattr(config, "do_stable_layer_norm", False))
        self.group_norm_front_end = config.feat_extract_norm == "group"
        self._states = {}
        self._sample_counts = None
        model.encoder.dropout.register_forward_hook(functools.partial(self._record, 0))
        for index, layer in enumerate(model.encoder.layers, start=1):
            layer.register_forward_hook(functools.partial(self._record, index))
        if self.group_norm_front_end:
            # HF's feature encoder has no per-utterance mode: its instance forward is replaced
            # (parameters and state dict untouched) by one that runs each utterance alone
            model.feature_extractor.forward = functools.partial(
                self._front_end_per_utterance, model.feature_extractor.forward)

    @property
    def model(self):
        """The HF model (``HubertModel``, ``WavLMModel``, ``Wav2Vec2Model`` ...)."""
        return self.ssl.model

    @property
    def feature_extractor(self):
        """The HF feature-extractor configuration (``do_normalize`` ...), saved on export."""
        return self.ssl.feature_extractor

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

        Only ``output_layers`` up to ``last_layer`` may be asked for afterwards; the last layer
        keeps its meaning (final layer norm included) because nothing is removed when it is
        asked for.
        """
        last_layer = self.resolve_layer(last_layer)
        if any(layer > last_layer for layer in self.output_layers):
            raise ValueError(f"output layers {self.output_layers} go beyond {last_layer}")
        encoder = self.model.encoder
        encoder.layers = encoder.layers[:last_layer]

    def train(self, mode=True):
        """Keep frozen parts in eval mode (no dropout) whatever the Brain asks."""
        super().train(mode)
        if self.freeze == "all":
            self.model.eval()
        elif self.freeze == "cnn":
            self.model.feature_extractor.eval()
        return self

    def _record(self, index, module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        # with LayerDrop a skipped layer takes the state of the last layer that ran, so every
        # state may be needed; without it only the requested ones are kept
        if index in self.output_layers or self._layerdrop_active():
            self._states[index] = hidden

    def _layerdrop_active(self):
        return self.model.training and self.model.config.layerdrop > 0

    def _front_end_per_utterance(self, batched_forward, input_values):
        counts = self._sample_counts
        if counts is None or len(input_values) == 1:
            return batched_forward(input_values)
        total = n_frames(input_values.shape[1])
        outputs = []
        for row, count in zip(input_values, counts.tolist(), strict=True):
            features = batched_forward(row[None, :count])
            outputs.append(F.pad(features, (0, total - features.shape[-1])))
        return torch.cat(outputs)

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

    def spec_augment_mask(self, frame_counts, max_frames):
        """HF SpecAugment time mask drawn over each utterance's real frames (training only).

        Utterances shorter than one mask span get none (HF's own draw fails on such batches).
        """
        config = self.model.config
        real = frame_mask(frame_counts.cpu(), max_frames)
        if max_frames < config.mask_time_length:
            return torch.zeros_like(real, device=frame_counts.device)
        mask = _compute_mask_indices(
            (len(frame_counts), max_frames),
            mask_prob=config.mask_time_prob,
            mask_length=config.mask_time_length,
            attention_mask=real.long(),
            min_masks=config.mask_time_min_masks,
        )
        # HF marks a padding frame of utterances that get no span: keep real frames only
        return (torch.as_tensor(mask) & real).to(frame_counts.device)

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
        attention_mask = (
            torch.arange(wavs.shape[1], device=wavs.device)[None, :] < n_samples[:, None]
        ).long()
        mask_time_indices = None
        if self.apply_spec_augment and self.model.training:
            mask_time_indices = self.spec_augment_mask(frame_counts, n_frames(wavs.shape[1]))
        self._states, self._sample_counts = {}, n_samples
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze != "all"):
                last_hidden = self.model(
                    wavs, attention_mask=attention_mask, mask_time_indices=mask_time_indices
                ).last_hidden_state
            hidden = torch.stack([self._state_of(layer, last_hidden)
                                  for layer in self.output_layers])
        finally:
            self._states, self._sample_counts = {}, None
        # the transformer may give one frame fewer than the formula on rounding edges
        return hidden, frame_counts.clamp(max=hidden.shape[2])

    def _state_of(self, layer, last_hidden):
        if layer == self.num_layers and len(self.model.encoder.layers) == self.num_layers:
            return last_hidden  # the final layer norm included (stable-layer-norm models)
        for index in range(layer, -1, -1):
            if index in self._states:
                return self._states[index]
        raise RuntimeError(f"layer {layer} was not computed")  # hooks missing: a bug
