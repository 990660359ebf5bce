"""Write a tiny random-weight HuBERT that loads offline through the same path as a hub id.

Usage::

    python -m lobes.tiny_hubert OUT_DIR [--layers 4 --dim 64 --seed 0]

The convolutional front end keeps HuBERT's kernels and strides (receptive field 400 samples,
stride 320), so frame counts are those of the real model; only the widths are small. The
configuration follows ``hubert-large-ll60k`` (layer-norm front end, stable layer norm,
normalised waveform input).
"""

import argparse
from pathlib import Path

import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor


def write_tiny_hubert(out_dir, n_layers=4, dim=64, conv_dim=16, seed=0):
    """Save a random-weight HuBERT and its feature-extractor config to ``out_dir``.

    Arguments
    ---------
    out_dir : str or Path
        Destination folder (created).
    n_layers : int
        Number of transformer layers.
    dim : int
        Hidden size (and 4 attention heads when divisible, else 1).
    conv_dim : int
        Channels of each convolutional layer of the front end.
    seed : int
        Seed of the random weights.

    Returns
    -------
    str
        ``out_dir``, usable as ``encoder_source``.

    Example
    -------
    >>> import tempfile
    >>> folder = write_tiny_hubert(tempfile.mkdtemp(), n_layers=2, dim=32)
    >>> sorted(p.name for p in Path(folder).iterdir())
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = HubertConfig(
        hidden_size=dim,
        num_hidden_layers=n_layers,
        num_attention_heads=4 if dim % 4 == 0 else 1,
        intermediate_size=2 * dim,
        conv_dim=(conv_dim,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4 if dim % 4 == 0 else 1,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.05,
    )
    torch.manual_seed(seed)
    HubertModel(config).save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(out_dir)
    return str(out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the model to")
    parser.add_argument("--layers", type=int, default=4, help="transformer layers")
    parser.add_argument("--dim", type=int, default=64, help="hidden size")
    parser.add_argument("--conv_dim", type=int, default=16, help="CNN channels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    folder = write_tiny_hubert(args.out_dir, args.layers, args.dim, args.conv_dim, args.seed)
    print(f"tiny HuBERT ({args.layers} layers, {args.dim}-d) written to {folder}")


if __name__ == "__main__":
    main()
