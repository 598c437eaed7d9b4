"""Tiny random causal LMs and a tokenizer built in-process (tests, smoke runs; no network, no files).

``tiny_tokenizer()`` is a small deterministic byte-level BPE tokenizer trained on a fixed text;
``tiny_random_model()`` builds a 2-layer llama/gpt2 from a config; ``"tiny-random:llama?layers=2"``
specs name them for :func:`spectrumkd.models.load_model`. Not here: anything pretrained.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.curriculum.spec import MAX_SEED

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
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in TINY_RANGES:
            raise SpectrumKDError(f"{spec}: unknown option {key!r}; use {sorted(TINY_RANGES)}")
        try:
            kwargs[key] = int(value)
        except ValueError as exc:
            raise SpectrumKDError(f"{spec}: option {key}={value!r} is not an integer") from exc
        low, high = TINY_RANGES[key]
        if not low <= kwargs[key] <= high:  # bounded, so that a typo is not a MemoryError
            raise SpectrumKDError(f"{spec}: option {key}={kwargs[key]} must be in [{low}, {high}]")
    return kwargs


TINY_RANGES = {"layers": (1, 64), "hidden": (1, 4096), "heads": (1, 256), "seed": (0, MAX_SEED),
               "vocab_size": (TINY_VOCAB_SIZE, 1 << 20), "max_positions": (1, 1 << 16)}
"""The values a ``tiny-random:`` spec's options may take (the vocabulary holds the tiny tokenizer's)."""

