"""The pure parts of `provision chat`: reasoning split from answers, and the history a turn sends."""

from __future__ import annotations

import io

import pytest

from provision.chat import Conversation, ThinkingSplitter, strip_thinking
from provision.report.chat import ChatPrinter


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>\nLet me think.\n</think>\n\nParis.", "Paris."),
        ("Let me think.\n</think>\n\nParis.", "Paris."),  # R1 distills: the template opened <think>
        ("Paris.", "Paris."),
        ("<think>a</think>one <think>b</think>two", "one two"),
        ("<think>never closed", ""),
    ],
)
def test_strip_thinking_keeps_only_the_answer(text: str, answer: str) -> None:
    assert strip_thinking(text) == answer


def feed_all(pieces: list[str]) -> list[tuple[str, str]]:
    splitter = ThinkingSplitter()
    out = [part for piece in pieces for part in splitter.feed(piece)] + splitter.flush()
    merged: list[tuple[str, str]] = []
    for kind, text in out:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


@pytest.mark.parametrize(
    "pieces",
    [
        ["<think>hmm</think>Paris"],
        ["<th", "ink>h", "mm</", "think", ">Par", "is"],  # tags split across pieces
        list("<think>hmm</think>Paris"),  # one character at a time
    ],
)
def test_the_splitter_labels_thinking_however_the_tags_are_cut(pieces: list[str]) -> None:
    assert feed_all(pieces) == [("thinking", "hmm"), ("answer", "Paris")]


def test_the_splitter_releases_a_held_tail_that_was_no_tag() -> None:
    assert feed_all(["a <", "b"]) == [("answer", "a <b")]
    assert feed_all(["ends with <th"]) == [("answer", "ends with <th")]


def test_the_conversation_sends_history_without_reasoning_and_resets() -> None:
    chat = Conversation(system="Be brief.")
    chat.add("capital of France?", "<think>easy</think>Paris.")
    assert chat.messages("and Germany?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "and Germany?"},
    ]
    chat.reset()
    assert chat.messages("hi") == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_model_text_cannot_drive_the_terminal() -> None:
    out = io.StringIO()
    ChatPrinter(terminal=True, out=out).piece("answer", "a\x1b]0;owned\x07b\nc\td\r\u202ee")
    assert out.getvalue() == "a\\x1b]0;owned\\x07b\nc\td\\r\\u202ee"  # lines and tabs stay
