"""The token cache: each (context, value) goes to the tokenizer once, tokens stay the real
ones, memory is bounded, and no plaintext is kept."""

from __future__ import annotations

import gc
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from operators.masking.errors import ConfigError, TokenizationError
from operators.masking.policy import TransitSettings, load_policy
from operators.masking.token_cache import CachedTokenizer
from operators.masking.tokenizer import OpenBaoTransitTokenizer, TokenRequest


class Recording:
    """A tokenizer (the cache's collaborator, not the thing under test) that records what it
    was asked and answers with a token made from the request."""

    def __init__(self) -> None:
        self.asked: list[list[TokenRequest]] = []
        self.fail = False

    def tokenize(self, requests):
        if self.fail:
            raise TokenizationError("transit encrypt failed")
        self.asked.append(list(requests))
        return [f"tok:{r.context}:{r.plaintext.hex()}" for r in requests]


def r(context: str, value: str) -> TokenRequest:
    return TokenRequest(context, value.encode())


def test_each_value_is_asked_for_once_and_answers_keep_their_order():
    inner = Recording()
    cache = CachedTokenizer(inner, max_entries=100)
    first = [r("ks.t.name", "Ana"), r("ks.t.name", "Ben"), r("ks.t.name", "Ana")]
    assert cache.tokenize(first) == Recording().tokenize(first)
    assert inner.asked == [[r("ks.t.name", "Ana"), r("ks.t.name", "Ben")]]
    second = [r("ks.t.name", "Ben"), r("ks.t.ssn", "Ben"), r("ks.t.name", "Ana")]
    assert cache.tokenize(second) == Recording().tokenize(second)
    assert inner.asked[1:] == [[r("ks.t.ssn", "Ben")]]  # same value, other context: asked
    assert cache.tokenize(first) == Recording().tokenize(first)
    assert len(inner.asked) == 2  # nothing new


def test_the_cache_is_bounded_and_keeps_what_was_used_lately():
    """Two generations of max_entries / 2: what was used in the current or the last one
    stays, what was not used since is dropped, and the total never passes max_entries."""
    inner = Recording()
    cache = CachedTokenizer(inner, max_entries=4)
    cache.tokenize([r("c", "a"), r("c", "b")])  # a generation full: a and b are the old one
    cache.tokenize([r("c", "c")])
    cache.tokenize([r("c", "a")])  # a used again: young with c, full: b is dropped
    cache.tokenize([r("c", "d")])
    assert len(cache) == 3
    inner.asked.clear()
    cache.tokenize([r("c", "d")])
    cache.tokenize([r("c", "c")])
    assert inner.asked == []  # both still cached
    cache.tokenize([r("c", "b")])
    assert inner.asked == [[r("c", "b")]]  # dropped: not used in the last generation
    for i in range(100):
        cache.tokenize([r("c", f"v{i}")])
        assert len(cache) <= 4


def test_a_failed_call_caches_nothing_and_raises_as_it_was():
    inner = Recording()
    cache = CachedTokenizer(inner, max_entries=10)
    inner.fail = True
    with pytest.raises(TokenizationError, match="transit encrypt failed"):
        cache.tokenize([r("c", "a")])
    assert len(cache) == 0
    inner.fail = False
    assert cache.tokenize([r("c", "a")]) == ["tok:c:61"]


def test_no_plaintext_is_kept():
    cache = CachedTokenizer(Recording(), max_entries=10)
    secret = "123-45-6789-unique-ssn"
    cache.tokenize([r("ks.t.ssn", secret)])
    gc.collect()
    kept = b"".join(cache.digests())
    assert secret.encode() not in kept and len(kept) == 16


def test_the_policy_sets_the_cache_size(tmp_path):
    def policy(**tokenize):
        path = tmp_path / "p.json"
        import json

        path.write_text(json.dumps({"masking": {
            "version": 1, "unclassified_strategy": "redact", "tokenize": {"key": "k", **tokenize},
            "tables": {"ks": {"t": {"columns": {
                "name": {"class": "first_name", "strategy": "tokenize"}}}}}}}))
        return load_policy(path)

    assert policy().tokenize.cache_entries == TransitSettings("k").cache_entries > 0
    assert policy(cache_entries=0).tokenize.cache_entries == 0
    with pytest.raises(ConfigError, match=r"tokenize\.cache_entries: expected a positive"):
        policy(cache_entries=-1)
    for bad in (True, 0.0, "100"):
        with pytest.raises(ConfigError, match=r"tokenize\.cache_entries"):
            policy(cache_entries=bad)


def test_cached_tokens_are_openbao_s_tokens(openbao_env):
    settings = TransitSettings("cdc-tokenization")
    direct = OpenBaoTransitTokenizer(settings, environ=openbao_env)
    cached = CachedTokenizer(OpenBaoTransitTokenizer(settings, environ=openbao_env),
                             max_entries=10)
    requests = [r("ks.t.name", "Ana"), r("ks.t.name", "Zoë"), r("ks.t.mrn", "Ana")]
    expected = direct.tokenize(requests)
    assert cached.tokenize(requests) == expected
    assert cached.tokenize(list(reversed(requests))) == list(reversed(expected))


def test_requests_in_parallel_give_the_tokens_of_one_request(openbao_env):
    """Many chunks (max_batch_items 7) sent 4 at a time by per-thread clients: the tokens
    of one big request, in order."""
    values = [r(f"ks.t.c{i % 3}", f"value {i}") for i in range(60)] * 2
    one = OpenBaoTransitTokenizer(TransitSettings("cdc-tokenization", max_batch_items=199),
                                  environ=openbao_env, parallel_requests=1)
    many = OpenBaoTransitTokenizer(TransitSettings("cdc-tokenization", max_batch_items=7),
                                   environ=openbao_env, parallel_requests=4)
    threads: set[str] = set()
    encrypt = many._encrypt  # noqa: SLF001 - to see which threads send the requests

    def recorded(chunk):
        threads.add(threading.current_thread().name)
        return encrypt(chunk)

    many._encrypt = recorded  # noqa: SLF001
    assert many.tokenize(values) == one.tokenize(values)
    assert len(threads) > 1 and all(t.startswith("tokenize") for t in threads), threads
    with pytest.raises(ValueError, match="parallel_requests"):
        OpenBaoTransitTokenizer(TransitSettings("k"), parallel_requests=0)


def test_the_pipeline_masks_through_the_cache_unless_turned_off(tmp_path):
    """Runtime wires the cache in front of OpenBao per tokenize.cache_entries."""
    from dataflows.config import load
    from dataflows.runtime import Runtime

    example = Path(__file__).resolve().parents[2] / "config"
    settings = load(example / "pipeline.example.json")
    cached = Runtime(settings).masker._tokenizer  # noqa: SLF001 - what the masker calls
    assert isinstance(cached, CachedTokenizer)
    policy = json.loads((example / "masking.example.json").read_text())
    policy["masking"]["tokenize"]["cache_entries"] = 0
    (tmp_path / "masking.json").write_text(json.dumps(policy))
    bare = Runtime(replace(settings, masking_policy=tmp_path / "masking.json")).masker
    assert isinstance(bare._tokenizer, OpenBaoTransitTokenizer)  # noqa: SLF001


@pytest.mark.parametrize("max_entries", [1, 2, 3, 5, 8])
def test_any_size_holds_up_to_max_entries_and_a_value_only_once(max_entries):
    """Small and odd sizes use their bound (an even one all but one entry: a generation is
    half, and the young one turns old when full); a value put twice (two threads that both
    missed it) is held once, and every value dropped is counted as an eviction."""
    from operators.masking.token_cache import EVICTIONS

    cache = CachedTokenizer(Recording(), max_entries=max_entries)
    before = EVICTIONS._value.get()  # noqa: SLF001
    sizes = []
    for i in range(40):
        cache.tokenize([r("c", f"v{i}")])
        sizes.append(len(cache))
    assert max(sizes) == max_entries - (max_entries % 2 == 0)
    assert EVICTIONS._value.get() - before == 40 - len(cache)  # noqa: SLF001
    held = cache.digests()
    cache._put(held[0], "again")  # noqa: SLF001 - the second of two concurrent misses
    assert sorted(cache.digests()) == sorted(held)
