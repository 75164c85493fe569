"""Token counting (``ferrule.tokens``): the vendored legacy Claude tokenizer, offline.

The counts must equal those of the ``tokenizers`` library reading the same ``tokenizer.json``
(the way the anthropic SDK used it), which the dev environment has.
"""

from __future__ import annotations

import random
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrule import corpus, tokens


@pytest.fixture(scope="module")
def reference() -> object:
    hf = pytest.importorskip("tokenizers")
    raw = resources.files("ferrule").joinpath(tokens.DATA_FILE).read_text("utf-8")
    return hf.Tokenizer.from_str(raw)


def hf_count(reference: object, text: str) -> int:
    return len(reference.encode(text).ids)  # type: ignore[attr-defined]


def test_loads_offline_and_names_itself() -> None:
    assert tokens.load() == tokens.NAME == "claude-legacy"


@pytest.mark.parametrize(
    ("text", "count"),
    [("", 0), ("hello world", 2), ("   ", 1), ("\n\n", 1), ('{"a":1}', 5)],
)
def test_known_counts(text: str, count: int) -> None:
    assert tokens.count(text) == count


def test_nfkc_first() -> None:
    assert tokens.count("\ufb01le \uff21\uff22\uff23") == tokens.count("file ABC")


def test_same_counts_as_tokenizers_on_the_corpus(reference: object) -> None:
    texts = []
    for s in corpus.corpus(3):
        for body in s.requests()[-1:]:
            for m in body["messages"]:
                content = m["content"]
                if isinstance(content, str):
                    texts.append(content)
                    continue
                for block in content:
                    if isinstance(block.get("content"), str):
                        texts.append(block["content"])
                    elif isinstance(block.get("text"), str):
                        texts.append(block["text"])
    rng = random.Random(5)
    texts += [corpus.terminal_log(rng) for _ in range(5)]
    assert len(texts) > 50
    for text in texts:
        assert tokens.count(text) == hf_count(reference, text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_same_counts_as_tokenizers(reference: object, text: str) -> None:
    # NOTE: the literal text of special tokens ("<EOT>") is ordinary text here, not in tokenizers.
    if "<" not in text:
        assert tokens.count(text) == hf_count(reference, text)


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "MEMO_CHARS", 1000)
    texts = [f"{i} " + "word " * 60 for i in range(20)]
    first = [tokens.count(t) for t in texts]
    assert [tokens.count(t) for t in texts] == first
    assert sum(map(len, tokens._memo)) <= 1000


def test_count_texts() -> None:
    n = tokens.count('{"a":[1,2]}')
    assert tokens.count_texts(["hello world", b'{"a":[1,2]}', {"a": [1, 2]}]) == 2 + n + n
