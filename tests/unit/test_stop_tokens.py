"""Stop token ids (actors/stop_tokens.py): EOS, generation_config.json and the chat template's
end-of-turn, with a real (small, trained here) byte-level BPE tokenizer whose EOS is not its
end-of-turn token — a base Qwen2.5 checkpoint's layout."""

from __future__ import annotations

import json

import pytest

from actors.stop_tokens import end_of_turn_id, stop_token_ids
from azr.tiny.build import CHAT_TEMPLATE, IM_END, PAD_TOKEN

EOT = "<|eot|>"


def tokenizer(eos: str, chat_template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[PAD_TOKEN, "<|im_start|>", IM_END, EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(["def f(x):\n    return x", "user assistant"] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, chat_template=chat_template
    )


def test_eos_end_of_turn_and_generation_config_ids_all_stop(tmp_path):
    tok = tokenizer(eos=PAD_TOKEN, chat_template=CHAT_TEMPLATE)
    eos, im_end, eot = tok.convert_tokens_to_ids([PAD_TOKEN, IM_END, EOT])
    assert len({eos, im_end, eot}) == 3
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, eot]}))
    assert end_of_turn_id(tok) == im_end  # not the EOS: a stop on EOS alone would run past it
    assert stop_token_ids(tok, tmp_path) == sorted({eos, im_end, eot})


def test_a_single_generation_config_id_and_no_file(tmp_path):
    tok = tokenizer(eos=PAD_TOKEN, chat_template=CHAT_TEMPLATE)
    eos, im_end, eot = tok.convert_tokens_to_ids([PAD_TOKEN, IM_END, EOT])
    assert stop_token_ids(tok, tmp_path) == sorted({eos, im_end})  # no generation_config.json
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": eot}))
    assert stop_token_ids(tok, tmp_path) == sorted({eos, im_end, eot})


@pytest.mark.parametrize(
    "template",
    [
        None,  # no chat template: the plain transcript of azr.prompts.render_chat
        # a template that ends a turn with plain text: no single token id marks it
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}",
    ],
)
def test_no_end_of_turn_token_leaves_the_eos(tmp_path, template):
    tok = tokenizer(eos=PAD_TOKEN, chat_template=template)
    assert end_of_turn_id(tok) is None
    assert stop_token_ids(tok, tmp_path) == [tok.convert_tokens_to_ids(PAD_TOKEN)]
