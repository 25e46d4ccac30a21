"""Chat tokens and template shared by every model: ChatML turns, a distinct pad token, generation markers.

GPT-2 has neither a pad token nor a chat template. Using eos as pad silently breaks three things downstream: the
EOS label is masked out of SFT so the model never learns to stop, the reward model pools at the wrong position, and
the EOS trick cannot tell a finished response from padding. So pad is its own token, and the end of an assistant
turn (`<|im_end|>`) is the EOS that generation stops on and that the reward model reads its score at.
"""

from __future__ import annotations

from pathlib import Path

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of a turn; the EOS of every model of this project
PAD = "<|pad|>"
ENDOFTEXT = "<|endoftext|>"  # GPT-2's own document separator; kept as bos/unk, never used as eos or pad

# ChatML. The assistant's content and its end-of-turn token sit inside {% generation %} so that TRL's assistant
# mask covers the EOS: the model is trained to stop. The newline between turns belongs to the next turn, so a
# conversation that ends with an assistant turn ends exactly on its EOS: that is where a sequence classifier
# (the reward model) pools, and where a sampled response ends.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n<|im_start|>assistant\n' }}{% endif %}"
)


def chat_ids(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    """The token ids of a conversation under the chat template; with `generation_prompt`, followed by the opening of
    the assistant turn a model continues from (a prompt as the model sees it when it answers)."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                         return_dict=True)["input_ids"]


def reply_tokens(tokenizer, messages: list[dict]) -> int:
    """How many tokens a model samples to give the conversation's last turn (an assistant's), its EOS included: the
    room ppo.response_tokens and eval.max_new_tokens must leave for an answer like it."""
    return len(chat_ids(tokenizer, messages)) - len(chat_ids(tokenizer, messages[:-1], generation_prompt=True))


def replies_past_budgets(lengths: list[int], budgets: dict[str, int]) -> list[str]:
    """One warning per sampling budget (its config key -> tokens) that some of the demonstrations' replies (their
    lengths in tokens, EOS included) do not fit: a model that answers like them is cut before its EOS, and PPO's
    missing-EOS penalty then lands on answers that were right."""
    warnings = []
    for key, budget in budgets.items():
        past = [n for n in lengths if n > budget]
        if past:
            warnings.append(f"{len(past)} of {len(lengths)} demonstrations' replies looked at take more than {key}="
                            f"{budget} tokens with their EOS (the longest {max(past)}): answers like them are cut "
                            f"before they end, and PPO penalises the missing EOS; raise {key} if they must be whole")
    return warnings


def never_sampled(tokenizer) -> list[int]:
    """Token ids no sampler may draw: the pad (a pad inside a response would count as a response token in the loss
    yet be dropped from every forward pass) and the chat's start-of-turn token (a model never starts a turn inside its
    own answer). Both are never training labels, so a trained model gives them almost no probability anyway."""
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.pad_token_id] + ([vocab[IM_START]] if IM_START in vocab else [])
    return sorted({i for i in ids if i is not None and i != tokenizer.eos_token_id})


def add_chat_tokens(tokenizer):
    """Give a GPT-2-style tokenizer the ChatML turn tokens, a distinct pad, eos = end of turn and the template."""
    missing = [t for t in (IM_START, IM_END, PAD) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.eos_token = IM_END
    tokenizer.pad_token = PAD
    tokenizer.chat_template = CHAT_TEMPLATE
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    return tokenizer


def train_tiny_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> None:
    """Train a byte-level BPE on `texts` (deterministic for the same texts) and save it with the chat tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    # Every word gets its leading-space token, the first of a line too (a line break is a piece of its own): the
    # word a response starts with is then the same token as that word in the prompt, so copying it is looking up,
    # not learning a second embedding (docs/ablations.md). The decoder drops the one space this adds to a text.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), "isolated"), pre_tokenizers.ByteLevel(add_prefix_space=True)])
    bpe.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT, IM_START, IM_END, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
    add_chat_tokens(tokenizer).save_pretrained(out_dir)
